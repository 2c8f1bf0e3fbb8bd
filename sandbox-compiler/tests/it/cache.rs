//! The content-hash cache: hits without cargo, misses on edits, survives
//! restarts, forgotten on request.

use anyhow::Result;
use sandbox_compiler::{CargoCompiler, Compiler, Error};

use crate::support;

#[test]
fn unchanged_tree_hits_without_cargo_and_an_edit_misses() -> Result<()> {
    let (_dir, source) = support::counter()?;
    let cache = tempfile::tempdir()?;
    let compiler = support::compiler(cache.path())?;
    let first = compiler.build(&support::request(&source))?;
    assert!(!first.cached);

    // A second compiler (a new process, as far as the cache can tell) whose
    // cargo cannot even start: a hit must not need it.
    let no_cargo = CargoCompiler::builder()
        .target_dir(support::shared_target_dir())
        .cache_dir(cache.path())
        .cargo("/nonexistent/cargo")
        .build()?;
    let second = no_cargo.build(&support::request(&source))?;
    assert!(second.cached);
    assert_eq!(second.artifacts, first.artifacts);
    assert_eq!(second.source_hash, first.source_hash);
    assert_eq!(second.warnings, first.warnings);

    // Editing a source file misses the cache (and so needs cargo).
    let lib = source.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib)?;
    std::fs::write(&lib, text.replace("self.calls += 1;", "self.calls += 2;"))?;
    let err = no_cargo
        .build(&support::request(&source))
        .expect_err("an edited tree must not hit the cache");
    assert!(matches!(err, Error::Spawn(_)), "{err:?}");

    let third = compiler.build(&support::request(&source))?;
    assert!(!third.cached);
    assert_ne!(third.source_hash, first.source_hash);
    assert_ne!(third.artifacts[0].sha256, first.artifacts[0].sha256);
    // The first artifact is a stable copy: the rebuild did not touch it.
    assert_eq!(
        support::sha256_file(&first.artifacts[0].path)?,
        first.artifacts[0].sha256
    );
    Ok(())
}

#[test]
fn forget_drops_the_entries_of_a_source() -> Result<()> {
    let (_dir, source) = support::counter()?;
    let cache = tempfile::tempdir()?;
    let compiler = support::compiler(cache.path())?;
    let built = compiler.build(&support::request(&source))?;
    let entry = built.artifacts[0]
        .path
        .parent()
        .expect("artifacts live in an entry dir")
        .to_owned();
    assert!(entry.is_dir());

    compiler.forget(&source)?;
    assert!(!entry.exists(), "{} survived forget", entry.display());
    let leftovers: Vec<_> = std::fs::read_dir(cache.path())?.collect::<Result<_, _>>()?;
    assert!(
        leftovers.is_empty(),
        "cache dir not empty after forget: {leftovers:?}"
    );
    // Forgetting twice, or a source never built, is fine.
    compiler.forget(&source)?;
    compiler.forget(std::path::Path::new("/nonexistent/sandbox"))?;
    Ok(())
}

#[test]
fn editing_only_a_hidden_path_dependency_s_build_script_misses_the_cache() -> Result<()> {
    let (_dir, source) = support::counter()?;
    support::write_files(
        &source,
        &[
            (
                ".vendor/x/Cargo.toml",
                "[package]\nname = \"x\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            (
                ".vendor/x/src/lib.rs",
                "pub const TAG: &str = env!(\"X_TAG\");\n",
            ),
            (
                ".vendor/x/build.rs",
                "fn main() {\n    println!(\"cargo:rustc-env=X_TAG=one\");\n}\n",
            ),
        ],
    )?;
    let manifest = source.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let with_dep = text.replacen(
        "[dependencies]\n",
        "[dependencies]\nx = { path = \".vendor/x\" }\n",
        1,
    );
    anyhow::ensure!(
        with_dep != text,
        "the counter example has no [dependencies]"
    );
    std::fs::write(&manifest, with_dep)?;

    let cache = tempfile::tempdir()?;
    let compiler = support::compiler(cache.path())?;
    let first = compiler.build(&support::request(&source))?;
    assert!(!first.cached);
    assert!(compiler.build(&support::request(&source))?.cached);

    // Only the hidden folder's build script changes.
    std::fs::write(
        source.join(".vendor/x/build.rs"),
        "fn main() {\n    println!(\"cargo:rustc-env=X_TAG=two\");\n}\n",
    )?;
    let second = compiler.build(&support::request(&source))?;
    assert!(
        !second.cached,
        "a build after editing .vendor/x/build.rs returned the old artifact"
    );
    assert_ne!(second.source_hash, first.source_hash);
    Ok(())
}
