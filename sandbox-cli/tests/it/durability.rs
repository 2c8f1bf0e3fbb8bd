//! `sandbox run --durability call`: a worker killed with `kill -9` while
//! pipelined calls run loses none of the calls that were answered.

use serde_json::{json, Value};

use crate::host::{example, Host, BUILD};

/// Sends `n` pipelined `{"add": 1}` calls with ids `first..first + n`.
fn send_adds(h: &mut Host, first: u64, n: u64) {
    let mut text = String::new();
    for id in first..first + n {
        let call = json!({"op": "call", "module": "counter", "input": {"add": 1}, "id": id});
        text.push_str(&call.to_string());
        text.push('\n');
    }
    h.send_bytes(text.as_bytes());
}

/// Waits for the answer (reply or error) to each id of `first..first + n`;
/// returns how many were replies.
fn answered(h: &mut Host, first: u64, n: u64) -> u64 {
    (first..first + n)
        .filter(|&id| {
            let v: Value = h.wait_for(&format!("the answer to call {id}"), BUILD, |v| {
                v["id"] == json!(id) && (v["type"] == "reply" || v["type"] == "error")
            });
            v["type"] == "reply"
        })
        .count() as u64
}

#[test]
fn a_worker_killed_during_calls_loses_no_answered_call_under_every_call_durability() {
    let (_tmp, src) = example("counter");
    let mut h = Host::run(&src, &["--isolation", "process", "--durability", "call"]);
    let info = h.request(json!({"op": "info"}), BUILD);
    let pid = info["output"]["pid"].as_i64().expect("a pid") as i32;
    // Killed once the first of many pipelined calls is answered: the rest
    // are queued or in flight.
    send_adds(&mut h, 100_000, 2000);
    h.wait_for("the first answer", BUILD, |v| v["id"] == json!(100_000));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("a pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill -9 the worker");
    let mut acked = answered(&mut h, 100_000, 2000);
    assert!(
        (1..2000).contains(&acked),
        "the kill hit the calls ({acked} of 2000 answered)"
    );
    let crashed = h.wait_for("a crashed event", BUILD, |v| v["event"] == "crashed");
    assert_eq!(crashed["signal"], 9, "{crashed}");
    h.wait_for("a restarted event", BUILD, |v| v["event"] == "restarted");
    send_adds(&mut h, 200_000, 500);
    acked += answered(&mut h, 200_000, 500);
    let r = h.call(0);
    assert_eq!(
        r["output"]["value"],
        json!(acked),
        "the total is the number of answered calls: {r}"
    );
    assert_eq!(h.quit(), 0);
}
