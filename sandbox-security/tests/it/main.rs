//! Integration tests of `sandbox-security`.

mod audit;
mod policy;
mod rate;
mod scan;

use std::path::Path;

use tempfile::TempDir;

/// Writes `files` (path, content) into a fresh temporary source tree.
pub fn tree(files: &[(&str, &str)]) -> anyhow::Result<TempDir> {
    let dir = tempfile::tempdir()?;
    for (path, content) in files {
        let path = dir.path().join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, content)?;
    }
    Ok(dir)
}

/// The findings of `report`, one per line.
pub fn render(report: &sandbox_security::ScanReport) -> String {
    report.findings.iter().map(|f| format!("{f}\n")).collect()
}

/// The example counter plugin of this repository.
pub fn counter_example() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/examples/counter"
    ))
}
