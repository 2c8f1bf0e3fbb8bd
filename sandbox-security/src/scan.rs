//! The default policy: a syntax-tree scan of a source tree.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use walkdir::WalkDir;

use crate::manifest::scan_manifest;
use crate::{scan_rust, Error, Policy, Profile, Result, ScanReport, DEFAULT_ALLOWED_DEPENDENCIES};

/// The default [`Policy`]: parses every `.rs` file under the source root with
/// `syn` and every `Cargo.toml` with `toml`, skipping `target/` and hidden
/// entries (the root itself may be hidden). Symbolic links are followed, as
/// cargo would.
///
/// What it finds is listed on [`Capability`](crate::Capability); see
/// [`scan_rust`] for the Rust constructs. In manifests it finds `build.rs`
/// files and `package.build`, `[build-dependencies]`, `proc-macro = true`, and
/// normal and build dependencies (also per target) whose package is not on
/// its allow-list ([`DEFAULT_ALLOWED_DEPENDENCIES`] plus what
/// [`with_allowed_dependencies`](SourcePolicy::with_allowed_dependencies)
/// adds). A file that does not parse fails the scan.
///
/// The scan sees source, not its expansion: what a dependency's macro
/// generates is trusted with the dependency, which is why dependencies are
/// allow-listed.
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
        let mut report = ScanReport::default();
        let walk = WalkDir::new(source)
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
                let path = e.path().unwrap_or(source).to_owned();
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("a symbolic link loop"));
                Error::Io { path, source }
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let path = entry.path();
            let relative = path.strip_prefix(source).unwrap_or(path);
            let is_rust = path.extension().is_some_and(|e| e == "rs");
            let is_manifest = entry.file_name() == "Cargo.toml";
            if !is_rust && !is_manifest {
                continue;
            }
            let text = fs::read_to_string(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
            report.files_scanned += 1;
            let findings = if is_rust {
                scan_rust(relative, &text)?
            } else {
                let has_build_rs = path.with_file_name("build.rs").is_file();
                scan_manifest(relative, &text, &self.allowed_dependencies, has_build_rs)?
            };
            report.findings.extend(findings);
        }
        report
            .findings
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
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
