//! The audit log a `Manager` keeps when its configuration names one: every
//! lifecycle step, with actor and sandbox, on a chain that verifies.

use sandbox_core::security::AuditLog;
use sandbox_core::{Config, Manager, SandboxSpec};
use sandbox_testkit::{example_dir, fixtures, test_config};

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_records_the_lifecycle_with_actor_and_sandbox() {
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("counter");
    fixtures::copy_crate(&example_dir("counter"), &src).unwrap();
    // A folder that does not exist yet: the manager creates it.
    let log = scratch.path().join("logs/audit.log");
    let manager = Manager::new(Config {
        audit_log: Some(log.clone()),
        audit_actor: "tester".into(),
        ..test_config(scratch.path())
    })
    .unwrap();

    manager
        .create("audited", SandboxSpec::trusted(&src))
        .await
        .unwrap();
    let lib = src.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    let edited = text.replace("self.calls += 1;", "self.calls += 2;");
    assert_ne!(
        edited, text,
        "the counter example changed: pick another edit"
    );
    std::fs::write(&lib, edited).unwrap();
    manager.hot_reload("audited").await.unwrap();
    manager.rollback("audited", "counter", 1).await.unwrap();
    manager.restart("audited").await.unwrap();
    manager.destroy("audited").await.unwrap();
    drop(manager);

    let entries = AuditLog::entries(&log).unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    let mut expected = [
        "create", "build", "load", "build", "reload", "rollback", "restart", "destroy",
    ]
    .into_iter();
    // In this order (other entries may come between).
    let mut next = expected.next();
    for action in &actions {
        if Some(*action) == next {
            next = expected.next();
        }
    }
    assert_eq!(next, None, "missing or out of order in {actions:?}");
    for entry in &entries {
        assert_eq!(entry.actor, "tester", "{entry:?}");
        assert_eq!(entry.sandbox.as_deref(), Some("audited"), "{entry:?}");
    }
    let build = entries.iter().find(|e| e.action == "build").unwrap();
    assert_eq!(build.detail, "profile trusted, not jailed");
    let reload = entries.iter().find(|e| e.action == "reload").unwrap();
    assert_eq!(reload.detail, "module counter: version 1 -> 2");
    assert_eq!(AuditLog::verify(&log).unwrap(), entries.len());
}
