//! Auto-reload: file changes → build → hot swap, per sandbox.
//!
//! One [`Watcher`] serves every sandbox. A bridge thread turns its change
//! sets into a wake-up of the sandbox's driver task; the driver runs one
//! `hot_reload` at a time, and wake-ups that arrive while it runs collapse
//! into a single follow-up reload (a `Notify` holds at most one permit).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use sandbox_watch::{WatchEvent, Watcher};
use tokio::sync::Notify;

use crate::SandboxId;

#[derive(Debug)]
pub(crate) struct Driver {
    pub(crate) wake: Arc<Notify>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// The shared watcher and the drivers of the sandboxes that use it.
#[derive(Debug, Default)]
pub(crate) struct AutoReload {
    pub(crate) watcher: Mutex<Option<Arc<dyn Watcher>>>,
    pub(crate) drivers: Arc<Mutex<HashMap<SandboxId, Driver>>>,
}

impl AutoReload {
    /// The watcher, created (with its bridge thread) on first use.
    pub(crate) fn watcher(
        &self,
        make: impl FnOnce() -> sandbox_watch::Result<Arc<dyn Watcher>>,
        on_error: impl Fn(&str, String) + Send + 'static,
    ) -> sandbox_watch::Result<Arc<dyn Watcher>> {
        let mut slot = self.watcher.lock();
        if let Some(w) = slot.as_ref() {
            return Ok(Arc::clone(w));
        }
        let watcher = make()?;
        let events = watcher.subscribe();
        let drivers: Weak<Mutex<HashMap<SandboxId, Driver>>> = Arc::downgrade(&self.drivers);
        std::thread::Builder::new()
            .name("sandbox-watch-bridge".into())
            .spawn(move || {
                // Ends when the watcher drops (the channel disconnects) or
                // the manager is gone.
                for event in events.iter() {
                    let Some(drivers) = drivers.upgrade() else { break };
                    match event {
                        WatchEvent::Changed(set) => {
                            tracing::debug!(sandbox = %set.key, files = set.paths.len(), "change set");
                            if let Some(d) = drivers.lock().get(set.key.as_str()) {
                                d.wake.notify_one();
                            }
                        }
                        WatchEvent::RootRemoved { key, root } => {
                            on_error(&key, format!("the watched folder {} disappeared; auto-reload is off", root.display()));
                            if let Some(d) = drivers.lock().remove(key.as_str()) {
                                d.task.abort();
                            }
                        }
                        WatchEvent::Error { key: Some(key), message } => {
                            // Changes may have been missed: rebuilding is the safe reaction.
                            on_error(&key, message);
                            if let Some(d) = drivers.lock().get(key.as_str()) {
                                d.wake.notify_one();
                            }
                        }
                        WatchEvent::Error { key: None, message } => {
                            tracing::warn!(error = %message, "file watcher error");
                        }
                    }
                }
            })
            .map_err(|source| sandbox_watch::Error::Thread { source })?;
        *slot = Some(Arc::clone(&watcher));
        Ok(watcher)
    }
}
