//! A good plugin builds into one validated artifact.

use anyhow::Result;
use sandbox_compiler::{validate_plugin, Compiler, Level, ROOT_MODULE_SYMBOL};

use crate::support;

#[test]
fn counter_builds_into_one_validated_artifact() -> Result<()> {
    let (_dir, source) = support::counter()?;
    let cache = tempfile::tempdir()?;
    let compiler = support::compiler(cache.path())?;

    let output = compiler.build(&support::request(&source))?;

    assert!(!output.cached);
    assert_eq!(output.artifacts.len(), 1, "{:?}", output.artifacts);
    let artifact = &output.artifacts[0];
    assert_eq!(artifact.package, "counter");
    assert_eq!(artifact.name, "counter");
    assert!(
        artifact.path.starts_with(compiler.cache_dir()),
        "{} is not a cache copy",
        artifact.path.display()
    );
    assert_eq!(artifact.sha256, support::sha256_file(&artifact.path)?);
    assert_eq!(artifact.sha256.len(), 64);
    assert!(artifact
        .sha256
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(artifact.source_hash, output.source_hash);
    assert!(support::exported_symbols(&artifact.path)?
        .iter()
        .any(|s| s == ROOT_MODULE_SYMBOL));
    validate_plugin(&artifact.path)?;
    assert!(output.warnings.iter().all(|d| d.level != Level::Error));
    Ok(())
}
