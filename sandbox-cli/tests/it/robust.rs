//! `sandbox run` survives any byte stream, keeps its memory flat over many
//! requests, writes the events a request causes before its reply, and ends
//! on `quit` or end of input whatever a plugin is doing.
//!
//! Isolation does not matter to most of these: they run trusted source
//! (`--profile trusted`), which builds without the build jail.

use std::time::Duration;

use serde_json::{json, Value};

use crate::host::{example, hostile, Host, BUILD};

const QUICK: Duration = Duration::from_secs(60);

/// Far more than ending takes (the host's quit grace and shutdown deadline
/// are 10 s each): only a host that hangs reaches it.
const EXIT: Duration = Duration::from_secs(120);

fn message(line: &Value) -> &str {
    line["error"]["message"].as_str().unwrap_or_default()
}

#[test]
fn invalid_utf8_broken_and_over_long_lines_are_answered_and_the_host_goes_on() {
    let (_tmp, src) = example("counter");
    let mut h = Host::run(&src, &["--profile", "trusted"]);
    assert_eq!(h.call(5)["output"]["value"], 5);

    h.send_bytes(b"\xff\xfe\n");
    let e = h.wait_for("an error for a line of invalid UTF-8", QUICK, |v| {
        v["type"] == "error"
    });
    assert_eq!(e["error"]["kind"], "bad_request", "{e}");
    assert!(e["id"].is_null(), "{e}");
    assert!(message(&e).contains("not valid UTF-8"), "{e}");
    assert_eq!(
        h.call(1)["output"]["value"],
        6,
        "the host read on after invalid UTF-8"
    );

    // The id is echoed when it can be read, however broken the rest is.
    h.send_bytes(
        b"{\"op\":\"call\",\"id\":\"utf8\",\"module\":\"counter\",\"input\":{\"add\":1,\"note\":\"\xc3\x28\"}}\n",
    );
    let e = h.wait_for("the error for id utf8", QUICK, |v| v["id"] == "utf8");
    assert_eq!(e["error"]["kind"], "bad_request", "{e}");
    h.send_raw(r#"{"id": "cut", "op": "call", "module": "coun"#);
    let e = h.wait_for("the error for id cut", QUICK, |v| v["id"] == "cut");
    assert_eq!(e["error"]["kind"], "bad_request", "{e}");
    assert!(message(&e).contains("not JSON"), "{e}");

    // A line over the 1 MiB cap is refused whole (not run), and the next
    // line is read as a line of its own.
    let pad = "x".repeat(3 << 20);
    h.send_raw(&format!(
        r#"{{"id":"long","op":"call","module":"counter","input":{{"add":100,"pad":"{pad}"}}}}"#
    ));
    let e = h.wait_for("the error for the over-long line", QUICK, |v| {
        v["id"] == "long"
    });
    assert_eq!(e["error"]["kind"], "bad_request", "{e}");
    assert!(
        message(&e).contains("over the limit of 1048576 bytes"),
        "{e}"
    );
    assert_eq!(
        h.call(1)["output"]["value"],
        7,
        "neither the broken lines nor the over-long one ran"
    );
    // Just under the cap is a request like any other.
    let pad = "y".repeat((1 << 20) - 200);
    let r = h.request(
        json!({"op": "call", "module": "counter", "input": {"add": 1, "pad": pad}}),
        QUICK,
    );
    assert_eq!(r["output"]["value"], 8, "{}", &r.to_string()[..200]);
    assert_eq!(h.quit(), 0);
}

#[test]
fn end_of_input_lets_pending_requests_finish_then_says_bye_and_exits_0() {
    let (_tmp, src) = example("counter");
    let mut h = Host::run(&src, &["--profile", "trusted"]);
    // Sent at once, while the sandbox is still being created: it waits for it.
    h.send_raw(r#"{"op":"call","module":"counter","input":{"add":5},"id":"early"}"#);
    assert_eq!(h.close_within(BUILD), 0);
    let at = |pred: &dyn Fn(&Value) -> bool| h.seen.iter().position(pred);
    let early = at(&|v| v["id"] == "early").expect("a reply to the request sent first");
    assert_eq!(h.seen[early]["output"]["value"], 5, "{}", h.seen[early]);
    let bye = at(&|v| v["type"] == "reply" && v["output"] == "bye")
        .unwrap_or_else(|| panic!("no bye at the end of input: {:?}", h.seen));
    assert!(h.seen[bye]["id"].is_null());
    let destroyed = at(&|v| v["event"] == "destroyed").expect("a destroyed event");
    assert!(
        early < bye && bye < destroyed,
        "the reply, then bye, then the sandbox goes: {:?}",
        h.seen
    );
}

/// VmRSS of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

#[test]
fn host_memory_stays_flat_over_100k_pipelined_calls() {
    let (_tmp, src) = example("counter");
    let mut h = Host::run(&src, &["--profile", "trusted", "--isolation", "process"]);
    assert_eq!(h.call(0)["output"]["value"], 0);
    let chunk = vec![json!({"op": "call", "module": "counter", "input": {"add": 1}}); 1000];
    for _ in 0..10 {
        h.pipeline(&chunk, QUICK);
    }
    let before = rss(h.pid());
    for _ in 0..100 {
        h.pipeline(&chunk, QUICK);
    }
    let after = rss(h.pid());
    assert_eq!(h.call(0)["output"]["value"], 110_000, "every call counted");
    let grown = after.saturating_sub(before);
    assert!(
        grown < 8 << 20,
        "`sandbox run` grew by {} KiB over 100k calls ({} -> {} KiB)",
        grown >> 10,
        before >> 10,
        after >> 10
    );
    assert_eq!(h.quit(), 0);
}

/// A module whose `init` never returns.
const STUCK_INIT: &str = r#"
use sandbox_plugin::{export_plugin, Host, Plugin, Result};

const STUCK: bool = true;

#[derive(Default)]
pub struct Stuck;

impl Plugin for Stuck {
    const NAME: &'static str = "stuck";

    fn init(&mut self, _host: &Host<'_>) -> Result<()> {
        while STUCK {
            std::thread::park();
        }
        Ok(())
    }

    fn handle(&mut self, _host: &Host<'_>, _request: &[u8]) -> Result<Vec<u8>> {
        Ok(b"{}".to_vec())
    }
}

export_plugin!(Stuck);
"#;

/// Quit while the sandbox's creation is stuck in a module's `init`: the
/// request that waited for it is answered, `bye` follows, the host exits.
fn quit_ends_the_host_while_init_never_returns(args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let src =
        sandbox_testkit::fixtures::write_plugin(&dir.path().join("stuck"), "stuck", STUCK_INIT)
            .unwrap();
    let mut h = Host::run(&src, args);
    let built = h.wait_for("the build", BUILD, |v| v["event"] == "compile_finished");
    assert_eq!(built["ok"], true, "{built}");
    h.send_raw(r#"{"op":"call","module":"stuck","input":{},"id":"waiting"}"#);
    h.send_raw(r#"{"op":"quit","id":"quit"}"#);
    let code = h.close_within(EXIT);
    let waiting = h
        .seen
        .iter()
        .position(|v| v["id"] == "waiting")
        .unwrap_or_else(|| panic!("the waiting call got no answer: {:?}", h.seen));
    let e = &h.seen[waiting];
    assert_eq!(e["error"]["kind"], "not_running", "{e}");
    let bye = h
        .seen
        .iter()
        .position(|v| v["id"] == "quit")
        .unwrap_or_else(|| panic!("quit got no answer: {:?}", h.seen));
    assert_eq!(h.seen[bye]["output"], "bye", "{}", h.seen[bye]);
    assert!(waiting < bye, "{:?}", h.seen);
    // 0: quit gave up on the creation; 2: the creation failed first (an
    // init deadline of the sandbox) and the host said so.
    assert!(code == 0 || code == 2, "exit code {code}: {:?}", h.seen);
}

#[test]
fn quit_ends_the_host_while_an_in_process_init_never_returns() {
    quit_ends_the_host_while_init_never_returns(&["--profile", "trusted"]);
}

#[test]
fn quit_ends_the_host_while_a_worker_s_init_never_returns() {
    quit_ends_the_host_while_init_never_returns(&[
        "--profile",
        "trusted",
        "--isolation",
        "process",
    ]);
}

#[test]
fn quit_ends_the_host_while_a_reload_s_init_never_returns() {
    let dir = tempfile::tempdir().unwrap();
    let fine = STUCK_INIT.replace("STUCK: bool = true", "STUCK: bool = false");
    let src =
        sandbox_testkit::fixtures::write_plugin(&dir.path().join("stuck"), "stuck", &fine).unwrap();
    let mut h = Host::run(&src, &["--profile", "trusted"]);
    let r = h.request(json!({"op": "call", "module": "stuck", "input": {}}), BUILD);
    assert_eq!(r["type"], "reply", "{r}");
    std::fs::write(src.join("src/lib.rs"), STUCK_INIT).unwrap();
    h.send_raw(r#"{"op":"reload","id":"reload"}"#);
    // Right away: the reload's build still gets its time, its init does not.
    h.send_raw(r#"{"op":"quit","id":"quit"}"#);
    assert_eq!(h.close_within(BUILD), 0);
    let reload = h
        .seen
        .iter()
        .position(|v| v["id"] == "reload")
        .unwrap_or_else(|| panic!("the reload got no answer: {:?}", h.seen));
    let e = &h.seen[reload];
    assert_eq!(e["type"], "error", "{e}");
    assert!(
        message(e).contains("abandoned") || e["error"]["kind"] == "timeout",
        "{e}"
    );
    let bye = h.seen.iter().position(|v| v["id"] == "quit");
    assert!(
        bye.is_some_and(|bye| reload < bye && h.seen[bye]["output"] == "bye"),
        "{:?}",
        h.seen
    );
}

#[test]
fn the_crashed_event_comes_before_the_error_reply_of_the_call_that_crashed() {
    let (_dir, src) = hostile();
    let mut h = Host::run(
        &src,
        &[
            "--isolation",
            "process",
            "--profile",
            "trusted",
            "--max-restarts",
            "10",
        ],
    );
    let abort = json!({"op": "call", "module": "hostile", "input": {"attack": "abort"}});
    for round in 1..=3u32 {
        let before = h.seen.len();
        let e = h.request(abort.clone(), BUILD);
        assert_eq!(e["error"]["kind"], "crashed", "{e}");
        let reply_at = h.seen.len() - 1;
        let crashed_at = h.seen[before..]
            .iter()
            .position(|v| v["event"] == "crashed")
            .map(|at| before + at);
        assert!(
            crashed_at.is_some_and(|at| at < reply_at),
            "round {round}: no crashed event before the reply: {:?}",
            &h.seen[before..]
        );
        h.wait_for("the restart", BUILD, |v| {
            v["event"] == "restarted" && v["restart_count"] == round
        });
    }
    assert_eq!(h.quit(), 0);
}
