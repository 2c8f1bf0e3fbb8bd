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

use sandbox_watch::WatchSpec;

use crate::event::EventKind;
use crate::{Error, Manager, Result, SandboxId};

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

impl Manager {
    /// Watches sandbox `id`'s source and hot-reloads it on every save:
    /// change set → build → swap. Saves during a build collapse into one
    /// follow-up build; a compile error is an event with the diagnostics and
    /// the current versions keep serving.
    pub async fn enable_auto_reload(&self, id: &str) -> Result<()> {
        let sb = self.get(id)?;
        if self.inner.auto.drivers.lock().contains_key(&sb.id) {
            return Ok(());
        }
        let events = self.inner.events.clone();
        let preset = self.inner.make_watcher.lock().take();
        let watcher = self
            .inner
            .auto
            .watcher(
                || match preset {
                    Some(w) => Ok(w),
                    None => Ok(Arc::new(sandbox_watch::NotifyWatcher::new(
                        sandbox_watch::WatchConfig::default(),
                    )?)),
                },
                move |key, message| {
                    if let Ok(id) = SandboxId::new(key) {
                        events.emit(
                            &id,
                            EventKind::Failed {
                                operation: "watch".into(),
                                kind: crate::ErrorKind::Watch,
                                message,
                            },
                        );
                    }
                },
            )
            .map_err(Error::Watch)?;
        watcher
            .watch(sb.id.as_str(), WatchSpec::new(&sb.spec.source))
            .map_err(Error::Watch)?;
        let wake = Arc::new(Notify::new());
        let weak = Arc::downgrade(&self.inner);
        let (task_wake, task_id) = (Arc::clone(&wake), sb.id.clone());
        let task = tokio::spawn(async move {
            loop {
                task_wake.notified().await;
                let Some(inner) = weak.upgrade() else { break };
                let manager = Manager { inner };
                // Failures are reported as events by hot_reload itself.
                if let Err(e) = manager.hot_reload(task_id.as_str()).await {
                    tracing::debug!(sandbox = %task_id, error = %e, "auto-reload failed");
                    if matches!(e, Error::UnknownSandbox { .. }) {
                        break;
                    }
                }
            }
        });
        self.inner
            .auto
            .drivers
            .lock()
            .insert(sb.id.clone(), Driver { wake, task });
        tracing::info!(sandbox = %sb.id, "auto-reload on");
        Ok(())
    }

    /// Stops watching sandbox `id`; a reload already running finishes.
    pub async fn disable_auto_reload(&self, id: &str) -> Result<()> {
        let sb = self.get(id)?;
        self.stop_auto_reload(&sb.id);
        Ok(())
    }

    /// Whether sandbox `id` reloads on save.
    pub fn auto_reload_enabled(&self, id: &str) -> bool {
        self.inner.auto.drivers.lock().contains_key(id)
    }

    pub(crate) fn stop_auto_reload(&self, id: &SandboxId) {
        if let Some(driver) = self.inner.auto.drivers.lock().remove(id) {
            driver.task.abort();
            if let Some(w) = self.inner.auto.watcher.lock().as_ref() {
                let _ = w.unwatch(id.as_str());
            }
        }
    }
}
