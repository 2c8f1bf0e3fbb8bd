//! Two trees whose packages share a name, built alternately into one target
//! directory, each get their own library back.

use anyhow::Result;
use sandbox_compiler::Compiler;

use crate::support;

/// A copy of the counter example that also exports `marker`.
fn variant(dir: &std::path::Path, name: &str, marker: &str) -> Result<std::path::PathBuf> {
    let source = support::copy_counter(dir, name)?;
    let lib = source.join("src/lib.rs");
    let mut text = std::fs::read_to_string(&lib)?;
    text.push_str(&format!(
        "\n#[no_mangle]\npub extern \"C\" fn {marker}() -> u32 {{\n    7\n}}\n"
    ));
    std::fs::write(lib, text)?;
    Ok(source)
}

#[test]
fn same_package_name_in_two_trees_does_not_mix_up_artifacts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = variant(dir.path(), "a", "collision_marker_a")?;
    let b = variant(dir.path(), "b", "collision_marker_b")?;
    let cache = tempfile::tempdir()?;
    let compiler = support::compiler(cache.path())?;

    let mut seen = Vec::new();
    for (round, (source, mine, theirs)) in [
        (&a, "collision_marker_a", "collision_marker_b"),
        (&b, "collision_marker_b", "collision_marker_a"),
        (&a, "collision_marker_a", "collision_marker_b"),
        (&b, "collision_marker_b", "collision_marker_a"),
    ]
    .into_iter()
    .enumerate()
    {
        // Forget the cached result so cargo runs every round.
        compiler.forget(source)?;
        let output = compiler.build(&support::request(source))?;
        assert!(!output.cached, "round {round}");
        assert_eq!(output.artifacts.len(), 1);
        let artifact = &output.artifacts[0];
        assert_eq!(artifact.package, "counter");
        let symbols = support::exported_symbols(&artifact.path)?;
        assert!(
            symbols.iter().any(|s| s == mine),
            "round {round}: {} lacks {mine}",
            artifact.path.display()
        );
        assert!(
            !symbols.iter().any(|s| s == theirs),
            "round {round}: {} has {theirs}",
            artifact.path.display()
        );
        assert_eq!(support::sha256_file(&artifact.path)?, artifact.sha256);
        seen.push(artifact.sha256.clone());
    }
    assert_ne!(seen[0], seen[1]);
    Ok(())
}

/// A two-member workspace: a cdylib `plugin` re-exporting an rlib `common`
/// that exports `marker`. The plugin root symbol is faked: validation only
/// looks at the symbol table.
fn workspace_variant(
    dir: &std::path::Path,
    name: &str,
    marker: &str,
) -> Result<std::path::PathBuf> {
    let root = dir.join(name);
    let common = format!("#[no_mangle]\npub extern \"C\" fn {marker}() -> u32 {{\n    7\n}}\n");
    let plugin = format!(
        "pub use common::*;\n\n#[no_mangle]\npub static {}: u8 = 0;\n",
        sandbox_compiler::ROOT_MODULE_SYMBOL
    );
    support::write_files(
        &root,
        &[
            ("Cargo.toml", "[workspace]\nresolver = \"2\"\nmembers = [\"plugin\", \"common\"]\n"),
            (
                "plugin/Cargo.toml",
                "[package]\nname = \"plugin\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n[dependencies]\ncommon = { path = \"../common\" }\n",
            ),
            ("plugin/src/lib.rs", &plugin),
            ("common/Cargo.toml", "[package]\nname = \"common\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
            ("common/src/lib.rs", &common),
        ],
    )?;
    Ok(root)
}

#[test]
fn same_named_rlib_members_in_two_trees_are_not_mixed_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = workspace_variant(dir.path(), "a", "common_marker_a")?;
    let b = workspace_variant(dir.path(), "b", "common_marker_b")?;
    let cache = tempfile::tempdir()?;
    let compiler = support::compiler(cache.path())?;
    for (round, (source, mine)) in [
        (&a, "common_marker_a"),
        (&b, "common_marker_b"),
        (&a, "common_marker_a"),
    ]
    .into_iter()
    .enumerate()
    {
        compiler.forget(source)?;
        let output = compiler.build(&support::request(source))?;
        assert_eq!(output.artifacts.len(), 1, "round {round}");
        let symbols = support::exported_symbols(&output.artifacts[0].path)?;
        assert!(
            symbols.iter().any(|s| s == mine),
            "round {round}: the plugin of {} lacks {mine}: {symbols:?}",
            source.display()
        );
    }
    Ok(())
}
