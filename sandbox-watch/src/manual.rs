//! A watcher driven by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::Mutex;

use crate::{ChangeSet, Error, Result, WatchEvent, WatchKey, WatchSpec, Watcher};

/// A [`Watcher`] that detects nothing by itself: the owner sends events with
/// [`emit`](ManualWatcher::emit) or [`change`](ManualWatcher::change).
///
/// For tests of hosts (no file system timing involved) and for hosts that
/// learn about changes elsewhere, e.g. from an editor. `watch` checks the
/// key and that the root is a folder, like the default backend; events are
/// sent only for watched keys (errors without a key always go through).
#[derive(Debug, Default)]
pub struct ManualWatcher {
    keys: Mutex<BTreeMap<WatchKey, WatchSpec>>,
    subscribers: Mutex<Vec<Sender<WatchEvent>>>,
}

impl ManualWatcher {
    /// A watcher with no keys and no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The spec a key was watched with.
    pub fn spec(&self, key: &str) -> Option<WatchSpec> {
        self.keys.lock().get(key).cloned()
    }

    /// Sends `event` to every subscriber. Returns whether it was sent: events
    /// naming a key that is not watched are dropped, as the real backend
    /// would. A `RootRemoved` event also unwatches its key.
    pub fn emit(&self, event: WatchEvent) -> bool {
        let mut keys = self.keys.lock();
        if let Some(key) = event.key() {
            if !keys.contains_key(key) {
                return false;
            }
        }
        if let WatchEvent::RootRemoved { key, .. } = &event {
            keys.remove(key);
        }
        self.subscribers
            .lock()
            .retain(|subscriber| subscriber.send(event.clone()).is_ok());
        true
    }

    /// Sends a [`ChangeSet`] for `key` naming `paths` (taken as given).
    /// Returns false, sending nothing, when the key is not watched or `paths`
    /// is empty.
    pub fn change<I, P>(&self, key: &str, paths: I) -> bool
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        let paths: BTreeSet<PathBuf> = paths.into_iter().map(Into::into).collect();
        if paths.is_empty() {
            return false;
        }
        let now = Instant::now();
        self.emit(WatchEvent::Changed(ChangeSet {
            key: key.to_owned(),
            paths,
            first_change: now,
            emitted_at: now,
        }))
    }
}

impl Watcher for ManualWatcher {
    fn watch(&self, key: &str, spec: WatchSpec) -> Result<()> {
        match std::fs::metadata(&spec.root) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return Err(Error::NotADirectory { root: spec.root }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::RootMissing { root: spec.root })
            }
            Err(source) => {
                return Err(Error::Io {
                    path: spec.root,
                    source,
                })
            }
        }
        let mut keys = self.keys.lock();
        if keys.contains_key(key) {
            return Err(Error::AlreadyWatched {
                key: key.to_owned(),
            });
        }
        keys.insert(key.to_owned(), spec);
        Ok(())
    }

    fn unwatch(&self, key: &str) -> Result<()> {
        match self.keys.lock().remove(key) {
            Some(_) => Ok(()),
            None => Err(Error::NotWatched {
                key: key.to_owned(),
            }),
        }
    }

    fn subscribe(&self) -> Receiver<WatchEvent> {
        let (tx, rx) = unbounded();
        self.subscribers.lock().push(tx);
        rx
    }

    fn watched(&self) -> Vec<WatchKey> {
        self.keys.lock().keys().cloned().collect()
    }
}
