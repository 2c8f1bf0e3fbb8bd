//! Profiles: what each refuses and allows, how they parse, and `Policy` through `Box`, `Arc` and the no-op.

use std::sync::Arc;

use sandbox_security::{
    Capability, CapabilityKind, Error, FsAccess, NoopPolicy, Policy, Profile, SourcePolicy,
};

use crate::{counter_example, tree};

const SPAWNS: &str =
    "pub fn run() {\n    let _ = std::process::Command::new(\"sh\").status();\n}\n";

#[test]
fn high_refuses_process_creation_naming_file_and_line() -> anyhow::Result<()> {
    let dir = tree(&[("src/lib.rs", SPAWNS)])?;
    let err = SourcePolicy::new()
        .check(dir.path(), Profile::High)
        .map(|_| ())
        .expect_err("refused");
    let Error::Denied { profile, findings } = &err else {
        anyhow::bail!("expected Denied, got {err:?}")
    };
    assert_eq!(*profile, Profile::High);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].capability, Capability::Process);
    assert_eq!(
        err.to_string(),
        "source refused under profile high (1 violation); remove these uses, or declare the source \
         trusted (profile trusted: built and run outside the jail) only if it is your own:\n  \
         src/lib.rs:2:13: `std::process` (process creation) is not allowed under profile high"
    );
    Ok(())
}

#[test]
fn trusted_allows_it_and_medium_allows_only_files_and_env() -> anyhow::Result<()> {
    let dir = tree(&[("src/lib.rs", SPAWNS)])?;
    let policy = SourcePolicy::new();
    let report = policy.check(dir.path(), Profile::Trusted)?;
    assert_eq!(
        report.findings.len(),
        1,
        "the report still lists what was allowed"
    );
    assert!(matches!(
        policy.check(dir.path(), Profile::Medium),
        Err(Error::Denied { .. })
    ));

    let files = tree(&[(
        "src/lib.rs",
        "pub fn f() { let _ = std::fs::read(std::env::var(\"F\").unwrap_or_default()); }\n",
    )])?;
    assert_eq!(
        policy.check(files.path(), Profile::Medium)?.findings.len(),
        2
    );
    let err = policy
        .check(files.path(), Profile::High)
        .map(|_| ())
        .expect_err("files and env are refused under high");
    assert!(
        err.to_string()
            .contains("remove these uses, or choose profile medium, which allows them:"),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_counter_example_passes_every_profile() -> anyhow::Result<()> {
    for profile in Profile::ALL {
        SourcePolicy::new().check(counter_example(), profile)?;
    }
    Ok(())
}

#[test]
fn profiles_parse_and_map_to_permissions() -> anyhow::Result<()> {
    assert_eq!("high".parse::<Profile>()?, Profile::High);
    assert_eq!(" Medium ".parse::<Profile>()?, Profile::Medium);
    assert_eq!("Trusted".parse::<Profile>()?, Profile::Trusted);
    let renamed = "LOW".parse::<Profile>().map(|_| ()).expect_err("renamed");
    assert_eq!(
        renamed.to_string(),
        "the profile `low` is now called `trusted`; say `trusted` to declare that you trust this source"
    );
    let err = "extreme"
        .parse::<Profile>()
        .map(|_| ())
        .expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "unknown profile `extreme`; expected one of: high, medium, trusted"
    );
    assert_eq!(Profile::default(), Profile::Medium);
    assert_eq!(serde_json::to_string(&Profile::High)?, "\"high\"");

    let high = Profile::High.permissions();
    assert!(high.allowed.is_empty());
    assert!(!high.network && !high.trusts_build);
    assert_eq!(high.filesystem, FsAccess::None);
    assert!(high.permits(&Capability::Dependency("serde".into())));
    assert!(!high.permits(&Capability::Dependency("libc".into())));
    assert!(!high.permits(&Capability::Unsafe));

    let medium = Profile::Medium.permissions();
    assert!(medium.permits(&Capability::FileSystem) && medium.permits(&Capability::Environment));
    assert!(!medium.permits(&Capability::Network) && !medium.permits(&Capability::BuildScript));

    assert!(!medium.permits(&Capability::CargoConfig));

    let trusted = Profile::Trusted.permissions();
    assert!(CapabilityKind::ALL
        .iter()
        .all(|k| trusted.allowed.contains(k)));
    assert!(trusted.permits(&Capability::Dependency("libc".into())));
    assert!(trusted.network && trusted.trusts_build);
    Ok(())
}

#[test]
fn works_through_box_arc_and_noop() -> anyhow::Result<()> {
    let dir = tree(&[("src/lib.rs", SPAWNS)])?;
    let boxed: Box<dyn Policy> = Box::new(SourcePolicy::new());
    assert_eq!(boxed.scan(dir.path())?.findings.len(), 1);
    let shared: Arc<dyn Policy> = Arc::new(NoopPolicy);
    assert!(shared.check(dir.path(), Profile::High)?.is_clean());
    Ok(())
}
