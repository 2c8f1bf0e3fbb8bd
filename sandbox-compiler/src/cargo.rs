//! [`CargoCompiler`]: the cargo-backed [`Compiler`].

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sandbox_jail::spawn::{ChildLimits, ChildSpec};
use sha2::{Digest, Sha256};

use crate::admission;
use crate::cache::{Cache, Hit, NewArtifact};
use crate::child::{self, Failure, RunError};
use crate::hash::{self, read_manifest};
use crate::messages::{self, BuildMessages, BuiltArtifact};
use crate::replay::{self, Capture};
use crate::target_lock::TargetLock;
use crate::validate::validate_bytes;
use sandbox_jail::{BuildTree, FsRules, JailConfig};

use crate::{BuildOutput, BuildRequest, Compiler, Diagnostic, Error, Level, Profile, Result};

/// How long `rustc -vV` may take.
const TOOLCHAIN_QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The default [`Compiler`]: runs `cargo build` in a child process.
///
/// - **Target directories**: trusted trees build into one shared target
///   directory, so dependencies (`abi_stable`, `serde`...) compile once;
///   builds into it are serialized with a file lock, and outputs that
///   another tree with a same-named package produced last are cleaned and
///   rebuilt (cargo does not hash cdylib file names, and hashes workspace
///   members by their relative path). Untrusted trees
///   ([`BuildRequest::jailed`]) each build into their own
///   `<target>/sandbox-compiler/trees/<hash of the path>/target`, the only
///   folder their jail may write, which starts as a copy of the *seed*:
///   the shared crates' dependencies built once
///   ([`CargoCompilerBuilder::shared_crate`]).
/// - **Child process**: cargo starts through `sandbox_jail::spawn`, so it
///   gets a scrubbed environment (no host `RUSTFLAGS`), `RLIMIT_AS` =
///   [`BuildRequest::memory_limit`] and its own process group (or jail),
///   which [`BuildRequest::timeout`] kills whole.
/// - **Cache**: keyed by the sha256 of the source tree (and its `path`
///   dependencies), the profile and the toolchain (`rustc -vV`). A hit
///   returns without starting cargo. Entries live in the cache directory
///   (default `<target_dir>/sandbox-compiler/cache`) and survive restarts.
/// - **Replay**: cargo runs rustc for the tree's own crate through a
///   recording wrapper. When a later build of a one-crate tree without a
///   build script finds only that package's files changed (no manifest,
///   lockfile or dependency), it runs the recorded rustc command (in the
///   same jail, for an untrusted tree) instead of cargo — the ~50–60 ms
///   cargo spends starting and fingerprinting is most of what a watched
///   save waits for besides rustc ([`BuildOutput::replayed`]). Anything
///   else, or a replay that cannot finish cleanly, goes through cargo.
///
/// ```no_run
/// use sandbox_compiler::{BuildRequest, CargoCompiler, Compiler};
///
/// # fn main() -> sandbox_compiler::Result<()> {
/// let compiler = CargoCompiler::builder()
///     .target_dir("/var/cache/sandbox/target")
///     .cache_dir("/var/cache/sandbox/artifacts")
///     .build()?;
/// let output = compiler.build(&BuildRequest::new("/srv/sandboxes/counter").offline(true))?;
/// assert!(!output.artifacts.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CargoCompiler {
    /// The cargo configured with [`CargoCompilerBuilder::cargo`], if any.
    cargo: Option<PathBuf>,
    rustc: PathBuf,
    target_dir: PathBuf,
    state_dir: PathBuf,
    cache_dir: PathBuf,
    cache: Cache,
    toolchain: OnceLock<Toolchain>,
    /// Canonical folders outside the source trees that an untrusted tree
    /// may depend on by path (read-only in its jail).
    shared_crates: Vec<PathBuf>,
    /// An empty folder `cargo fetch` runs in: cargo reads configuration
    /// (`.cargo/config.toml`) and rustup reads toolchain overrides from the
    /// working directory and its parents, so running in the tree would obey
    /// the tree's.
    neutral_dir: PathBuf,
    /// How cargo last compiled each single-crate tree, per kind of build
    /// ([`CaptureKey`]), for rebuilds that only the tree's own sources call
    /// for (`replay.rs`).
    captures: Mutex<HashMap<CaptureKey, Capture>>,
}

/// Which build of a tree a capture replays: the tree, and what else goes
/// into the rustc command — jailed or not (another target dir, and a
/// command recorded in a jail is never run outside one), the profile, the
/// debug info.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CaptureKey {
    source: PathBuf,
    jailed: bool,
    profile: Profile,
    debug_info: &'static str,
}

impl CaptureKey {
    fn new(source: &Path, request: &BuildRequest) -> Self {
        Self {
            source: source.to_owned(),
            jailed: request.jailed,
            profile: request.profile,
            debug_info: request.debug_info.cargo_value().unwrap_or("profile"),
        }
    }
}

/// A cargo target directory and the host-only folder beside it that holds
/// its lock and bookkeeping (a jailed build can write its target dir, so
/// nothing the host relies on lives inside it).
#[derive(Debug, Clone)]
struct TargetDir {
    dir: PathBuf,
    state: PathBuf,
}

/// Configures a [`CargoCompiler`]; made by [`CargoCompiler::builder`].
#[derive(Debug, Clone, Default)]
pub struct CargoCompilerBuilder {
    target_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    cargo: Option<PathBuf>,
    rustc: Option<PathBuf>,
    shared_crates: Vec<PathBuf>,
}

impl CargoCompilerBuilder {
    /// The cargo target directory shared by every build (required). Created
    /// if missing.
    pub fn target_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.target_dir = Some(dir.into());
        self
    }

    /// Where cache entries and artifact copies live. Default:
    /// `<target_dir>/sandbox-compiler/cache`.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// The cargo program to run. Default: the `cargo` of the toolchain
    /// [`rustc`](Self::rustc) belongs to (`<sysroot>/bin/cargo`), else
    /// `cargo` looked up on `PATH`.
    pub fn cargo(mut self, program: impl Into<PathBuf>) -> Self {
        self.cargo = Some(program.into());
        self
    }

    /// The rustc asked for the toolchain version that is part of the cache
    /// key. Default: `rustc`, looked up on `PATH`. Builds run that
    /// toolchain's own binaries (`<sysroot>/bin/rustc`, given to cargo as
    /// `RUSTC`), so they skip rustup's proxies (~10 ms each) and compile with
    /// exactly the toolchain the cache key names, whatever toolchain
    /// override the build's folder would pick.
    pub fn rustc(mut self, program: impl Into<PathBuf>) -> Self {
        self.rustc = Some(program.into());
        self
    }

    /// A crate outside the source trees that untrusted trees may depend on
    /// by `path` — typically the plugin API crate. Admission lets such a
    /// dependency through (any other path outside a tree is refused), the
    /// build jail may read it, and its dependencies are built once into a
    /// *seed* target directory that every untrusted tree's own target
    /// directory starts from (a copy: no tree can write what another tree
    /// links), so `abi_stable` and friends do not compile again per tree.
    /// A folder that does not exist is ignored. May be called repeatedly.
    pub fn shared_crate(mut self, dir: impl Into<PathBuf>) -> Self {
        self.shared_crates.push(dir.into());
        self
    }

    /// Creates the directories and the compiler.
    pub fn build(self) -> Result<CargoCompiler> {
        let target_dir = self.target_dir.ok_or_else(|| Error::Config {
            reason: "no target directory was set; call `CargoCompilerBuilder::target_dir` with a directory \
                     the compiler may share between sandboxes"
                .to_owned(),
        })?;
        let target_dir = absolute(&target_dir)?;
        let state_dir = target_dir.join("sandbox-compiler");
        let cache_dir = match self.cache_dir {
            Some(dir) => absolute(&dir)?,
            None => state_dir.join("cache"),
        };
        for dir in [&target_dir, &state_dir, &cache_dir] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let neutral_dir = state_dir.join("neutral");
        std::fs::create_dir_all(&neutral_dir).map_err(|e| Error::io(&neutral_dir, e))?;
        let cache = Cache::new(cache_dir.clone());
        cache.sweep_stale_temps();
        CargoCompiler::sweep_trees(&state_dir);
        let shared_crates = self
            .shared_crates
            .iter()
            .filter_map(|dir| std::fs::canonicalize(dir).ok())
            .filter(|dir| dir.join("Cargo.toml").is_file())
            .collect();
        Ok(CargoCompiler {
            cargo: self.cargo,
            rustc: self.rustc.unwrap_or_else(|| PathBuf::from("rustc")),
            target_dir,
            state_dir,
            cache_dir,
            cache,
            toolchain: OnceLock::new(),
            shared_crates,
            neutral_dir,
            captures: Mutex::new(HashMap::new()),
        })
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(path, e))
}

/// What `rustc -vV` and `rustc --print sysroot` said.
#[derive(Debug)]
struct Toolchain {
    verbose_version: String,
    host: String,
    /// The toolchain's own rustc (not a rustup proxy), when it has one.
    rustc: Option<PathBuf>,
    /// The toolchain's own cargo, when it has one.
    cargo: Option<PathBuf>,
}

impl CargoCompiler {
    /// A builder; only [`target_dir`](CargoCompilerBuilder::target_dir) is
    /// required.
    pub fn builder() -> CargoCompilerBuilder {
        CargoCompilerBuilder::default()
    }

    /// A compiler building into `target_dir`, with the cache inside it and
    /// `cargo` and `rustc` from `PATH`.
    pub fn new(target_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::builder().target_dir(target_dir).build()
    }

    /// The shared cargo target directory.
    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    fn toolchain(&self) -> Result<&Toolchain> {
        if let Some(toolchain) = self.toolchain.get() {
            return Ok(toolchain);
        }
        let toolchain = query_toolchain(&self.rustc)?;
        Ok(self.toolchain.get_or_init(|| toolchain))
    }

    fn cache_key(
        &self,
        source_hash: &str,
        request: &BuildRequest,
        toolchain: &Toolchain,
    ) -> String {
        let mut hasher = Sha256::new();
        for part in [
            "sandbox-compiler key v2",
            source_hash,
            if request.jailed { "jailed" } else { "trusted" },
            request.profile.as_str(),
            request.debug_info.cargo_value().unwrap_or("profile"),
            &toolchain.verbose_version,
            &toolchain.host,
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hex::encode(hasher.finalize())
    }

    fn limits(request: &BuildRequest) -> ChildLimits {
        ChildLimits {
            address_space: request.memory_limit,
            core_size: Some(0),
            ..ChildLimits::default()
        }
    }

    /// Runs cargo (cleaning and rebuilding libraries another tree produced
    /// last) and returns this tree's cdylibs and the build's diagnostics.
    fn build_locked(
        &self,
        request: &BuildRequest,
        source: &Path,
        target: &TargetDir,
        lock: &TargetLock,
        deadline: Instant,
        jail: Option<&JailConfig>,
    ) -> Result<(Vec<BuiltArtifact>, Vec<Diagnostic>)> {
        let mut owners = lock.owners();
        let mut cleaned = BTreeSet::new();
        loop {
            let messages = self.cargo_build(request, source, target, deadline, jail)?;
            // A file cargo found fresh is only ours if we were the last to
            // produce it: packages of other trees with the same name and
            // relative path share fingerprints and (unhashed) file names.
            // A tree's own target dir holds only its packages and the
            // seed's (the shared crates, at the same paths): nothing to
            // clean. The shared dir is where trees meet.
            let shared = target.dir == self.target_dir;
            let stale: BTreeSet<String> = messages
                .artifacts
                .iter()
                .filter(|a| {
                    shared
                        && a.fresh
                        && a.files
                            .iter()
                            .any(|f| owners.get(f) != Some(a.manifest_path.as_path()))
                })
                .map(package_name)
                .filter(|p| !cleaned.contains(p))
                .collect();
            if stale.is_empty() {
                for artifact in &messages.artifacts {
                    for file in &artifact.files {
                        owners.set(file.clone(), artifact.manifest_path.clone());
                    }
                }
                lock.save_owners(&owners)?;
                let cdylibs = messages
                    .artifacts
                    .into_iter()
                    .filter(|a| a.cdylib.is_some() && a.manifest_path.starts_with(source));
                return Ok((cdylibs.collect(), messages.diagnostics));
            }
            for package in stale {
                tracing::debug!(%package, "outputs were last built from another tree; cleaning them");
                self.cargo_clean(request, source, target, &package, deadline, jail)?;
                cleaned.insert(package);
            }
        }
    }

    /// A cargo child: the configured cargo, else the toolchain's own, with
    /// `RUSTC` set to the toolchain's own rustc (see
    /// [`CargoCompilerBuilder::rustc`]). The toolchain is queried before any
    /// build starts; before that (never, today) the defaults from `PATH`.
    fn cargo_spec(&self) -> ChildSpec {
        let toolchain = self.toolchain.get();
        let cargo = self
            .cargo
            .clone()
            .or_else(|| toolchain.and_then(|t| t.cargo.clone()))
            .unwrap_or_else(|| PathBuf::from("cargo"));
        let spec = ChildSpec::new(cargo);
        match toolchain.and_then(|t| t.rustc.as_ref()) {
            Some(rustc) => spec.env("RUSTC", rustc),
            None => spec,
        }
    }

    fn cargo_command(
        &self,
        request: &BuildRequest,
        source: &Path,
        target: &TargetDir,
        subcommand: &str,
        jail: Option<&JailConfig>,
    ) -> ChildSpec {
        let mut spec = self
            .cargo_spec()
            .arg(subcommand)
            .arg("--manifest-path")
            .arg(source.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target.dir)
            .current_dir(source)
            .env("CARGO_TERM_COLOR", "never")
            .limits(Self::limits(request));
        if request.offline || jail.is_some() {
            spec = spec.arg("--offline");
        }
        if let Some(jail) = jail {
            let tmp = target.dir.join("tmp");
            // Best effort: cargo reports a temp dir it cannot use.
            let _ = std::fs::create_dir_all(&tmp);
            spec = spec.jail(jail.clone()).env("TMPDIR", tmp);
        }
        if request.profile == Profile::Release {
            spec = spec.arg("--release");
        }
        if let Some(debug) = request.debug_info.cargo_value() {
            let profile = match request.profile {
                Profile::Debug => "CARGO_PROFILE_DEV_DEBUG",
                Profile::Release => "CARGO_PROFILE_RELEASE_DEBUG",
            };
            spec = spec.env(profile, debug);
        }
        spec
    }

    fn cargo_build(
        &self,
        request: &BuildRequest,
        source: &Path,
        target: &TargetDir,
        deadline: Instant,
        jail: Option<&JailConfig>,
    ) -> Result<BuildMessages> {
        let mut spec = self
            .cargo_command(request, source, target, "build", jail)
            .args(["--lib", "--message-format=json"]);
        for (key, value) in replay::prepare(&target.dir)? {
            spec = spec.env(key, value);
        }
        if read_manifest(&source.join("Cargo.toml")).is_some_and(|m| m.contains_key("workspace")) {
            spec = spec.arg("--workspace");
        }
        let root = source.to_owned();
        let finished = child::run(&spec, deadline, move |stdout| messages::read(stdout, &root))
            .map_err(|e| child::build_error(e, request.timeout))?;
        let messages = finished.stdout;
        if finished.status.success() {
            return Ok(messages);
        }
        if messages.diagnostics.iter().any(|d| d.level == Level::Error) {
            return Err(Error::Compile {
                diagnostics: messages.diagnostics,
            });
        }
        if finished.stderr.contains("no library targets found") {
            return Err(Error::NoPluginModules {
                path: source.to_owned(),
            });
        }
        Err(Error::Cargo {
            status: finished.status.to_string(),
            stderr: useful_tail(&finished.stderr),
        })
    }

    /// `cargo fetch`: downloads what the lockfile names (network unless the
    /// request is offline), running none of the source's code. Cargo runs
    /// in an empty folder of ours, so neither it nor rustup reads the
    /// tree's configuration or toolchain override (admission refuses those
    /// anyway): it reads only the manifests and the lockfile.
    fn cargo_fetch(&self, request: &BuildRequest, source: &Path, deadline: Instant) -> Result<()> {
        let mut spec = self
            .cargo_spec()
            .args(["fetch", "--manifest-path"])
            .arg(source.join("Cargo.toml"))
            .current_dir(&self.neutral_dir)
            .env("CARGO_TERM_COLOR", "never")
            .limits(Self::limits(request));
        if request.offline {
            spec = spec.arg("--offline");
        }
        let finished = child::run(&spec, deadline, child::discard)
            .map_err(|e| child::build_error(e, request.timeout))?;
        if finished.status.success() {
            Ok(())
        } else {
            Err(Error::Cargo {
                status: finished.status.to_string(),
                stderr: useful_tail(&finished.stderr),
            })
        }
    }

    /// The jail of a build of untrusted source: no network, and the build
    /// rule set of the jail crate ([`FsRules::for_build`]): the toolchain
    /// and the source trees read-only, writes only to this tree's own
    /// target dir (temp files included: `TMPDIR` points inside it).
    fn build_jail(&self, source: &Path, roots: &[PathBuf], target: &TargetDir) -> JailConfig {
        JailConfig::build(FsRules::for_build(&BuildTree {
            source,
            path_dependencies: roots,
            shared_crates: &self.shared_crates,
            target_dir: &target.dir,
        }))
    }

    /// The target directory of untrusted tree `source`: its own, under
    /// `<target>/sandbox-compiler/trees/<hash of its path>/`, which only its
    /// jailed builds write. Same-tree builds share it (the same code).
    fn tree_target(&self, source: &Path) -> Result<TargetDir> {
        let key = hex::encode(Sha256::digest(source.as_os_str().as_encoded_bytes()));
        let root = self.state_dir.join("trees").join(&key[..24]);
        let dirs = TargetDir {
            dir: root.join("target"),
            state: root.join("state"),
        };
        for dir in [&dirs.dir, &dirs.state] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        // Which tree this is, for the sweep of trees that are gone.
        let record = dirs.state.join("source");
        if !record.exists() {
            std::fs::write(&record, source.as_os_str().as_encoded_bytes())
                .map_err(|e| Error::io(&record, e))?;
        }
        Ok(dirs)
    }

    /// Removes the target dir of the untrusted tree at `root`
    /// (`trees/<hash>`) when no build holds it: its outputs and stamps go,
    /// its lock file stays (a build waiting on it then starts again from
    /// the seed). Returns whether it was removed.
    fn drop_tree(root: &Path, wait: bool) -> Result<bool> {
        let state = root.join("state");
        if !state.is_dir() {
            return Ok(false);
        }
        let _lock = if wait {
            TargetLock::acquire(&state)?
        } else {
            match TargetLock::try_acquire(&state)? {
                Some(lock) => lock,
                None => return Ok(false),
            }
        };
        for stamp in ["seeded", "fetched", "owners.json"] {
            let _ = std::fs::remove_file(state.join(stamp));
        }
        let target = root.join("target");
        match std::fs::remove_dir_all(&target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&target, e)),
        }
    }

    /// Drops the target dirs of untrusted trees whose source folder is
    /// gone (each is a copy of the seed plus its own outputs, 100+ MB in a
    /// debug build). Best effort; trees being built are skipped.
    fn sweep_trees(state_dir: &Path) {
        let Ok(entries) = std::fs::read_dir(state_dir.join("trees")) else {
            return;
        };
        for entry in entries.flatten() {
            let root = entry.path();
            let gone = std::fs::read(root.join("state/source"))
                .map(|bytes| !Path::new(&String::from_utf8_lossy(&bytes).into_owned()).exists())
                .unwrap_or(false);
            if gone {
                match Self::drop_tree(&root, false) {
                    Ok(true) => {
                        tracing::debug!(tree = %root.display(), "dropped the target dir of a tree that is gone")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(tree = %root.display(), error = %e, "could not drop a tree's target dir")
                    }
                }
            }
        }
    }

    /// Fills a tree's new target directory with a copy of the seed: the
    /// shared crates' dependencies, built once (see
    /// [`CargoCompilerBuilder::shared_crate`]). A copy, not links: a build
    /// script may write anything in its target directory, and must not
    /// reach what other trees link. Does nothing for a directory that was
    /// seeded before or when no shared crate is configured.
    fn start_from_seed(
        &self,
        request: &BuildRequest,
        target: &TargetDir,
        deadline: Instant,
    ) -> Result<()> {
        let stamp = target.state.join("seeded");
        if stamp.exists() || self.shared_crates.is_empty() {
            return Ok(());
        }
        match self.seed(request, deadline) {
            Ok((seed, _lock)) => {
                // Copied under the seed's lock: another compiler may be
                // bringing the seed up to date (cargo replaces files).
                copy_tree(&seed, &target.dir)?;
                tracing::debug!(seed = %seed.display(), "target directory seeded");
            }
            // A seed is an optimization: without one the tree builds its
            // dependencies itself.
            Err(e) => tracing::warn!(error = %e, "could not build the dependency seed"),
        }
        std::fs::write(&stamp, b"").map_err(|e| Error::io(&stamp, e))
    }

    /// Builds (or finds fresh) the seed target directory of this request's
    /// profile and returns it, with its lock held.
    fn seed(&self, request: &BuildRequest, deadline: Instant) -> Result<(PathBuf, TargetLock)> {
        let debug = request.debug_info.cargo_value().unwrap_or("profile");
        let root = self
            .state_dir
            .join("seed")
            .join(format!("{}-{debug}", request.profile.as_str()));
        let package = root.join("package");
        let target = TargetDir {
            dir: root.join("target"),
            state: root.join("state"),
        };
        for dir in [&package, &target.dir, &target.state] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let lock = TargetLock::acquire(&target.state)?;
        let mut manifest = String::from(
            "# Generated by sandbox-compiler: the dependencies every untrusted tree\n\
             # shares, built once and copied into each tree's own target directory.\n\
             [package]\nname = \"sandbox-seed\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             publish = false\n\n[lib]\npath = \"lib.rs\"\n\n[dependencies]\n",
        );
        for (i, dir) in self.shared_crates.iter().enumerate() {
            let name = read_manifest(&dir.join("Cargo.toml"))
                .and_then(|m| m.get("package")?.get("name")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("shared{i}"));
            manifest.push_str(&format!(
                "{name} = {{ path = {} }}\n",
                toml::Value::String(dir.display().to_string())
            ));
        }
        manifest.push_str("\n[workspace]\n");
        let write = |name: &str, text: &str| {
            let path = package.join(name);
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
        };
        write("Cargo.toml", &manifest)?;
        write("lib.rs", "")?;
        // The shared crate's own lockfile, if it lives in a workspace that
        // has one, so the seed resolves to the versions its users got.
        let lockfile = package.join("Cargo.lock");
        if !lockfile.exists() {
            if let Some(found) = self
                .shared_crates
                .iter()
                .flat_map(|dir| dir.ancestors())
                .map(|dir| dir.join("Cargo.lock"))
                .find(|path| path.is_file())
            {
                std::fs::copy(&found, &lockfile).map_err(|e| Error::io(&lockfile, e))?;
            }
        }
        self.cargo_fetch(request, &package, deadline)?;
        let jail = self.build_jail(&package, &[], &target);
        let spec = self
            .cargo_command(request, &package, &target, "build", Some(&jail))
            .arg("--lib");
        let finished = child::run(&spec, deadline, child::discard)
            .map_err(|e| child::build_error(e, request.timeout))?;
        if !finished.status.success() {
            return Err(Error::Cargo {
                status: finished.status.to_string(),
                stderr: useful_tail(&finished.stderr),
            });
        }
        Ok((target.dir, lock))
    }

    /// Runs `cargo fetch` unless the tree's manifests and lockfiles are the
    /// ones last fetched for (fetching costs most of a second even when
    /// everything is downloaded already).
    fn fetch_if_changed(
        &self,
        request: &BuildRequest,
        source: &Path,
        roots: &[PathBuf],
        target: &TargetDir,
        deadline: Instant,
    ) -> Result<()> {
        let stamp = target.state.join("fetched");
        let digest = admission::manifests_digest(source, roots)?;
        if std::fs::read_to_string(&stamp).is_ok_and(|last| last == digest) {
            return Ok(());
        }
        self.cargo_fetch(request, source, deadline)?;
        // Fetching may have written the lockfile.
        let digest = admission::manifests_digest(source, roots)?;
        std::fs::write(&stamp, digest).map_err(|e| Error::io(&stamp, e))
    }

    fn cargo_clean(
        &self,
        request: &BuildRequest,
        source: &Path,
        target: &TargetDir,
        package: &str,
        deadline: Instant,
        jail: Option<&JailConfig>,
    ) -> Result<()> {
        let spec = self
            .cargo_command(request, source, target, "clean", jail)
            .args(["--package", package]);
        let finished = child::run(&spec, deadline, child::discard)
            .map_err(|e| child::build_error(e, request.timeout))?;
        if finished.status.success() {
            Ok(())
        } else {
            Err(Error::Cargo {
                status: finished.status.to_string(),
                stderr: useful_tail(&finished.stderr),
            })
        }
    }

    /// Reads, hashes and validates the built libraries (while the target
    /// directory is still locked: the next build overwrites them).
    fn collect(cdylibs: &[BuiltArtifact]) -> Result<Vec<NewArtifact>> {
        let mut out = Vec::with_capacity(cdylibs.len());
        for artifact in cdylibs {
            let Some(file) = &artifact.cdylib else {
                continue;
            };
            let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
            validate_bytes(&bytes).map_err(|reason| Error::NotAPlugin {
                path: file.clone(),
                reason,
            })?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            let file_name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(NewArtifact {
                package: package_name(artifact),
                name: artifact.target_name.clone(),
                file_name,
                bytes,
                sha256,
            });
        }
        Ok(out)
    }

    /// Rebuilds tree `source` by replaying `capture`, cargo's last rustc
    /// command for it (the caller checked it covers the change; see
    /// `replay.rs`); `None` means cargo must build it.
    fn replay(
        &self,
        request: &BuildRequest,
        source: &Path,
        capture: &Capture,
        target: &TargetDir,
        deadline: Instant,
        jail: Option<&JailConfig>,
    ) -> Result<Option<(Vec<BuiltArtifact>, Vec<Diagnostic>)>> {
        let Some(rustc) = self.toolchain()?.rustc.as_ref() else {
            return Ok(None);
        };
        let replayed = capture.run(
            rustc,
            source,
            &target.dir,
            jail,
            Self::limits(request),
            deadline,
        );
        if let Err(Error::Compile { .. }) = &replayed {
            // The same sources would fail under cargo; the capture stays
            // valid for the fix.
            tracing::debug!("replayed rustc reported compile errors");
        }
        let Some((artifact, diagnostics)) = replayed? else {
            return Ok(None);
        };
        tracing::debug!("rebuilt by replaying rustc (no cargo)");
        Ok(Some((vec![artifact], diagnostics)))
    }

    /// Records a replayed library in the shared target dir as `source`'s,
    /// as `build_locked` records cargo's outputs: the library (`deps/`) and
    /// the copy cargo names (one folder up, a hard link that may now hold
    /// it too), so another tree's cargo finding them fresh rebuilds them.
    fn claim(&self, target: &TargetDir, lock: &TargetLock, built: &[BuiltArtifact]) -> Result<()> {
        if target.dir != self.target_dir {
            return Ok(()); // a tree's own dir: nobody else builds there
        }
        let mut owners = lock.owners();
        for artifact in built {
            for file in &artifact.files {
                let uplifted = file
                    .parent()
                    .and_then(Path::parent)
                    .zip(file.file_name())
                    .map(|(dir, name)| dir.join(name));
                for file in std::iter::once(file.clone()).chain(uplifted) {
                    owners.set(file, artifact.manifest_path.clone());
                }
            }
        }
        lock.save_owners(&owners)
    }

    fn capture_of(&self, key: &CaptureKey) -> Option<Capture> {
        let captures = self.captures.lock().unwrap_or_else(|e| e.into_inner());
        captures.get(key).cloned()
    }

    fn remember(&self, key: CaptureKey, capture: Option<Capture>) {
        let mut captures = self.captures.lock().unwrap_or_else(|e| e.into_inner());
        match capture {
            Some(capture) => captures.insert(key, capture),
            None => captures.remove(&key),
        };
    }

    fn hit(hit: Hit, started: Instant) -> BuildOutput {
        BuildOutput {
            artifacts: hit.artifacts,
            warnings: hit.warnings,
            cached: true,
            replayed: false,
            source_hash: hit.source_hash,
            duration: started.elapsed(),
        }
    }
}

impl Compiler for CargoCompiler {
    #[tracing::instrument(name = "compile", skip_all, fields(source = %request.source.display(), profile = %request.profile))]
    fn build(&self, request: &BuildRequest) -> Result<BuildOutput> {
        let started = Instant::now();
        let source = check_source(&request.source)?;
        if request.jailed {
            admission::admit(&source, &self.shared_crates)?;
        }
        let toolchain = self.toolchain()?;
        let before = hash::digest(&source)?;
        let source_hash = before.hex();
        let key = self.cache_key(&source_hash, request, toolchain);
        tracing::debug!(files = before.len(), %source_hash, %key, "hashed source tree");
        if let Some(hit) = self.cache.lookup(&key, &source) {
            tracing::debug!("cache hit");
            return Ok(Self::hit(hit, started));
        }

        let target = if request.jailed {
            self.tree_target(&source)?
        } else {
            TargetDir {
                dir: self.target_dir.clone(),
                state: self.state_dir.clone(),
            }
        };
        let lock = TargetLock::acquire(&target.state)?;
        // Someone may have built the same tree while we waited.
        if let Some(hit) = self.cache.lookup(&key, &source) {
            tracing::debug!("cache hit after waiting for the target directory");
            return Ok(Self::hit(hit, started));
        }
        let deadline = Instant::now() + request.timeout;
        tracing::info!(jailed = request.jailed, "building with cargo");
        let jail = if request.jailed {
            // Dependencies are fetched by cargo itself, outside the jail (no
            // code of the source runs, no configuration of it is read); the
            // build then runs offline inside it, into the tree's own target
            // directory.
            self.start_from_seed(request, &target, deadline)?;
            self.fetch_if_changed(request, &source, before.roots(), &target, deadline)?;
            Some(self.build_jail(&source, before.roots(), &target))
        } else {
            None
        };
        let capture_key = CaptureKey::new(&source, request);
        let replayed = match self.capture_of(&capture_key).filter(|c| c.covers(&before)) {
            Some(capture) => {
                self.replay(request, &source, &capture, &target, deadline, jail.as_ref())?
            }
            None => None,
        };
        let replay_used = replayed.is_some();
        let (cdylibs, diagnostics) = match replayed {
            Some(built) => {
                self.claim(&target, &lock, &built.0)?;
                built
            }
            None => self.build_locked(request, &source, &target, &lock, deadline, jail.as_ref())?,
        };
        if cdylibs.is_empty() {
            return Err(Error::NoPluginModules {
                path: request.source.clone(),
            });
        }
        let artifacts = Self::collect(&cdylibs)?;
        let capture = if replay_used {
            self.capture_of(&capture_key)
        } else {
            Capture::read(&target.dir, before.clone())
        };
        drop(lock);

        // Cargo writes `Cargo.lock` during a build; anything else that
        // changed means the tree was edited meanwhile, and the result must
        // not be found under either hash.
        let after = hash::digest(&source)?;
        // The next replay starts from the tree this build compiled: the
        // one hashed, with the lockfile cargo may have written.
        let compiled = after == before || before.same_except_lockfile(&after);
        self.remember(
            capture_key,
            capture.filter(|_| compiled).map(|mut capture| {
                capture.digest = after.clone();
                capture
            }),
        );
        let (store_key, source_hash) = if after == before {
            (key, source_hash)
        } else if before.same_except_lockfile(&after) {
            let hash = after.hex();
            (self.cache_key(&hash, request, toolchain), hash)
        } else {
            tracing::warn!("source tree changed during the build; not caching the result");
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            (
                hex::encode(Sha256::digest(format!("{key}:volatile:{nanos}"))),
                source_hash,
            )
        };
        let warnings: Vec<Diagnostic> = diagnostics
            .into_iter()
            .filter(|d| d.level != Level::Error)
            .collect();
        let artifacts = self.cache.store(
            &store_key,
            &source,
            &source_hash,
            request.profile,
            &artifacts,
            &warnings,
        )?;
        let duration = started.elapsed();
        tracing::info!(
            ?duration,
            artifacts = artifacts.len(),
            warnings = warnings.len(),
            "built"
        );
        Ok(BuildOutput {
            artifacts,
            warnings,
            cached: false,
            replayed: replay_used,
            source_hash,
            duration,
        })
    }

    #[tracing::instrument(name = "forget", skip_all, fields(source = %source.display()))]
    fn forget(&self, source: &Path) -> Result<()> {
        let mut forms = vec![absolute(source)?];
        if let Ok(canonical) = std::fs::canonicalize(source) {
            if canonical != forms[0] {
                forms.push(canonical);
            }
        }
        for form in forms {
            self.captures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|key, _| key.source != form);
            self.cache.forget(&form)?;
            let key = hex::encode(Sha256::digest(form.as_os_str().as_encoded_bytes()));
            Self::drop_tree(&self.state_dir.join("trees").join(&key[..24]), true)?;
        }
        Ok(())
    }
}

/// The canonical source directory, after checking it is a Cargo project.
fn check_source(path: &Path) -> Result<PathBuf> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::SourceMissing {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    if !meta.is_dir() {
        return Err(Error::NotCargoProject {
            path: path.to_owned(),
        });
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    if !canonical.join("Cargo.toml").is_file() {
        return Err(Error::NotCargoProject {
            path: path.to_owned(),
        });
    }
    Ok(canonical)
}

fn query_toolchain(rustc: &Path) -> Result<Toolchain> {
    let error = |reason: String| Error::Toolchain {
        program: rustc.to_owned(),
        reason,
    };
    let spec = ChildSpec::new(rustc).arg("-vV");
    let finished =
        child::output(&spec, Instant::now() + TOOLCHAIN_QUERY_TIMEOUT).map_err(|e| match e {
            RunError::Run(Failure::TimedOut) => error(format!(
                "it did not answer within {TOOLCHAIN_QUERY_TIMEOUT:?}"
            )),
            RunError::Spawn(e) => error(e.to_string()),
            RunError::Run(e) => error(e.to_string()),
        })?;
    if !finished.status.success() {
        return Err(error(format!(
            "it failed ({}): {}",
            finished.status,
            useful_tail(&finished.stderr)
        )));
    }
    let verbose_version = finished.stdout;
    let host = verbose_version
        .lines()
        .find_map(|l| l.strip_prefix("host:"))
        .map(|h| h.trim().to_owned())
        .ok_or_else(|| error("its `-vV` output has no `host:` line".to_owned()))?;
    let sysroot = sysroot(rustc);
    let own = |name: &str| {
        sysroot
            .as_ref()
            .map(|root| root.join("bin").join(name))
            .filter(|path| path.is_file())
    };
    Ok(Toolchain {
        verbose_version,
        host,
        rustc: own("rustc"),
        cargo: own("cargo"),
    })
}

/// `rustc --print sysroot`, when it answers (a rustc that does not is
/// still usable through the configured program).
fn sysroot(rustc: &Path) -> Option<PathBuf> {
    let spec = ChildSpec::new(rustc).args(["--print", "sysroot"]);
    let finished = child::output(&spec, Instant::now() + TOOLCHAIN_QUERY_TIMEOUT).ok()?;
    let root = finished.stdout.trim();
    (finished.status.success() && !root.is_empty()).then(|| PathBuf::from(root))
}

/// The cargo package name of an artifact: from its manifest, or failing
/// that from the package id (`path+file:///dir#name@1.0`,
/// `path+file:///dir/name#1.0`, or the older `name 1.0 (source)`).
fn package_name(artifact: &BuiltArtifact) -> String {
    if let Some(name) = read_manifest(&artifact.manifest_path)
        .and_then(|m| m.get("package")?.get("name")?.as_str().map(str::to_owned))
    {
        return name;
    }
    let id = artifact.package_id.as_str();
    if let Some((url, fragment)) = id.split_once('#') {
        if let Some((name, _version)) = fragment.split_once('@') {
            return name.to_owned();
        }
        return url.rsplit('/').next().unwrap_or(url).to_owned();
    }
    id.split_whitespace().next().unwrap_or(id).to_owned()
}

/// The part of cargo's stderr worth showing: from the first `error` line
/// on, or else the last lines; at most 8 KiB.
fn useful_tail(stderr: &str) -> String {
    const MAX: usize = 8 * 1024;
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with("error"))
        .unwrap_or_else(|| lines.len().saturating_sub(20));
    let text = lines[start..].join("\n");
    if text.len() <= MAX {
        return text;
    }
    let mut cut = text.len() - MAX;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("...{}", &text[cut..])
}

/// Copies the folder `from` into `to` (which may exist), keeping file
/// modes and modification times — cargo judges freshness by them.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(from).to_owned();
            Error::io(&path, e.into())
        })?;
        let Ok(relative) = entry.path().strip_prefix(from) else {
            continue;
        };
        let dest = to.join(relative);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &dest).map_err(|e| Error::io(&dest, e))?;
            let modified = entry
                .metadata()
                .map_err(|e| Error::io(entry.path(), e.into()))?
                .modified()
                .map_err(|e| Error::io(entry.path(), e))?;
            let file = std::fs::File::options()
                .write(true)
                .open(&dest)
                .map_err(|e| Error::io(&dest, e))?;
            file.set_modified(modified)
                .map_err(|e| Error::io(&dest, e))?;
        }
        // Symlinks (none in a cargo target dir) are skipped.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(id: &str) -> BuiltArtifact {
        BuiltArtifact {
            package_id: id.to_owned(),
            manifest_path: PathBuf::from("/nonexistent/Cargo.toml"),
            target_name: "x".to_owned(),
            files: Vec::new(),
            cdylib: None,
            fresh: false,
        }
    }

    #[test]
    fn a_capture_key_tells_jailed_trusted_profiles_and_debug_info_apart() {
        let source = Path::new("/src/tree");
        let base = BuildRequest::new(source);
        let key = |request: &BuildRequest| CaptureKey::new(source, request);
        let variants = [
            key(&base.clone().jailed(true)),
            key(&base.clone().jailed(false)),
            key(&base.clone().jailed(true).profile(Profile::Release)),
            key(&base.clone().jailed(true).debug_info(crate::DebugInfo::Full)),
        ];
        for (i, a) in variants.iter().enumerate() {
            for b in &variants[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(key(&base.clone().jailed(true)), variants[0]);
        assert_ne!(CaptureKey::new(Path::new("/src/other"), &base), key(&base));
    }

    #[test]
    fn package_names_from_ids() {
        assert_eq!(
            package_name(&artifact("path+file:///tmp/a#counter@0.1.0")),
            "counter"
        );
        assert_eq!(
            package_name(&artifact("path+file:///tmp/counter#0.1.0")),
            "counter"
        );
        assert_eq!(
            package_name(&artifact("counter 0.1.0 (path+file:///tmp/a)")),
            "counter"
        );
    }

    #[test]
    fn useful_tail_starts_at_the_first_error() {
        let stderr =
            "   Compiling a v0.1.0\nerror: failed to parse manifest\n\nCaused by:\n  bad key\n";
        assert_eq!(
            useful_tail(stderr),
            "error: failed to parse manifest\n\nCaused by:\n  bad key"
        );
        assert_eq!(useful_tail(&"x\n".repeat(30)).lines().count(), 20);
    }
}
