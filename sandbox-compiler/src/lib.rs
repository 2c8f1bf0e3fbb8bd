//! Building sandbox source trees into loadable plugin artifacts.
//!
//! A sandbox owns a source tree: one Cargo package, or a Cargo workspace whose
//! `cdylib` members are its plugin modules. This crate turns such a tree into
//! validated shared libraries:
//!
//! - [`Compiler`] is the trait the rest of the system codes against (the
//!   sandbox manager calls [`Compiler::build`] when a sandbox is created or its
//!   sources change, and [`Compiler::forget`] when it is destroyed);
//! - [`CargoCompiler`] is the default implementation: it runs
//!   `cargo build --message-format=json` in a child process (started through
//!   the workspace's one spawning chokepoint, so it gets a scrubbed
//!   environment, an address-space limit and a process group that a timeout
//!   kills whole), builds trusted trees into one shared target directory
//!   and untrusted ones ([`BuildRequest::jailed`]) inside the jail into a
//!   target directory of their own, seeded with the shared dependencies so
//!   they compile once, turns rustc's output into structured
//!   [`Diagnostic`]s, and keeps a content-hash cache so an unchanged tree never
//!   starts cargo at all.
//!
//! Every [`Artifact`] it returns is a stable copy owned by the compiler's
//! cache directory, and has been checked to be an ELF shared object exporting
//! [`ROOT_MODULE_SYMBOL`] before anyone loads it.
//!
//! Writing a plugin? You want the plugin API crate (`sandbox-plugin`), not
//! this one. Hosting sandboxes? `sandbox-core`'s `Manager` drives this crate
//! for you.
//!
//! ```no_run
//! use sandbox_compiler::{BuildRequest, CargoCompiler, Compiler, Profile};
//!
//! # fn main() -> sandbox_compiler::Result<()> {
//! let compiler = CargoCompiler::new("/var/cache/sandbox/target")?;
//! let output = compiler.build(&BuildRequest::new("plugins/examples/counter").profile(Profile::Release))?;
//! for artifact in &output.artifacts {
//!     println!("{} -> {} ({})", artifact.package, artifact.path.display(), artifact.sha256);
//! }
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod admission;
mod cache;
mod cargo;
mod child;
mod error;
mod hash;
mod messages;
mod replay;
mod target_lock;
mod validate;

pub use cargo::{CargoCompiler, CargoCompilerBuilder};
pub use error::{Error, Result};
pub use validate::validate_plugin;

/// The dynamic symbol every plugin library exports: `abi_stable`'s mangled
/// root-module loader name, as the plugin API crate's export macro emits it.
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// Builds a sandbox source tree into plugin artifacts.
///
/// Required: [`build`](Compiler::build). Provided: [`forget`](Compiler::forget),
/// which does nothing by default.
///
/// - `build` is called when a sandbox is created, when its sources change
///   and when it is restarted from source. It may be called concurrently from
///   several threads, for the same or different sources, and must be cheap
///   for a tree it has already built (the default [`CargoCompiler`] only
///   hashes the tree then).
/// - `forget` is called once when a sandbox is destroyed, to drop whatever
///   was kept for its source (cached results, temp files). Artifacts already
///   handed out may be deleted by it.
///
/// The trait is object safe; `Box<dyn Compiler>` and `Arc<dyn Compiler>`
/// are compilers too.
///
/// # Example
///
/// A whole implementation: a compiler that hands out libraries built
/// elsewhere (by CI, say), registered per source directory.
///
/// ```
/// use std::collections::HashMap;
/// use std::path::{Path, PathBuf};
/// use std::sync::{Arc, Mutex};
/// use std::time::{Duration, Instant};
///
/// use sandbox_compiler::{Artifact, BuildOutput, BuildRequest, Compiler, Error, Result};
///
/// #[derive(Debug, Default)]
/// struct Prebuilt {
///     artifacts: Mutex<HashMap<PathBuf, Vec<Artifact>>>,
/// }
///
/// impl Compiler for Prebuilt {
///     fn build(&self, request: &BuildRequest) -> Result<BuildOutput> {
///         let started = Instant::now();
///         let table = self.artifacts.lock().unwrap_or_else(|e| e.into_inner());
///         let artifacts = table
///             .get(&request.source)
///             .cloned()
///             .ok_or_else(|| Error::NoPluginModules { path: request.source.clone() })?;
///         let source_hash = artifacts.first().map(|a| a.source_hash.clone()).unwrap_or_default();
///         Ok(BuildOutput { artifacts, warnings: Vec::new(), cached: true, replayed: false, source_hash, duration: started.elapsed() })
///     }
///
///     fn forget(&self, source: &Path) -> Result<()> {
///         self.artifacts.lock().unwrap_or_else(|e| e.into_inner()).remove(source);
///         Ok(())
///     }
/// }
///
/// let prebuilt = Prebuilt::default();
/// prebuilt.artifacts.lock().unwrap().insert(
///     PathBuf::from("/srv/counter"),
///     vec![Artifact {
///         package: "counter".into(),
///         name: "counter".into(),
///         path: "/srv/artifacts/libcounter.so".into(),
///         sha256: "00".repeat(32),
///         source_hash: "11".repeat(32),
///     }],
/// );
/// let compiler: Arc<dyn Compiler> = Arc::new(prebuilt);
/// let output = compiler.build(&BuildRequest::new("/srv/counter"))?;
/// assert_eq!(output.artifacts[0].name, "counter");
/// compiler.forget(Path::new("/srv/counter"))?;
/// assert!(matches!(compiler.build(&BuildRequest::new("/srv/counter")), Err(Error::NoPluginModules { .. })));
/// # Ok::<(), Error>(())
/// ```
pub trait Compiler: Send + Sync + std::fmt::Debug {
    /// Builds `request.source` and returns one artifact per cdylib module.
    fn build(&self, request: &BuildRequest) -> Result<BuildOutput>;

    /// Drops cached results and temp files for `source` (called when a
    /// sandbox is destroyed). Default: does nothing.
    fn forget(&self, source: &Path) -> Result<()> {
        let _ = source;
        Ok(())
    }
}

impl<T: Compiler + ?Sized> Compiler for Box<T> {
    fn build(&self, request: &BuildRequest) -> Result<BuildOutput> {
        (**self).build(request)
    }

    fn forget(&self, source: &Path) -> Result<()> {
        (**self).forget(source)
    }
}

impl<T: Compiler + ?Sized> Compiler for Arc<T> {
    fn build(&self, request: &BuildRequest) -> Result<BuildOutput> {
        (**self).build(request)
    }

    fn forget(&self, source: &Path) -> Result<()> {
        (**self).forget(source)
    }
}

/// What to build and under which limits.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The sandbox's source directory: a Cargo package or workspace.
    pub source: PathBuf,
    /// Debug or release.
    pub profile: Profile,
    /// Build without network access (`cargo --offline`): every dependency
    /// must already be downloaded.
    pub offline: bool,
    /// Wall-clock limit for the cargo processes; when it expires the whole
    /// process group is killed. Waiting for another build of the same target
    /// directory to finish is not counted.
    pub timeout: Duration,
    /// Address-space limit in bytes for cargo and everything it starts
    /// (`RLIMIT_AS`); `None` for no limit.
    pub memory_limit: Option<u64>,
    /// Debug info of the build, overriding the profile's (and the
    /// manifest's) `debug` setting unless [`DebugInfo::Profile`].
    pub debug_info: DebugInfo,
    /// Build source that is not trusted. Before anything runs the tree is
    /// *admitted*: cargo configuration (`.cargo/`), toolchain overrides
    /// (`rust-toolchain*`), `[patch]`/`[replace]` entries and `path`
    /// dependencies that reach outside the tree (other than the shared
    /// crates, see [`CargoCompilerBuilder::shared_crate`]) are refused with
    /// [`Error::Refused`]. Dependencies are then fetched by cargo itself,
    /// outside any jail but from a neutral working directory, so only the
    /// manifests and lockfile are read (skipped while they are unchanged).
    /// Cargo then builds offline inside the process jail of
    /// `sandbox-jail` — new namespaces, no network, landlock allowing
    /// writes only to the tree's *own* target directory — so build
    /// scripts, proc macros, wrappers and linkers cannot escape, and
    /// cannot touch what another tree links or loads.
    pub jailed: bool,
}

/// How much debug info a build carries.
///
/// Less debug info means smaller libraries, quicker links and quicker
/// loads: a debug build of the counter example is 13.9 MB with full debug
/// info, 7.4 MB with line tables and 1.4 MB without. Panic messages keep
/// their file and line either way.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum DebugInfo {
    /// Whatever the profile says (cargo's default: full for debug builds).
    #[default]
    Profile,
    /// None (`debug = 0`).
    None,
    /// Line tables only (`debug = "line-tables-only"`).
    LineTables,
    /// Full (`debug = 2`).
    Full,
}

impl DebugInfo {
    /// The value for `CARGO_PROFILE_<NAME>_DEBUG`, if it overrides.
    pub fn cargo_value(self) -> Option<&'static str> {
        match self {
            Self::Profile => None,
            Self::None => Some("0"),
            Self::LineTables => Some("line-tables-only"),
            Self::Full => Some("2"),
        }
    }
}

impl BuildRequest {
    /// The default timeout: 10 minutes.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
    /// The default address-space limit: 8 GiB.
    pub const DEFAULT_MEMORY_LIMIT: u64 = 8 << 30;

    /// A debug, online build of `source` with a 10-minute timeout and an
    /// 8 GiB address-space limit.
    pub fn new(source: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            profile: Profile::Debug,
            offline: false,
            timeout: Self::DEFAULT_TIMEOUT,
            memory_limit: Some(Self::DEFAULT_MEMORY_LIMIT),
            debug_info: DebugInfo::Profile,
            jailed: false,
        }
    }

    /// Builds inside the jail (see [`BuildRequest::jailed`]).
    pub fn jailed(mut self, jailed: bool) -> Self {
        self.jailed = jailed;
        self
    }

    /// Sets the debug info of the build.
    pub fn debug_info(mut self, debug_info: DebugInfo) -> Self {
        self.debug_info = debug_info;
        self
    }

    /// Sets the profile.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Builds without network access.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Sets the wall-clock timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the address-space limit (`None`: unlimited).
    pub fn memory_limit(mut self, bytes: Option<u64>) -> Self {
        self.memory_limit = bytes;
        self
    }
}

/// The cargo profile to build with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// `cargo build` (the `dev` profile).
    #[default]
    Debug,
    /// `cargo build --release`.
    Release,
}

impl Profile {
    /// `"debug"` or `"release"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a successful build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// One artifact per cdylib module, in build order.
    pub artifacts: Vec<Artifact>,
    /// Warnings (and other non-error diagnostics) of the build; replayed from
    /// the cache on a hit.
    pub warnings: Vec<Diagnostic>,
    /// Whether the result came from the cache without starting cargo.
    pub cached: bool,
    /// Whether rustc ran without cargo: a rebuild of a one-crate tree whose
    /// own sources alone changed replays the rustc command cargo ran last
    /// (see [`CargoCompiler`]).
    pub replayed: bool,
    /// sha256 (lowercase hex) of the source tree, including the trees of its
    /// `path` dependencies.
    pub source_hash: String,
    /// How long the call took.
    pub duration: Duration,
}

/// One built plugin library.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Artifact {
    /// The cargo package name.
    pub package: String,
    /// The library target name (what `lib<name>.so` is named after).
    pub name: String,
    /// A stable copy owned by the compiler's cache directory, never the file
    /// in `target/` (the next build overwrites that).
    pub path: PathBuf,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// sha256 of the source tree it was built from (see
    /// [`BuildOutput::source_hash`]).
    pub source_hash: String,
}

impl Artifact {
    /// Checks that the file still holds the bytes the compiler recorded
    /// ([`Artifact::sha256`]): call it right before loading. Only the host
    /// writes the cache (no build, jailed or not, can), so a mismatch means
    /// something wrote there that should not have: [`Error::Tampered`].
    pub fn verify(&self) -> Result<()> {
        verify_file(&self.path, &self.sha256)
    }
}

/// Checks that `path` holds bytes whose sha256 is `sha256` (lowercase hex):
/// [`Error::Tampered`] when it does not.
pub fn verify_file(path: &Path, sha256: &str) -> Result<()> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let found = hex::encode(Sha256::digest(&bytes));
    if found == sha256 {
        Ok(())
    } else {
        Err(Error::Tampered {
            path: path.to_owned(),
            expected: sha256.to_owned(),
            found,
        })
    }
}

/// One compiler message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Diagnostic {
    /// How severe it is.
    pub level: Level,
    /// The one-line message.
    pub message: String,
    /// The file of the primary span, absolute.
    pub file: Option<PathBuf>,
    /// 1-based line of the primary span.
    pub line: Option<u32>,
    /// 1-based column of the primary span.
    pub column: Option<u32>,
    /// The message as rustc renders it for a terminal (without colors).
    pub rendered: Option<String>,
}

/// Severity of a [`Diagnostic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// An error: the build fails.
    Error,
    /// A warning.
    Warning,
    /// A note.
    Note,
    /// A help message.
    Help,
    /// Anything else rustc reports.
    Other,
}

impl Level {
    pub(crate) fn from_rustc(level: &cargo_metadata::diagnostic::DiagnosticLevel) -> Self {
        use cargo_metadata::diagnostic::DiagnosticLevel as Rustc;
        match level {
            Rustc::Error | Rustc::Ice => Level::Error,
            Rustc::Warning => Level::Warning,
            Rustc::Note => Level::Note,
            Rustc::Help => Level::Help,
            _ => Level::Other,
        }
    }
}
