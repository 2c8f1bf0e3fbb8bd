//! Lifecycle code that never returns, in-process: a create fails and leaves
//! nothing behind, a reload is rolled back with the old version serving,
//! a `save_state` that never returns fails the reload and the module says
//! so until a restart — and the manager keeps answering throughout.

use std::path::Path;
use std::time::Duration;

use sandbox_core::{ErrorClass, EventKind, Manager, SandboxSpec, Status};
use sandbox_testkit::{fixtures, scratch_of, test_config, unique_id, TestSandbox};
use serde_json::json;

/// The lifecycle deadline the tests run with.
const LIFECYCLE: Duration = Duration::from_millis(500);

fn source(hang: &str) -> String {
    fixtures::stuck_plugin(hang)
}

/// An in-process spec with the short lifecycle deadline.
fn spec() -> SandboxSpec {
    let mut spec = SandboxSpec::trusted("");
    spec.limits.lifecycle_timeout = Some(LIFECYCLE);
    spec
}

/// A sandbox of module `m` hanging in `hang` (`none`: well-behaved).
async fn sandbox(dir: &Path, hang: &str) -> TestSandbox {
    let src = dir.join("src");
    fixtures::write_plugin(&src, "deadline", &source(hang)).unwrap();
    TestSandbox::from_dir(&src, spec()).await.unwrap()
}

async fn add(sb: &TestSandbox, n: i64) -> sandbox_core::Result<i64> {
    let out = sb
        .manager
        .call_json(sb.id.as_str(), "m", &json!({ "add": n }))
        .await?;
    Ok(out["value"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_whose_init_never_returns_fails_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fixtures::write_plugin(&src, "deadline", &source("init")).unwrap();
    let manager = Manager::new(test_config(dir.path())).unwrap();
    let id = unique_id("hang");
    let mut spec = spec();
    spec.source = src.clone();
    let err = manager.create(id.clone(), spec).await.unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    assert_eq!(err.class(), ErrorClass::Resource, "{err}");
    assert!(err.to_string().contains("init"), "{err}");
    assert!(manager.list().is_empty());
    assert!(manager.info(id.as_str()).is_err());
    assert!(scratch_of(&manager, id.as_str()).is_empty());
    // The manager answers the next request: the same id, good code.
    fixtures::write_plugin(&src, "deadline", &source("none")).unwrap();
    let mut good = self::spec();
    good.source = src;
    manager.create(id.clone(), good).await.unwrap();
    assert_eq!(manager.info(id.as_str()).unwrap().status, Status::Running);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_whose_init_never_returns_is_rolled_back_and_the_old_version_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = sandbox(dir.path(), "none").await;
    assert_eq!(add(&sb, 5).await.unwrap(), 5);
    sb.drain_events();
    sb.write("src/lib.rs", &source("init")).unwrap();
    let err = sb.manager.hot_reload(sb.id.as_str()).await.unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    sb.await_event("rolled back", Duration::from_secs(10), |k| {
        matches!(k, EventKind::RolledBack { .. })
    })
    .await
    .unwrap();
    let info = sb.info().unwrap();
    assert_eq!(info.status, Status::Running);
    assert_eq!(info.modules[0].version, 1);
    assert_eq!(add(&sb, 1).await.unwrap(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_save_state_that_never_returns_fails_the_reload_until_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), "save").await;
    assert_eq!(add(&sb, 5).await.unwrap(), 5);
    sb.write("src/lib.rs", &source("none")).unwrap();
    let err = sb.manager.hot_reload(sb.id.as_str()).await.unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    assert!(err.to_string().contains("save_state"), "{err}");
    assert_eq!(sb.info().unwrap().status, Status::Running);
    // The instance stayed with save_state: calls are told so at once.
    let err = add(&sb, 1).await.unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    assert!(err.to_string().contains("restart the sandbox"), "{err}");
    // A restart starts the module again, from empty state.
    sb.manager.restart(sb.id.as_str()).await.unwrap();
    assert_eq!(add(&sb, 2).await.unwrap(), 2);
}
