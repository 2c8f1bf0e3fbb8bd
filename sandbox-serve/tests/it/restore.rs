//! What the data dir keeps: sandboxes and their state across a restart of
//! the service, a spec that cannot be restored, a store that cannot be read.

use serde_json::json;

use crate::{add, config, example, start, trusted, BUILD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sandboxes_come_back_with_their_state_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let src = example("counter", tmp.path());
    let gone = example("counter", &tmp.path().join("gone"));
    let data = tmp.path().join("data");
    let r = start(config(&data, tmp.path())).await;
    let c = &r.client;
    // Saved only by the shutdown checkpoint / after each call / every 2 s.
    let durabilities = ["interval=3600000", "call", "interval"];
    for (i, durability) in durabilities.iter().enumerate() {
        let mut body = trusted(&format!("s{i}"), &src);
        body["durability"] = json!(durability);
        let a = tokio::time::timeout(BUILD, c.post_json("/v1/sandboxes", &body))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.status, 201, "{}", a.text());
        for _ in 0..=i {
            add(c, &format!("s{i}"), 10).await;
        }
    }
    let a = c
        .post_json("/v1/sandboxes", &trusted("gone", &gone))
        .await
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
    let report = r.service.shutdown().await;
    assert_eq!(report.checkpointed, 4, "{report:?}");
    std::fs::remove_dir_all(&gone).unwrap();

    let r = start(config(&data, tmp.path())).await;
    let c = &r.client;
    let ready = c.get("/readyz").await.unwrap().json();
    assert_eq!(ready["restored"], json!(["s0", "s1", "s2"]), "{ready}");
    assert_eq!(
        ready["failed"]["gone"]["kind"], "bad_request",
        "a sandbox whose source is gone is reported: {ready}"
    );
    for i in 0..3 {
        let id = format!("s{i}");
        let before = 10 * (i as i64 + 1);
        assert_eq!(
            add(c, &id, 1).await["value"],
            before + 1,
            "{id} kept its state"
        );
    }
    // The stored history has the version of each run: two loads of 1.
    let a = c
        .get("/v1/sandboxes/s1/modules/counter/history")
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let history = a.json();
    let numbers: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 1], "{history}");
    assert_ne!(history[0]["loaded_at"], history[1]["loaded_at"]);
    let a = c
        .get("/v1/sandboxes/s1/modules/nope/history")
        .await
        .unwrap();
    assert_eq!(a.status, 404, "{}", a.text());
    // Deleted sandboxes stay deleted.
    assert_eq!(c.delete("/v1/sandboxes/s0").await.unwrap().status, 200);
    r.service.shutdown().await;
    let r = start(config(&data, tmp.path())).await;
    let ids: Vec<String> = r
        .service
        .manager()
        .list()
        .iter()
        .map(|i| i.id.to_string())
        .collect();
    assert_eq!(ids, ["s1", "s2"]);
    r.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_store_is_reported_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join(sandbox_serve::store::FILE_NAME);
    let junk: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&file, &junk).unwrap();
    let e = sandbox_serve::Service::start(config(&data, tmp.path()))
        .await
        .expect_err("a store that is not one is refused");
    let message = e.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("nothing was written"), "{message}");
    assert_eq!(std::fs::read(&file).unwrap(), junk, "the file is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let r = start(config(&data, tmp.path())).await;
    let e = sandbox_serve::Service::start(config(&data, tmp.path()))
        .await
        .expect_err("a second service on one data dir is refused");
    assert!(e.to_string().contains("in use by another"), "{e}");
    // The first one is unharmed.
    assert_eq!(r.client.get("/v1/sandboxes").await.unwrap().status, 200);
    r.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_is_refused_off_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(&tmp.path().join("data"), tmp.path());
    config.tokens.clear();
    config.listen = "0.0.0.0:0".parse().unwrap();
    let e = sandbox_serve::Service::start(config)
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("SANDBOX_TOKEN"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_that_lost_entries_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = example("counter", tmp.path());
    let data = tmp.path().join("data");
    let r = start(config(&data, tmp.path())).await;
    let a = tokio::time::timeout(
        BUILD,
        r.client.post_json("/v1/sandboxes", &trusted("a", &src)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
    r.service.shutdown().await;
    // Cut the log to its first line: the head the store recorded is gone.
    let log = data.join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() > 1, "{text}");
    let first = format!("{}\n", text.lines().next().unwrap());
    std::fs::write(&log, first).unwrap();
    let e = sandbox_serve::Service::start(config(&data, tmp.path()))
        .await
        .expect_err("a truncated audit log is refused");
    assert!(e.to_string().contains("truncated or replaced"), "{e}");
    assert!(e.to_string().contains(&log.display().to_string()), "{e}");
}
