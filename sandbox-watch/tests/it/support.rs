//! Fixtures and deadline-bounded waits.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use sandbox_watch::{ChangeSet, NotifyWatcher, WatchConfig, WatchEvent, Watcher};
use tempfile::TempDir;

/// How long any expected event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The debounce most tests run with.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// A temp dir holding `files` (relative path, contents).
pub fn tree(files: &[(&str, &str)]) -> Result<TempDir> {
    let dir = tempfile::tempdir()?;
    for (path, contents) in files {
        write(&dir.path().join(path), contents)?;
    }
    Ok(dir)
}

/// A small Cargo package.
pub fn package() -> Result<TempDir> {
    tree(&[
        ("Cargo.toml", "[package]\nname = \"p\"\n"),
        ("src/lib.rs", "pub fn f() {}\n"),
        ("src/util.rs", "pub fn g() {}\n"),
    ])
}

/// Writes a file, creating its folders.
pub fn write(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

/// A watcher with `debounce` (settled files too: these tests are about
/// the debounce; `settle.rs` tests the shorter wait) and one subscriber.
pub fn watcher_with(debounce: Duration) -> Result<(NotifyWatcher, Receiver<WatchEvent>)> {
    watcher_with_config(WatchConfig {
        settle: debounce,
        ..WatchConfig::with_debounce(debounce)
    })
}

/// A watcher with `config` and one subscriber.
pub fn watcher_with_config(config: WatchConfig) -> Result<(NotifyWatcher, Receiver<WatchEvent>)> {
    let watcher = NotifyWatcher::new(config)?;
    let events = watcher.subscribe();
    Ok((watcher, events))
}

/// A watcher with [`DEBOUNCE`] and one subscriber.
pub fn watcher() -> Result<(NotifyWatcher, Receiver<WatchEvent>)> {
    watcher_with(DEBOUNCE)
}

/// The next event, within [`DEADLINE`].
pub fn next_event(events: &Receiver<WatchEvent>) -> Result<WatchEvent> {
    events
        .recv_timeout(DEADLINE)
        .with_context(|| format!("no watch event within {DEADLINE:?}"))
}

/// The next event, which must be a change set of `key`.
pub fn next_change(events: &Receiver<WatchEvent>, key: &str) -> Result<ChangeSet> {
    match next_event(events)? {
        WatchEvent::Changed(changes) if changes.key == key => Ok(changes),
        other => bail!("expected a change set of `{key}`, got {other:?}"),
    }
}

/// The first change set of `key` naming `path`, within [`DEADLINE`]. Earlier
/// change sets of `key` (e.g. a save split across two windows by a slow
/// test thread) are skipped; any other event fails.
pub fn change_naming(events: &Receiver<WatchEvent>, key: &str, path: &Path) -> Result<ChangeSet> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(WatchEvent::Changed(changes)) if changes.key == key => {
                if changes.paths.contains(path) {
                    return Ok(changes);
                }
            }
            Ok(other) => bail!(
                "waiting for a change of {} in `{key}`, got {other:?}",
                path.display()
            ),
            Err(_) => bail!(
                "no change of {} in `{key}` within {DEADLINE:?}",
                path.display()
            ),
        }
    }
}

/// Asserts that no event arrives within `window` (a bounded wait, not a
/// synchronization sleep).
pub fn assert_quiet(events: &Receiver<WatchEvent>, window: Duration) -> Result<()> {
    match events.recv_timeout(window) {
        Err(RecvTimeoutError::Timeout) => Ok(()),
        Err(RecvTimeoutError::Disconnected) => bail!("the watcher hung up"),
        Ok(event) => bail!("expected no event within {window:?}, got {event:?}"),
    }
}

/// The set of `paths` under `root`.
pub fn paths(root: &Path, paths: &[&str]) -> std::collections::BTreeSet<PathBuf> {
    paths.iter().map(|path| root.join(path)).collect()
}

/// Keys of what the watcher watches, as `&str`s for comparisons.
pub fn watched(watcher: &dyn Watcher) -> Vec<String> {
    watcher.watched()
}
