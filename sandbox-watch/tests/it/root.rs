//! The watched root itself going away.

use std::fs;

use anyhow::{bail, Context, Result};
use crossbeam_channel::Receiver;
use sandbox_watch::{Error, WatchEvent, WatchSpec, Watcher};

use crate::support::{next_change, next_event, package, paths, tree, watched, watcher, write};

/// Waits for `RootRemoved` of `key`, skipping its change sets (deleting a
/// tree also deletes its files).
fn root_removed(events: &Receiver<WatchEvent>, key: &str) -> Result<std::path::PathBuf> {
    loop {
        match next_event(events)? {
            WatchEvent::RootRemoved { key: k, root } if k == key => return Ok(root),
            WatchEvent::Changed(changes) if changes.key == key => continue,
            other => bail!("waiting for `{key}`'s root to be removed, got {other:?}"),
        }
    }
}

#[test]
fn removing_the_root_reports_it_and_spares_other_keys() -> Result<()> {
    let (a, b) = (package()?, package()?);
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(a.path()))?;
    watcher.watch("b", WatchSpec::new(b.path()))?;

    fs::remove_dir_all(a.path())?;
    let root = root_removed(&events, "a")?;
    assert_eq!(root, a.path());
    assert_eq!(watched(&watcher), ["b"]);
    assert!(matches!(
        watcher.unwatch("a"),
        Err(Error::NotWatched { .. })
    ));

    write(&b.path().join("src/lib.rs"), "pub fn f() -> u8 { 1 }")?;
    let changes = next_change(&events, "b")?;
    assert_eq!(changes.paths, paths(b.path(), &["src/lib.rs"]));
    Ok(())
}

#[test]
fn renaming_the_root_reports_it_removed() -> Result<()> {
    let parent = tree(&[("sandbox/Cargo.toml", ""), ("sandbox/src/lib.rs", "")])?;
    let root = parent.path().join("sandbox");
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(&root))?;

    let moved = parent.path().join("moved");
    fs::rename(&root, &moved)?;
    assert_eq!(root_removed(&events, "a")?, root);
    assert!(watched(&watcher).is_empty());

    // The old watches are gone: edits at the new place report nothing, and
    // the key can be watched again once the folder is back.
    write(&moved.join("src/lib.rs"), "pub fn f() {}")?;
    fs::rename(&moved, &root).context("move the sandbox back")?;
    watcher.watch("a", WatchSpec::new(&root))?;
    write(&root.join("src/lib.rs"), "pub fn f() -> u8 { 1 }")?;
    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(&root, &["src/lib.rs"]));
    Ok(())
}
