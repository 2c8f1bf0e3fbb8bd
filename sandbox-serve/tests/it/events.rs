//! `GET /v1/events`: the run protocol's event objects, in order, filtered
//! by sandbox.

use std::time::Duration;

use sandbox_serve::client::Events;
use serde_json::{json, Value};

use crate::{add, config, example, start, trusted, BUILD};

/// Reads events until one matches `pred` (within `deadline`); returns all
/// read, the match last. Panics with what it saw when the deadline passes.
async fn read_until(
    events: &mut Events,
    deadline: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let next = tokio::time::timeout_at(end, events.next()).await;
        match next {
            Ok(Ok(Some(v))) => {
                let done = pred(&v);
                seen.push(v);
                if done {
                    return seen;
                }
            }
            other => panic!("no matching event within {deadline:?} ({other:?}); saw {seen:#?}"),
        }
    }
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_in_order_per_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let src = example("counter", tmp.path());
    let r = start(config(&tmp.path().join("data"), tmp.path())).await;
    let c = &r.client;

    let a = c.get("/v1/events?sandbox=bad%20id").await.unwrap();
    assert_eq!(a.status, 400, "{}", a.text());
    let a = c.get("/v1/events?other=1").await.unwrap();
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(
        c.with_token(None).events("/v1/events").await.is_err(),
        "401 without a token"
    );

    let mut mine = c.events("/v1/events?sandbox=e1").await.unwrap();
    let mut all = c.events("/v1/events").await.unwrap();
    let a = tokio::time::timeout(BUILD, c.post_json("/v1/sandboxes", &trusted("e2", &src)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
    let a = c
        .post_json("/v1/sandboxes", &trusted("e1", &src))
        .await
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text());

    let running = |v: &Value| v["event"] == "status" && v["to"] == "running";
    let seen = read_until(&mut mine, BUILD, running).await;
    let order = names(&seen);
    let at = |name: &str| {
        order
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no {name} event in {order:?}"))
    };
    assert_eq!(at("created"), 0, "{order:?}");
    assert!(at("compile_started") < at("compile_finished"), "{order:?}");
    assert!(at("compile_finished") < at("swapped"), "{order:?}");
    assert_eq!(order.last().map(String::as_str), Some("status"));
    for e in &seen {
        assert_eq!(e["type"], "event", "{e}");
        assert_eq!(e["sandbox"], "e1", "only e1's events: {e}");
        assert!(e["at"].as_u64().is_some(), "{e}");
    }
    // The unfiltered stream has both, e2's creation first.
    let seen = read_until(&mut all, BUILD, |v| running(v) && v["sandbox"] == "e1").await;
    let e2_running = seen
        .iter()
        .position(|v| running(v) && v["sandbox"] == "e2")
        .expect("e2's events too");
    let e1_created = seen
        .iter()
        .position(|v| v["event"] == "created" && v["sandbox"] == "e1")
        .expect("e1 created");
    assert!(e2_running < e1_created, "{:?}", names(&seen));

    // A restart's events arrive in order after what came before.
    add(c, "e1", 1).await;
    let a = c
        .send("POST", "/v1/sandboxes/e1/restart", None)
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let seen = read_until(&mut mine, Duration::from_secs(60), |v| {
        v["event"] == "restarted"
    })
    .await;
    assert_eq!(seen.last().unwrap()["restart_count"], json!(1));

    let report = r.service.shutdown().await;
    assert!(
        report.drained,
        "the event streams end on shutdown: {report:?}"
    );
    assert!(
        matches!(mine.next().await, Ok(None) | Err(_)),
        "the stream ended"
    );
}
