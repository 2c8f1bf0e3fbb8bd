//! The default policy: a syntax-tree scan of every file of a source tree's
//! crate graph.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use walkdir::WalkDir;

use crate::manifest::scan_manifest;
use crate::rust::{scan_rust_file, scan_rust_fragment, RustFile};
use crate::{
    Capability, Error, Finding, Policy, Profile, Result, ScanReport, DEFAULT_ALLOWED_DEPENDENCIES,
};

/// The default [`Policy`]: parses, with `syn` and `toml`, every file cargo
/// reads to build the source tree, and every other `.rs` and `Cargo.toml`
/// file of the tree outside hidden folders and `target/`.
///
/// **What cargo reads** — from the root `Cargo.toml`, the crate graph that
/// lives in the tree: each package's manifest and targets (the library, the
/// binaries — `src/main.rs`, `src/bin/` and `[[bin]]` paths —, explicit
/// `[[example]]`, `[[test]]` and `[[bench]]` paths, and the build script:
/// `package.build` or a default `build.rs`), every module file reached from
/// them through `mod` declarations (honouring `#[path = ".."]`, also under
/// `cfg_attr`, relative to the directory rustc uses) and `include!`, the
/// packages of `path` dependencies (of every dependency table, `[patch]` and
/// `[replace]`) and workspace members. Hidden folders are read when the
/// graph leads there (`hex = { path = ".vendor/hex" }`); files outside the
/// source root are not read (a `#[path]` leaving the tree is itself a
/// finding, and untrusted builds refuse path dependencies outside the tree).
/// The root's cargo configuration (`.cargo/config.toml`, `.cargo/config`)
/// and toolchain files (`rust-toolchain`, `rust-toolchain.toml`) are
/// [`Capability::CargoConfig`] findings.
///
/// What it finds is listed on [`Capability`]; see [`scan_rust`](crate::scan_rust)
/// for the Rust constructs and what it sees of macros. In manifests it finds
/// `build.rs` files and `package.build`, `[build-dependencies]`,
/// `proc-macro = true`, and normal and build dependencies (also per target)
/// whose package is not on its allow-list ([`DEFAULT_ALLOWED_DEPENDENCIES`]
/// plus what [`with_allowed_dependencies`](SourcePolicy::with_allowed_dependencies)
/// adds). A file that does not parse fails the scan. Symbolic links are
/// followed, as cargo would.
///
/// **The scan is advice, not a guarantee.** It sees source, not its
/// expansion: what a dependency's macro generates is trusted with the
/// dependency (which is why dependencies are allow-listed), names a macro
/// assembles can escape it, and a compiler soundness hole lets safe code
/// reach any memory. What untrusted code can do is bounded by the jail
/// (`sandbox-isolate`), which every profile but `trusted` builds and runs in.
#[derive(Debug, Clone)]
pub struct SourcePolicy {
    allowed_dependencies: BTreeSet<String>,
}

impl Default for SourcePolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl SourcePolicy {
    /// A policy allowing the [`DEFAULT_ALLOWED_DEPENDENCIES`].
    pub fn new() -> Self {
        SourcePolicy {
            allowed_dependencies: DEFAULT_ALLOWED_DEPENDENCIES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }

    /// Adds package names to the dependency allow-list.
    pub fn with_allowed_dependencies<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_dependencies
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// The dependency allow-list.
    pub fn allowed_dependencies(&self) -> &BTreeSet<String> {
        &self.allowed_dependencies
    }
}

impl Policy for SourcePolicy {
    fn scan(&self, source: &Path) -> Result<ScanReport> {
        let _span = tracing::debug_span!("scan", source = %source.display()).entered();
        if !source.is_dir() {
            return Err(Error::NotADirectory {
                path: source.to_owned(),
            });
        }
        let mut walk = Walk {
            allowed: &self.allowed_dependencies,
            root: normalize(source),
            report: ScanReport::default(),
            seen: BTreeSet::new(),
            packages: BTreeSet::new(),
            rust: Vec::new(),
        };
        let root = walk.root.clone();
        walk.cargo_configuration()?;
        walk.package(&root)?;
        walk.rest()?;
        let builders: Vec<String> = walk
            .rust
            .iter()
            .flat_map(|f| f.builders.iter().cloned())
            .collect();
        let built: Vec<Finding> = walk
            .rust
            .iter()
            .flat_map(|f| f.resolve_builders(&builders))
            .collect();
        let mut report = walk.report;
        report.findings.extend(built);
        report
            .findings
            .sort_by(|a, b| (&a.file, a.line, a.column, a).cmp(&(&b.file, b.line, b.column, b)));
        report.findings.dedup();
        tracing::debug!(
            files = report.files_scanned,
            findings = report.findings.len(),
            "scanned"
        );
        Ok(report)
    }

    fn check(&self, source: &Path, profile: Profile) -> Result<ScanReport> {
        profile.enforce(self.scan(source)?)
    }
}

/// One scan in progress.
struct Walk<'a> {
    allowed: &'a BTreeSet<String>,
    /// The source root, absolute if it was given so, without `.`/`..`.
    root: PathBuf,
    report: ScanReport,
    /// Files read (canonical paths), so each is scanned once.
    seen: BTreeSet<PathBuf>,
    /// Package folders visited (canonical).
    packages: BTreeSet<PathBuf>,
    /// What the Rust files pointed at (for macros that build paths).
    rust: Vec<RustFile>,
}

/// How a Rust file's `mod x;` declarations find their files.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ownership {
    /// A crate root, a `mod.rs` or a `#[path]` file: children sit next to it.
    Dir,
    /// `a.rs`: children sit in `a/`.
    File,
}

impl Walk<'_> {
    fn relative(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.root).unwrap_or(path).to_owned()
    }

    fn in_tree(&self, path: &Path) -> bool {
        path.starts_with(&self.root)
    }

    /// Marks `path` as read; false if it already was.
    fn first_visit(&mut self, path: &Path) -> bool {
        let key = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        self.seen.insert(key)
    }

    fn read(path: &Path) -> Result<String> {
        fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// The root's cargo configuration and toolchain files.
    fn cargo_configuration(&mut self) -> Result<()> {
        const FILES: [(&str, &str); 4] = [
            (".cargo/config.toml", "cargo configuration"),
            (".cargo/config", "cargo configuration"),
            ("rust-toolchain.toml", "a toolchain override"),
            ("rust-toolchain", "a toolchain override"),
        ];
        for (name, what) in FILES {
            let path = self.root.join(name);
            if path.is_file() && self.first_visit(&path) {
                self.report.files_scanned += 1;
                self.report.findings.push(Finding {
                    capability: Capability::CargoConfig,
                    file: PathBuf::from(name),
                    line: 1,
                    column: 1,
                    detail: format!("`{name}` ({what})"),
                });
            }
        }
        Ok(())
    }

    /// The package or workspace whose manifest is `dir/Cargo.toml`, and
    /// everything it leads to.
    fn package(&mut self, dir: &Path) -> Result<()> {
        let manifest_path = dir.join("Cargo.toml");
        if !self.in_tree(dir) || !manifest_path.is_file() {
            return Ok(());
        }
        let key = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        if !self.packages.insert(key) {
            return Ok(());
        }
        let text = Self::read(&manifest_path)?;
        if self.first_visit(&manifest_path) {
            self.report.files_scanned += 1;
            let has_build_rs = dir.join("build.rs").is_file();
            let relative = self.relative(&manifest_path);
            self.report.findings.extend(scan_manifest(
                &relative,
                &text,
                self.allowed,
                has_build_rs,
            )?);
        }
        let manifest: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Manifest {
            file: self.relative(&manifest_path),
            message: e.message().to_owned(),
        })?;

        if let Some(package) = manifest.get("package").and_then(toml::Value::as_table) {
            for target in targets(dir, &manifest, package) {
                self.rust(&target, Ownership::Dir, false)?;
            }
        }
        for dep in path_dependencies(&manifest) {
            self.package(&normalize(&dir.join(dep)))?;
        }
        if let Some(members) = manifest
            .get("workspace")
            .and_then(|w| w.get("members"))
            .and_then(toml::Value::as_array)
        {
            for pattern in members.iter().filter_map(toml::Value::as_str) {
                for member in expand(dir, pattern) {
                    self.package(&normalize(&member))?;
                }
            }
        }
        Ok(())
    }

    /// Scans the Rust file at `path` and the files it declares or includes.
    fn rust(&mut self, path: &Path, ownership: Ownership, fragment: bool) -> Result<()> {
        let path = normalize(path);
        if !self.in_tree(&path) || !path.is_file() || !self.first_visit(&path) {
            return Ok(());
        }
        let text = Self::read(&path)?;
        let relative = self.relative(&path);
        let scanned = if fragment {
            scan_rust_fragment(&relative, &text)?
        } else {
            scan_rust_file(&relative, &text)?
        };
        self.report.files_scanned += 1;
        self.report
            .findings
            .extend(scanned.findings.iter().cloned());
        let dir = path.parent().unwrap_or(Path::new("")).to_owned();
        // Where `mod x;` looks for `x.rs` (before inline modules).
        let module_dir = match (ownership, path.file_stem()) {
            (Ownership::File, Some(stem)) => dir.join(stem),
            _ => dir.clone(),
        };
        for decl in &scanned.mods {
            let mut base = module_dir.clone();
            base.extend(&decl.inline);
            if decl.paths.is_empty() {
                self.rust(
                    &base.join(format!("{}.rs", decl.name)),
                    Ownership::File,
                    false,
                )?;
                self.rust(&base.join(&decl.name).join("mod.rs"), Ownership::Dir, false)?;
            } else {
                for target in &decl.paths {
                    let from = if decl.inline.is_empty() { &dir } else { &base };
                    self.rust(&from.join(target), Ownership::Dir, false)?;
                }
            }
        }
        for include in &scanned.includes {
            self.rust(&dir.join(include), Ownership::Dir, true)?;
        }
        self.rust.push(scanned);
        Ok(())
    }

    /// Every other `.rs` file and manifest of the tree, outside hidden
    /// folders and `target/`: not built, but scanned as before so nothing
    /// in plain sight is missed.
    fn rest(&mut self) -> Result<()> {
        let root = self.root.clone();
        let walk = WalkDir::new(&root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter();
        let entries = walk.filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            e.depth() == 0
                || !(name.starts_with('.') || (name == "target" && e.file_type().is_dir()))
        });
        for entry in entries {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(&root).to_owned();
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("a symbolic link loop"));
                Error::Io { path, source }
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let path = entry.path();
            if entry.file_name() == "Cargo.toml" {
                if self.first_visit(path) {
                    let text = Self::read(path)?;
                    self.report.files_scanned += 1;
                    let has_build_rs = path.with_file_name("build.rs").is_file();
                    let relative = self.relative(path);
                    self.report.findings.extend(scan_manifest(
                        &relative,
                        &text,
                        self.allowed,
                        has_build_rs,
                    )?);
                }
            } else if path.extension().is_some_and(|e| e == "rs") && self.first_visit(path) {
                let text = Self::read(path)?;
                self.report.files_scanned += 1;
                let scanned = scan_rust_file(&self.relative(path), &text)?;
                self.report
                    .findings
                    .extend(scanned.findings.iter().cloned());
                self.rust.push(scanned);
            }
        }
        Ok(())
    }
}

/// The crate roots of a package: library, binaries, explicit examples,
/// tests and benches, and the build script.
fn targets(dir: &Path, manifest: &toml::Table, package: &toml::Table) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let path_of = |t: &toml::Value| {
        t.get("path")
            .and_then(toml::Value::as_str)
            .map(|p| dir.join(p))
    };
    roots.push(
        manifest
            .get("lib")
            .and_then(path_of)
            .unwrap_or_else(|| dir.join("src/lib.rs")),
    );
    roots.push(dir.join("src/main.rs"));
    if let Ok(entries) = fs::read_dir(dir.join("src/bin")) {
        let mut bins: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        bins.sort();
        for bin in bins {
            if bin.is_dir() {
                roots.push(bin.join("main.rs"));
            } else if bin.extension().is_some_and(|e| e == "rs") {
                roots.push(bin);
            }
        }
    }
    for kind in ["bin", "example", "test", "bench"] {
        if let Some(list) = manifest.get(kind).and_then(toml::Value::as_array) {
            roots.extend(list.iter().filter_map(path_of));
        }
    }
    match package.get("build") {
        Some(toml::Value::String(build)) => roots.push(dir.join(build)),
        Some(toml::Value::Boolean(false)) => {}
        _ => roots.push(dir.join("build.rs")),
    }
    roots
}

/// The `path` values of every dependency table of a manifest:
/// `[dependencies]`, `[dev-dependencies]`, `[build-dependencies]`, their
/// `[target.*]` variants, `[workspace.dependencies]`, `[patch.*]` and
/// `[replace]`.
fn path_dependencies(manifest: &toml::Table) -> Vec<String> {
    const KINDS: [&str; 5] = [
        "dependencies",
        "dev-dependencies",
        "dev_dependencies",
        "build-dependencies",
        "build_dependencies",
    ];
    fn kinds<'a>(t: &'a toml::Table, tables: &mut Vec<&'a toml::Table>) {
        tables.extend(KINDS.iter().filter_map(|k| t.get(*k)?.as_table()));
    }
    let mut tables = Vec::new();
    kinds(manifest, &mut tables);
    let nested = |key: &str| {
        manifest
            .get(key)
            .and_then(toml::Value::as_table)
            .into_iter()
            .flat_map(|t| t.values().filter_map(toml::Value::as_table))
    };
    for target in nested("target") {
        kinds(target, &mut tables);
    }
    tables.extend(nested("patch"));
    if let Some(deps) = manifest
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(toml::Value::as_table)
    {
        tables.push(deps);
    }
    if let Some(replace) = manifest.get("replace").and_then(toml::Value::as_table) {
        tables.push(replace);
    }
    tables
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(|dep| dep.get("path")?.as_str().map(str::to_owned))
        .collect()
}

/// The folders a workspace `members` pattern names (`*` and `?` match
/// within one path component, as cargo's globs do).
fn expand(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![dir.to_owned()];
    for part in Path::new(pattern).components() {
        let part = part.as_os_str().to_string_lossy();
        if !part.contains(['*', '?']) {
            found.iter_mut().for_each(|d| d.push(part.as_ref()));
            continue;
        }
        let mut next = Vec::new();
        for d in &found {
            let Ok(entries) = fs::read_dir(d) else {
                continue;
            };
            let mut matches: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| wildcard(&part, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            matches.sort();
            next.extend(matches);
        }
        found = next;
    }
    found
}

/// Whether `name` matches `pattern` with `*` (any run) and `?` (one char).
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// `path` without `.` and with `..` applied to the components before it
/// (as cargo treats manifest paths: lexically).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_component() {
        assert!(wildcard("*", "anything"));
        assert!(wildcard("crate-?", "crate-a"));
        assert!(wildcard("p*s", "plugins"));
        assert!(!wildcard("p*s", "plugin"));
        assert!(!wildcard("a?", "a"));
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
        assert_eq!(normalize(Path::new("a/../../b")), Path::new("../b"));
    }
}
