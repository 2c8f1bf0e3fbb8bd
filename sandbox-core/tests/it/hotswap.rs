//! Hot swap: state kept, migrations, all-or-nothing batches, reload order,
//! identical rebuilds, history bound, rollback, and a stress test.

use std::sync::Arc;

use sandbox_core::{Config, EventKind, Manager, SandboxSpec};
use sandbox_testkit::{assert_module_version, fixtures, test_config, TestSandbox};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_swaps_the_module_and_keeps_its_state() {
    let mut sb = TestSandbox::example("counter").await.unwrap();
    let id = sb.id.clone();
    sb.call("counter", json!({"add": 5})).await.unwrap();
    let lib = sb.read("src/lib.rs").unwrap();
    sb.write(
        "src/lib.rs",
        &lib.replacen("checked_add(add)", "checked_add(add * 10)", 1),
    )
    .unwrap();
    let report = sb.manager.hot_reload(id.as_str()).await.unwrap();
    assert_eq!(report.changed, ["counter"]);
    assert_eq!(report.swapped.len(), 1);
    assert_eq!((report.swapped[0].from, report.swapped[0].to), (Some(1), 2));
    sb.await_event("swapped 1 -> 2", crate::BUILD, |k| {
        matches!(
            k,
            EventKind::Swapped {
                from: Some(1),
                to: 2,
                ..
            }
        )
    })
    .await
    .unwrap();
    // 5 survived the swap; the new code adds ten times.
    assert_eq!(
        sb.call("counter", json!({"add": 1})).await.unwrap()["value"],
        15
    );
    assert_module_version(&sb.manager, id.as_str(), "counter", 2).unwrap();
    let versions = sb.manager.versions(id.as_str(), "counter").unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.number, v.current))
            .collect::<Vec<_>>(),
        [(1, false), (2, true)]
    );
    assert_ne!(versions[0].checksum, versions[1].checksum);
}

/// A sandbox running a counter at state schema 1.
async fn schema_1_counter() -> TestSandbox {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v1");
    fixtures::write_plugin(&src, "counter", fixtures::COUNTER_SCHEMA_1).unwrap();
    TestSandbox::from_dir(&src, SandboxSpec::trusted(""))
        .await
        .unwrap()
}

/// Puts the example counter's source (state schema 2) in place of `sb`'s.
fn install_example_counter(sb: &TestSandbox) {
    let example =
        std::fs::read_to_string(sandbox_testkit::example_dir("counter").join("src/lib.rs"))
            .unwrap();
    sb.write("src/lib.rs", &example).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_migrates_state_from_the_old_schema() {
    let sb = schema_1_counter().await;
    assert_eq!(sb.info().unwrap().modules[0].schema, 1);
    sb.call("counter", json!({"add": 4})).await.unwrap();
    // The example counter is schema 2 and migrates `{"total"}` to `{"value", "calls"}`.
    install_example_counter(&sb);
    let report = sb.manager.hot_reload(sb.id.as_str()).await.unwrap();
    assert_eq!(report.swapped.len(), 1);
    assert_eq!(sb.info().unwrap().modules[0].schema, 2);
    assert_eq!(
        sb.call("counter", json!({"add": 1})).await.unwrap(),
        json!({"value": 5, "calls": 1})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_registered_migration_is_used_when_given() {
    let sb = schema_1_counter().await;
    sb.call("counter", json!({"add": 4})).await.unwrap();
    sb.manager
        .register_migration(
            sb.id.as_str(),
            "counter",
            Arc::new(|bytes, from, to| {
                if (from, to) != (1, 2) {
                    return Err(format!("unexpected migration {from} -> {to}"));
                }
                let old: serde_json::Value =
                    serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
                Ok(
                    json!({"value": old["total"].as_i64().unwrap_or(0) * 100, "calls": 7})
                        .to_string()
                        .into_bytes(),
                )
            }),
        )
        .unwrap();
    install_example_counter(&sb);
    sb.manager.hot_reload(sb.id.as_str()).await.unwrap();
    assert_eq!(
        sb.call("counter", json!({"add": 1})).await.unwrap(),
        json!({"value": 401, "calls": 8})
    );
}

/// A workspace of two probes, `a` and `b` (b depends on a), with state 10 and 20.
async fn two_modules() -> TestSandbox {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ws");
    fixtures::write_workspace(
        &src,
        &[
            ("a", &fixtures::probe_plugin("a", &[], false, false)),
            ("b", &fixtures::probe_plugin("b", &["a"], false, false)),
        ],
    )
    .unwrap();
    let sb = TestSandbox::from_dir(&src, SandboxSpec::trusted(""))
        .await
        .unwrap();
    sb.call("a", json!({"op": "add", "n": 10})).await.unwrap();
    sb.call("b", json!({"op": "add", "n": 20})).await.unwrap();
    sb
}

async fn assert_unchanged_after_failure(sb: &mut TestSandbox) {
    sb.await_event("rolled_back", crate::BUILD, |k| {
        matches!(k, EventKind::RolledBack { .. })
    })
    .await
    .unwrap();
    assert_module_version(&sb.manager, sb.id.as_str(), "a", 1).unwrap();
    assert_module_version(&sb.manager, sb.id.as_str(), "b", 1).unwrap();
    assert_eq!(
        sb.call("a", json!({"op": "add", "n": 1})).await.unwrap()["value"],
        11
    );
    assert_eq!(
        sb.call("b", json!({"op": "add", "n": 1})).await.unwrap()["value"],
        21
    );
    assert_eq!(
        sb.manager.versions(sb.id.as_str(), "a").unwrap().len(),
        1,
        "the failed version is not kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_migration_rolls_the_whole_batch_back() {
    let mut sb = two_modules().await;
    // a changes fine; b's new version refuses the state: both stay on 1.
    sb.write(
        "a/src/lib.rs",
        &fixtures::probe_plugin("a", &[], false, false).replace("on purpose", "on purpose!"),
    )
    .unwrap();
    sb.write(
        "b/src/lib.rs",
        &fixtures::probe_plugin("b", &["a"], false, true),
    )
    .unwrap();
    let err = sb.manager.hot_reload(sb.id.as_str()).await.unwrap_err();
    assert_eq!(err.kind(), "swap", "{err}");
    assert!(err.to_string().contains("restore_state"), "{err}");
    assert!(
        err.to_string().contains("restore fails on purpose"),
        "{err}"
    );
    assert_unchanged_after_failure(&mut sb).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_the_new_init_rolls_back() {
    let mut sb = two_modules().await;
    sb.write(
        "a/src/lib.rs",
        &fixtures::probe_plugin("a", &[], true, false),
    )
    .unwrap();
    let err = sb.manager.hot_reload(sb.id.as_str()).await.unwrap_err();
    assert!(err.to_string().contains("init"), "{err}");
    assert!(err.to_string().contains("panics on purpose"), "{err}");
    assert_unchanged_after_failure(&mut sb).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_dependency_cycle_is_refused_and_the_old_code_keeps_serving() {
    let mut sb = two_modules().await;
    sb.write(
        "a/src/lib.rs",
        &fixtures::probe_plugin("a", &["b"], false, false),
    )
    .unwrap();
    let err = sb.manager.hot_reload(sb.id.as_str()).await.unwrap_err();
    assert_eq!(err.kind(), "dependency", "{err}");
    assert!(err.to_string().contains("a -> b -> a"), "{err}");
    assert_module_version(&sb.manager, sb.id.as_str(), "a", 1).unwrap();
    assert_eq!(
        sb.call(
            "b",
            json!({"op": "call", "module": "a", "input": {"op": "add", "n": 1}})
        )
        .await
        .unwrap()["value"],
        11
    );
    let _ = sb.events.try_recv();
}

fn swap_order(report: &sandbox_core::ReloadReport) -> Vec<(String, Option<u32>, u32)> {
    report
        .swapped
        .iter()
        .map(|s| (s.module.clone(), s.from, s.to))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_reloads_in_dependency_order() {
    let sb = TestSandbox::example("pipeline").await.unwrap();
    sb.call("score", json!({"text": "a b"})).await.unwrap();
    // The first module of the chain changes: all three swap, dependencies first.
    fixtures::bump_version(&sb.source().join("tokenize/Cargo.toml")).unwrap();
    let report = sb.manager.hot_reload(sb.id.as_str()).await.unwrap();
    assert_eq!(report.changed, ["tokenize"]);
    assert_eq!(
        swap_order(&report),
        [
            ("tokenize".into(), Some(1), 2),
            ("score".into(), Some(1), 1),
            ("report".into(), Some(1), 1)
        ]
    );
    // score's state (texts scored) was carried through its re-instantiation.
    assert_eq!(
        sb.call("score", json!({"text": "a b"})).await.unwrap()["scored"],
        2
    );
    // The last module changes: only it swaps.
    fixtures::bump_version(&sb.source().join("report/Cargo.toml")).unwrap();
    let report = sb.manager.hot_reload(sb.id.as_str()).await.unwrap();
    assert_eq!(swap_order(&report), [("report".into(), Some(1), 2)]);
    assert_eq!(
        sb.call("report", json!({"text": "x y z"})).await.unwrap()["tokens"],
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_identical_rebuild_makes_no_new_version() {
    // A package name no other test builds, so no other tree's build of the
    // same name replaces ours in the shared target dir between reloads.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("idem");
    let counter =
        std::fs::read_to_string(sandbox_testkit::example_dir("counter").join("src/lib.rs"))
            .unwrap();
    fixtures::write_plugin(&src, "idem-counter", &counter).unwrap();
    let mut sb = TestSandbox::from_dir(&src, SandboxSpec::trusted(""))
        .await
        .unwrap();
    // Unchanged tree: answered from the cache, nothing swapped.
    let report = sb.manager.hot_reload(sb.id.as_str()).await.unwrap();
    assert!(report.is_unchanged() && report.cached);
    sb.await_event("unchanged", crate::BUILD, |k| *k == EventKind::Unchanged)
        .await
        .unwrap();
    // A changed tree that builds to the same artifact (a file cargo does not
    // compile): cargo runs, the checksum matches, no swap, no new version.
    // The first such build may differ from the cached one, which may have
    // been built from another copy of the tree (its paths are in the debug
    // info); the second one is built from the same place as the first.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    sb.write("NOTES.md", &format!("notes written at {stamp}\n"))
        .unwrap();
    sb.manager.hot_reload(sb.id.as_str()).await.unwrap();
    let before = sb
        .manager
        .versions(sb.id.as_str(), "counter")
        .unwrap()
        .len();
    sb.write("NOTES.md", &format!("notes rewritten at {stamp}\n"))
        .unwrap();
    let report = sb.manager.hot_reload(sb.id.as_str()).await.unwrap();
    assert!(!report.cached, "the edited tree was rebuilt");
    assert!(report.is_unchanged(), "{report:?}");
    assert_eq!(
        sb.manager
            .versions(sb.id.as_str(), "counter")
            .unwrap()
            .len(),
        before
    );
    // Editing the code and then reverting it: the reverted artifact is the
    // same checksum as version 1, so it is version 1 again, not a version 3.
    let lib = sb.read("src/lib.rs").unwrap();
    sb.write(
        "src/lib.rs",
        &lib.replacen("checked_add(add)", "checked_add(add * 3)", 1),
    )
    .unwrap();
    let current = sb.info().unwrap().modules[0].version;
    let edited = sb.manager.hot_reload(sb.id.as_str()).await.unwrap();
    assert_eq!(
        swap_order(&edited),
        [("counter".into(), Some(current), current + 1)]
    );
    sb.write("src/lib.rs", &lib).unwrap();
    let reverted = sb.manager.hot_reload(sb.id.as_str()).await.unwrap();
    assert_eq!(
        swap_order(&reverted),
        [("counter".into(), Some(current + 1), current)]
    );
    assert_eq!(
        sb.manager
            .versions(sb.id.as_str(), "counter")
            .unwrap()
            .len(),
        before + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_history_bound_holds_and_rollback_reaches_any_retained_version() {
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("counter");
    fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src).unwrap();
    let manager = Manager::new(Config {
        history: 3,
        ..test_config(scratch.path())
    })
    .unwrap();
    manager
        .create("h", SandboxSpec::trusted(&src))
        .await
        .unwrap();
    manager
        .call_json("h", "counter", &json!({"add": 3}))
        .await
        .unwrap();
    for _ in 0..4 {
        fixtures::bump_version(&src.join("Cargo.toml")).unwrap();
        manager.hot_reload("h").await.unwrap();
    }
    let versions = manager.versions("h", "counter").unwrap();
    let numbers: Vec<u32> = versions.iter().map(|v| v.number).collect();
    assert_eq!(numbers, [3, 4, 5], "bounded to 3, oldest evicted");
    assert!(versions.last().unwrap().current);
    let err = manager.rollback("h", "counter", 1).await.unwrap_err();
    assert_eq!(err.kind(), "version", "{err}");
    assert!(err.to_string().contains("retained: 3, 4, 5"), "{err}");
    let err = manager.rollback("h", "counter", 5).await.unwrap_err();
    assert!(err.to_string().contains("current"), "{err}");
    let back = manager.rollback("h", "counter", 3).await.unwrap();
    assert_eq!((back.from, back.to), (Some(5), 3));
    assert_eq!(
        manager
            .call_json("h", "counter", &json!({"add": 1}))
            .await
            .unwrap()["value"],
        4
    );
    assert_eq!(
        manager.info("h").unwrap().modules[0].module_version,
        "0.1.2"
    );
    // The runtime holds only the retained versions.
    manager.destroy("h").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stress_calls_never_fail_while_the_module_is_swapped_and_rolled_back() {
    let sb = TestSandbox::example("counter").await.unwrap();
    let id = sb.id.clone();
    fixtures::bump_version(&sb.source().join("Cargo.toml")).unwrap();
    sb.manager.hot_reload(id.as_str()).await.unwrap();
    // 8 callers make 20 000 calls while the module is swapped between its
    // two versions, again and again until they are done (at least 100 times).
    let (manager, caller_id) = (sb.manager.clone(), id.clone());
    let callers = tokio::spawn(sandbox_testkit::stress::run(8, 20_000, move |_| {
        let (m, id) = (manager.clone(), caller_id.clone());
        async move {
            m.call(id.as_str(), "counter", br#"{"add":1}"#)
                .await
                .map(|_| ())
        }
    }));
    let mut swaps = 0;
    while swaps < 100 || !callers.is_finished() {
        let target = if swaps % 2 == 0 { 1 } else { 2 };
        sb.manager
            .rollback(id.as_str(), "counter", target)
            .await
            .unwrap();
        swaps += 1;
    }
    let report = callers.await.unwrap();
    eprintln!("stress: {swaps} swaps during the calls");
    eprintln!(
        "stress: {} calls, {:.0}/s, p50 {:?}, p99 {:?}, max {:?}",
        report.calls, report.throughput, report.p50, report.p99, report.max
    );
    assert_eq!(
        report.failures, 0,
        "calls failed during swaps: {:?}",
        report.errors
    );
    assert_eq!(report.calls, 20_000);
    let total = sb.call("counter", json!({"add": 0})).await.unwrap()["value"]
        .as_u64()
        .unwrap();
    assert_eq!(
        total, 20_000,
        "every call counted exactly once across {swaps} swaps"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_health_check_rolls_back_and_a_passing_one_lets_the_swap_through() {
    let mut sb = two_modules().await;
    let id = sb.id.clone();
    sb.manager
        .register_health_check(id.as_str(), "a", br#"{"op":"fail"}"#.to_vec())
        .unwrap();
    sb.write(
        "a/src/lib.rs",
        &fixtures::probe_plugin("a", &[], false, false).replace("on purpose", "on purpose, v2"),
    )
    .unwrap();
    let err = sb.manager.hot_reload(id.as_str()).await.unwrap_err();
    assert!(err.to_string().contains("health check"), "{err}");
    assert_unchanged_after_failure(&mut sb).await;
    sb.manager
        .register_health_check(id.as_str(), "a", br#"{"op":"echo"}"#.to_vec())
        .unwrap();
    let report = sb.manager.hot_reload(id.as_str()).await.unwrap();
    assert_eq!(report.changed, ["a"]);
    assert_eq!(
        sb.call("a", json!({"op": "add", "n": 1})).await.unwrap()["value"],
        12
    );
}
