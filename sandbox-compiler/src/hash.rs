//! Content hashing of a source tree and everything it builds from.
//!
//! The digest covers every file of the source tree — hidden ones included,
//! since cargo reads `.cargo/`, and a path dependency or a `#[path]` module
//! may live in a hidden folder — except build output (`target/` next to a
//! manifest), the `.git` folder and editor swap and lock files (`.x.swp`,
//! `x~`, `.#x`); plus the trees of the `path` dependencies named in any
//! `Cargo.toml` met on the way, recursively (under the same rule), and the
//! workspace manifests that `workspace = true` keys inherit from. Files are identified by their path relative to the source
//! root (so two copies of one tree hash the same) or, outside it, by their
//! absolute path.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Name of the entry for the source's own lock file (see [`TreeDigest::same_except_lockfile`]).
const LOCKFILE_ENTRY: &str = "src:Cargo.lock";

/// Per-file digests of everything a build reads from disk, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeDigest {
    entries: BTreeMap<String, [u8; 32]>,
    /// The folders hashed (the source and its path dependencies) and the
    /// workspace manifests read: what a build of the tree reads.
    roots: Vec<PathBuf>,
}

impl TreeDigest {
    /// The combined digest, lowercase hex.
    pub fn hex(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"sandbox-compiler tree v1\0");
        for (name, digest) in &self.entries {
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update(digest);
        }
        hex::encode(hasher.finalize())
    }

    /// Whether `self` and `other` differ at most in the source's
    /// `Cargo.lock` (which cargo writes or updates during a build).
    pub fn same_except_lockfile(&self, other: &TreeDigest) -> bool {
        let strip = |d: &TreeDigest| {
            d.entries
                .iter()
                .filter(|(k, _)| *k != LOCKFILE_ENTRY)
                .count()
        };
        strip(self) == strip(other)
            && self
                .entries
                .iter()
                .filter(|(k, _)| *k != LOCKFILE_ENTRY)
                .all(|(k, v)| other.entries.get(k) == Some(v))
    }

    /// The folders and manifests a build of the tree reads.
    /// Whether `self` differs from `before` only in files of the root
    /// package itself: the tree holds one manifest in both (the root's: no
    /// member, no path dependency inside the tree), and no changed file is
    /// that manifest, the lockfile, `build.rs`, or a file of a path
    /// dependency outside the tree or of an enclosing workspace.
    pub fn only_package_files_changed_since(&self, before: &TreeDigest) -> bool {
        let one_manifest = |d: &TreeDigest| {
            d.entries
                .keys()
                .filter_map(|k| k.strip_prefix("src:"))
                .filter(|rel| *rel == "Cargo.toml" || rel.ends_with("/Cargo.toml"))
                .eq(["Cargo.toml"])
        };
        if !one_manifest(self) || !one_manifest(before) {
            return false;
        }
        let own = |key: &str| {
            key.strip_prefix("src:")
                .is_some_and(|rel| !matches!(rel, "Cargo.toml" | "Cargo.lock" | "build.rs"))
        };
        let changed = |a: &TreeDigest, b: &TreeDigest| {
            a.entries
                .iter()
                .filter(|(k, v)| b.entries.get(*k) != Some(v))
                .all(|(k, _)| own(k))
        };
        changed(self, before) && changed(before, self)
    }

    /// A digest of the given entries (each digest filled with one byte).
    #[cfg(test)]
    pub fn for_tests(entries: &[(&str, u8)]) -> Self {
        Self {
            entries: entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), [*v; 32]))
                .collect(),
            roots: Vec::new(),
        }
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Number of files covered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Hashes the tree at `root` (canonical) and its path dependencies.
pub(crate) fn digest(root: &Path) -> Result<TreeDigest> {
    let mut entries = BTreeMap::new();
    let mut trees: Vec<PathBuf> = vec![root.to_owned()];
    let mut extra_roots: Vec<PathBuf> = Vec::new();
    let mut queue: VecDeque<PathBuf> = VecDeque::new();
    let mut manifests_seen: BTreeSet<PathBuf> = BTreeSet::new();

    let root_manifest = root.join("Cargo.toml");
    let mut manifests = hash_tree(root, "src:", &mut entries)?;
    loop {
        for path in manifests.drain(..) {
            if !manifests_seen.insert(path.clone()) {
                continue;
            }
            // An unparsable manifest is cargo's to report; its bytes are hashed.
            let Some(manifest) = read_manifest(&path) else {
                continue;
            };
            let base = path.parent().unwrap_or(Path::new("/"));
            queue.extend(path_dependencies(&manifest, base));
            // The source's own manifest may be governed by an enclosing
            // workspace (profiles, patches); any manifest may inherit keys
            // and dependencies from its workspace.
            if path != root_manifest && !inherits_from_workspace(&manifest) {
                continue;
            }
            let Some(ws_path) = enclosing_workspace_manifest(base) else {
                continue;
            };
            if ws_path == path {
                continue;
            }
            if !trees.iter().any(|t| ws_path.starts_with(t)) {
                hash_file(&ws_path, format!("ws:{}", ws_path.display()), &mut entries)?;
                extra_roots.push(ws_path.clone());
            }
            if let Some(ws) = read_manifest(&ws_path) {
                let ws_base = ws_path.parent().unwrap_or(Path::new("/"));
                queue.extend(inherited_path_dependencies(&manifest, &ws, ws_base));
            }
        }
        let Some(dir) = queue.pop_front() else { break };
        let Ok(dir) = std::fs::canonicalize(&dir) else {
            // A missing path dependency: cargo will say so; its absence is
            // part of the key anyway.
            entries.insert(format!("missing:{}", dir.display()), [0; 32]);
            continue;
        };
        if trees.iter().any(|t| dir.starts_with(t)) {
            continue;
        }
        trees.push(dir.clone());
        manifests = hash_tree(&dir, &format!("dep:{}:", dir.display()), &mut entries)?;
    }
    trees.extend(extra_roots);
    Ok(TreeDigest {
        entries,
        roots: trees,
    })
}

/// Hashes every file under `dir` into `entries` (named `prefix` + relative
/// path) and returns the `Cargo.toml` files met.
fn hash_tree(
    dir: &Path,
    prefix: &str,
    entries: &mut BTreeMap<String, [u8; 32]>,
) -> Result<Vec<PathBuf>> {
    let mut manifests = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    let walker = walker.filter_entry(|e| e.depth() == 0 || !skipped(e));
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let path = e.path().unwrap_or(dir).to_owned();
                let io = io::Error::from(e);
                if io.kind() == io::ErrorKind::NotFound {
                    continue; // deleted while we walked
                }
                return Err(Error::io(path, io));
            }
        };
        let path = entry.path();
        let ft = entry.file_type();
        let is_file = ft.is_file() || (ft.is_symlink() && path.is_file());
        if !is_file {
            if ft.is_symlink() {
                // A link to a directory (or a dangling one): hash where it
                // points rather than following it into a possible loop.
                let target = std::fs::read_link(path).map_err(|e| Error::io(path, e))?;
                let digest: [u8; 32] = Sha256::digest(target.to_string_lossy().as_bytes()).into();
                entries.insert(format!("{prefix}{}@", relative(dir, path)), digest);
            }
            continue;
        }
        if entry.file_name() == "Cargo.toml" {
            manifests.push(path.to_owned());
        }
        hash_file(path, format!("{prefix}{}", relative(dir, path)), entries)?;
    }
    Ok(manifests)
}

fn hash_file(path: &Path, name: String, entries: &mut BTreeMap<String, [u8; 32]>) -> Result<()> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    entries.insert(name, hasher.finalize().into());
    Ok(())
}

/// Build output, version control data and editor files are not sources;
/// every other file is, hidden or not: a build may read it.
fn skipped(entry: &walkdir::DirEntry) -> bool {
    let name = entry.file_name().to_string_lossy();
    let is_dir = entry.file_type().is_dir();
    if name == ".git" {
        return true;
    }
    if !is_dir && is_editor_file(&name) {
        return true;
    }
    // `target/` is build output when it sits next to a manifest.
    name == "target"
        && is_dir
        && entry
            .path()
            .parent()
            .is_some_and(|p| p.join("Cargo.toml").is_file())
}

/// Vim swap files (`.x.swp`, `.x.swo`, ...), Emacs lock and backup files
/// (`.#x`, `x~`, `#x#`).
fn is_editor_file(name: &str) -> bool {
    let vim_swap = name.starts_with('.')
        && name
            .rsplit_once('.')
            .is_some_and(|(_, ext)| ext.len() == 3 && ext.starts_with("sw"));
    vim_swap
        || name.starts_with(".#")
        || name.ends_with('~')
        || (name.len() > 1 && name.starts_with('#') && name.ends_with('#'))
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

pub(crate) fn read_manifest(path: &Path) -> Option<toml::Table> {
    let text = std::fs::read_to_string(path).ok()?;
    text.parse::<toml::Table>().ok()
}

/// Every dependency table of a manifest: `[dependencies]`,
/// `[dev-dependencies]`, `[build-dependencies]`, their `[target.*]`
/// variants, `[workspace.dependencies]`, `[patch.*]` and `[replace]`.
fn dependency_tables(manifest: &toml::Table) -> Vec<&toml::Table> {
    const KINDS: [&str; 4] = [
        "dependencies",
        "dev-dependencies",
        "dev_dependencies",
        "build-dependencies",
    ];
    fn push_kinds<'a>(t: &'a toml::Table, tables: &mut Vec<&'a toml::Table>) {
        for kind in KINDS {
            if let Some(toml::Value::Table(deps)) = t.get(kind) {
                tables.push(deps);
            }
        }
    }
    let mut tables = Vec::new();
    push_kinds(manifest, &mut tables);
    if let Some(toml::Value::Table(targets)) = manifest.get("target") {
        for target in targets.values() {
            if let toml::Value::Table(t) = target {
                push_kinds(t, &mut tables);
            }
        }
    }
    if let Some(toml::Value::Table(ws)) = manifest.get("workspace") {
        if let Some(toml::Value::Table(deps)) = ws.get("dependencies") {
            tables.push(deps);
        }
    }
    if let Some(toml::Value::Table(patches)) = manifest.get("patch") {
        for patch in patches.values() {
            if let toml::Value::Table(t) = patch {
                tables.push(t);
            }
        }
    }
    if let Some(toml::Value::Table(replace)) = manifest.get("replace") {
        tables.push(replace);
    }
    tables
}

fn path_of(dep: &toml::Value) -> Option<&str> {
    dep.as_table()?.get("path")?.as_str()
}

/// The directories of `path` dependencies a manifest in `base` names.
fn path_dependencies(manifest: &toml::Table, base: &Path) -> Vec<PathBuf> {
    dependency_tables(manifest)
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(path_of)
        .map(|p| base.join(p))
        .collect()
}

fn is_workspace_inherited(value: &toml::Value) -> bool {
    value
        .as_table()
        .and_then(|t| t.get("workspace"))
        .and_then(toml::Value::as_bool)
        == Some(true)
}

/// Whether a manifest takes anything from its workspace (`x.workspace = true`).
fn inherits_from_workspace(manifest: &toml::Table) -> bool {
    let sections = ["package", "lints"];
    sections.iter().any(|s| {
        manifest
            .get(*s)
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.values().any(is_workspace_inherited))
    }) || manifest
        .get("lints")
        .and_then(toml::Value::as_table)
        .is_some_and(|t| t.get("workspace").is_some())
        || dependency_tables(manifest)
            .into_iter()
            .flat_map(|t| t.values())
            .any(is_workspace_inherited)
}

/// The `path` dependencies a manifest inherits from `[workspace.dependencies]`.
fn inherited_path_dependencies(
    manifest: &toml::Table,
    ws: &toml::Table,
    base: &Path,
) -> Vec<PathBuf> {
    let Some(ws_deps) = ws
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(toml::Value::as_table)
    else {
        return Vec::new();
    };
    dependency_tables(manifest)
        .into_iter()
        .flat_map(|t| t.iter())
        .filter(|(_, v)| is_workspace_inherited(v))
        .filter_map(|(name, _)| path_of(ws_deps.get(name)?))
        .map(|p| base.join(p))
        .collect()
}

/// The nearest `Cargo.toml` with a `[workspace]` table in `dir` or above it.
fn enclosing_workspace_manifest(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join("Cargo.toml"))
        .find(|m| m.is_file() && read_manifest(m).is_some_and(|t| t.contains_key("workspace")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, files: &[(&str, &str)]) {
        for (path, contents) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
    }

    #[test]
    fn key_covers_sources_and_path_dependencies_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("app");
        let api = tmp.path().join("api");
        write(
            &root,
            &[
                (
                    "Cargo.toml",
                    "[package]\nname = \"app\"\n[dependencies]\napi = { path = \"../api\" }\n",
                ),
                ("src/lib.rs", "pub fn f() {}\n"),
            ],
        );
        write(
            &api,
            &[
                ("Cargo.toml", "[package]\nname = \"api\"\n"),
                ("src/lib.rs", "pub fn g() {}\n"),
            ],
        );
        let root = std::fs::canonicalize(&root).unwrap();
        let base = digest(&root).unwrap();
        assert_eq!(base.len(), 4);

        // Build output, VCS data and editor files are not sources.
        write(
            &root,
            &[
                ("target/debug/libapp.so", "x"),
                (".git/HEAD", "x"),
                (".lib.rs.swp", "x"),
            ],
        );
        write(&api, &[("target/debug/x", "x")]);
        assert_eq!(digest(&root).unwrap(), base);

        // A lock file written by cargo is told apart from real edits.
        write(&root, &[("Cargo.lock", "# lock\n")]);
        let locked = digest(&root).unwrap();
        assert_ne!(locked.hex(), base.hex());
        assert!(base.same_except_lockfile(&locked));

        // Editing the path dependency, or a `.cargo` config, changes the key.
        write(&api, &[("src/lib.rs", "pub fn g() -> u8 { 1 }\n")]);
        let edited = digest(&root).unwrap();
        assert_ne!(edited.hex(), locked.hex());
        assert!(!locked.same_except_lockfile(&edited));
        write(&root, &[(".cargo/config.toml", "[build]\n")]);
        assert_ne!(digest(&root).unwrap().hex(), edited.hex());
    }

    #[test]
    fn hidden_files_of_the_crate_graph_change_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("app");
        write(
            &root,
            &[
                (
                    "Cargo.toml",
                    "[package]\nname = \"app\"\n[dependencies]\nx = { path = \".vendor/x\" }\n",
                ),
                ("src/lib.rs", "#[path = \".gen/inner.rs\"]\nmod inner;\n"),
                ("src/.gen/inner.rs", "pub fn f() {}\n"),
                (".vendor/x/Cargo.toml", "[package]\nname = \"x\"\n"),
                (".vendor/x/build.rs", "fn main() {}\n"),
                (".vendor/x/src/lib.rs", "\n"),
            ],
        );
        let root = std::fs::canonicalize(&root).unwrap();
        let base = digest(&root).unwrap();
        assert_eq!(base.len(), 6, "{base:?}");

        write(
            &root,
            &[(".vendor/x/build.rs", "fn main() { println!(\"x\"); }\n")],
        );
        let edited = digest(&root).unwrap();
        assert_ne!(
            edited.hex(),
            base.hex(),
            "a hidden path dependency's build.rs"
        );
        write(&root, &[("src/.gen/inner.rs", "pub fn g() {}\n")]);
        assert_ne!(
            digest(&root).unwrap().hex(),
            edited.hex(),
            "a hidden #[path] module"
        );

        // Still not sources: VCS data, editor files, build output.
        let now = digest(&root).unwrap();
        write(
            &root,
            &[
                (".git/index", "x"),
                (".vendor/x/.build.rs.swp", "x"),
                ("src/lib.rs~", "x"),
                (".vendor/x/target/debug/out", "x"),
            ],
        );
        assert_eq!(digest(&root).unwrap(), now);
    }

    #[test]
    fn inherited_workspace_path_dependencies_are_followed() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            &[
                ("ws/Cargo.toml", "[workspace]\nmembers = [\"api\"]\n[workspace.dependencies]\ncore = { path = \"core\" }\n"),
                ("ws/api/Cargo.toml", "[package]\nname = \"api\"\nversion.workspace = true\n[dependencies]\ncore.workspace = true\n"),
                ("ws/core/Cargo.toml", "[package]\nname = \"core\"\n"),
                ("ws/core/src/lib.rs", "\n"),
                ("app/Cargo.toml", "[package]\nname = \"app\"\n[dependencies]\napi = { path = \"../ws/api\" }\n[workspace]\n"),
            ],
        );
        let root = std::fs::canonicalize(tmp.path().join("app")).unwrap();
        let base = digest(&root).unwrap();
        // app's manifest, api's manifest, the ws manifest, core's two files.
        assert_eq!(base.len(), 5, "{base:?}");
        write(tmp.path(), &[("ws/core/src/lib.rs", "pub fn x() {}\n")]);
        assert_ne!(digest(&root).unwrap(), base);
    }
}
