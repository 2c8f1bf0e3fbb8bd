//! Test helpers for `sandbox` hosts and plugins (a dev-dependency).
//!
//! - [`TestSandbox`]: a sandbox built from one of the example plugins or
//!   from a plugin snippet, in its own temp folder, with a unique id and its
//!   own `Manager`; everything is removed when it drops.
//! - [`fixtures`]: write plugin crates from a snippet of Rust.
//! - [`await_event`] / [`wait_for_compilation`]: wait for an event with a
//!   deadline instead of sleeping.
//! - [`assert_running`], [`assert_module_version`]: sandbox assertions.
//! - [`stress`]: run many concurrent calls and report throughput and latency.
//!
//! All test sandboxes share one cargo target dir and build cache under the
//! workspace's `target/sandbox-tests`, so plugin dependencies (abi_stable)
//! are compiled once for every test binary.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sandbox_core::{
    Config, Event, EventKind, EventStream, Manager, SandboxId, SandboxInfo, SandboxSpec, Status,
};
use tokio::sync::broadcast::error::RecvError;

pub mod fixtures;
pub mod stress;

/// A result whose error is a testkit [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a test helper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The sandbox operation failed.
    #[error(transparent)]
    Sandbox(#[from] sandbox_core::Error),
    /// Preparing files failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No event matched before the deadline.
    #[error("no {what} within {after:?}; events seen: {seen}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline.
        after: Duration,
        /// The names of the events seen meanwhile.
        seen: String,
    },
    /// An assertion about a sandbox failed.
    #[error("{0}")]
    Assertion(String),
}

/// The workspace root (where the `plugins/` folder is).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// The folder of a built-in example plugin (`counter`, `pipeline`, `wordcount`).
pub fn example_dir(name: &str) -> PathBuf {
    repo_root().join("plugins").join("examples").join(name)
}

/// The folder of a loader fixture (`not-a-plugin`, `incompatible-api`, ...).
pub fn fixture_dir(name: &str) -> PathBuf {
    repo_root().join("plugins").join("fixtures").join(name)
}

/// The plugin API crate, for path dependencies of generated plugins.
pub fn plugin_api_dir() -> PathBuf {
    repo_root().join("plugins").join("sandbox-plugin")
}

/// The cargo target dir and build cache shared by every test sandbox.
pub fn shared_cache_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        repo_root().join(target)
    };
    target.join("sandbox-tests")
}

/// A manager configuration for tests: shared target dir and build cache, a
/// scratch folder of its own under `scratch`.
pub fn test_config(scratch: &Path) -> Config {
    Config {
        work_dir: scratch.join("work"),
        ..Config::with_cache_root(shared_cache_root())
    }
}

/// A fresh, unique sandbox id starting with `prefix`.
pub fn unique_id(prefix: &str) -> SandboxId {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = format!("{prefix}-{}-{n}", std::process::id());
    SandboxId::new(id)
        .unwrap_or_else(|_| SandboxId::new(format!("t-{n}")).expect("a plain id is valid"))
}

/// A sandbox for a test: its source is a copy in a temp folder, its manager
/// its own; dropping it removes everything.
#[derive(Debug)]
pub struct TestSandbox {
    /// The manager hosting the sandbox.
    pub manager: Manager,
    /// The sandbox's id.
    pub id: SandboxId,
    /// Events since before the sandbox was created.
    pub events: EventStream,
    source: PathBuf,
    _scratch: tempfile::TempDir,
}

impl TestSandbox {
    /// A sandbox running a copy of example `name` (see [`example_dir`]).
    pub async fn example(name: &str) -> Result<Self> {
        Self::from_dir(&example_dir(name), SandboxSpec::trusted("")).await
    }

    /// A sandbox running a copy of `dir`, with `spec`'s settings (its
    /// `source` is replaced by the copy).
    pub async fn from_dir(dir: &Path, spec: SandboxSpec) -> Result<Self> {
        let scratch = scratch()?;
        let source = scratch.path().join("src");
        fixtures::copy_crate(dir, &source)?;
        Self::start(scratch, source, spec).await
    }

    /// A sandbox of one plugin crate named `name` whose `src/lib.rs` is `lib_rs`.
    pub async fn from_snippet(name: &str, lib_rs: &str) -> Result<Self> {
        let scratch = scratch()?;
        let source = scratch.path().join("src");
        fixtures::write_plugin(&source, name, lib_rs)?;
        Self::start(scratch, source, SandboxSpec::trusted("")).await
    }

    async fn start(
        scratch: tempfile::TempDir,
        source: PathBuf,
        mut spec: SandboxSpec,
    ) -> Result<Self> {
        let manager = Manager::new(test_config(scratch.path()))?;
        let events = manager.subscribe();
        let id = unique_id("t");
        spec.source = source.clone();
        manager.create(id.clone(), spec).await?;
        Ok(Self {
            manager,
            id,
            events,
            source,
            _scratch: scratch,
        })
    }

    /// The sandbox's source folder (a copy: edit it freely).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Replaces `relative` (e.g. `src/lib.rs`) in the source folder.
    pub fn write(&self, relative: &str, contents: &str) -> Result<()> {
        let path = self.source.join(relative);
        std::fs::write(&path, contents).map_err(|source| Error::Io {
            action: "writing",
            path,
            source,
        })
    }

    /// Reads `relative` from the source folder.
    pub fn read(&self, relative: &str) -> Result<String> {
        let path = self.source.join(relative);
        std::fs::read_to_string(&path).map_err(|source| Error::Io {
            action: "reading",
            path,
            source,
        })
    }

    /// Calls `module` with JSON.
    pub async fn call(&self, module: &str, input: serde_json::Value) -> Result<serde_json::Value> {
        Ok(self
            .manager
            .call_json(self.id.as_str(), module, &input)
            .await?)
    }

    /// A snapshot of the sandbox.
    pub fn info(&self) -> Result<SandboxInfo> {
        Ok(self.manager.info(self.id.as_str())?)
    }

    /// Drops the events received so far (e.g. those of the creation), so
    /// the next wait sees only what happens after this point.
    pub fn drain_events(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Waits for an event of this sandbox matching `predicate`.
    pub async fn await_event(
        &mut self,
        what: &str,
        deadline: Duration,
        predicate: impl Fn(&EventKind) -> bool,
    ) -> Result<Event> {
        let id = self.id.clone();
        await_event(&mut self.events, what, deadline, |e| {
            e.sandbox == id && predicate(&e.kind)
        })
        .await
    }
}

fn scratch() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("sandbox-test-")
        .tempdir()
        .map_err(|source| Error::Io {
            action: "creating a temp dir in",
            path: std::env::temp_dir(),
            source,
        })
}

/// Waits up to `deadline` for an event matching `predicate`, skipping others.
/// `what` names the awaited event in the timeout error.
pub async fn await_event(
    events: &mut EventStream,
    what: &str,
    deadline: Duration,
    predicate: impl Fn(&Event) -> bool,
) -> Result<Event> {
    let end = Instant::now() + deadline;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(event)) if predicate(&event) => return Ok(event),
            Ok(Ok(event)) => seen.push(event.kind.name()),
            Ok(Err(RecvError::Lagged(n))) => seen.push(if n > 0 { "(lagged)" } else { "" }),
            Ok(Err(RecvError::Closed)) | Err(_) => {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    after: deadline,
                    seen: seen.join(", "),
                })
            }
        }
    }
}

/// Waits for the next `compile_finished` event of sandbox `id`.
pub async fn wait_for_compilation(
    events: &mut EventStream,
    id: &SandboxId,
    deadline: Duration,
) -> Result<Event> {
    await_event(events, "compile_finished event", deadline, |e| {
        &e.sandbox == id && matches!(e.kind, EventKind::CompileFinished { .. })
    })
    .await
}

/// The runtime scratch folders of sandbox `id` that exist under the
/// manager's work dir (one per launch: `<id>@<n>`); empty once it is gone.
pub fn scratch_of(manager: &Manager, id: &str) -> Vec<PathBuf> {
    let prefix = format!("{id}@");
    std::fs::read_dir(&manager.config().work_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Fails unless sandbox `id` is running.
pub fn assert_running(manager: &Manager, id: &str) -> Result<()> {
    let info = manager.info(id)?;
    if info.status != Status::Running {
        return Err(Error::Assertion(format!(
            "sandbox `{id}` is {} where running was expected",
            info.status
        )));
    }
    Ok(())
}

/// Fails unless `module` of sandbox `id` runs version `version`.
pub fn assert_module_version(
    manager: &Manager,
    id: &str,
    module: &str,
    version: u32,
) -> Result<()> {
    let info = manager.info(id)?;
    match info.modules.iter().find(|m| m.name == module) {
        Some(m) if m.version == version => Ok(()),
        Some(m) => Err(Error::Assertion(format!(
            "module `{module}` of `{id}` runs version {} where {version} was expected",
            m.version
        ))),
        None => Err(Error::Assertion(format!(
            "sandbox `{id}` has no module `{module}`"
        ))),
    }
}
