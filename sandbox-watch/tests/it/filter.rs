//! Which paths count, as a table.

use std::fmt::Write as _;
use std::path::Path;

use sandbox_watch::{PathFilter, WatchSpec, DEFAULT_INCLUDE};

/// Renders one line per path: `+` relevant, `-` not.
fn check(include: &[&str], paths: &[&str]) -> String {
    let filter = match PathFilter::new(include) {
        Ok(filter) => filter,
        Err(error) => return format!("error: {error}"),
    };
    let mut table = String::new();
    for path in paths {
        let mark = if filter.is_relevant(Path::new(path)) {
            '+'
        } else {
            '-'
        };
        let _ = writeln!(table, "{mark} {path}");
    }
    table
}

#[test]
fn default_globs() {
    assert_eq!(WatchSpec::new("/x").include, DEFAULT_INCLUDE);
    insta::assert_snapshot!(check(
        &DEFAULT_INCLUDE,
        &[
            "Cargo.toml",
            "Cargo.lock",
            "build.rs",
            "src/lib.rs",
            "src/a/b/c.rs",
            "crates/x/Cargo.toml",
            "README.md",
            "src/notes.txt",
            "target/debug/build/out.rs",
            "crates/x/target/y.rs",
            "src/target/generated.rs",
            ".git/HEAD",
            ".cargo/config.toml",
            "src/.hidden.rs",
            "src/.lib.rs.swp",
            "src/lib.rs~",
            "src/.#lib.rs",
            "src/4913",
            "src/lib.rs.tmp.123",
            "../escape.rs",
            "/abs/lib.rs",
            "",
        ],
    ));
}

#[test]
fn single_star_stays_in_one_folder() {
    insta::assert_snapshot!(check(
        &["*.rs", "src/**/*.toml"],
        &[
            "main.rs",
            "src/main.rs",
            "src/a.toml",
            "src/b/c.toml",
            "d.toml"
        ]
    ));
}

#[test]
fn bad_glob() {
    insta::assert_snapshot!(check(&["**/*.rs", "a/{b"], &[]));
}

#[test]
fn ignored_folders() {
    for (dir, ignored) in [
        ("src", false),
        ("src/a", false),
        ("target", true),
        ("x/target/y", true),
        (".git", true),
        ("src/.idea", true),
        ("", false),
    ] {
        assert_eq!(PathFilter::is_ignored_dir(Path::new(dir)), ignored, "{dir}");
    }
}
