//! Calls: batches, the pure-result cache, timeouts.

use std::time::Duration;

use sandbox_core::{CallRequest, SandboxSpec};
use sandbox_testkit::{fixtures, TestSandbox};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_runs_calls_concurrently_and_one_failure_does_not_affect_the_others() {
    let sb = TestSandbox::example("counter").await.unwrap();
    let mut calls: Vec<CallRequest> = (0..20)
        .map(|_| CallRequest {
            module: "counter".into(),
            input: br#"{"add":1}"#.to_vec(),
        })
        .collect();
    calls.insert(
        5,
        CallRequest {
            module: "counter".into(),
            input: b"oops".to_vec(),
        },
    );
    calls.insert(
        9,
        CallRequest {
            module: "missing".into(),
            input: b"{}".to_vec(),
        },
    );
    let results = sb.manager.call_batch(sb.id.as_str(), calls).await.unwrap();
    assert_eq!(results.len(), 22);
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 2);
    assert!(results[5].is_err() && results[9].is_err());
    assert_eq!(
        sb.call("counter", json!({"add": 0})).await.unwrap()["value"],
        20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_of_a_pure_module_are_cached() {
    let sb = TestSandbox::example("wordcount").await.unwrap();
    let info = sb.info().unwrap();
    assert!(info.modules[0].pure);
    let a = sb
        .call("wordcount", json!({"text": "one two three"}))
        .await
        .unwrap();
    assert_eq!(a, json!({"words": 3, "lines": 1, "chars": 13}));
    // A cached answer is identical; a different request is computed.
    assert_eq!(
        sb.call("wordcount", json!({"text": "one two three"}))
            .await
            .unwrap(),
        a
    );
    assert_eq!(
        sb.call("wordcount", json!({"text": "x"})).await.unwrap()["words"],
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_never_answers_for_a_stateful_module() {
    let sb = TestSandbox::example("counter").await.unwrap();
    assert_eq!(
        sb.call("counter", json!({"add": 1})).await.unwrap()["value"],
        1
    );
    assert_eq!(
        sb.call("counter", json!({"add": 1})).await.unwrap()["value"],
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_the_timeout_is_abandoned_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("slow");
    fixtures::write_plugin(
        &src,
        "slow",
        &fixtures::probe_plugin("slow", &[], false, false),
    )
    .unwrap();
    let limits = sandbox_core::monitor::ResourceLimits {
        call_timeout: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    let sb = TestSandbox::from_dir(&src, SandboxSpec::trusted("").limits(limits))
        .await
        .unwrap();
    let err = sb
        .manager
        .call(sb.id.as_str(), "slow", br#"{"op":"hang"}"#)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    assert_eq!(err.class(), sandbox_core::ErrorClass::Resource);
}
