//! Fixtures: copies of the example plugins, tiny crates, compilers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sandbox_compiler::{BuildRequest, CargoCompiler};
use tempfile::TempDir;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_owned()
}

/// The plugin API crate.
pub fn plugin_api() -> PathBuf {
    repo_root().join("plugins/sandbox-plugin")
}

/// The target directory every test shares (stable, so reruns are
/// incremental).
pub fn shared_target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    base.join("compiler-tests-target")
}

/// A compiler on the shared target directory with a cache of its own; the
/// plugin API crate is the shared crate untrusted trees may depend on.
pub fn compiler(cache: &Path) -> Result<CargoCompiler> {
    Ok(CargoCompiler::builder()
        .target_dir(shared_target_dir())
        .cache_dir(cache)
        .shared_crate(plugin_api())
        .build()?)
}

/// An offline debug build request (every dependency of the examples is in
/// the lock file and must already be downloaded).
pub fn request(source: &Path) -> BuildRequest {
    BuildRequest::new(source).offline(true)
}

/// Copies the `counter` example into `dir/name`, pointing its dependency on
/// the plugin API crate at the absolute path.
pub fn copy_counter(dir: &Path, name: &str) -> Result<PathBuf> {
    let from = repo_root().join("plugins/examples/counter");
    let to = dir.join(name);
    copy_dir(&from, &to)?;
    let manifest = to.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let rewritten = text.replace(
        "path = \"../../sandbox-plugin\"",
        &format!("path = {:?}", plugin_api().display().to_string()),
    );
    anyhow::ensure!(
        rewritten != text,
        "the counter example no longer depends on ../../sandbox-plugin"
    );
    std::fs::write(&manifest, rewritten)?;
    Ok(to)
}

/// A temp dir holding a fresh copy of the counter example.
pub fn counter() -> Result<(TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let source = copy_counter(dir.path(), "counter")?;
    Ok((dir, source))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Writes `files` (relative path, contents) under `root`.
pub fn write_files(root: &Path, files: &[(&str, &str)]) -> Result<()> {
    for (path, contents) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, contents)?;
    }
    Ok(())
}

/// A one-package crate with no dependencies.
pub fn tiny_crate(name: &str, crate_type: &str, lib_rs: &str) -> Result<(TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join(name);
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [lib]\ncrate-type = [\"{crate_type}\"]\n\n[workspace]\n"
    );
    write_files(&root, &[("Cargo.toml", &manifest), ("src/lib.rs", lib_rs)])?;
    Ok((dir, root))
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    Ok(hex::encode(sha2::Sha256::digest(std::fs::read(path)?)))
}

/// The names of the defined dynamic symbols of a shared object.
pub fn exported_symbols(path: &Path) -> Result<Vec<String>> {
    use object::{Object, ObjectSymbol};
    let bytes = std::fs::read(path)?;
    let file = object::File::parse(&*bytes)?;
    Ok(file
        .dynamic_symbols()
        .filter(|s| !s.is_undefined())
        .filter_map(|s| s.name().ok().map(str::to_owned))
        .collect())
}
