//! `cargo xtask tidy`: house rules that are about the tree rather than the
//! code's types, checked by the build (rust-analyzer's `xtask/src/tidy.rs`
//! is the model). `cargo xtask ci` runs it first, and its tests run with
//! every `cargo nextest run`.
//!
//! - Every `.rs` file opens with a `//!` doc comment saying what it is for
//!   (STYLE.md rule 6, for every file rather than every crate).
//! - No test is switched off: no `ignore` or `should_panic` attribute (rule 9).
//! - `BENCHMARKS.md` and the README's results block (between
//!   [`bench::START`] and [`bench::END`]) are what `cargo xtask bench
//!   --render` makes of `BENCHMARKS.json`, so no number is edited by hand.
//!
//! Which files: every `.rs` file under the workspace root, the example
//! plugins and loader fixtures included (they are source people read and
//! copy), except in `target` folders (build output, the plugin examples'
//! own included) and hidden folders (`.git`, `.cargo`, tools' state).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::bench;

/// Runs every check on the workspace; the error lists every problem found.
pub fn check() -> anyhow::Result<()> {
    let root = bench::workspace_root()?;
    let mut problems = Vec::new();
    let files = rust_files(&root)?;
    problems.extend(module_docs(&root, &files)?);
    problems.extend(switched_off_tests(&root, &files)?);
    problems.extend(bench_documents(&root)?);
    if !problems.is_empty() {
        bail!(
            "tidy found {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    eprintln!("tidy: {} .rs files, benchmark documents: ok", files.len());
    Ok(())
}

/// Every `.rs` file under `root`, outside `target` and hidden folders,
/// sorted.
pub fn rust_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let kind = entry
                .file_type()
                .with_context(|| format!("reading {}", entry.path().display()))?;
            if kind.is_dir() {
                if !(name.starts_with('.') || name == "target") {
                    dirs.push(entry.path());
                }
            } else if kind.is_file() && name.ends_with(".rs") {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

fn relative<'a>(root: &Path, path: &'a Path) -> std::borrow::Cow<'a, str> {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy()
}

/// Files whose first non-blank line is not a `//!` comment.
pub fn module_docs(root: &Path, files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            problems.push(format!(
                "{}: does not open with a `//!` doc comment; add one line saying what the file is for",
                relative(root, file)
            ));
        }
    }
    Ok(problems)
}

/// Attributes that switch a test off, spelled so this file does not
/// contain them.
const SWITCHED_OFF: [&str; 2] = [concat!("#[", "ignore"), concat!("#[", "should_panic")];

/// Every use of an attribute that switches a test off.
pub fn switched_off_tests(root: &Path, files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            for attr in SWITCHED_OFF {
                if line.contains(attr) {
                    problems.push(format!(
                        "{}:{}: `{attr}]` switches a test off; put a slow or special test behind an env var that CI sets, and test errors as values",
                        relative(root, file),
                        n + 1
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// Differences between the committed benchmark documents and what
/// `BENCHMARKS.json` renders to.
pub fn bench_documents(root: &Path) -> anyhow::Result<Vec<String>> {
    let results = bench::load(root)?;
    let mut problems = Vec::new();
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .with_context(|| format!("reading {}", readme_path.display()))?;
    match bench::block(&readme) {
        Err(e) => problems.push(format!("README.md: {e}")),
        Ok(range) => {
            if readme[range] != bench::render_readme(&results) {
                problems.push(
                    "README.md: the results block is not what BENCHMARKS.json renders to; run `cargo xtask bench --render` (never edit its numbers by hand)"
                        .to_owned(),
                );
            }
        }
    }
    let report_path = root.join("BENCHMARKS.md");
    let report = std::fs::read_to_string(&report_path).unwrap_or_default();
    if report != bench::render_report(&results) {
        problems.push(
            "BENCHMARKS.md is not what BENCHMARKS.json renders to; run `cargo xtask bench --render`"
                .to_owned(),
        );
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (PathBuf, Vec<PathBuf>) {
        let root = bench::workspace_root().unwrap();
        let files = rust_files(&root).unwrap();
        (root, files)
    }

    #[test]
    fn every_rust_file_opens_with_a_doc_comment() {
        let (root, files) = workspace();
        assert!(
            files.len() > 50,
            "found only {} .rs files under {}",
            files.len(),
            root.display()
        );
        let problems = module_docs(&root, &files).unwrap();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn no_test_is_switched_off() {
        let (root, files) = workspace();
        let problems = switched_off_tests(&root, &files).unwrap();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_benchmark_documents_are_rendered_from_the_stored_results() {
        let root = bench::workspace_root().unwrap();
        let problems = bench_documents(&root).unwrap();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// A scratch tree that is removed on drop.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The checks can fail: a planted tree breaks each rule once, and the
    /// folders tidy skips are skipped.
    #[test]
    fn planted_violations_are_found_and_skipped_folders_are_not_read() {
        let dir = Scratch(std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id())));
        let root = &dir.0;
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("good.rs", "\n//! Documented.\nfn f() {}\n");
        write("a/no_doc.rs", "// a plain comment\n//! too late\n");
        write(
            "a/off.rs",
            &format!("//! Off.\n{}]\nfn t() {{}}\n", SWITCHED_OFF[0]),
        );
        write("target/debug/build.rs", "no doc");
        write(".hidden/x.rs", "no doc");
        write("plugins/examples/p/target/gen.rs", "no doc");

        let files = rust_files(root).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| relative(root, f).into_owned())
            .collect();
        assert_eq!(names, ["a/no_doc.rs", "a/off.rs", "good.rs"]);
        let docs = module_docs(root, &files).unwrap();
        assert_eq!(docs.len(), 1, "{docs:?}");
        assert!(docs[0].starts_with("a/no_doc.rs:"), "{docs:?}");
        let off = switched_off_tests(root, &files).unwrap();
        assert_eq!(off.len(), 1, "{off:?}");
        assert!(off[0].starts_with("a/off.rs:2:"), "{off:?}");

        // A README whose block was edited by hand, and a missing end marker.
        let results = bench::load(&bench::workspace_root().unwrap()).unwrap();
        write("BENCHMARKS.json", &results.to_json());
        write("BENCHMARKS.md", &bench::render_report(&results));
        let block = bench::render_readme(&results);
        write("README.md", &format!("# r\n{block}\nafter\n"));
        assert_eq!(bench_documents(root).unwrap(), Vec::<String>::new());
        let edited = block.replacen("| p50 ", "| p50 1", 1);
        assert_ne!(edited, block);
        write("README.md", &format!("# r\n{edited}\n"));
        let found = bench_documents(root).unwrap();
        assert!(
            found[0].contains("not what BENCHMARKS.json renders to"),
            "{found:?}"
        );
        write("README.md", &format!("# r\n{}\n", bench::START));
        let found = bench_documents(root).unwrap();
        assert!(found[0].contains("0 times"), "{found:?}");
    }
}
