//! [`SandboxHandle`]: one sandbox of a [`Manager`], without repeating its id.

use tokio::sync::broadcast::error::RecvError;

use crate::{
    Event, EventStream, Manager, ReloadReport, Result, SandboxId, SandboxInfo, Swapped, VersionInfo,
};

/// One sandbox of a [`Manager`]: the manager's id-keyed operations, bound
/// to one id. Cheap to clone; a handle does not keep its sandbox alive —
/// once the sandbox is destroyed every operation answers
/// [`Error::UnknownSandbox`](crate::Error::UnknownSandbox).
///
/// ```no_run
/// # async fn demo() -> sandbox_core::Result<()> {
/// use sandbox_core::{Config, Manager, SandboxSpec};
///
/// let manager = Manager::new(Config::default())?;
/// let counter = manager
///     .create("counter", SandboxSpec::trusted("plugins/examples/counter"))
///     .await?;
/// let out = counter.call_json("counter", &serde_json::json!({"add": 5})).await?;
/// assert_eq!(out["value"], 5);
/// counter.destroy().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SandboxHandle {
    manager: Manager,
    id: SandboxId,
}

impl Manager {
    /// A handle to the existing sandbox `id`.
    pub fn sandbox(&self, id: &str) -> Result<SandboxHandle> {
        let sb = self.get(id)?;
        Ok(SandboxHandle {
            manager: self.clone(),
            id: sb.id.clone(),
        })
    }
}

impl SandboxHandle {
    pub(crate) fn new(manager: Manager, id: SandboxId) -> Self {
        Self { manager, id }
    }

    /// The sandbox's id.
    pub fn id(&self) -> &SandboxId {
        &self.id
    }

    /// The manager it belongs to.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Calls `module` with raw bytes ([`Manager::call`]).
    pub async fn call(&self, module: &str, input: &[u8]) -> Result<Vec<u8>> {
        self.manager.call(self.id.as_str(), module, input).await
    }

    /// Calls `module` with JSON ([`Manager::call_json`]).
    pub async fn call_json(
        &self,
        module: &str,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        self.manager
            .call_json(self.id.as_str(), module, input)
            .await
    }

    /// Rebuilds and swaps what changed ([`Manager::hot_reload`]).
    pub async fn hot_reload(&self) -> Result<ReloadReport> {
        self.manager.hot_reload(self.id.as_str()).await
    }

    /// Swaps `module` to retained `version` ([`Manager::rollback`]).
    pub async fn rollback(&self, module: &str, version: u32) -> Result<Swapped> {
        self.manager
            .rollback(self.id.as_str(), module, version)
            .await
    }

    /// The retained versions of `module` ([`Manager::versions`]).
    pub fn versions(&self, module: &str) -> Result<Vec<VersionInfo>> {
        self.manager.versions(self.id.as_str(), module)
    }

    /// A snapshot of the sandbox ([`Manager::info`]).
    pub fn info(&self) -> Result<SandboxInfo> {
        self.manager.info(self.id.as_str())
    }

    /// Restarts it ([`Manager::restart`]).
    pub async fn restart(&self) -> Result<SandboxInfo> {
        self.manager.restart(self.id.as_str()).await
    }

    /// This sandbox's events from now on.
    pub fn events(&self) -> SandboxEvents {
        SandboxEvents {
            id: self.id.clone(),
            stream: self.manager.subscribe(),
        }
    }

    /// Destroys the sandbox ([`Manager::destroy`]).
    pub async fn destroy(self) -> Result<()> {
        self.manager.destroy(self.id.as_str()).await
    }
}

/// The events of one sandbox, made by [`SandboxHandle::events`].
#[derive(Debug)]
pub struct SandboxEvents {
    id: SandboxId,
    stream: EventStream,
}

impl SandboxEvents {
    /// The next event of this sandbox; `None` when the manager is gone.
    /// Events dropped because this reader fell behind are skipped (the
    /// stream holds `Config::event_capacity` of them).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.stream.recv().await {
                Ok(event) if event.sandbox == self.id => return Some(event),
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
