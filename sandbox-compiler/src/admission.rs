//! Admission of untrusted source: what is refused before anything of it runs.
//!
//! A jailed build runs the tree's build scripts, proc macros and cargo
//! configuration inside the jail, so the jail is the guarantee. Admission is
//! the second wall, in the style of PL/Rust and cackle: it refuses the parts
//! of a tree that would make cargo run or read something *outside* the tree
//! — cargo configuration (`.cargo/`, which can name a `rustc-wrapper`, a
//! linker or a runner), toolchain overrides (`rust-toolchain*`, which make
//! rustup pick and run another toolchain), `[patch]`/`[replace]` tables that
//! point anywhere but into the tree, and `path` dependencies outside the
//! tree other than the host's allow-listed crates (the plugin API crate).
//! It reads manifests only; it runs nothing.

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// Folders admission does not descend into: build outputs and VCS data,
/// which cargo never reads as source or configuration.
const SKIPPED_DIRS: &[&str] = &["target", ".git"];

/// Checks the untrusted tree at `source` (canonical). `allowed` are
/// canonical folders a path dependency may point into although they lie
/// outside the tree.
pub(crate) fn admit(source: &Path, allowed: &[PathBuf]) -> Result<()> {
    let refuse = |path: &Path, reason: String| Error::Refused {
        path: path.to_owned(),
        reason,
    };
    let mut manifests = Vec::new();
    let mut stack = vec![source.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if name == ".cargo" {
                return Err(refuse(
                    &path,
                    "it holds cargo configuration, which can run programs (a rustc wrapper, a \
                     linker, a runner) with the rights of whoever runs cargo"
                        .to_owned(),
                ));
            }
            if name == "rust-toolchain" || name == "rust-toolchain.toml" {
                return Err(refuse(
                    &path,
                    "it overrides the toolchain, which makes rustup fetch and run another \
                     compiler"
                        .to_owned(),
                ));
            }
            if kind.is_dir() {
                if !SKIPPED_DIRS.contains(&name.as_ref()) {
                    stack.push(path);
                }
            } else if name == "Cargo.toml" {
                manifests.push(path);
            }
        }
    }
    for manifest in manifests {
        check_manifest(source, &manifest, allowed)?;
    }
    Ok(())
}

/// The sha256 of every `Cargo.toml` and `Cargo.lock` of the tree and of
/// `roots` (its path dependencies), with their paths: what `cargo fetch`
/// reads.
pub(crate) fn manifests_digest(source: &Path, roots: &[PathBuf]) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut files = Vec::new();
    for root in std::iter::once(source).chain(roots.iter().map(PathBuf::as_path)) {
        // A root may be a single file (a workspace manifest a path
        // dependency inherits from).
        if root.is_file() {
            files.push(root.to_owned());
            continue;
        }
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let path = entry.path();
                let name = entry.file_name();
                let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
                if kind.is_dir() {
                    if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                        stack.push(path);
                    }
                } else if name == "Cargo.toml" || name == "Cargo.lock" {
                    files.push(path);
                }
            }
        }
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        hasher.update(file.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(Sha256::digest(&bytes));
    }
    Ok(hex::encode(hasher.finalize()))
}

fn check_manifest(source: &Path, manifest: &Path, allowed: &[PathBuf]) -> Result<()> {
    let text = std::fs::read_to_string(manifest).map_err(|e| Error::io(manifest, e))?;
    // A manifest that does not parse is cargo's to report (with a better
    // message); it cannot point anywhere if cargo refuses it.
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let dir = manifest.parent().unwrap_or(source);
    for table in ["patch", "replace"] {
        let Some(value) = doc.get(table) else {
            continue;
        };
        for (name, spec) in entries_of(table, value) {
            let inside = spec
                .get("path")
                .and_then(toml::Value::as_str)
                .is_some_and(|p| within(&resolve(dir, p), source));
            if !inside {
                return Err(Error::Refused {
                    path: manifest.to_owned(),
                    reason: format!(
                        "its `[{table}]` entry `{name}` takes the crate from outside the tree; \
                         vendor it into the tree and point the entry at that folder"
                    ),
                });
            }
        }
    }
    for (name, spec) in dependencies(&doc) {
        let Some(path) = spec.get("path").and_then(toml::Value::as_str) else {
            continue;
        };
        let target = resolve(dir, path);
        if within(&target, source) || allowed.iter().any(|a| within(&target, a)) {
            continue;
        }
        return Err(Error::Refused {
            path: manifest.to_owned(),
            reason: format!(
                "its dependency `{name}` is a path outside the tree ({}); copy it into the \
                 tree, or depend on it from a registry",
                target.display()
            ),
        });
    }
    Ok(())
}

/// `[patch.<source>] name = {...}` nests one level deeper than
/// `[replace] "name:1.0" = {...}`.
fn entries_of<'a>(table: &str, value: &'a toml::Value) -> Vec<(String, &'a toml::Value)> {
    let Some(outer) = value.as_table() else {
        return Vec::new();
    };
    if table == "replace" {
        return outer.iter().map(|(k, v)| (k.clone(), v)).collect();
    }
    outer
        .values()
        .filter_map(toml::Value::as_table)
        .flat_map(|t| t.iter().map(|(k, v)| (k.clone(), v)))
        .collect()
}

/// Every dependency table of a manifest: normal, dev and build
/// dependencies, their `[target.*]` forms and `[workspace.dependencies]`.
fn dependencies(doc: &toml::Table) -> Vec<(String, &toml::Value)> {
    const KINDS: [&str; 5] = [
        "dependencies",
        "dev-dependencies",
        "dev_dependencies",
        "build-dependencies",
        "build_dependencies",
    ];
    let mut tables: Vec<&toml::Value> = Vec::new();
    for kind in KINDS {
        tables.extend(doc.get(kind));
        if let Some(targets) = doc.get("target").and_then(toml::Value::as_table) {
            for target in targets.values() {
                tables.extend(target.get(kind));
            }
        }
    }
    if let Some(workspace) = doc.get("workspace") {
        tables.extend(workspace.get("dependencies"));
    }
    tables
        .into_iter()
        .filter_map(toml::Value::as_table)
        .flat_map(|t| t.iter().map(|(k, v)| (k.clone(), v)))
        .collect()
}

/// `path` relative to `dir`, with `.` and `..` folded away (without
/// touching the file system: the target may not exist).
fn resolve(dir: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for component in dir.join(path).components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    // Symlinks inside the tree may point out of it: judge where they lead.
    out.canonicalize().unwrap_or(out)
}

fn within(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const PACKAGE: &str = "[package]\nname = \"p\"\nversion = \"0.1.0\"\n";

    fn reason(files: &[(&str, &str)], allowed: &[PathBuf]) -> Option<String> {
        let dir = tree(files);
        let root = dir.path().canonicalize().unwrap();
        admit(&root, allowed).err().map(|e| e.to_string())
    }

    #[test]
    fn a_plain_package_is_admitted() {
        let manifest =
            format!("{PACKAGE}[dependencies]\nv = {{ path = \".vendor/v\" }}\nserde = \"1\"\n");
        assert_eq!(
            reason(
                &[("Cargo.toml", &manifest), (".vendor/v/Cargo.toml", PACKAGE)],
                &[]
            ),
            None
        );
    }

    #[test]
    fn cargo_configuration_and_toolchain_files_are_refused_anywhere() {
        let e = reason(&[("Cargo.toml", PACKAGE), (".cargo/config.toml", "")], &[]).unwrap();
        assert!(e.contains(".cargo") && e.contains("rustc wrapper"), "{e}");
        let e = reason(&[("Cargo.toml", PACKAGE), ("sub/.cargo/config", "")], &[]).unwrap();
        assert!(e.contains("sub/.cargo"), "{e}");
        let e = reason(&[("Cargo.toml", PACKAGE), ("rust-toolchain.toml", "")], &[]).unwrap();
        assert!(e.contains("toolchain"), "{e}");
        assert_eq!(
            reason(&[("Cargo.toml", PACKAGE), ("target/.cargo/x", "")], &[]),
            None
        );
    }

    #[test]
    fn paths_outside_the_tree_are_refused_unless_allowed() {
        let outside = format!("{PACKAGE}[dependencies]\nx = {{ path = \"../x\" }}\n");
        let e = reason(&[("Cargo.toml", &outside)], &[]).unwrap();
        assert!(
            e.contains("dependency `x`") && e.contains("outside the tree"),
            "{e}"
        );
        let escape = format!("{PACKAGE}[build-dependencies]\nx = {{ path = \"a/../../x\" }}\n");
        assert!(reason(&[("Cargo.toml", &escape)], &[]).is_some());
        let target =
            format!("{PACKAGE}[target.'cfg(unix)'.dependencies]\nx = {{ path = \"/etc\" }}\n");
        assert!(reason(&[("Cargo.toml", &target)], &[]).is_some());
        // The allow-listed API crate.
        let api = tempfile::tempdir().unwrap();
        let api = api.path().canonicalize().unwrap();
        let ok = format!(
            "{PACKAGE}[dependencies]\napi = {{ path = \"{}\" }}\n",
            api.display()
        );
        assert_eq!(
            reason(&[("Cargo.toml", &ok)], std::slice::from_ref(&api)),
            None
        );
    }

    #[test]
    fn patches_must_point_into_the_tree() {
        let git = format!(
            "{PACKAGE}[patch.crates-io]\nserde = {{ git = \"https://example.invalid/serde\" }}\n"
        );
        let e = reason(&[("Cargo.toml", &git)], &[]).unwrap();
        assert!(e.contains("`[patch]` entry `serde`"), "{e}");
        let out = format!("{PACKAGE}[replace]\n\"serde:1.0.0\" = {{ path = \"/tmp\" }}\n");
        assert!(reason(&[("Cargo.toml", &out)], &[]).is_some());
        let inside = format!("{PACKAGE}[patch.crates-io]\nserde = {{ path = \"vendor/serde\" }}\n");
        assert_eq!(reason(&[("Cargo.toml", &inside)], &[]), None);
    }
}
