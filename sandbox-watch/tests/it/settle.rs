//! A change set whose files are all settled (closed after writing, renamed
//! into place) goes out after the short settle time, not the debounce; a
//! file still open for writing holds it for the whole debounce.
//!
//! The debounce here is far longer than any wait a test makes, so "sent
//! before the debounce" can only mean the settle rule released it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use sandbox_watch::{WatchConfig, WatchSpec, Watcher};

use crate::support::{assert_quiet, next_change, package, paths, watcher_with_config, write};

/// Longer than [`crate::support::DEADLINE`]: a change set waiting for it
/// would fail the test.
const LONG_DEBOUNCE: Duration = Duration::from_secs(20);

fn config() -> WatchConfig {
    WatchConfig {
        debounce: LONG_DEBOUNCE,
        settle: Duration::from_millis(8),
        max_wait: LONG_DEBOUNCE * 2,
    }
}

#[test]
fn a_file_written_and_closed_is_sent_without_waiting_the_debounce() -> Result<()> {
    let dir = package()?;
    let (watcher, events) = watcher_with_config(config())?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    write(&dir.path().join("src/lib.rs"), "pub fn f() -> u8 { 1 }\n")?;

    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(dir.path(), &["src/lib.rs"]));
    assert!(changes.emitted_at.duration_since(changes.first_change) < LONG_DEBOUNCE);
    Ok(())
}

#[test]
fn a_file_renamed_into_place_is_settled() -> Result<()> {
    let dir = package()?;
    let (watcher, events) = watcher_with_config(config())?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    // How many editors save: write the new contents to a temp file, then
    // rename it over the old one (here from outside the watched tree, so
    // the rename is the only event).
    let outside = tempfile::tempdir_in(dir.path().parent().unwrap_or(dir.path()))?;
    let temp = outside.path().join("lib.rs.tmp");
    fs::write(&temp, "pub fn f() -> u8 { 2 }\n")?;
    fs::rename(&temp, dir.path().join("src/lib.rs"))?;
    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(dir.path(), &["src/lib.rs"]));
    assert!(changes.emitted_at.duration_since(changes.first_change) < LONG_DEBOUNCE);
    Ok(())
}

#[test]
fn a_file_still_open_for_writing_waits_until_it_is_closed() -> Result<()> {
    let dir = package()?;
    let (watcher, events) = watcher_with_config(config())?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    let lib = dir.path().join("src/lib.rs");
    let mut file = OpenOptions::new().write(true).truncate(true).open(&lib)?;
    file.write_all(b"pub fn f() -> u8 {")?;
    file.flush()?;
    // Written but open: the writer may not be done. Far past the settle
    // time, still nothing.
    assert_quiet(&events, Duration::from_millis(300))?;

    file.write_all(b" 3 }\n")?;
    drop(file);
    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(dir.path(), &["src/lib.rs"]));
    assert!(changes.emitted_at.duration_since(changes.first_change) < LONG_DEBOUNCE);
    Ok(())
}

#[test]
fn an_open_file_holds_back_a_settled_one_of_the_same_save() -> Result<()> {
    let dir = package()?;
    let (watcher, events) = watcher_with_config(config())?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    let util = dir.path().join("src/util.rs");
    let mut open = OpenOptions::new().write(true).truncate(true).open(&util)?;
    open.write_all(b"pub fn g() -> u8 {")?;
    open.flush()?;
    write(&dir.path().join("src/lib.rs"), "pub fn f() -> u8 { 4 }\n")?;
    assert_quiet(&events, Duration::from_millis(300))?;

    open.write_all(b" 4 }\n")?;
    drop(open);
    let changes = next_change(&events, "a")?;
    assert_eq!(
        changes.paths,
        paths(dir.path(), &["src/lib.rs", "src/util.rs"])
    );
    Ok(())
}
