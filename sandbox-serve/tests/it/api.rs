//! The API: create, list, info, call, versions, rollback, reload, restart,
//! delete; bad bodies, unknown ids, 401, 413, 429, 409; /livez, /readyz,
//! /metrics.

use serde_json::json;

use crate::{add, config, example, start, trusted, BUILD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_api_answers_with_fitting_codes_and_error_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let src = example("counter", tmp.path());
    let mut config = config(&tmp.path().join("data"), tmp.path());
    config.max_body = 64 * 1024;
    let r = start(config).await;
    let c = &r.client;

    // Health, without a token.
    let anonymous = c.with_token(None);
    assert_eq!(anonymous.get("/livez").await.unwrap().status, 200);
    let ready = anonymous.get("/readyz").await.unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["ready"], true);

    // 401: no token, a wrong one, another scheme.
    let a = anonymous.get("/v1/sandboxes").await.unwrap();
    assert_eq!(a.status, 401, "{}", a.text());
    assert_eq!(a.json()["error"]["kind"], "unauthorized");
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    let wrong = c.with_token(Some("test-token-012345678".into()));
    assert_eq!(wrong.get("/v1/sandboxes").await.unwrap().status, 401);
    let basic = c.send("GET", "/v1/sandboxes", None).await.unwrap();
    assert_eq!(basic.status, 200, "{}", basic.text());

    // Create: 201 with the run protocol's info; 409 for a duplicate.
    let a = tokio::time::timeout(BUILD, c.post_json("/v1/sandboxes", &trusted("c1", &src)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
    let info = a.json();
    assert_eq!(info["id"], "c1");
    assert_eq!(info["status"], "running");
    assert_eq!(info["isolation"], "in-process");
    assert_eq!(info["profile"], "trusted");
    assert_eq!(info["modules"][0]["name"], "counter");
    for field in [
        "pid",
        "created_at",
        "updated_at",
        "restart_count",
        "build_jailed",
        "jail",
    ] {
        assert!(info.get(field).is_some(), "info lacks {field}: {info}");
    }
    let a = c
        .post_json("/v1/sandboxes", &trusted("c1", &src))
        .await
        .unwrap();
    assert_eq!(a.status, 409, "{}", a.text());
    let e = &a.json()["error"];
    for field in ["kind", "class", "recovery", "message"] {
        assert!(e[field].is_string(), "error lacks {field}: {e}");
    }

    // Bad create bodies: 400, never a crash.
    for body in [
        &b"{not json"[..],
        b"[]",
        br#"{"id":"x"}"#,
        br#"{"id":"bad id!","source":"/tmp"}"#,
        br#"{"id":"x","source":"/tmp","extra":1}"#,
        br#"{"id":"x","source":"/tmp","durability":"sometimes"}"#,
        br#"{"id":"x","source":"/tmp","profile":"paranoid"}"#,
        br#"{"id":"x","source":"/nonexistent/folder","profile":"trusted"}"#,
        b"\xff\xfe",
    ] {
        let a = c
            .send("POST", "/v1/sandboxes", Some(body.to_vec()))
            .await
            .unwrap();
        assert_eq!(
            a.status,
            400,
            "{}: {}",
            String::from_utf8_lossy(body),
            a.text()
        );
        assert_eq!(a.json()["error"]["kind"], "bad_request", "{}", a.text());
    }
    // In-process for untrusted source is refused (403), nothing is left.
    let a = c
        .post_json(
            "/v1/sandboxes",
            &json!({"id": "u", "source": src, "isolation": "in-process"}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{}", a.text());
    assert_eq!(a.json()["error"]["kind"], "security");
    // 413 past the body limit.
    let big = vec![b' '; 65 * 1024];
    let a = c
        .send("POST", "/v1/sandboxes/c1/modules/counter/call", Some(big))
        .await
        .unwrap();
    assert_eq!(a.status, 413, "{}", a.text());
    assert_eq!(a.json()["error"]["kind"], "bad_request");

    // Calls keep state; bad inputs are 400, unknown ids and modules 404,
    // a plugin's refusal 422.
    assert_eq!(add(c, "c1", 5).await["value"], 5);
    assert_eq!(add(c, "c1", 2).await["value"], 7);
    let call = "/v1/sandboxes/c1/modules/counter/call";
    let a = c.send("POST", call, Some(b"{oops".to_vec())).await.unwrap();
    assert_eq!(a.status, 400, "{}", a.text());
    let a = c.post_json(call, &json!({"add": "x"})).await.unwrap();
    assert_eq!(a.status, 422, "{}", a.text());
    assert_eq!(a.json()["error"]["kind"], "plugin");
    let a = c
        .post_json(
            "/v1/sandboxes/nope/modules/counter/call",
            &json!({"add": 1}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 404, "{}", a.text());
    assert_eq!(a.json()["error"]["kind"], "not_found");
    let a = c
        .post_json("/v1/sandboxes/c1/modules/nope/call", &json!({"add": 1}))
        .await
        .unwrap();
    assert_eq!(a.status, 404, "{}", a.text());
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("counter"));
    for path in ["/v1/sandboxes/nope", "/v1/nothing-here", "/nothing"] {
        let a = c.get(path).await.unwrap();
        assert_eq!(a.status, 404, "{path}: {}", a.text());
        assert_eq!(a.json()["error"]["kind"], "not_found", "{path}");
    }
    assert_eq!(c.delete("/v1/sandboxes/nope").await.unwrap().status, 404);

    // List and info.
    let a = c.get("/v1/sandboxes").await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.json()[0]["id"], "c1");
    let a = c.get("/v1/sandboxes/c1").await.unwrap();
    assert_eq!(a.json()["modules"][0]["version"], 1);

    // Versions, rollback, reload, restart.
    let a = c
        .get("/v1/sandboxes/c1/modules/counter/versions")
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()[0]["number"], 1);
    assert_eq!(a.json()[0]["current"], true);
    let rollback = "/v1/sandboxes/c1/modules/counter/rollback";
    let a = c.post_json(rollback, &json!({"version": 9})).await.unwrap();
    assert_eq!(a.status, 404, "{}", a.text());
    let a = c.post_json(rollback, &json!({"to": 1})).await.unwrap();
    assert_eq!(a.status, 400, "{}", a.text());
    let a = c
        .post_json("/v1/sandboxes/c1/reload", &json!(null))
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["swapped"], json!([]));
    assert!(a.json()["message"].is_string());
    let a = c
        .send("POST", "/v1/sandboxes/c1/restart", None)
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["restart_count"], 1);
    assert_eq!(
        add(c, "c1", 1).await["value"],
        8,
        "a restart keeps the state"
    );

    // Metrics: Prometheus text with what happened.
    let m = anonymous.get("/metrics").await.unwrap();
    assert_eq!(m.status, 200);
    let text = m.text();
    for needle in [
        "# TYPE sandbox_calls_total counter",
        "sandbox_call_duration_seconds_bucket",
        "sandbox_errors_total{kind=\"unauthorized\"}",
        "sandbox_errors_total{kind=\"plugin\"}",
        "sandbox_restarts_total",
        "sandbox_result_cache_hits_total",
        "sandbox_memory_bytes{sandbox=\"c1\"}",
        "sandbox_cpu_percent{sandbox=\"c1\"}",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }

    // Delete: gone, and its id is free again.
    let a = c.delete("/v1/sandboxes/c1").await.unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(c.get("/v1/sandboxes/c1").await.unwrap().status, 404);
    assert_eq!(c.get("/v1/sandboxes").await.unwrap().json(), json!([]));

    let report = r.service.shutdown().await;
    assert!(report.drained && report.stopped, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_refusing_trusted_source_answers_403_before_building() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(&tmp.path().join("data"), tmp.path());
    config.allow_trusted = false;
    let r = start(config).await;
    let src = sandbox_testkit::example_dir("counter");
    let a = r
        .client
        .post_json("/v1/sandboxes", &trusted("t", &src))
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{}", a.text());
    assert_eq!(a.json()["error"]["kind"], "security");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--allow-trusted"));
    assert_eq!(
        r.client.get("/v1/sandboxes").await.unwrap().json(),
        json!([])
    );
    r.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(&tmp.path().join("data"), tmp.path());
    config.tokens.push("second-token".into());
    config.rate_limit = sandbox_serve::RateLimit {
        per_second: std::num::NonZeroU32::new(1).unwrap(),
        burst: std::num::NonZeroU32::new(3).unwrap(),
    };
    let r = start(config).await;
    let c = &r.client;
    let mut limited = None;
    for _ in 0..10 {
        let a = c.get("/v1/sandboxes").await.unwrap();
        if a.status == 429 {
            limited = Some(a);
            break;
        }
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let a = limited.expect("a burst of 3 at 1/s is exhausted within 10 requests");
    assert_eq!(a.json()["error"]["kind"], "rate_limited", "{}", a.text());
    let retry: u64 = a
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Another token has its own budget; health checks have none.
    let other = c.with_token(Some("second-token".into()));
    assert_eq!(other.get("/v1/sandboxes").await.unwrap().status, 200);
    assert_eq!(c.get("/livez").await.unwrap().status, 200);
    r.service.shutdown().await;
}
