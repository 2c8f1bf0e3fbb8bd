//! Several keys on one watcher: routing, nesting, unwatch.

use anyhow::Result;
use sandbox_watch::{WatchSpec, Watcher};

use crate::support::{
    assert_quiet, change_naming, next_change, package, paths, watched, watcher, write, DEBOUNCE,
};

#[test]
fn editing_one_key_never_reports_another() -> Result<()> {
    let (a, b) = (package()?, package()?);
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(a.path()))?;
    watcher.watch("b", WatchSpec::new(b.path()))?;
    assert_eq!(watched(&watcher), ["a", "b"]);

    write(&a.path().join("src/lib.rs"), "pub fn f() -> u8 { 1 }")?;
    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(a.path(), &["src/lib.rs"]));
    assert_quiet(&events, DEBOUNCE * 4)?;

    write(&b.path().join("Cargo.toml"), "[package]\nname = \"b\"\n")?;
    let changes = next_change(&events, "b")?;
    assert_eq!(changes.paths, paths(b.path(), &["Cargo.toml"]));
    Ok(())
}

#[test]
fn nested_roots_route_to_the_deepest() -> Result<()> {
    let outer = package()?;
    let inner_root = outer.path().join("crates/inner");
    write(&inner_root.join("src/lib.rs"), "")?;
    let (watcher, events) = watcher()?;
    watcher.watch("outer", WatchSpec::new(outer.path()))?;
    watcher.watch("inner", WatchSpec::new(&inner_root))?;

    let inner_lib = inner_root.join("src/lib.rs");
    write(&inner_lib, "pub fn i() {}")?;
    let changes = next_change(&events, "inner")?;
    assert_eq!(changes.paths, paths(&inner_root, &["src/lib.rs"]));

    write(&outer.path().join("src/lib.rs"), "pub fn o() {}")?;
    let changes = next_change(&events, "outer")?;
    assert_eq!(changes.paths, paths(outer.path(), &["src/lib.rs"]));

    // Once the inner key leaves, its files belong to the outer one again.
    watcher.unwatch("inner")?;
    write(&inner_lib, "pub fn i() -> u8 { 1 }")?;
    let changes = next_change(&events, "outer")?;
    assert_eq!(
        changes.paths,
        paths(outer.path(), &["crates/inner/src/lib.rs"])
    );
    Ok(())
}

#[test]
fn unwatch_stops_events() -> Result<()> {
    let (a, b) = (package()?, package()?);
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(a.path()))?;
    watcher.watch("b", WatchSpec::new(b.path()))?;

    watcher.unwatch("a")?;
    assert_eq!(watched(&watcher), ["b"]);
    write(&a.path().join("src/lib.rs"), "pub fn f() -> u8 { 1 }")?;
    write(&b.path().join("src/lib.rs"), "pub fn f() -> u8 { 1 }")?;

    // b's change is the first event: a's edit, made before it, sent nothing.
    let changes = next_change(&events, "b")?;
    assert_eq!(changes.paths, paths(b.path(), &["src/lib.rs"]));
    assert_quiet(&events, DEBOUNCE * 4)?;
    Ok(())
}

#[test]
fn a_key_can_be_watched_again_after_unwatch() -> Result<()> {
    let a = package()?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(a.path()))?;
    watcher.unwatch("a")?;
    watcher.watch("a", WatchSpec::new(a.path()))?;

    let lib = a.path().join("src/lib.rs");
    write(&lib, "pub fn f() -> u8 { 2 }")?;
    let changes = change_naming(&events, "a", &lib)?;
    assert_eq!(changes.paths, paths(a.path(), &["src/lib.rs"]));
    Ok(())
}
