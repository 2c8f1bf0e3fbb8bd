//! Jailed rebuilds of a one-crate tree replay cargo's rustc command when
//! only the package's own files changed, and go through cargo otherwise.
//! Real cargo, real rustc, real jails.

use std::path::Path;

use anyhow::{ensure, Result};
use sandbox_compiler::{BuildOutput, Compiler, Error, Level};

use crate::support::{compiler, counter, request};

/// Rewrites the counter's overflow message to carry `marker`.
fn mark(source: &Path, marker: &str) -> Result<()> {
    let lib = source.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib)?;
    let needle = "overflows the total {}";
    ensure!(
        text.contains(needle),
        "the counter example lost its overflow message"
    );
    std::fs::write(
        &lib,
        text.replace(needle, &format!("overflows the total {{}} ({marker})")),
    )?;
    Ok(())
}

/// Whether the built library holds `marker` (a string literal of the code).
fn holds(output: &BuildOutput, marker: &str) -> Result<bool> {
    let bytes = std::fs::read(&output.artifacts[0].path)?;
    Ok(bytes.windows(marker.len()).any(|w| w == marker.as_bytes()))
}

#[test]
fn a_source_edit_is_rebuilt_by_replaying_rustc_and_the_library_has_the_edit() -> Result<()> {
    let (_dir, source) = counter()?;
    let cache = tempfile::tempdir()?;
    let compiler = compiler(cache.path())?;
    let first = compiler.build(&request(&source).jailed(true))?;
    assert!(!first.replayed && !first.cached);

    for marker in ["replay-marker-one", "replay-marker-two"] {
        mark(&source, marker)?;
        let output = compiler.build(&request(&source).jailed(true))?;
        assert!(output.replayed, "a source-only edit went through cargo");
        assert!(!output.cached);
        assert!(
            holds(&output, marker)?,
            "the replayed library lacks the edit"
        );
        assert!(!holds(&output, "replay-marker-zero")?);
    }
    Ok(())
}

#[test]
fn a_manifest_edit_goes_through_cargo_and_the_next_source_edit_replays_again() -> Result<()> {
    let (_dir, source) = counter()?;
    let cache = tempfile::tempdir()?;
    let compiler = compiler(cache.path())?;
    compiler.build(&request(&source).jailed(true))?;

    // The crate version reaches the code through CARGO_PKG_VERSION: a
    // replay with the recorded environment would build the old one.
    let manifest = source.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    ensure!(text.contains("version = \"0.1.0\""));
    std::fs::write(
        &manifest,
        text.replace("version = \"0.1.0\"", "version = \"0.1.77\""),
    )?;
    let output = compiler.build(&request(&source).jailed(true))?;
    assert!(!output.replayed, "a manifest edit was replayed");
    assert!(holds(&output, "0.1.77")?);

    mark(&source, "after-the-manifest")?;
    let output = compiler.build(&request(&source).jailed(true))?;
    assert!(output.replayed);
    assert!(holds(&output, "after-the-manifest")? && holds(&output, "0.1.77")?);
    Ok(())
}

#[test]
fn a_compile_error_in_a_replayed_build_points_at_the_line_and_the_fix_replays() -> Result<()> {
    let (_dir, source) = counter()?;
    let cache = tempfile::tempdir()?;
    let compiler = compiler(cache.path())?;
    compiler.build(&request(&source).jailed(true))?;

    let lib = source.join("src/lib.rs");
    let good = std::fs::read_to_string(&lib)?;
    let line = good.lines().count() + 3;
    std::fs::write(
        &lib,
        format!("{good}\npub fn broken() -> u32 {{\n    \"not a number\"\n}}\n"),
    )?;
    let err = compiler.build(&request(&source).jailed(true)).unwrap_err();
    let Error::Compile { diagnostics } = &err else {
        panic!("expected a compile error, got {err:?}");
    };
    let first = diagnostics
        .iter()
        .find(|d| d.level == Level::Error)
        .expect("an error");
    assert_eq!(first.file.as_deref(), Some(lib.as_path()));
    assert_eq!(first.line, Some(line as u32));
    assert!(err.to_string().contains("mismatched types"), "{err}");
    assert!(first
        .rendered
        .as_deref()
        .is_some_and(|r| r.contains("not a number") && !r.contains('\u{1b}')));

    std::fs::write(&lib, &good)?;
    mark(&source, "fixed-again")?;
    let output = compiler.build(&request(&source).jailed(true))?;
    assert!(output.replayed);
    assert!(holds(&output, "fixed-again")?);
    Ok(())
}

#[test]
fn a_crate_with_a_build_script_is_never_replayed() -> Result<()> {
    let (_dir, source) = counter()?;
    std::fs::write(source.join("build.rs"), "fn main() {}\n")?;
    let cache = tempfile::tempdir()?;
    let compiler = compiler(cache.path())?;
    compiler.build(&request(&source).jailed(true))?;
    mark(&source, "with-a-build-script")?;
    let output = compiler.build(&request(&source).jailed(true))?;
    assert!(!output.replayed, "a crate with a build script was replayed");
    assert!(holds(&output, "with-a-build-script")?);
    Ok(())
}

/// Trusted trees share one target dir, where same-named packages share
/// file names: a library replayed for one tree must never be what another
/// tree's cargo build finds fresh.
#[test]
fn trusted_trees_with_one_package_name_never_get_each_other_s_replayed_library() -> Result<()> {
    let (_a_dir, a) = counter()?;
    let (_b_dir, b) = counter()?;
    mark(&a, "tree-a-zero")?;
    mark(&b, "tree-b-zero")?;
    let cache = tempfile::tempdir()?;
    let compiler = compiler(cache.path())?;
    compiler.build(&request(&a))?;
    compiler.build(&request(&b))?;

    mark(&a, "tree-a-one")?;
    let output = compiler.build(&request(&a))?;
    assert!(
        output.replayed,
        "a trusted source-only edit went through cargo"
    );
    assert!(holds(&output, "tree-a-one")?);

    // A compiler with no cache and no capture: cargo finds B fresh in the
    // shared dir, whose library files A's replay wrote last.
    let cold = tempfile::tempdir()?;
    let output = crate::support::compiler(cold.path())?.build(&request(&b))?;
    assert!(
        holds(&output, "tree-b-zero")?,
        "tree B was built from the wrong source"
    );
    assert!(!holds(&output, "tree-a")?, "tree B got tree A's library");
    Ok(())
}

/// A command is replayed only for the kind of build that recorded it: one
/// recorded in a jail never runs outside it (the profile and debug info are
/// part of the kind too: `CaptureKey`'s unit test).
#[test]
fn a_capture_is_replayed_only_for_the_build_kind_that_recorded_it() -> Result<()> {
    let (_dir, source) = counter()?;
    let cache = tempfile::tempdir()?;
    let compiler = compiler(cache.path())?;
    compiler.build(&request(&source).jailed(true))?;

    mark(&source, "first-trusted-build")?;
    let output = compiler.build(&request(&source))?;
    assert!(
        !output.replayed,
        "a command recorded in the jail was replayed trusted"
    );
    assert!(holds(&output, "first-trusted-build")?);

    mark(&source, "jailed-again")?;
    let output = compiler.build(&request(&source).jailed(true))?;
    assert!(output.replayed);
    assert!(holds(&output, "jailed-again")?);
    Ok(())
}
