//! A workspace with several plugin modules builds into one artifact each.

use anyhow::Result;
use sandbox_compiler::Compiler;

use crate::support;

#[test]
fn workspace_members_become_one_artifact_each() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("ws");
    std::fs::create_dir_all(&root)?;
    for member in ["alpha", "beta"] {
        let source = support::copy_counter(&root, member)?;
        let manifest = source.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)?;
        let text = text
            .replace("name = \"counter\"", &format!("name = \"{member}-module\""))
            .replace(
                "# A sandbox directory is its own Cargo project.\n[workspace]\n",
                "",
            );
        anyhow::ensure!(
            !text.contains("[workspace]"),
            "the counter manifest changed shape"
        );
        std::fs::write(&manifest, text)?;
        std::fs::rename(source.join("Cargo.lock"), root.join("Cargo.lock"))?;
    }
    support::write_files(
        &root,
        &[(
            "Cargo.toml",
            "[workspace]\nresolver = \"2\"\nmembers = [\"alpha\", \"beta\"]\n",
        )],
    )?;

    let cache = tempfile::tempdir()?;
    let compiler = support::compiler(cache.path())?;
    let output = compiler.build(&support::request(&root))?;
    let mut modules: Vec<(&str, &str)> = output
        .artifacts
        .iter()
        .map(|a| (a.package.as_str(), a.name.as_str()))
        .collect();
    modules.sort();
    assert_eq!(
        modules,
        [
            ("alpha-module", "alpha_module"),
            ("beta-module", "beta_module")
        ]
    );
    for artifact in &output.artifacts {
        assert_eq!(support::sha256_file(&artifact.path)?, artifact.sha256);
        sandbox_compiler::validate_plugin(&artifact.path)?;
    }
    let again = compiler.build(&support::request(&root))?;
    assert!(again.cached);
    assert_eq!(again.artifacts, output.artifacts);
    Ok(())
}
