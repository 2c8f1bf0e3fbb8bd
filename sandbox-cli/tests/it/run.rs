//! `sandbox run DIR`: the JSON-lines protocol.

use std::time::Duration;

use serde_json::json;

use crate::host::{example, sandbox, Host, BUILD};

const QUICK: Duration = Duration::from_secs(60);

#[test]
fn calls_keep_state_info_and_bad_input_keep_the_host_going() {
    let (_tmp, src) = example("counter");
    // Declared trusted: in-process, so the host's own pid serves the calls.
    let mut h = Host::run(&src, &["--profile", "trusted"]);
    let r = h.call(5);
    assert_eq!(r["type"], "reply", "{r}");
    assert_eq!(r["output"]["value"], 5);
    assert_eq!(h.call(2)["output"]["value"], 7);

    let info = h.request(json!({"op": "info"}), QUICK);
    let out = &info["output"];
    assert_eq!(out["status"], "running");
    assert_eq!(out["isolation"], "in-process");
    assert_eq!(out["pid"], json!(h_pid(&h)));
    assert_eq!(out["modules"][0]["name"], "counter");
    assert_eq!(out["modules"][0]["version"], 1);
    assert!(out["usage"]["threads"].as_u64().unwrap_or(0) >= 1, "{out}");
    assert!(
        out["jail"].is_null(),
        "nothing is enforced in-process: {out}"
    );

    h.send_raw("{not json");
    let e = h.wait_for("an error for malformed JSON", QUICK, |v| {
        v["type"] == "error" && v["id"].is_null()
    });
    assert_eq!(e["error"]["kind"], "bad_request");
    let e = h.request(json!({"op": "fly"}), QUICK);
    assert_eq!(e["error"]["kind"], "bad_request");
    let e = h.request(
        json!({"op": "call", "module": "nosuchmodule", "input": {}}),
        QUICK,
    );
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["kind"], "not_found");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("known modules: counter"),
        "{e}"
    );
    let e = h.request(
        json!({"op": "call", "module": "counter", "input": {"add": "x"}}),
        QUICK,
    );
    assert_eq!(e["error"]["kind"], "plugin");
    assert_eq!(
        h.call(1)["output"]["value"],
        8,
        "the host kept going after bad input"
    );
    assert_eq!(h.quit(), 0);
}

fn h_pid(h: &Host) -> u32 {
    // The in-process backend hosts modules in the `sandbox` process itself.
    h.pid()
}

#[test]
fn reload_swaps_with_state_lists_versions_and_rolls_back() {
    let (_tmp, src) = example("counter");
    let mut h = Host::run(&src, &[]);
    assert_eq!(h.call(5)["output"]["value"], 5);
    let r = h.request(json!({"op": "reload"}), BUILD);
    assert_eq!(
        r["output"]["swapped"],
        json!([]),
        "nothing changed yet: {r}"
    );
    assert!(r["output"]["message"]
        .as_str()
        .unwrap()
        .contains("nothing changed"));

    sandbox_testkit::fixtures::bump_version(&src.join("Cargo.toml")).unwrap();
    let before = h.seen.len();
    let r = h.request(json!({"op": "reload"}), BUILD);
    assert_eq!(r["type"], "reply", "{r}");
    assert_eq!(
        r["output"]["swapped"],
        json!([{"module": "counter", "from": 1, "to": 2}])
    );
    // The swapped event came before the reply.
    let reply_at = h.seen.iter().rposition(|v| v["type"] == "reply").unwrap();
    let swapped_at = h
        .seen
        .iter()
        .rposition(|v| v["event"] == "swapped")
        .unwrap();
    assert!(
        swapped_at > before && swapped_at < reply_at,
        "{:?}",
        &h.seen[before..]
    );
    assert_eq!(h.seen[swapped_at]["from"], 1);
    assert_eq!(h.seen[swapped_at]["to"], 2);
    assert_eq!(h.call(1)["output"]["value"], 6);

    let v = h.request(json!({"op": "versions", "module": "counter"}), QUICK);
    let versions = v["output"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions
        .iter()
        .all(|v| v["checksum"].as_str().is_some_and(|c| c.len() == 64)));
    assert_eq!(versions[1]["current"], true);

    let r = h.request(
        json!({"op": "rollback", "module": "counter", "version": 1}),
        QUICK,
    );
    assert_eq!(
        r["output"],
        json!({"module": "counter", "from": 2, "to": 1})
    );
    assert_eq!(h.call(1)["output"]["value"], 7);
    let e = h.request(
        json!({"op": "rollback", "module": "counter", "version": 99}),
        QUICK,
    );
    assert_eq!(e["error"]["kind"], "version");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retained: 1, 2"),
        "{e}"
    );
    let r = h.request(json!({"op": "restart"}), QUICK);
    assert_eq!(r["output"]["restart_count"], 1);
    assert_eq!(h.call(1)["output"]["value"], 8);
    assert_eq!(h.close(), 0, "end of input exits 0");
}

#[test]
fn a_broken_edit_is_a_compile_error_with_file_and_line_and_the_old_code_serves() {
    let (_tmp, src) = example("counter");
    let mut h = Host::run(&src, &[]);
    assert_eq!(h.call(3)["output"]["value"], 3);
    let lib = src.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    let line = text.lines().count() + 2;
    std::fs::write(&lib, format!("{text}\nfn broken( {{\n")).unwrap();
    let e = h.request(json!({"op": "reload"}), BUILD);
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["error"]["kind"], "compile");
    assert_eq!(e["error"]["class"], "compilation");
    assert_eq!(e["error"]["recovery"], "fix_source");
    let d = &e["error"]["diagnostics"][0];
    assert!(d["file"].as_str().unwrap().ends_with("src/lib.rs"), "{d}");
    assert!(d["line"].as_u64().unwrap() >= line as u64 - 1, "{d}");
    assert!(d["message"].as_str().is_some());
    assert_eq!(
        h.call(1)["output"]["value"],
        4,
        "the old version kept serving"
    );
    assert_eq!(h.quit(), 0);
}

#[test]
fn a_bad_directory_is_an_error_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = sandbox()
        .arg("run")
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let line = lines
        .iter()
        .find(|l| l["type"] == "error")
        .expect("an error line");
    assert_eq!(line["error"]["kind"], "bad_request");
    assert!(
        line["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{line}"
    );
}

#[test]
fn watch_swaps_on_save_with_state_kept() {
    let (_tmp, src) = example("counter");
    let mut h = Host::run(&src, &["--watch"]);
    assert_eq!(h.call(2)["output"]["value"], 2);
    sandbox_testkit::fixtures::bump_version(&src.join("Cargo.toml")).unwrap();
    h.wait_for("a swapped event to v2", BUILD, |v| {
        v["event"] == "swapped" && v["to"] == 2
    });
    assert_eq!(h.call(1)["output"]["value"], 3);
    // A broken save is a failed compile event; the old version keeps serving.
    let lib = src.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("{text}\nfn broken( {{\n")).unwrap();
    let e = h.wait_for("a failed compile", BUILD, |v| {
        v["event"] == "compile_finished" && v["ok"] == false
    });
    assert!(
        e["diagnostics"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("src/lib.rs"),
        "{e}"
    );
    assert_eq!(h.call(1)["output"]["value"], 4);
    assert_eq!(h.events("swapped").len(), 2, "creation and one swap");
    assert_eq!(h.quit(), 0);
}
