//! Source-tree watching for sandboxes: one OS watcher shared by every
//! sandbox, glob filters, a per-sandbox file cap and debounced change sets.
//!
//! Who uses it: `sandbox-core`'s auto-reload (it turns each [`ChangeSet`] into a
//! rebuild and hot swap), and any host that wants "these sources changed"
//! events without the rest of the sandbox machinery. The crate knows nothing
//! about cargo, compilers or plugins; a sandbox is just a [`WatchKey`] and a
//! root folder.
//!
//! - [`Watcher`] is the trait the rest of the workspace codes against.
//! - [`NotifyWatcher`] is the default backend: a single `notify` watcher
//!   (inotify on Linux) and one debouncer thread for all sandboxes.
//! - [`ManualWatcher`] is driven by hand, for tests and for hosts that learn
//!   about changes some other way.
//! - [`PathFilter`] is the "which files count" rule, reusable on its own.
//!
//! Writing a plugin? You want the plugin API crate, not this one. Want the
//! whole reload loop? Use `sandbox-core`'s `Manager::enable_auto_reload`.
//!
//! ```no_run
//! use std::time::Duration;
//! use sandbox_watch::{NotifyWatcher, WatchConfig, WatchEvent, WatchSpec, Watcher};
//!
//! let watcher = NotifyWatcher::new(WatchConfig::default())?;
//! let events = watcher.subscribe();
//! watcher.watch("counter", WatchSpec::new("/srv/sandboxes/counter"))?;
//! while let Ok(event) = events.recv_timeout(Duration::from_secs(60)) {
//!     if let WatchEvent::Changed(changes) = event {
//!         tracing::info!(key = %changes.key, files = changes.paths.len(), "rebuild");
//!     }
//! }
//! # Ok::<(), sandbox_watch::Error>(())
//! ```

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod backend;
mod filter;
mod manual;

pub use backend::NotifyWatcher;
pub use filter::PathFilter;
pub use manual::ManualWatcher;

/// Identifies one watched tree: the sandbox id, opaque to this crate.
pub type WatchKey = String;

/// The include globs used by [`WatchSpec::new`]: Rust sources, manifests,
/// lock files and build scripts, at any depth.
pub const DEFAULT_INCLUDE: [&str; 4] = ["**/*.rs", "**/Cargo.toml", "**/Cargo.lock", "**/build.rs"];

/// The file cap used by [`WatchSpec::new`].
pub const DEFAULT_MAX_FILES: usize = 10_000;

/// What to watch for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    /// The sandbox's source folder; watched with all its subfolders except
    /// `target/` and version-control and tool folders (`.git`, `.idea`, ...). Relative paths are made absolute against the
    /// current directory (symlinks are not resolved).
    pub root: PathBuf,
    /// Globs, relative to `root`, of the files whose changes count; see
    /// [`PathFilter`] for the syntax and what is always ignored.
    pub include: Vec<String>,
    /// The most relevant files the tree may hold when [`Watcher::watch`] is
    /// called; more is refused with [`Error::TooManyFiles`].
    pub max_files: usize,
}

impl WatchSpec {
    /// A spec with the default globs ([`DEFAULT_INCLUDE`]) and cap
    /// ([`DEFAULT_MAX_FILES`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            include: DEFAULT_INCLUDE
                .iter()
                .map(|glob| (*glob).to_owned())
                .collect(),
            max_files: DEFAULT_MAX_FILES,
        }
    }

    /// Replaces the include globs.
    #[must_use]
    pub fn with_include<I, S>(mut self, include: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.include = include.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the file cap.
    #[must_use]
    pub fn with_max_files(mut self, max_files: usize) -> Self {
        self.max_files = max_files;
        self
    }
}

/// The relevant files of one key that changed during one debounce window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    /// The key the files belong to.
    pub key: WatchKey,
    /// Absolute paths of the relevant files that were written, created,
    /// removed or renamed (either name, if relevant). Never empty.
    pub paths: BTreeSet<PathBuf>,
    /// When the first event of the window was received.
    pub first_change: Instant,
    /// When the change set was sent; `emitted_at - first_change` is the
    /// latency the debounce added.
    pub emitted_at: Instant,
}

/// What a [`Watcher`] reports to its subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Relevant files of a key changed.
    Changed(ChangeSet),
    /// The root of a key was removed or renamed away. The key is no longer
    /// watched (a later [`Watcher::unwatch`] answers [`Error::NotWatched`]);
    /// call [`Watcher::watch`] again once the folder is back.
    RootRemoved {
        /// The key whose root went away.
        key: WatchKey,
        /// The root as it was watched.
        root: PathBuf,
    },
    /// Something went wrong while watching; changes may have been missed, so
    /// a rebuild is the safe reaction.
    Error {
        /// The affected key, when the problem is tied to one.
        key: Option<WatchKey>,
        /// What happened and what to do.
        message: String,
    },
}

impl WatchEvent {
    /// The key this event is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            WatchEvent::Changed(changes) => Some(&changes.key),
            WatchEvent::RootRemoved { key, .. } => Some(key),
            WatchEvent::Error { key, .. } => key.as_deref(),
        }
    }
}

/// Settings of a [`NotifyWatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Quiet time after the last event of a key before its change set is
    /// sent (trailing edge) while a file of it may still be being written.
    /// Default 30 ms: editors finish a save within a few milliseconds, and
    /// the product's save-to-swapped budget is under 500 ms including a
    /// ~300 ms incremental build.
    pub debounce: Duration,
    /// Quiet time used instead of `debounce` once every file of a pending
    /// change set is *settled*: closed after writing, renamed into place or
    /// removed. A writer that has closed its file is done with it, so the
    /// wait is only for the other files of the same save (an editor's "save
    /// all" writes them back to back). Default 8 ms; never longer than
    /// `debounce`.
    pub settle: Duration,
    /// Longest a key's changes are held while events keep arriving, counted
    /// from its first event, so a constant stream still produces change sets.
    /// Default 300 ms (10 × `debounce`).
    pub max_wait: Duration,
}

impl WatchConfig {
    /// A config with the given debounce, `settle` = the smaller of the
    /// default 8 ms and `debounce`, and `max_wait` = 10 × `debounce`.
    pub fn with_debounce(debounce: Duration) -> Self {
        Self {
            debounce,
            settle: debounce.min(Duration::from_millis(8)),
            max_wait: debounce.saturating_mul(10),
        }
    }
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self::with_debounce(Duration::from_millis(30))
    }
}

/// Watches source trees, one per key, and reports their changes.
///
/// Required methods, and when the host calls them:
///
/// - [`watch`](Watcher::watch) — when a sandbox starts auto-reloading (created
///   with it on, or `enable_auto_reload`). Validates the spec and starts
///   reporting; errors leave nothing behind.
/// - [`unwatch`](Watcher::unwatch) — when the sandbox is destroyed or
///   auto-reload is turned off. No event for the key is sent after it returns.
/// - [`subscribe`](Watcher::subscribe) — once by the manager at start, and by
///   anyone else who wants the events. Every subscriber gets every event sent
///   after it subscribed; a dropped receiver is forgotten.
///
/// Provided: [`watched`](Watcher::watched) — for listings and diagnostics; the
/// default returns nothing, so implementations that track keys override it.
///
/// Implementations are shared between threads (`Send + Sync`) and used as
/// `Box<dyn Watcher>` / `Arc<dyn Watcher>`. A whole, minimal implementation —
/// it tracks keys and fans out, but never detects anything by itself:
///
/// ```
/// use std::collections::BTreeMap;
/// use crossbeam_channel::{unbounded, Receiver, Sender};
/// use parking_lot::Mutex;
/// use sandbox_watch::{Error, Result, WatchEvent, WatchKey, WatchSpec, Watcher};
///
/// #[derive(Debug, Default)]
/// struct Quiet {
///     keys: Mutex<BTreeMap<WatchKey, WatchSpec>>,
///     subscribers: Mutex<Vec<Sender<WatchEvent>>>,
/// }
///
/// impl Watcher for Quiet {
///     fn watch(&self, key: &str, spec: WatchSpec) -> Result<()> {
///         if !spec.root.is_dir() {
///             return Err(Error::RootMissing { root: spec.root });
///         }
///         let mut keys = self.keys.lock();
///         if keys.contains_key(key) {
///             return Err(Error::AlreadyWatched { key: key.to_owned() });
///         }
///         keys.insert(key.to_owned(), spec);
///         Ok(())
///     }
///
///     fn unwatch(&self, key: &str) -> Result<()> {
///         match self.keys.lock().remove(key) {
///             Some(_) => Ok(()),
///             None => Err(Error::NotWatched { key: key.to_owned() }),
///         }
///     }
///
///     fn subscribe(&self) -> Receiver<WatchEvent> {
///         let (tx, rx) = unbounded();
///         self.subscribers.lock().push(tx);
///         rx
///     }
///
///     fn watched(&self) -> Vec<WatchKey> {
///         self.keys.lock().keys().cloned().collect()
///     }
/// }
///
/// let watcher: Box<dyn Watcher> = Box::new(Quiet::default());
/// let dir = tempfile::tempdir().map_err(|e| Error::Io { path: "tempdir".into(), source: e })?;
/// watcher.watch("a", WatchSpec::new(dir.path()))?;
/// assert!(matches!(watcher.watch("a", WatchSpec::new(dir.path())), Err(Error::AlreadyWatched { .. })));
/// assert_eq!(watcher.watched(), ["a"]);
/// watcher.unwatch("a")?;
/// assert!(matches!(watcher.unwatch("a"), Err(Error::NotWatched { .. })));
/// # Ok::<(), Error>(())
/// ```
pub trait Watcher: Send + Sync + Debug {
    /// Starts watching `spec.root` under `key`.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyWatched`], [`Error::RootMissing`],
    /// [`Error::NotADirectory`], [`Error::TooManyFiles`],
    /// [`Error::InvalidGlob`], or an OS-level failure.
    fn watch(&self, key: &str, spec: WatchSpec) -> Result<()>;

    /// Stops watching `key`; pending changes of the key are dropped.
    ///
    /// # Errors
    ///
    /// [`Error::NotWatched`] for an unknown key.
    fn unwatch(&self, key: &str) -> Result<()>;

    /// A new receiver of every event sent from now on.
    fn subscribe(&self) -> crossbeam_channel::Receiver<WatchEvent>;

    /// The keys being watched, sorted. The default returns none.
    fn watched(&self) -> Vec<WatchKey> {
        Vec::new()
    }
}

impl<T: Watcher + ?Sized> Watcher for Box<T> {
    fn watch(&self, key: &str, spec: WatchSpec) -> Result<()> {
        (**self).watch(key, spec)
    }
    fn unwatch(&self, key: &str) -> Result<()> {
        (**self).unwatch(key)
    }
    fn subscribe(&self) -> crossbeam_channel::Receiver<WatchEvent> {
        (**self).subscribe()
    }
    fn watched(&self) -> Vec<WatchKey> {
        (**self).watched()
    }
}

impl<T: Watcher + ?Sized> Watcher for Arc<T> {
    fn watch(&self, key: &str, spec: WatchSpec) -> Result<()> {
        (**self).watch(key, spec)
    }
    fn unwatch(&self, key: &str) -> Result<()> {
        (**self).unwatch(key)
    }
    fn subscribe(&self) -> crossbeam_channel::Receiver<WatchEvent> {
        (**self).subscribe()
    }
    fn watched(&self) -> Vec<WatchKey> {
        (**self).watched()
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `watch` was called twice for one key.
    #[error("sandbox `{key}` is already watched; unwatch it first or use another key")]
    AlreadyWatched {
        /// The key.
        key: WatchKey,
    },
    /// `unwatch` was called for a key that is not watched.
    #[error("sandbox `{key}` is not watched; watch it first (or it was dropped after its root was removed)")]
    NotWatched {
        /// The key.
        key: WatchKey,
    },
    /// The root does not exist.
    #[error("watch root {} does not exist; create it or pass the sandbox's existing source folder", root.display())]
    RootMissing {
        /// The root as given.
        root: PathBuf,
    },
    /// The root is not a folder.
    #[error("watch root {} is not a directory; pass the sandbox's source folder", root.display())]
    NotADirectory {
        /// The root as given.
        root: PathBuf,
    },
    /// The tree holds more relevant files than the cap.
    #[error("sandbox root {} watches {count} files, more than the cap of {max}; raise max_files or narrow the sandbox", root.display())]
    TooManyFiles {
        /// The root.
        root: PathBuf,
        /// Relevant files found.
        count: usize,
        /// The cap ([`WatchSpec::max_files`]).
        max: usize,
    },
    /// An include glob does not parse.
    #[error("include glob `{glob}` is invalid: {}; fix the pattern, e.g. `**/*.rs`", source.kind())]
    InvalidGlob {
        /// The pattern.
        glob: String,
        /// Why it was refused.
        source: globset::Error,
    },
    /// The OS ran out of watches (inotify's per-user limit).
    #[error("the OS limit on file watches was reached while watching {}; raise fs.inotify.max_user_watches (sysctl) or watch fewer or smaller sandboxes", path.display())]
    WatchLimit {
        /// The folder that could not be watched.
        path: PathBuf,
    },
    /// The OS watcher failed.
    #[error("the OS file watcher failed on {}: {source}; check that the folder is readable and inotify is available", path.display())]
    Notify {
        /// The folder being watched.
        path: PathBuf,
        /// The backend's error.
        source: notify::Error,
    },
    /// Reading the file system failed.
    #[error("could not read {}: {source}; check that it exists and is readable", path.display())]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The background thread could not be started.
    #[error(
        "could not start the watcher thread: {source}; the process may be out of threads or memory"
    )]
    Thread {
        /// The OS error.
        source: std::io::Error,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
