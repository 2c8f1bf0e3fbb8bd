//! The scan of one `Cargo.toml`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::{Capability, Error, Finding, Result};

type DepTable = BTreeMap<Spanned<String>, toml::Value>;

#[derive(Deserialize)]
struct Manifest {
    package: Option<Package>,
    lib: Option<Lib>,
    dependencies: Option<DepTable>,
    #[serde(rename = "build-dependencies", alias = "build_dependencies")]
    build_dependencies: Option<Spanned<DepTable>>,
    #[serde(default)]
    target: BTreeMap<String, Deps>,
}

/// The dependency tables of a `[target.'cfg(..)']` section. Dev-dependencies
/// are not built into the module, so they are not checked.
#[derive(Deserialize)]
struct Deps {
    dependencies: Option<DepTable>,
    #[serde(rename = "build-dependencies", alias = "build_dependencies")]
    build_dependencies: Option<Spanned<DepTable>>,
}

#[derive(Deserialize)]
struct Package {
    build: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
struct Lib {
    #[serde(rename = "proc-macro", alias = "proc_macro")]
    proc_macro: Option<Spanned<bool>>,
}

/// Scans a manifest. `file` is its path relative to the source root,
/// `has_build_rs` whether a `build.rs` sits next to it.
pub(crate) fn scan_manifest(
    file: &Path,
    text: &str,
    allowed: &BTreeSet<String>,
    has_build_rs: bool,
) -> Result<Vec<Finding>> {
    let manifest: Manifest = toml::from_str(text).map_err(|e| Error::Manifest {
        file: file.to_owned(),
        message: e.message().to_owned(),
    })?;
    let at = |capability, span: Range<usize>, detail: String| {
        let (line, column) = line_column(text, span.start);
        Finding {
            capability,
            file: file.to_owned(),
            line,
            column,
            detail,
        }
    };
    let mut findings = Vec::new();

    if let Some(package) = &manifest.package {
        match package.build.as_ref().map(|b| (b.get_ref(), b.span())) {
            Some((toml::Value::Boolean(false), _)) => {}
            Some((value, span)) => {
                findings.push(at(
                    Capability::BuildScript,
                    span,
                    format!("`build = {value}`"),
                ));
            }
            None if has_build_rs => {
                let build_rs = file
                    .parent()
                    .map_or_else(|| PathBuf::from("build.rs"), |d| d.join("build.rs"));
                findings.push(Finding {
                    capability: Capability::BuildScript,
                    file: build_rs,
                    line: 1,
                    column: 1,
                    detail: "`build.rs`".to_owned(),
                });
            }
            None => {}
        }
    }

    if let Some(proc_macro) = manifest.lib.as_ref().and_then(|l| l.proc_macro.as_ref()) {
        if *proc_macro.get_ref() {
            findings.push(at(
                Capability::ProcMacro,
                proc_macro.span(),
                "`proc-macro = true`".to_owned(),
            ));
        }
    }

    let top = (&manifest.dependencies, &manifest.build_dependencies);
    let targets = manifest
        .target
        .values()
        .map(|t| (&t.dependencies, &t.build_dependencies));
    for (dependencies, build_dependencies) in std::iter::once(top).chain(targets) {
        if let Some(build) = build_dependencies {
            if !build.get_ref().is_empty() {
                findings.push(at(
                    Capability::BuildScript,
                    build.span(),
                    "`[build-dependencies]`".to_owned(),
                ));
            }
        }
        let tables = dependencies
            .iter()
            .chain(build_dependencies.as_ref().map(Spanned::get_ref));
        for (key, value) in tables.flatten() {
            let package = value
                .get("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(key.get_ref());
            if !allowed.contains(package) {
                let detail = if package == key.get_ref() {
                    format!("`{package}`")
                } else {
                    format!("`{}` (package `{package}`)", key.get_ref())
                };
                findings.push(at(
                    Capability::Dependency(package.to_owned()),
                    key.span(),
                    detail,
                ));
            }
        }
    }
    Ok(findings)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Vec<String> {
        let allowed = ["serde".to_owned()].into();
        match scan_manifest(Path::new("Cargo.toml"), text, &allowed, false) {
            Ok(findings) => findings.iter().map(ToString::to_string).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn flags_dependencies_build_and_proc_macro() {
        let text = r#"[package]
name = "x"
build = "gen.rs"

[lib]
proc-macro = true

[dependencies]
serde = "1"
libc = "0.2"
renamed = { package = "nix", version = "0.29" }

[build-dependencies]
cc = "1"

[target.'cfg(unix)'.dependencies]
rustix = "1"

[dev-dependencies]
tempfile = "3"
"#;
        assert_eq!(
            scan(text),
            [
                "Cargo.toml:3:9: `build = \"gen.rs\"` (a build script)",
                "Cargo.toml:6:14: `proc-macro = true` (a procedural macro crate)",
                "Cargo.toml:13:1: `[build-dependencies]` (a build script)",
                "Cargo.toml:10:1: `libc` (a dependency not on the allow-list)",
                "Cargo.toml:11:1: `renamed` (package `nix`) (a dependency not on the allow-list)",
                "Cargo.toml:14:1: `cc` (a dependency not on the allow-list)",
                "Cargo.toml:17:1: `rustix` (a dependency not on the allow-list)",
            ]
        );
    }

    #[test]
    fn build_false_and_clean_manifest() {
        assert!(
            scan("[package]\nname = \"x\"\nbuild = false\n[dependencies]\nserde = \"1\"\n")
                .is_empty()
        );
    }

    #[test]
    fn broken_manifest_is_an_error() {
        let out = scan("[package\n");
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with("cannot parse Cargo.toml: "), "{out:?}");
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\nçd", 5), (2, 2));
        assert_eq!(line_column("x", 0), (1, 1));
    }
}
