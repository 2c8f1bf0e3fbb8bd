//! The default backend: one `notify` watcher and one debouncer thread shared
//! by every key.
//!
//! Layout: the OS watcher watches each non-ignored folder of every root
//! *non-recursively* (a recursive inotify watch would also descend into
//! `target/` and `.git/`). Its callback only forwards raw events into a
//! channel. The worker thread owns the per-key pending change sets; it blocks
//! on that channel, on a stop channel and on the earliest pending deadline
//! (or on nothing when no change is pending), so an idle watcher costs no CPU.
//! Folders that appear are walked and watched by the worker (files already in
//! them are reported, closing the gap between `mkdir` and the new watch);
//! folders that disappear are dropped.
//!
//! Lock order: `state` before `subscribers`. Change sets are sent while
//! `state` is held, so none is sent for a key after `unwatch` returns.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{select, unbounded, Receiver, Sender};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use parking_lot::Mutex;
use walkdir::WalkDir;

use crate::filter::is_ignored_dir_name;
use crate::{
    ChangeSet, Error, PathFilter, Result, WatchConfig, WatchEvent, WatchKey, WatchSpec, Watcher,
};

type RawEvent = notify::Result<notify::Event>;

/// The default [`Watcher`]: one `notify::RecommendedWatcher` (inotify on
/// Linux) and one debouncer thread for all keys.
///
/// - Events are routed to the key whose root contains the path; with nested
///   roots the deepest root wins.
/// - Only files matching the key's [`PathFilter`] count; `target/`, version-control and tool
///   folders are not even watched.
/// - A key's [`ChangeSet`] is sent [`WatchConfig::debounce`] after its last
///   event — [`WatchConfig::settle`] after it when every file in the set was
///   closed after writing, renamed into place or removed (its writer is
///   done) — or [`WatchConfig::max_wait`] after its first if events keep
///   coming.
/// - Saves by writing in place, by renaming a temp file over the file, and by
///   delete-then-create all name the real file.
/// - A removed or renamed root produces [`WatchEvent::RootRemoved`] and the
///   key is dropped; other keys are unaffected.
/// - Dropping the watcher stops its thread and the OS watcher; subscribers
///   then see their channel disconnect.
///
/// Limits: [`WatchSpec::max_files`] is checked at `watch` time only; moving
/// a folder *out of* a root reports no change set for the files it took along
/// (deleting it does, file by file); renaming a folder *above* a root is not
/// detected (no event reaches the watcher).
pub struct NotifyWatcher {
    shared: Arc<Shared>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    config: WatchConfig,
    state: Mutex<State>,
    subscribers: Mutex<Vec<Sender<WatchEvent>>>,
}

struct State {
    os: RecommendedWatcher,
    keys: HashMap<WatchKey, Root>,
    /// Folders with an OS watch, shared by all keys (nested roots share).
    dirs: BTreeSet<PathBuf>,
    next_id: u64,
}

struct Root {
    /// Distinguishes a key re-watched after unwatch, so stale pending
    /// changes of the old watch are never sent.
    id: u64,
    root: PathBuf,
    filter: PathFilter,
}

impl NotifyWatcher {
    /// Starts the OS watcher and the debouncer thread.
    ///
    /// # Errors
    ///
    /// [`Error::Notify`] when the OS watcher cannot be created (e.g. the
    /// per-user inotify instance limit), [`Error::Thread`] when the thread
    /// cannot be spawned.
    pub fn new(config: WatchConfig) -> Result<Self> {
        let (raw_tx, raw_rx) = unbounded::<RawEvent>();
        let os = RecommendedWatcher::new(
            move |event: RawEvent| {
                // The receiver is gone only while the watcher shuts down.
                let _ = raw_tx.send(event);
            },
            notify::Config::default(),
        )
        .map_err(|source| Error::Notify {
            path: PathBuf::from("/"),
            source,
        })?;
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State {
                os,
                keys: HashMap::new(),
                dirs: BTreeSet::new(),
                next_id: 0,
            }),
            subscribers: Mutex::new(Vec::new()),
        });
        let (stop_tx, stop_rx) = unbounded();
        let worker = Worker {
            shared: Arc::clone(&shared),
            raw: raw_rx,
            stop: stop_rx,
            pending: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("sandbox-watch".to_owned())
            .spawn(move || worker.run())
            .map_err(|source| Error::Thread { source })?;
        Ok(Self {
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The configuration this watcher runs with.
    pub fn config(&self) -> &WatchConfig {
        &self.shared.config
    }
}

impl fmt::Debug for NotifyWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("NotifyWatcher");
        out.field("config", &self.shared.config);
        match self.shared.state.try_lock() {
            Some(state) => out
                .field("keys", &state.keys.len())
                .field("watched_dirs", &state.dirs.len()),
            None => out.field("state", &"<locked>"),
        };
        out.finish_non_exhaustive()
    }
}

impl Drop for NotifyWatcher {
    fn drop(&mut self) {
        // Disconnecting the stop channel wakes the worker, which returns.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the sandbox-watch worker thread panicked");
            }
        }
        // `shared` (and with it the OS watcher and the subscribers' senders)
        // is dropped after this, now that the worker released its reference.
    }
}

impl Watcher for NotifyWatcher {
    fn watch(&self, key: &str, spec: WatchSpec) -> Result<()> {
        let _span = tracing::debug_span!("watch", key = %key).entered();
        let filter = PathFilter::new(&spec.include)?;
        let root = std::path::absolute(&spec.root).map_err(|source| Error::Io {
            path: spec.root.clone(),
            source,
        })?;
        // Drop `.` components and a trailing slash, so paths compare equal.
        let root: PathBuf = root.components().collect();
        match fs::metadata(&root) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return Err(Error::NotADirectory { root: spec.root }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::RootMissing { root: spec.root })
            }
            Err(source) => return Err(Error::Io { path: root, source }),
        }

        let mut state = self.shared.state.lock();
        if state.keys.contains_key(key) {
            return Err(Error::AlreadyWatched {
                key: key.to_owned(),
            });
        }
        let mut added = Vec::new();
        let result = state.watch_new_root(&root, &filter, spec.max_files, &mut added);
        let count = match result {
            Ok(count) => count,
            Err(error) => {
                state.rollback(&added);
                return Err(error);
            }
        };
        if count > spec.max_files {
            state.rollback(&added);
            return Err(Error::TooManyFiles {
                root,
                count,
                max: spec.max_files,
            });
        }
        let id = state.next_id;
        state.next_id += 1;
        tracing::debug!(root = %root.display(), files = count, dirs = added.len(), "watching");
        state.keys.insert(key.to_owned(), Root { id, root, filter });
        Ok(())
    }

    fn unwatch(&self, key: &str) -> Result<()> {
        let _span = tracing::debug_span!("unwatch", key = %key).entered();
        let mut state = self.shared.state.lock();
        let Some(root) = state.keys.remove(key) else {
            return Err(Error::NotWatched {
                key: key.to_owned(),
            });
        };
        state.release_unneeded(&root.root);
        tracing::debug!(root = %root.root.display(), "unwatched");
        Ok(())
    }

    fn subscribe(&self) -> Receiver<WatchEvent> {
        let (tx, rx) = unbounded();
        self.shared.subscribers.lock().push(tx);
        rx
    }

    fn watched(&self) -> Vec<WatchKey> {
        let mut keys: Vec<WatchKey> = self.shared.state.lock().keys.keys().cloned().collect();
        keys.sort();
        keys
    }
}

impl Shared {
    fn broadcast(&self, events: Vec<WatchEvent>) {
        if events.is_empty() {
            return;
        }
        let mut subscribers = self.subscribers.lock();
        for event in events {
            subscribers.retain(|subscriber| subscriber.send(event.clone()).is_ok());
        }
    }
}

impl State {
    /// Walks a new root: watches its folders (unless `count` already exceeds
    /// `max`) and counts its relevant files. Newly watched folders are pushed
    /// to `added` so a failure can be rolled back.
    fn watch_new_root(
        &mut self,
        root: &Path,
        filter: &PathFilter,
        max: usize,
        added: &mut Vec<PathBuf>,
    ) -> Result<usize> {
        let mut count = 0usize;
        let walker = WalkDir::new(root).into_iter().filter_entry(|entry| {
            entry.depth() == 0
                || !(entry.file_type().is_dir() && is_ignored_dir_name(entry.file_name()))
        });
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) if error.depth() == 0 => {
                    return Err(Error::Io {
                        path: root.to_owned(),
                        source: error.into(),
                    })
                }
                Err(error) => {
                    tracing::warn!(%error, "skipping an unreadable part of the sandbox tree");
                    continue;
                }
            };
            if entry.file_type().is_dir() {
                if count <= max && self.watch_dir(entry.path())? {
                    added.push(entry.path().to_owned());
                }
            } else if entry
                .path()
                .strip_prefix(root)
                .is_ok_and(|relative| filter.is_relevant(relative))
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Adds an OS watch on one folder. `Ok(false)`: already watched, or the
    /// folder vanished meanwhile.
    fn watch_dir(&mut self, dir: &Path) -> Result<bool> {
        if self.dirs.contains(dir) {
            return Ok(false);
        }
        match self.os.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.dirs.insert(dir.to_owned());
                Ok(true)
            }
            Err(error) => match &error.kind {
                notify::ErrorKind::MaxFilesWatch => Err(Error::WatchLimit {
                    path: dir.to_owned(),
                }),
                notify::ErrorKind::PathNotFound => Ok(false),
                notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => Ok(false),
                _ => Err(Error::Notify {
                    path: dir.to_owned(),
                    source: error,
                }),
            },
        }
    }

    fn unwatch_dir(&mut self, dir: &Path) {
        if self.dirs.remove(dir) {
            if let Err(error) = self.os.unwatch(dir) {
                // notify drops the watches of deleted and moved-away folders
                // by itself, so "not found" is the normal case here.
                tracing::trace!(dir = %dir.display(), %error, "folder watch already gone");
            }
        }
    }

    fn rollback(&mut self, added: &[PathBuf]) {
        for dir in added {
            self.unwatch_dir(dir);
        }
    }

    /// Watched folders at or under `dir` (component-wise order keeps a
    /// folder's descendants right after it).
    fn dirs_under(&self, dir: &Path) -> Vec<PathBuf> {
        self.dirs
            .range(dir.to_path_buf()..)
            .take_while(|watched| watched.starts_with(dir))
            .cloned()
            .collect()
    }

    /// Drops the watches of `dir` and everything under it.
    fn drop_tree(&mut self, dir: &Path) {
        for watched in self.dirs_under(dir) {
            self.unwatch_dir(&watched);
        }
    }

    /// After a key left: drops the watches under its root that no remaining
    /// key needs.
    fn release_unneeded(&mut self, root: &Path) {
        for watched in self.dirs_under(root) {
            if !self.needs_dir(&watched) {
                self.unwatch_dir(&watched);
            }
        }
    }

    /// Whether some key's tree includes the folder.
    fn needs_dir(&self, dir: &Path) -> bool {
        self.keys.values().any(|root| {
            dir.strip_prefix(&root.root)
                .is_ok_and(|relative| !PathFilter::is_ignored_dir(relative))
        })
    }

    /// The key owning `path`: the deepest root strictly containing it.
    fn route(&self, path: &Path) -> Option<(&WatchKey, &Root)> {
        self.keys
            .iter()
            .filter(|(_, root)| path != root.root && path.starts_with(&root.root))
            .max_by_key(|(_, root)| root.root.components().count())
    }

    /// Watches a folder that appeared, and those below it; returns the files
    /// found in them (they may predate the watch).
    fn add_tree(&mut self, dir: &Path, out: &mut Vec<WatchEvent>) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut walker = WalkDir::new(dir).into_iter();
        while let Some(entry) = walker.next() {
            let Ok(entry) = entry else { continue };
            if entry.file_type().is_dir() {
                if entry.depth() > 0 && !self.needs_dir(entry.path()) {
                    walker.skip_current_dir();
                    continue;
                }
                if let Err(error) = self.watch_dir(entry.path()) {
                    let key = self.route(entry.path()).map(|(key, _)| key.clone());
                    tracing::warn!(%error, "could not watch a new folder");
                    out.push(WatchEvent::Error {
                        key,
                        message: error.to_string(),
                    });
                    break;
                }
            } else {
                files.push(entry.into_path());
            }
        }
        files
    }
}

struct Pending {
    id: u64,
    paths: BTreeSet<PathBuf>,
    /// Paths whose last event may be followed by more writes (created or
    /// modified, not yet closed): while any is here the set waits the whole
    /// debounce, otherwise only the settle time.
    unsettled: BTreeSet<PathBuf>,
    first: Instant,
    last: Instant,
}

impl Pending {
    fn new(id: u64, now: Instant) -> Self {
        Self {
            id,
            paths: BTreeSet::new(),
            unsettled: BTreeSet::new(),
            first: now,
            last: now,
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    raw: Receiver<RawEvent>,
    stop: Receiver<()>,
    pending: HashMap<WatchKey, Pending>,
}

impl Worker {
    fn run(mut self) {
        let _span = tracing::debug_span!("sandbox-watch worker").entered();
        loop {
            // Nothing pending: block until an event or the stop signal.
            let timer = match self.next_deadline() {
                Some(deadline) => crossbeam_channel::at(deadline),
                None => crossbeam_channel::never(),
            };
            select! {
                recv(self.stop) -> _ => break,
                recv(self.raw) -> event => match event {
                    Ok(event) => self.handle(event),
                    Err(_) => break,
                },
                recv(timer) -> _ => {}
            }
            self.flush_due(Instant::now());
        }
        tracing::debug!("sandbox-watch worker stopped");
    }

    fn deadline(&self, pending: &Pending) -> Instant {
        let config = &self.shared.config;
        let quiet = if pending.unsettled.is_empty() {
            config.settle.min(config.debounce)
        } else {
            config.debounce
        };
        (pending.last + quiet).min(pending.first + config.max_wait)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| self.deadline(p)).min()
    }

    fn handle(&mut self, event: RawEvent) {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                let state = self.shared.state.lock();
                let key = error
                    .paths
                    .first()
                    .and_then(|path| state.route(path))
                    .map(|(key, _)| key.clone());
                tracing::warn!(%error, ?key, "file watcher error");
                self.shared.broadcast(vec![WatchEvent::Error {
                    key,
                    message: format!(
                        "the file watcher reported an error, changes may have been missed: {error}"
                    ),
                }]);
                return;
            }
        };
        if event.need_rescan() {
            tracing::warn!("the OS dropped file events (queue overflow)");
            let _state = self.shared.state.lock();
            self.shared.broadcast(vec![WatchEvent::Error {
                key: None,
                message: "the OS dropped file events (inotify queue overflow), changes may have \
                          been missed; rebuild the watched sandboxes, and raise \
                          fs.inotify.max_queued_events if it recurs"
                    .to_owned(),
            }]);
            return;
        }
        // Opens and read-only closes are what builds do to sources: never a change.
        let counts = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        if !counts {
            return;
        }
        tracing::trace!(?event, "file event");
        let now = Instant::now();
        let shared = Arc::clone(&self.shared);
        let mut state = shared.state.lock();
        let mut out = Vec::new();
        for (index, path) in event.paths.iter().enumerate() {
            let vanished = match event.kind {
                EventKind::Remove(_) => true,
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) => true,
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => index == 0,
                _ => false,
            };
            // Done with: closed after writing, renamed into place, gone.
            // Anything else (created, written, touched) may be mid-write.
            let settled = vanished
                || matches!(
                    event.kind,
                    EventKind::Access(AccessKind::Close(AccessMode::Write))
                        | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                );
            self.apply(&mut state, path, vanished, settled, now, &mut out);
        }
        shared.broadcast(out);
    }

    fn apply(
        &mut self,
        state: &mut State,
        path: &Path,
        vanished: bool,
        settled: bool,
        now: Instant,
        out: &mut Vec<WatchEvent>,
    ) {
        // A root that went away (deleted: DELETE_SELF; renamed: MOVE_SELF).
        let gone: Vec<WatchKey> = state
            .keys
            .iter()
            .filter(|(_, root)| root.root == path && (vanished || !path.is_dir()))
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            if let Some(root) = state.keys.remove(&key) {
                self.pending.remove(&key);
                state.release_unneeded(&root.root);
                tracing::info!(key = %key, root = %root.root.display(), "sandbox root removed");
                out.push(WatchEvent::RootRemoved {
                    key,
                    root: root.root,
                });
            }
        }

        // Folder bookkeeping. A vanished folder's watch is dropped even if a
        // new folder already took its name: that one needs a watch of its own.
        if vanished {
            state.drop_tree(path);
        }
        match fs::symlink_metadata(path) {
            Ok(metadata) if metadata.is_dir() => {
                if !state.dirs.contains(path) && state.needs_dir(path) {
                    // Files found in a new folder may still be being written.
                    for file in state.add_tree(path, out) {
                        self.record(state, &file, false, now);
                    }
                }
            }
            Ok(_) => self.record(state, path, settled, now),
            Err(_) => {
                state.drop_tree(path);
                self.record(state, path, true, now);
            }
        }
    }

    /// Adds a changed path to its key's pending set, if relevant; `settled`
    /// says whether its writer is done with it (see [`Pending::unsettled`]).
    fn record(&mut self, state: &State, path: &Path, settled: bool, now: Instant) {
        let Some((key, root)) = state.route(path) else {
            return;
        };
        let relevant = path
            .strip_prefix(&root.root)
            .is_ok_and(|relative| root.filter.is_relevant(relative));
        if !relevant {
            return;
        }
        let pending = self
            .pending
            .entry(key.clone())
            .or_insert_with(|| Pending::new(root.id, now));
        if pending.id != root.id {
            *pending = Pending::new(root.id, now);
        }
        if settled {
            pending.unsettled.remove(path);
        } else {
            pending.unsettled.insert(path.to_owned());
        }
        pending.paths.insert(path.to_owned());
        pending.last = now;
    }

    fn flush_due(&mut self, now: Instant) {
        let due: Vec<WatchKey> = self
            .pending
            .iter()
            .filter(|(_, pending)| self.deadline(pending) <= now)
            .map(|(key, _)| key.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let state = shared.state.lock();
        let mut out = Vec::new();
        for key in due {
            let Some(pending) = self.pending.remove(&key) else {
                continue;
            };
            // Unwatched (or re-watched) since: drop.
            if state.keys.get(&key).map(|root| root.id) != Some(pending.id) {
                continue;
            }
            let emitted_at = Instant::now();
            tracing::debug!(
                key = %key,
                files = pending.paths.len(),
                waited_us = u64::try_from(emitted_at.duration_since(pending.first).as_micros())
                    .unwrap_or(u64::MAX),
                "change set"
            );
            out.push(WatchEvent::Changed(ChangeSet {
                key,
                paths: pending.paths,
                first_change: pending.first,
                emitted_at,
            }));
        }
        shared.broadcast(out);
    }
}
