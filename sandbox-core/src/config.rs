//! Host-wide configuration of a `Manager`.

use std::path::PathBuf;
use std::time::Duration;

use sandbox_versions::DEFAULT_RETENTION;

/// Settings shared by every sandbox of one `Manager`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Folder for runtime scratch files (per-version artifact copies), one
    /// sub-folder per sandbox, removed when the sandbox is destroyed.
    /// Default: `$TMPDIR/sandbox-<pid>`.
    ///
    /// A manager holds a lock on `<work_dir>/.lock` while it lives (managers
    /// of one process share it) and removes the folder when the last one
    /// goes. A host that is killed cannot: when a manager is built it removes
    /// the folders next to this one named like it (`<prefix>-<pid>`) whose
    /// pid runs no process and whose lock nobody holds — never a live
    /// host's.
    pub work_dir: PathBuf,
    /// Cargo target dir shared by all sandboxes, so dependencies compile
    /// once. Default: `$XDG_CACHE_HOME/sandbox/target` (or `~/.cache/...`).
    pub target_dir: PathBuf,
    /// Folder of the compiler's content-hash cache.
    /// Default: `$XDG_CACHE_HOME/sandbox/builds`.
    pub cache_dir: PathBuf,
    /// Versions retained per module for rollback. Default 10.
    pub history: usize,
    /// Wall-clock limit of one build. Default 10 minutes.
    pub compile_timeout: Duration,
    /// Memory limit of one build (address space). Default 8 GiB.
    pub compile_memory: Option<u64>,
    /// Build without network access (dependencies must be in cargo's cache).
    pub offline: bool,
    /// Build profile of the modules.
    pub build_profile: sandbox_compiler::Profile,
    /// Debug info of module builds. Default: none — libraries 10× smaller,
    /// quicker to link, copy and load; panic messages keep file and line.
    pub debug_info: sandbox_compiler::DebugInfo,
    /// Events buffered per subscriber before the oldest are dropped.
    pub event_capacity: usize,
    /// Entries in the result cache of pure modules (0 disables it).
    pub result_cache_capacity: usize,
    /// How long a cached result of a pure module stays valid.
    pub result_cache_ttl: Duration,
    /// Process isolation: crashes tolerated within `restart_window` before a
    /// sandbox is left in `Error`. Default 5.
    pub max_restarts: u32,
    /// Process isolation: the window `max_restarts` counts in. Default 60 s.
    pub restart_window: Duration,
    /// Process isolation: the wait before the first restart, doubled for each
    /// further crash in the window. Default 50 ms.
    pub restart_backoff: Duration,
    /// Process isolation: how often module state is saved (it is also saved
    /// after every swap) for sandboxes whose
    /// [`Durability`](crate::Durability) is the default
    /// [`ConfigInterval`](crate::Durability::ConfigInterval); `None` saves
    /// only after swaps. A crash of a worker loses the calls answered since
    /// the last save. Usage is checked against the limits on this interval
    /// too. Default 2 s.
    pub checkpoint_interval: Option<Duration>,
    /// Process isolation: swaps after which the worker is replaced to give
    /// back the memory of old versions; 0 never. Default 50. Recycling loses
    /// no call: calls wait while the live state moves to the new worker (the
    /// time of a worker start, a load of each module and a restore).
    pub recycle_after_swaps: u32,
    /// Crates outside the sandboxes' trees that untrusted source may depend
    /// on by `path` (any other path outside a tree is refused before a
    /// build); their dependencies are prebuilt once and copied into each
    /// untrusted tree's own target dir. Default: the plugin API crate this
    /// host was built with, when that folder exists.
    pub shared_crates: Vec<PathBuf>,
    /// Append-only, hash-chained audit log ([`sandbox_security::AuditLog`])
    /// recording every create, build (with the profile and whether it was
    /// jailed), reload, rollback, restart, crash, failure and destroy, each
    /// with [`audit_actor`](Config::audit_actor) and the sandbox. Created
    /// (with its folder) if missing; an existing file's chain must verify;
    /// several hosts may share one file. Default: `None`, no log (`sandbox
    /// run` keeps one at `<cache root>/audit.log`).
    pub audit_log: Option<PathBuf>,
    /// Who the audit log names as the actor of this manager's operations.
    /// Default: `user:<name>` from `$USER` (or `$LOGNAME`), else
    /// `uid:<uid>`.
    pub audit_actor: String,
    /// The worker program of the default process backend, used when no
    /// process isolator is registered with
    /// [`ManagerBuilder::isolator`](crate::ManagerBuilder::isolator).
    /// Default: `None`, found by
    /// [`WorkerCommand::find_default`](sandbox_isolate::WorkerCommand::find_default)
    /// (`$SANDBOX_WORKER`, beside the executable, `PATH`). A manager without a
    /// worker still runs trusted in-process sandboxes; creating a process
    /// sandbox then fails with [`Error::NoIsolator`](crate::Error::NoIsolator)
    /// saying where it looked.
    pub worker: Option<PathBuf>,
    /// Where every checkpoint of module state is kept durably, so a host
    /// that is killed can create its sandboxes again from their last
    /// checkpoint ([`SandboxSpec::restore_from`](crate::SandboxSpec::restore_from)).
    /// With a store, in-process sandboxes are checkpointed too (by their
    /// [`Durability`](crate::Durability), like process sandboxes), and under
    /// [`Durability::EveryCall`](crate::Durability::EveryCall) a reply
    /// waits for the store. See [`CheckpointStore`](crate::CheckpointStore).
    /// Default: `None`, checkpoints live in memory only.
    pub checkpoint_store: Option<std::sync::Arc<dyn crate::CheckpointStore>>,
}

impl Default for Config {
    /// Defaults; the target and cache dirs live under `$SANDBOX_CACHE_DIR`
    /// when that is set, else under `$XDG_CACHE_HOME/sandbox`.
    fn default() -> Self {
        let cache = match std::env::var_os("SANDBOX_CACHE_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => cache_home().join("sandbox"),
        };
        Self {
            work_dir: std::env::temp_dir().join(format!("sandbox-{}", std::process::id())),
            target_dir: cache.join("target"),
            cache_dir: cache.join("builds"),
            history: DEFAULT_RETENTION,
            compile_timeout: Duration::from_secs(600),
            compile_memory: Some(8 << 30),
            offline: false,
            build_profile: sandbox_compiler::Profile::Debug,
            debug_info: sandbox_compiler::DebugInfo::None,
            event_capacity: 4096,
            result_cache_capacity: 1024,
            result_cache_ttl: Duration::from_secs(60),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            restart_backoff: Duration::from_millis(50),
            checkpoint_interval: Some(Duration::from_secs(2)),
            shared_crates: default_shared_crates(),
            audit_log: None,
            audit_actor: default_audit_actor(),
            recycle_after_swaps: 50,
            worker: None,
            checkpoint_store: None,
        }
    }
}

impl Config {
    /// A configuration whose target and cache dirs live under `dir`.
    pub fn with_cache_root(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            target_dir: dir.join("target"),
            cache_dir: dir.join("builds"),
            ..Self::default()
        }
    }
}

/// The plugin API crate of this checkout, if it is there (a host run from
/// its build tree, the tests, the examples).
fn default_shared_crates() -> Vec<PathBuf> {
    let api = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/sandbox-plugin"
    ));
    api.canonicalize()
        .ok()
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .into_iter()
        .collect()
}

/// `user:<name>` of the user running the host, else `uid:<uid>`.
fn default_audit_actor() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|name| name.to_string_lossy().into_owned())
        .find(|name| !name.is_empty())
        .map_or_else(
            || format!("uid:{}", rustix::process::getuid().as_raw()),
            |name| format!("user:{name}"),
        )
}

fn cache_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache"),
        None => std::env::temp_dir(),
    }
}
