//! Bad input answers with typed errors and leaves nothing behind.

use std::path::PathBuf;

use anyhow::Result;
use sandbox_watch::{Error, WatchSpec, Watcher};

use crate::support::{next_change, package, paths, tree, watched, watcher, write};

#[test]
fn watching_a_key_twice_is_refused() -> Result<()> {
    let (a, other) = (package()?, package()?);
    let (watcher, _events) = watcher()?;
    watcher.watch("a", WatchSpec::new(a.path()))?;
    let error = watcher.watch("a", WatchSpec::new(other.path()));
    assert!(matches!(error, Err(Error::AlreadyWatched { ref key }) if key == "a"));
    assert_eq!(watched(&watcher), ["a"]);
    Ok(())
}

#[test]
fn unwatching_an_unknown_key_is_refused() -> Result<()> {
    let (watcher, _events) = watcher()?;
    let error = watcher.unwatch("nope");
    assert!(matches!(error, Err(Error::NotWatched { ref key }) if key == "nope"));
    Ok(())
}

#[test]
fn a_missing_root_is_refused() -> Result<()> {
    let dir = tree(&[])?;
    let missing = dir.path().join("not-there");
    let (watcher, _events) = watcher()?;
    let error = watcher.watch("a", WatchSpec::new(&missing));
    assert!(matches!(error, Err(Error::RootMissing { ref root }) if *root == missing));
    assert!(watched(&watcher).is_empty());
    Ok(())
}

#[test]
fn a_file_as_root_is_refused() -> Result<()> {
    let dir = package()?;
    let file = dir.path().join("Cargo.toml");
    let (watcher, _events) = watcher()?;
    let error = watcher.watch("a", WatchSpec::new(&file));
    assert!(matches!(error, Err(Error::NotADirectory { ref root }) if *root == file));
    Ok(())
}

#[test]
fn a_bad_glob_is_refused() -> Result<()> {
    let dir = package()?;
    let (watcher, _events) = watcher()?;
    let error = watcher.watch("a", WatchSpec::new(dir.path()).with_include(["src/[.rs"]));
    assert!(matches!(error, Err(Error::InvalidGlob { ref glob, .. }) if glob == "src/[.rs"));
    Ok(())
}

#[test]
fn too_many_files_is_refused_and_leaves_nothing_behind() -> Result<()> {
    let dir = tree(&[
        ("Cargo.toml", ""),
        ("src/a.rs", ""),
        ("src/b.rs", ""),
        ("src/c/d.rs", ""),
        ("src/c/e.rs", ""),
        // Not counted: ignored or unmatched.
        ("target/x.rs", ""),
        ("target/y.rs", ""),
        (".git/z.rs", ""),
        ("README.md", ""),
    ])?;
    let (watcher, events) = watcher()?;
    let error = watcher.watch("a", WatchSpec::new(dir.path()).with_max_files(3));
    let Err(error) = error else {
        anyhow::bail!("a tree of 5 files was accepted under a cap of 3");
    };
    assert!(
        matches!(
            error,
            Error::TooManyFiles {
                count: 5,
                max: 3,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("raise max_files"), "{error}");
    assert!(watched(&watcher).is_empty());

    // Exactly at the cap is fine, and the key works normally.
    watcher.watch("a", WatchSpec::new(dir.path()).with_max_files(5))?;
    write(&dir.path().join("src/c/d.rs"), "fn d() {}")?;
    let changes = next_change(&events, "a")?;
    assert_eq!(changes.paths, paths(dir.path(), &["src/c/d.rs"]));
    Ok(())
}

#[test]
fn error_messages_say_what_to_do() {
    let root = PathBuf::from("/srv/sandboxes/counter");
    let glob_error = sandbox_watch::PathFilter::new(&["src/[.rs"]).err();
    let mut messages = vec![
        Error::AlreadyWatched {
            key: "counter".into(),
        }
        .to_string(),
        Error::NotWatched {
            key: "counter".into(),
        }
        .to_string(),
        Error::RootMissing { root: root.clone() }.to_string(),
        Error::NotADirectory { root: root.clone() }.to_string(),
        Error::TooManyFiles {
            root: root.clone(),
            count: 12_345,
            max: 10_000,
        }
        .to_string(),
        Error::WatchLimit {
            path: root.join("src"),
        }
        .to_string(),
    ];
    messages.extend(glob_error.map(|error| error.to_string()));
    insta::assert_snapshot!(messages.join("\n"));
}
