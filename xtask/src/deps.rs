//! The layering rule: component crates are leaves, the foundation crates
//! below them depend on no crate of the workspace, and the top crates (the
//! command and the service) are depended on by no crate but each other.

use anyhow::bail;

/// Crates that must not depend on `sandbox-core` nor on each other.
pub const COMPONENTS: &[&str] = &[
    "sandbox-compiler",
    "sandbox-versions",
    "sandbox-watch",
    "sandbox-monitor",
    "sandbox-security",
];

/// Crates every layer may use, which use no crate of the workspace
/// themselves: spawning and jailing children.
pub const FOUNDATION: &[&str] = &["sandbox-jail"];

/// The crates at the top: hosts built on `sandbox-core` that no library
/// below may depend on (only each other: the command runs the service).
pub const TOP: &[&str] = &["sandbox-cli", "sandbox-serve"];

/// Crates a component must not depend on besides its siblings: the
/// composing crate and the loader (a component takes spawning and the jail
/// from the foundation, never the plugin loader).
const ABOVE_COMPONENTS: &[&str] = &["sandbox-core", "sandbox-isolate"];

/// Checks the rule on the workspace's `cargo metadata`; returns a one-line report.
pub fn check() -> anyhow::Result<String> {
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec()?;
    let violations = violations(&metadata);
    if !violations.is_empty() {
        bail!(
            "component crates must be leaves:\n  {}",
            violations.join("\n  ")
        );
    }
    Ok(format!(
        "layering ok: {} are leaves; {} depend on no workspace crate; only {} depend on {}",
        COMPONENTS.join(", "),
        FOUNDATION.join(", "),
        TOP.join(", "),
        TOP.join(", ")
    ))
}

/// Every normal or build dependency of a component crate on `sandbox-core`,
/// `sandbox-isolate` or another component crate, and of a foundation crate
/// on any workspace crate, and of any crate but a top one on a top crate,
/// as "a -> b".
pub fn violations(metadata: &cargo_metadata::Metadata) -> Vec<String> {
    let workspace: Vec<&str> = metadata
        .workspace_packages()
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let mut out = Vec::new();
    for package in metadata.workspace_packages() {
        let me = package.name.as_str();
        let component = COMPONENTS.contains(&me);
        let foundation = FOUNDATION.contains(&me);
        let top = TOP.contains(&me);
        for dep in &package.dependencies {
            if dep.kind == cargo_metadata::DependencyKind::Development {
                continue;
            }
            let name = dep.name.as_str();
            let bad = if !top && TOP.contains(&name) {
                true
            } else if !component && !foundation {
                false
            } else if foundation {
                workspace.contains(&name) || ABOVE_COMPONENTS.contains(&name)
            } else {
                ABOVE_COMPONENTS.contains(&name) || (COMPONENTS.contains(&name) && name != me)
            };
            if bad {
                out.push(format!("{me} -> {name}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_workspace_keeps_the_rule() {
        let metadata = cargo_metadata::MetadataCommand::new()
            .no_deps()
            .exec()
            .unwrap();
        assert_eq!(violations(&metadata), Vec::<String>::new());
        // All five components are really there (the rule is not vacuous).
        let names: Vec<&str> = metadata
            .workspace_packages()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        for c in COMPONENTS.iter().chain(FOUNDATION).chain(TOP) {
            assert!(names.contains(c), "{c} missing from the workspace");
        }
    }

    #[test]
    fn a_component_depending_on_core_or_a_sibling_is_caught() {
        let dir = std::env::temp_dir().join(format!("xtask-deps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let krate = |name: &str, deps: &str| {
            let d = dir.join(name);
            std::fs::create_dir_all(d.join("src")).unwrap();
            std::fs::write(d.join("src/lib.rs"), "").unwrap();
            std::fs::write(
                d.join("Cargo.toml"),
                format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{deps}"),
            )
            .unwrap();
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            "[workspace]\nresolver = \"2\"\nmembers = [\"sandbox-core\", \"sandbox-watch\", \"sandbox-compiler\", \"sandbox-jail\", \"sandbox-isolate\", \"sandbox-monitor\", \"sandbox-cli\", \"sandbox-serve\"]\n",
        )
        .unwrap();
        krate("sandbox-core", "");
        krate(
            "sandbox-watch",
            "sandbox-core = { path = \"../sandbox-core\" }\n",
        );
        krate(
            "sandbox-compiler",
            "sandbox-watch = { path = \"../sandbox-watch\" }\n",
        );
        krate(
            "sandbox-isolate",
            "sandbox-serve = { path = \"../sandbox-serve\" }\n",
        );
        // A top crate may use the core and another top crate.
        krate(
            "sandbox-serve",
            "sandbox-core = { path = \"../sandbox-core\" }\n",
        );
        krate(
            "sandbox-cli",
            "sandbox-serve = { path = \"../sandbox-serve\" }\n",
        );
        krate(
            "sandbox-monitor",
            "sandbox-isolate = { path = \"../sandbox-isolate\" }\n",
        );
        krate(
            "sandbox-jail",
            "sandbox-monitor = { path = \"../sandbox-monitor\" }\n",
        );
        let metadata = cargo_metadata::MetadataCommand::new()
            .manifest_path(dir.join("Cargo.toml"))
            .no_deps()
            .exec()
            .unwrap();
        let mut found = violations(&metadata);
        found.sort();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            found,
            [
                "sandbox-compiler -> sandbox-watch",
                "sandbox-isolate -> sandbox-serve",
                "sandbox-jail -> sandbox-monitor",
                "sandbox-monitor -> sandbox-isolate",
                "sandbox-watch -> sandbox-core"
            ]
        );
    }
}
