//! What counts as a change, and how saves coalesce.

use std::fs;
use std::time::Duration;

use anyhow::Result;
use sandbox_watch::{WatchSpec, Watcher};

use crate::support::{
    assert_quiet, change_naming, next_change, package, paths, tree, watcher, watcher_with, write,
    DEBOUNCE,
};

#[test]
fn editing_a_file_sends_one_change_set_naming_it() -> Result<()> {
    let dir = package()?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    write(&dir.path().join("src/lib.rs"), "pub fn f() -> u8 { 1 }\n")?;

    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(dir.path(), &["src/lib.rs"]));
    // Trailing edge: sent at least one debounce after the first event.
    assert!(changes.emitted_at.duration_since(changes.first_change) >= DEBOUNCE);
    Ok(())
}

#[test]
fn rapid_writes_make_exactly_one_change_set() -> Result<()> {
    // A wider window than the others, so a descheduled test thread cannot
    // split the burst.
    let debounce = Duration::from_millis(200);
    let dir = package()?;
    let (watcher, events) = watcher_with(debounce)?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    let lib = dir.path().join("src/lib.rs");
    for round in 0..10 {
        write(&lib, &format!("pub fn f() -> u32 {{ {round} }}\n"))?;
    }

    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(dir.path(), &["src/lib.rs"]));
    assert_quiet(&events, debounce * 3)?;
    Ok(())
}

#[test]
fn target_hidden_and_unmatched_files_send_nothing() -> Result<()> {
    let dir = tree(&[
        ("Cargo.toml", ""),
        ("src/lib.rs", ""),
        ("target/debug/old.rs", ""),
        (".git/HEAD", ""),
    ])?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    let root = dir.path();
    write(&root.join("target/foo.rs"), "fn main() {}")?;
    write(&root.join("target/debug/deps/new.rs"), "")?;
    write(&root.join(".git/x"), "x")?;
    write(&root.join(".idea/inner/lib.rs"), "")?;
    write(&root.join("src/.cache/lib.rs"), "")?;
    write(&root.join("notes.txt"), "not a source")?;
    write(&root.join("src/target/generated.rs"), "")?;
    // A relevant edit last: it must be the first thing reported, alone.
    write(&root.join("src/lib.rs"), "pub fn f() {}")?;

    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(root, &["src/lib.rs"]));
    Ok(())
}

#[test]
fn a_build_script_in_a_hidden_path_dependency_is_a_change() -> Result<()> {
    // Cargo builds what a hidden folder holds when a path dependency points
    // there, so an edit there must reload like any other.
    let dir = tree(&[("Cargo.toml", ""), (".vendor/x/build.rs", "fn main() {}")])?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;
    let root = dir.path();
    write(&root.join(".vendor/x/build.rs"), "fn main() { }")?;
    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(root, &[".vendor/x/build.rs"]));
    Ok(())
}

#[test]
fn editor_temp_files_are_ignored_even_when_globs_match() -> Result<()> {
    let dir = tree(&[("a.rs", "")])?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(dir.path()).with_include(["**/*"]))?;

    let root = dir.path();
    for name in [
        "a.rs~",
        "4913",
        ".#a.rs",
        "a.rs.swp",
        ".a.rs.swp",
        "a.rs.swo",
    ] {
        write(&root.join(name), "tmp")?;
    }
    write(&root.join("a.rs"), "fn a() {}")?;

    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(root, &["a.rs"]));
    Ok(())
}

#[test]
fn reading_sources_is_not_a_change() -> Result<()> {
    // A build reads every source: that must never look like an edit.
    let dir = package()?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    let root = dir.path();
    for file in ["src/lib.rs", "src/util.rs", "Cargo.toml"] {
        fs::read_to_string(root.join(file))?;
    }
    write(&root.join("src/util.rs"), "pub fn g() -> u8 { 2 }")?;

    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(root, &["src/util.rs"]));
    Ok(())
}

#[test]
fn rename_over_save_names_the_real_file() -> Result<()> {
    let dir = package()?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    let root = dir.path();
    // The two common temp names: a visible suffix and a hidden swap file.
    write(&root.join("src/lib.rs.tmp.4242"), "pub fn f() -> u8 { 1 }")?;
    fs::rename(root.join("src/lib.rs.tmp.4242"), root.join("src/lib.rs"))?;
    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(root, &["src/lib.rs"]));

    write(&root.join("src/.util.rs.swp"), "pub fn g() -> u8 { 1 }")?;
    fs::rename(root.join("src/.util.rs.swp"), root.join("src/util.rs"))?;
    let changes = change_naming(&events, "a", &root.join("src/util.rs"))?;
    assert_eq!(changes.paths, paths(root, &["src/util.rs"]));
    Ok(())
}

#[test]
fn delete_then_create_names_the_file() -> Result<()> {
    let dir = package()?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    let lib = dir.path().join("src/lib.rs");
    fs::remove_file(&lib)?;
    write(&lib, "pub fn f() -> u8 { 3 }")?;

    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(dir.path(), &["src/lib.rs"]));
    Ok(())
}

#[test]
fn a_deleted_file_is_a_change() -> Result<()> {
    let dir = package()?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    fs::remove_file(dir.path().join("src/util.rs"))?;

    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(dir.path(), &["src/util.rs"]));
    Ok(())
}

#[test]
fn new_folders_are_watched() -> Result<()> {
    let dir = package()?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    let root = dir.path();
    // Folder and file in quick succession: the file may land before the
    // folder's watch exists, and must be reported anyway.
    let wire = root.join("src/net/proto/wire.rs");
    write(&wire, "pub struct Frame;")?;
    change_naming(&events, "a", &wire)?;

    // Later edits inside the new folders are seen: their watches exist.
    write(&wire, "pub struct Frame(u8);")?;
    let changes = change_naming(&events, "a", &wire)?;
    assert_eq!(changes.paths, paths(root, &["src/net/proto/wire.rs"]));

    let deeper = root.join("src/net/proto/v2/mod.rs");
    write(&deeper, "")?;
    change_naming(&events, "a", &deeper)?;
    Ok(())
}

#[test]
fn a_folder_moved_in_is_reported_and_watched() -> Result<()> {
    let outside = tree(&[("moved/a.rs", ""), ("moved/inner/b.rs", "")])?;
    let dir = package()?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    let root = dir.path();
    fs::rename(outside.path().join("moved"), root.join("src/moved"))?;
    let b = root.join("src/moved/inner/b.rs");
    let changes = change_naming(&events, "a", &b)?;
    assert!(changes.paths.contains(&root.join("src/moved/a.rs")));

    write(&b, "fn b() {}")?;
    let changes = change_naming(&events, "a", &b)?;
    assert_eq!(changes.paths, paths(root, &["src/moved/inner/b.rs"]));
    Ok(())
}

#[test]
fn a_folder_deleted_and_recreated_is_watched_again() -> Result<()> {
    let dir = tree(&[("Cargo.toml", ""), ("src/m/a.rs", "")])?;
    let (watcher, events) = watcher()?;
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    let root = dir.path();
    let a = root.join("src/m/a.rs");
    fs::remove_dir_all(root.join("src/m"))?;
    write(&a, "fn a() {}")?;
    change_naming(&events, "a", &a)?;

    // A file created later in the recreated folder is seen.
    let b = root.join("src/m/b.rs");
    write(&b, "fn b() {}")?;
    let changes = change_naming(&events, "a", &b)?;
    assert_eq!(changes.paths, paths(root, &["src/m/b.rs"]));
    Ok(())
}
