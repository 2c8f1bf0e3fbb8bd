//! State across versions of different schemas: a rollback to a version
//! that cannot know the live state is refused (state kept) unless a host
//! migration is registered; the default `restore_state` refuses state of a
//! schema it does not know.

use std::sync::Arc;

use sandbox_core::{EventKind, SandboxSpec};
use sandbox_testkit::{fixtures, TestSandbox};
use serde_json::json;

/// A counter at state schema 1 (`{"total": n}`) that saves its state but
/// keeps the trait's default `restore_state`.
const COUNTER_SCHEMA_1_DEFAULT_RESTORE: &str = r#"
use sandbox_plugin::{export_plugin, json, state, Host, Plugin, Result};

#[derive(Default)]
pub struct Counter { total: i64 }

impl Plugin for Counter {
    const NAME: &'static str = "counter";
    const SCHEMA: u32 = 1;

    fn handle(&mut self, _host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let request: serde_json::Value = json::decode(request)?;
        self.total += request["add"].as_i64().unwrap_or(0);
        json::encode(&serde_json::json!({ "value": self.total }))
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        state::save(&serde_json::json!({ "total": self.total }))
    }
}

export_plugin!(Counter);
"#;

/// A sandbox whose counter went from schema 1 (version 1, `v1`'s source)
/// to the example's schema 2 (version 2), with a total of 7.
async fn counter_upgraded_to_schema_2(v1: &str) -> TestSandbox {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v1");
    fixtures::write_plugin(&src, "counter", v1).unwrap();
    let sb = TestSandbox::from_dir(&src, SandboxSpec::trusted(""))
        .await
        .unwrap();
    sb.call("counter", json!({"add": 4})).await.unwrap();
    let example =
        std::fs::read_to_string(sandbox_testkit::example_dir("counter").join("src/lib.rs"))
            .unwrap();
    sb.write("src/lib.rs", &example).unwrap();
    sb.manager.hot_reload(sb.id.as_str()).await.unwrap();
    assert_eq!(sb.info().unwrap().modules[0].schema, 2);
    assert_eq!(
        sb.call("counter", json!({"add": 3})).await.unwrap()["value"],
        7
    );
    sb
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_to_a_lower_schema_is_refused_and_the_state_kept() {
    let mut sb = counter_upgraded_to_schema_2(COUNTER_SCHEMA_1_DEFAULT_RESTORE).await;
    sb.drain_events();
    let err = sb
        .manager
        .rollback(sb.id.as_str(), "counter", 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "swap", "{err}");
    let text = err.to_string();
    assert!(
        text.contains("schema 1")
            && text.contains("schema 2")
            && text.contains("register_migration"),
        "{text}"
    );
    let info = sb.info().unwrap();
    assert_eq!(info.modules[0].version, 2);
    assert_eq!(info.status, sandbox_core::Status::Running);
    // Still version 2 with its state: the total goes on from 7.
    assert_eq!(
        sb.call("counter", json!({"add": 1})).await.unwrap()["value"],
        8
    );
    assert!(
        sb.events
            .try_recv()
            .map_or(true, |e| !matches!(e.kind, EventKind::Swapped { .. })),
        "something was swapped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_to_a_lower_schema_goes_through_a_registered_down_migration() {
    // This version 1 reads its schema-1 state (and refuses any other).
    let sb = counter_upgraded_to_schema_2(fixtures::COUNTER_SCHEMA_1).await;
    // Schema 2 `{"value", "calls"}` back to schema 1 `{"total"}`.
    let migration: sandbox_core::isolate::Migration = Arc::new(|bytes, from, to| {
        if (from, to) != (2, 1) {
            return Err(format!("no migration from {from} to {to}"));
        }
        let live: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(json!({ "total": live["value"] }).to_string().into_bytes())
    });
    sb.manager
        .register_migration(sb.id.as_str(), "counter", migration)
        .unwrap();
    let swapped = sb
        .manager
        .rollback(sb.id.as_str(), "counter", 1)
        .await
        .unwrap();
    assert_eq!((swapped.from, swapped.to), (Some(2), 1));
    assert_eq!(sb.info().unwrap().modules[0].version, 1);
    // The total came down through the migration.
    assert_eq!(
        sb.call("counter", json!({"add": 1})).await.unwrap()["value"],
        8
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_restore_state_refuses_a_schema_it_does_not_know() {
    let sb = counter_upgraded_to_schema_2(COUNTER_SCHEMA_1_DEFAULT_RESTORE).await;
    // Schema 3, but restore_state left to the trait's default: it cannot
    // read schema-2 state, so the reload is rolled back.
    let v3 = COUNTER_SCHEMA_1_DEFAULT_RESTORE.replace("SCHEMA: u32 = 1", "SCHEMA: u32 = 3");
    sb.write("src/lib.rs", &v3).unwrap();
    let err = sb.manager.hot_reload(sb.id.as_str()).await.unwrap_err();
    assert_eq!(err.kind(), "swap", "{err}");
    assert!(err.to_string().contains("does not know"), "{err}");
    assert_eq!(sb.info().unwrap().modules[0].version, 2);
    assert_eq!(
        sb.call("counter", json!({"add": 1})).await.unwrap()["value"],
        8
    );
}
