//! Bad input gets a typed error that says what was wrong.

use std::path::Path;

use anyhow::Result;
use sandbox_compiler::{Compiler, Error, Level, ROOT_MODULE_SYMBOL};

use crate::support;

fn build_err(source: &Path) -> Result<Error> {
    let cache = tempfile::tempdir()?;
    let compiler = support::compiler(cache.path())?;
    match compiler.build(&support::request(source)) {
        Ok(output) => anyhow::bail!("expected an error, got {output:?}"),
        Err(e) => Ok(e),
    }
}

#[test]
fn missing_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("nope");
    let err = build_err(&missing)?;
    assert!(
        matches!(&err, Error::SourceMissing { path } if path == &missing),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("source directory `"), "{err}");
    assert!(
        err.to_string()
            .contains("does not exist; pass the path of a Cargo package or workspace"),
        "{err}"
    );
    Ok(())
}

#[test]
fn directory_without_manifest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let err = build_err(dir.path())?;
    assert!(
        matches!(&err, Error::NotCargoProject { path } if path == dir.path()),
        "{err:?}"
    );
    assert!(err.to_string().contains("has no Cargo.toml"), "{err}");

    let file = dir.path().join("lib.rs");
    std::fs::write(&file, "")?;
    assert!(matches!(build_err(&file)?, Error::NotCargoProject { .. }));
    Ok(())
}

#[test]
fn compile_error_points_at_the_line() -> Result<()> {
    let (_dir, source) = support::counter()?;
    let lib = source.join("src/lib.rs");
    let mut text = std::fs::read_to_string(&lib)?;
    let original_lines = text.lines().count();
    let line = original_lines + 2;
    text.push_str("\npub fn broken() -> u32 {\n    \"not a number\"\n}\n");
    std::fs::write(&lib, text)?;

    let err = build_err(&source)?;
    let diagnostics = err.diagnostics();
    assert!(matches!(err, Error::Compile { .. }), "{err:?}");
    let first = diagnostics
        .iter()
        .find(|d| d.level == Level::Error)
        .expect("an error diagnostic");
    assert_eq!(first.file.as_deref(), Some(lib.as_path()));
    assert!(first
        .file
        .as_ref()
        .is_some_and(|f| f.ends_with("src/lib.rs")));
    assert_eq!(first.line, Some(line as u32 + 1));
    assert!(first
        .rendered
        .as_deref()
        .is_some_and(|r| r.contains("not a number") && !r.contains('\u{1b}')));
    assert!(
        err.to_string()
            .contains(&format!("src/lib.rs:{}:5: mismatched types", line + 1)),
        "{err}"
    );

    let normalized: Vec<_> = diagnostics
        .iter()
        .map(|d| {
            serde_json::json!({
                "level": d.level,
                "message": d.message,
                "file": d.file.as_ref().map(|f| f.strip_prefix(&source).unwrap_or(f).display().to_string()),
                // Relative to the end of the example, which may grow.
                "line_after_example": d.line.map(|l| l as i64 - original_lines as i64),
                "column": d.column,
            })
        })
        .collect();
    insta::assert_json_snapshot!(normalized, @r#"
    [
      {
        "column": 5,
        "file": "src/lib.rs",
        "level": "error",
        "line_after_example": 3,
        "message": "mismatched types"
      }
    ]
    "#);
    Ok(())
}

#[test]
fn cdylib_without_the_plugin_root_is_not_a_plugin() -> Result<()> {
    let (_dir, source) = support::tiny_crate(
        "plain",
        "cdylib",
        "#[no_mangle]\npub extern \"C\" fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n",
    )?;
    let err = build_err(&source)?;
    let Error::NotAPlugin { path, reason } = &err else {
        anyhow::bail!("expected NotAPlugin, got {err:?}")
    };
    assert!(path.ends_with("libplain.so"), "{}", path.display());
    assert!(reason.contains(ROOT_MODULE_SYMBOL), "{reason}");
    Ok(())
}

#[test]
fn no_cdylib_means_no_plugin_modules() -> Result<()> {
    let (_dir, rlib) = support::tiny_crate("just_rlib", "rlib", "pub fn f() {}\n")?;
    let err = build_err(&rlib)?;
    assert!(
        matches!(&err, Error::NoPluginModules { path } if path == &rlib),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("crate-type = [\"cdylib\"]"),
        "{err}"
    );

    let dir = tempfile::tempdir()?;
    support::write_files(
        dir.path(),
        &[("Cargo.toml", "[package]\nname = \"only_bin\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n"), ("src/main.rs", "fn main() {}\n")],
    )?;
    let err = build_err(dir.path())?;
    assert!(matches!(err, Error::NoPluginModules { .. }), "{err:?}");
    Ok(())
}

#[test]
fn bad_manifest_is_a_cargo_error_with_its_stderr() -> Result<()> {
    let dir = tempfile::tempdir()?;
    support::write_files(
        dir.path(),
        &[
            ("Cargo.toml", "[package]\nversion = \"0.1.0\"\n"),
            ("src/lib.rs", ""),
        ],
    )?;
    let err = build_err(dir.path())?;
    let Error::Cargo { status, stderr } = &err else {
        anyhow::bail!("expected a cargo error, got {err:?}")
    };
    assert!(!status.is_empty());
    assert!(stderr.starts_with("error"), "{stderr}");
    assert!(stderr.contains("name"), "{stderr}");
    assert!(err.diagnostics().is_empty());
    Ok(())
}

#[test]
fn offline_resolution_failure_is_a_cargo_error() -> Result<()> {
    let (_dir, source) = support::tiny_crate("needs_dep", "cdylib", "")?;
    let manifest = source.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    std::fs::write(
        &manifest,
        text.replace(
            "[workspace]",
            "[dependencies]\nno-such-crate-sandbox-test = \"9.9\"\n\n[workspace]",
        ),
    )?;
    let err = build_err(&source)?;
    let Error::Cargo { stderr, .. } = &err else {
        anyhow::bail!("expected a cargo error, got {err:?}")
    };
    assert!(stderr.contains("no-such-crate-sandbox-test"), "{stderr}");
    Ok(())
}
