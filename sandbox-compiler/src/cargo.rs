//! [`CargoCompiler`]: the cargo-backed [`Compiler`].

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sandbox_isolate::spawn::{ChildLimits, ChildSpec};
use sha2::{Digest, Sha256};

use crate::cache::{Cache, Hit, NewArtifact};
use crate::child::{self, RunError};
use crate::hash::{self, read_manifest};
use crate::messages::{self, BuildMessages, BuiltArtifact};
use crate::target_lock::TargetLock;
use crate::validate::validate_bytes;
use sandbox_isolate::jail::{FsRules, JailConfig};

use crate::{BuildOutput, BuildRequest, Compiler, Diagnostic, Error, Level, Profile, Result};

/// How long `rustc -vV` may take.
const TOOLCHAIN_QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The default [`Compiler`]: runs `cargo build` in a child process.
///
/// - **Shared target directory**: every sandbox builds into one target
///   directory, so dependencies (`abi_stable`, `serde`...) compile once.
///   Builds into one target directory are serialized with a file lock, and
///   outputs that another tree with a same-named package produced last are
///   cleaned and rebuilt (cargo does not hash cdylib file names, and hashes
///   workspace members by their relative path).
/// - **Child process**: cargo starts through `sandbox_isolate::spawn`, so it
///   gets a scrubbed environment (no host `RUSTFLAGS`), `RLIMIT_AS` =
///   [`BuildRequest::memory_limit`] and its own process group, which
///   [`BuildRequest::timeout`] kills whole.
/// - **Cache**: keyed by the sha256 of the source tree (and its `path`
///   dependencies), the profile and the toolchain (`rustc -vV`). A hit
///   returns without starting cargo. Entries live in the cache directory
///   (default `<target_dir>/sandbox-compiler/cache`) and survive restarts.
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
    cargo: PathBuf,
    rustc: PathBuf,
    target_dir: PathBuf,
    state_dir: PathBuf,
    cache_dir: PathBuf,
    cache: Cache,
    toolchain: OnceLock<Toolchain>,
}

/// Configures a [`CargoCompiler`]; made by [`CargoCompiler::builder`].
#[derive(Debug, Clone, Default)]
pub struct CargoCompilerBuilder {
    target_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    cargo: Option<PathBuf>,
    rustc: Option<PathBuf>,
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

    /// The cargo program to run. Default: `cargo`, looked up on `PATH`.
    pub fn cargo(mut self, program: impl Into<PathBuf>) -> Self {
        self.cargo = Some(program.into());
        self
    }

    /// The rustc asked for the toolchain version that is part of the cache
    /// key. Default: `rustc`, looked up on `PATH`.
    pub fn rustc(mut self, program: impl Into<PathBuf>) -> Self {
        self.rustc = Some(program.into());
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
        let cache = Cache::new(cache_dir.clone());
        cache.sweep_stale_temps();
        Ok(CargoCompiler {
            cargo: self.cargo.unwrap_or_else(|| PathBuf::from("cargo")),
            rustc: self.rustc.unwrap_or_else(|| PathBuf::from("rustc")),
            target_dir,
            state_dir,
            cache_dir,
            cache,
            toolchain: OnceLock::new(),
        })
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(path, e))
}

/// What `rustc -vV` said.
#[derive(Debug)]
struct Toolchain {
    verbose_version: String,
    host: String,
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
            "sandbox-compiler key v1",
            source_hash,
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
        lock: &TargetLock,
        deadline: Instant,
        jail: Option<&JailConfig>,
    ) -> Result<(Vec<BuiltArtifact>, Vec<Diagnostic>)> {
        let mut owners = lock.owners();
        let mut cleaned = BTreeSet::new();
        loop {
            let messages = self.cargo_build(request, source, deadline, jail)?;
            // A file cargo found fresh is only ours if we were the last to
            // produce it: packages of other trees with the same name and
            // relative path share fingerprints and (unhashed) file names.
            let stale: BTreeSet<String> = messages
                .artifacts
                .iter()
                .filter(|a| {
                    a.fresh
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
                self.cargo_clean(request, source, &package, deadline, jail)?;
                cleaned.insert(package);
            }
        }
    }

    fn cargo_command(
        &self,
        request: &BuildRequest,
        source: &Path,
        subcommand: &str,
        jail: Option<&JailConfig>,
    ) -> ChildSpec {
        let mut spec = ChildSpec::new(&self.cargo)
            .arg(subcommand)
            .arg("--manifest-path")
            .arg(source.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&self.target_dir)
            .current_dir(source)
            .env("CARGO_TERM_COLOR", "never")
            .limits(Self::limits(request));
        if request.offline || jail.is_some() {
            spec = spec.arg("--offline");
        }
        if let Some(jail) = jail {
            let tmp = self.target_dir.join("tmp");
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
        deadline: Instant,
        jail: Option<&JailConfig>,
    ) -> Result<BuildMessages> {
        let mut spec = self
            .cargo_command(request, source, "build", jail)
            .args(["--lib", "--message-format=json"]);
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
    /// request is offline), running none of the source's code.
    fn cargo_fetch(&self, request: &BuildRequest, source: &Path, deadline: Instant) -> Result<()> {
        let mut spec = ChildSpec::new(&self.cargo)
            .args(["fetch", "--manifest-path"])
            .arg(source.join("Cargo.toml"))
            .current_dir(source)
            .env("CARGO_TERM_COLOR", "never")
            .limits(Self::limits(request));
        if request.offline {
            spec = spec.arg("--offline");
        }
        let finished = child::run(&spec, deadline, |stdout| child::read_tail(stdout, 4096))
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

    /// The jail of a build of untrusted source: no network, the system
    /// libraries and the toolchain read-only, the source trees read-only,
    /// writes only to the target dir (temp files included: `TMPDIR` points
    /// inside it). Host secrets such as `/etc/shadow` stay unreadable.
    fn build_jail(&self, source: &Path, roots: &[PathBuf]) -> JailConfig {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        let from_env = |key: &str, fallback: PathBuf| {
            std::env::var_os(key).map(PathBuf::from).unwrap_or(fallback)
        };
        let mut read_only: Vec<PathBuf> = vec![
            from_env("CARGO_HOME", home.join(".cargo")),
            from_env("RUSTUP_HOME", home.join(".rustup")),
            "/usr".into(),
            "/bin".into(),
            "/lib".into(),
            "/lib64".into(),
            "/proc".into(),
            "/dev/null".into(),
            "/dev/urandom".into(),
            "/etc/ld.so.cache".into(),
            "/etc/passwd".into(),
            "/etc/group".into(),
            "/etc/nsswitch.conf".into(),
            "/etc/localtime".into(),
            source.to_owned(),
        ];
        read_only.extend(roots.iter().cloned());
        // Cargo reads `.cargo/config.toml` of every folder above the source.
        read_only.extend(source.ancestors().map(|dir| dir.join(".cargo")));
        read_only.retain(|p| p.exists());
        let read_write = vec![self.target_dir.clone()];
        JailConfig::build(FsRules {
            read_only,
            read_write,
        })
    }

    fn cargo_clean(
        &self,
        request: &BuildRequest,
        source: &Path,
        package: &str,
        deadline: Instant,
        jail: Option<&JailConfig>,
    ) -> Result<()> {
        let spec = self
            .cargo_command(request, source, "clean", jail)
            .args(["--package", package]);
        let finished = child::run(&spec, deadline, |stdout| child::read_tail(stdout, 4096))
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

    fn hit(hit: Hit, started: Instant) -> BuildOutput {
        BuildOutput {
            artifacts: hit.artifacts,
            warnings: hit.warnings,
            cached: true,
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
        let toolchain = self.toolchain()?;
        let before = hash::digest(&source)?;
        let source_hash = before.hex();
        let key = self.cache_key(&source_hash, request, toolchain);
        tracing::debug!(files = before.len(), %source_hash, %key, "hashed source tree");
        if let Some(hit) = self.cache.lookup(&key, &source) {
            tracing::debug!("cache hit");
            return Ok(Self::hit(hit, started));
        }

        let lock = TargetLock::acquire(&self.state_dir)?;
        // Someone may have built the same tree while we waited.
        if let Some(hit) = self.cache.lookup(&key, &source) {
            tracing::debug!("cache hit after waiting for the target directory");
            return Ok(Self::hit(hit, started));
        }
        let deadline = Instant::now() + request.timeout;
        tracing::info!("building with cargo");
        let jail = if request.jailed {
            // Dependencies are fetched by cargo itself, outside the jail (no
            // code of the source runs); the build then runs offline inside it.
            self.cargo_fetch(request, &source, deadline)?;
            Some(self.build_jail(&source, before.roots()))
        } else {
            None
        };
        let (cdylibs, diagnostics) =
            self.build_locked(request, &source, &lock, deadline, jail.as_ref())?;
        if cdylibs.is_empty() {
            return Err(Error::NoPluginModules {
                path: request.source.clone(),
            });
        }
        let artifacts = Self::collect(&cdylibs)?;
        drop(lock);

        // Cargo writes `Cargo.lock` during a build; anything else that
        // changed means the tree was edited meanwhile, and the result must
        // not be found under either hash.
        let after = hash::digest(&source)?;
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
            self.cache.forget(&form)?;
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
    let deadline = Instant::now() + TOOLCHAIN_QUERY_TIMEOUT;
    let finished = child::run(&spec, deadline, |stdout| {
        let mut text = String::new();
        let _ = stdout.take(64 * 1024).read_to_string(&mut text);
        text
    })
    .map_err(|e| match e {
        RunError::Spawn(e) => error(e.to_string()),
        RunError::TimedOut => error(format!(
            "it did not answer within {TOOLCHAIN_QUERY_TIMEOUT:?}"
        )),
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
    Ok(Toolchain {
        verbose_version,
        host,
    })
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
