//! `sandbox run DIR --isolation process`: the same protocol with the modules
//! in a jailed worker process.

use serde_json::json;

use crate::host::{example, hostile, Host, BUILD};

fn worker_pid(h: &mut Host) -> i32 {
    let info = h.request(json!({"op": "info"}), BUILD);
    assert_eq!(info["output"]["isolation"], "process", "{info}");
    let pid = info["output"]["pid"].as_i64().expect("a pid") as i32;
    assert_ne!(
        pid as u32,
        h.pid(),
        "the modules run in a process of their own"
    );
    pid
}

#[test]
fn calls_swaps_and_rollbacks_work_in_a_worker_process() {
    let (_tmp, src) = example("counter");
    let mut h = Host::run(&src, &["--isolation", "process"]);
    assert_eq!(h.call(5)["output"]["value"], 5);
    worker_pid(&mut h);
    sandbox_testkit::fixtures::bump_version(&src.join("Cargo.toml")).unwrap();
    let r = h.request(json!({"op": "reload"}), BUILD);
    assert_eq!(
        r["output"]["swapped"],
        json!([{"module": "counter", "from": 1, "to": 2}]),
        "{r}"
    );
    assert_eq!(h.call(1)["output"]["value"], 6);
    let r = h.request(
        json!({"op": "rollback", "module": "counter", "version": 1}),
        BUILD,
    );
    assert_eq!(r["type"], "reply", "{r}");
    assert_eq!(h.call(1)["output"]["value"], 7);
    // A restart starts a fresh worker from the live state.
    let before = worker_pid(&mut h);
    let r = h.request(json!({"op": "restart"}), BUILD);
    assert_eq!(r["output"]["restart_count"], 1, "{r}");
    assert_ne!(worker_pid(&mut h), before, "restart replaced the worker");
    assert_eq!(h.call(1)["output"]["value"], 8);
    assert_eq!(h.quit(), 0);
    // The worker is gone with the host.
    assert!(!std::path::Path::new(&format!("/proc/{before}")).exists());
}

#[test]
fn a_killed_worker_is_reported_and_the_sandbox_comes_back_with_its_saved_state() {
    let (_tmp, src) = example("counter");
    let mut h = Host::run(&src, &["--isolation", "process"]);
    assert_eq!(h.call(5)["output"]["value"], 5);
    // Saved after each swap: the reload makes 5 the checkpoint.
    sandbox_testkit::fixtures::bump_version(&src.join("Cargo.toml")).unwrap();
    assert_eq!(h.request(json!({"op": "reload"}), BUILD)["type"], "reply");
    let pid = worker_pid(&mut h);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let crashed = h.wait_for("a crashed event", BUILD, |v| v["event"] == "crashed");
    assert_eq!(crashed["signal"], 9, "{crashed}");
    let restarted = h.wait_for("a restarted event", BUILD, |v| v["event"] == "restarted");
    assert_eq!(restarted["restart_count"], 1);
    assert_eq!(
        h.call(1)["output"]["value"],
        6,
        "restarted from the saved state"
    );
    let info = h.request(json!({"op": "info"}), BUILD);
    assert_eq!(info["output"]["restart_count"], 1);
    assert_eq!(info["output"]["status"], "running");
    assert_ne!(worker_pid(&mut h), pid);
    assert_eq!(h.quit(), 0);
}

#[test]
fn the_worker_is_recycled_after_enough_swaps_with_state_kept() {
    let (_tmp, src) = example("counter");
    let mut h = Host::run(
        &src,
        &[
            "--isolation",
            "process",
            "--recycle-after",
            "2",
            "--warm-pool",
            "1",
        ],
    );
    assert_eq!(h.call(5)["output"]["value"], 5);
    let first = worker_pid(&mut h);
    sandbox_testkit::fixtures::bump_version(&src.join("Cargo.toml")).unwrap();
    assert_eq!(h.request(json!({"op": "reload"}), BUILD)["type"], "reply");
    assert!(
        h.events("recycled").is_empty(),
        "one swap is below the threshold"
    );
    let r = h.request(
        json!({"op": "rollback", "module": "counter", "version": 1}),
        BUILD,
    );
    assert_eq!(r["type"], "reply", "{r}");
    let recycled = h.wait_for("a recycled event", BUILD, |v| v["event"] == "recycled");
    assert_eq!(recycled["swaps"], 2);
    assert_ne!(worker_pid(&mut h), first, "a new worker took over");
    assert_eq!(
        h.call(1)["output"]["value"],
        6,
        "state carried into the new worker"
    );
    // Retained versions are still one step away in the new worker.
    let r = h.request(
        json!({"op": "rollback", "module": "counter", "version": 2}),
        BUILD,
    );
    assert_eq!(r["type"], "reply", "{r}");
    assert_eq!(h.call(1)["output"]["value"], 7);
    assert_eq!(h.quit(), 0);
}

#[test]
fn a_module_that_keeps_crashing_leaves_the_sandbox_in_error() {
    let (_dir, src) = hostile();
    let mut h = Host::run(
        &src,
        &[
            "--isolation",
            "process",
            "--profile",
            "trusted",
            "--max-restarts",
            "1",
        ],
    );
    let abort = json!({"op": "call", "module": "hostile", "input": {"attack": "abort"}});
    let e = h.request(abort.clone(), BUILD);
    assert_eq!(e["type"], "error", "{e}");
    let crashed = h.wait_for("a crashed event", BUILD, |v| v["event"] == "crashed");
    assert_eq!(crashed["signal"], 6, "SIGABRT: {crashed}");
    h.wait_for("a restart", BUILD, |v| v["event"] == "restarted");
    // The second crash within the window is over the budget of 1.
    h.request(abort, BUILD);
    let failed = h.wait_for("restart refused", BUILD, |v| {
        v["event"] == "failed" && v["operation"] == "restart"
    });
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("crashed 2 times"),
        "{failed}"
    );
    let info = h.request(json!({"op": "info"}), BUILD);
    assert_eq!(info["output"]["status"], "error");
    let e = h.request(
        json!({"op": "call", "module": "hostile", "input": {"attack": "none"}}),
        BUILD,
    );
    assert_eq!(e["error"]["kind"], "not_running", "{e}");
    // A restart by hand brings it back.
    let r = h.request(json!({"op": "restart"}), BUILD);
    assert_eq!(r["output"]["status"], "running", "{r}");
    assert_eq!(h.quit(), 0);
}
