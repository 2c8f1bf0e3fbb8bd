//! The `sandbox` command as a client (`ls`, `create`, `call`, `reload`,
//! `versions`, `rollback`, `restart`, `rm`, `events`): the real binary
//! against a real `sandbox serve` on loopback, started by the test.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::host::sandbox;
use crate::serve::Served;

const TOKEN: &str = "client-test-token";

/// A `sandbox serve` on 127.0.0.1 with a port of its own, a data dir in a
/// temp folder and one token in a token file; killed on drop.
struct Serve {
    url: String,
    token_file: PathBuf,
    _served: Served,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("# the test's token\n{TOKEN}\n")).unwrap();
        let mut served = Served::start(
            &dir.path().join("data"),
            &["--token-file", token_file.to_str().unwrap()],
        );
        served.ready();
        let addr = served.addr.expect("ready knows the address");
        Self {
            url: format!("http://{addr}"),
            token_file,
            _served: served,
            _dir: dir,
        }
    }

    /// `sandbox ARGS --server URL --token-file FILE`.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &["--token-file", self.token_file.to_str().unwrap()])
    }

    fn run_with(&self, args: &[&str], auth: &[&str]) -> Output {
        sandbox()
            .args(args)
            .args(["--server", &self.url])
            .args(auth)
            .env_remove("SANDBOX_TOKEN")
            .env_remove("SANDBOX_SERVER")
            .stdin(Stdio::null())
            .output()
            .expect("run sandbox")
    }

    /// Runs `args`, expecting success; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`sandbox {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `args`, expecting success and JSON on stdout.
    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("`sandbox {}` printed no JSON ({e}): {text}", args.join(" "))
        })
    }

    /// Runs `args`, expecting failure; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        failed(args, &out)
    }
}

fn failed(args: &[&str], out: &Output) -> String {
    assert!(
        !out.status.success(),
        "`sandbox {}` succeeded: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// A copy of the counter example in a temp folder.
fn counter_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("counter");
    sandbox_testkit::fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &dir).unwrap();
    (tmp, dir)
}

/// `sandbox events ID` running in the background, its lines on a channel.
struct EventsTail {
    child: Child,
    lines: Receiver<Value>,
    seen: Vec<Value>,
}

impl EventsTail {
    fn start(serve: &Serve, id: &str) -> Self {
        let mut child = sandbox()
            .args(["events", id, "--server", &serve.url, "--token-file"])
            .arg(&serve.token_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sandbox events");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v =
                    serde_json::from_str(&line).unwrap_or_else(|_| json!({ "unparsable": line }));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.seen.iter().find(|v| pred(v)) {
                return v.clone();
            }
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(v) => self.seen.push(v),
                Err(_) => panic!(
                    "`sandbox events` printed no {what}; it printed {:#?}",
                    self.seen
                ),
            }
        }
    }
}

impl Drop for EventsTail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn client_drives_a_sandbox_through_the_service() {
    let serve = Serve::start();
    let (_tmp, dir) = counter_copy();
    let id = format!("client-{}", std::process::id());
    let dir_arg = dir.to_str().unwrap();

    // Nothing yet: a table with its header only.
    let ls = serve.ok(&["ls"]);
    assert_eq!(ls.lines().count(), 1, "{ls}");
    assert!(ls.starts_with("ID"), "{ls}");

    let created = serve.json(&["create", &id, dir_arg, "--profile", "trusted"]);
    assert_eq!(created["id"], json!(id), "{created}");
    assert_eq!(created["status"], "running", "{created}");
    assert_eq!(created["profile"], "trusted", "{created}");
    let mut events = EventsTail::start(&serve, &id);

    let ls = serve.ok(&["ls"]);
    let row = ls
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(
        row.contains("running") && row.contains("trusted") && row.contains("counter@1"),
        "{row}"
    );
    let listed = serve.json(&["ls", "--json"]);
    assert_eq!(listed[0]["id"], json!(id), "{listed}");

    // Calls print the module's answer on one line.
    let out = serve.ok(&["call", &id, "counter", r#"{"add":5}"#]);
    assert_eq!(out, "{\"calls\":1,\"value\":5}\n");

    // An edit, a reload (the swap arrives on `sandbox events`), state kept.
    let lib = dir.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        text.replace(".checked_add(add)", ".checked_add(add * 2)"),
    )
    .unwrap();
    let report = serve.json(&["reload", &id]);
    assert_eq!(report["swapped"][0]["module"], "counter", "{report}");
    assert_eq!(report["swapped"][0]["to"], 2, "{report}");
    let swapped = events.wait_for("swapped event", |v| v["event"] == "swapped" && v["to"] == 2);
    assert_eq!(swapped["sandbox"], json!(id), "{swapped}");
    let out: Value =
        serde_json::from_str(&serve.ok(&["call", &id, "counter", r#"{"add":1}"#])).unwrap();
    assert_eq!(out, json!({"value": 7, "calls": 2}));

    let versions = serve.ok(&["versions", &id, "counter"]);
    let current: Vec<&str> = versions.lines().filter(|l| l.contains('*')).collect();
    assert_eq!(versions.lines().count(), 3, "{versions}");
    assert!(
        current.len() == 1 && current[0].starts_with('2'),
        "{versions}"
    );
    let versions = serve.json(&["versions", &id, "counter", "--json"]);
    assert_eq!(versions.as_array().map(Vec::len), Some(2), "{versions}");

    let rolled = serve.json(&["rollback", &id, "counter", "1"]);
    assert_eq!(rolled, json!({"module": "counter", "from": 2, "to": 1}));
    events.wait_for("rollback event", |v| {
        v["event"] == "rollback" && v["to"] == 1
    });
    let out: Value =
        serde_json::from_str(&serve.ok(&["call", &id, "counter", r#"{"add":1}"#])).unwrap();
    assert_eq!(out, json!({"value": 8, "calls": 3}));

    let restarted = serve.json(&["restart", &id]);
    assert_eq!(restarted["restart_count"], 1, "{restarted}");
    events.wait_for("restarted event", |v| v["event"] == "restarted");

    assert_eq!(serve.ok(&["rm", &id]), format!("destroyed {id}\n"));
    events.wait_for("destroyed event", |v| v["event"] == "destroyed");
    let ls = serve.ok(&["ls"]);
    assert!(!ls.contains(&id), "{ls}");
}

#[test]
fn client_errors_are_the_services_message_and_a_failure() {
    let serve = Serve::start();
    let args = ["call", "no-such-sandbox", "counter", "{}"];
    let err = serve.fails(&args);
    let line = err.trim();
    assert!(
        line.starts_with("error: ") && line.contains("no-such-sandbox"),
        "{err}"
    );
    assert!(!line.contains('{'), "the message, not the JSON: {err}");

    // A wrong token: 401's message.
    let out = serve.run_with(&["ls"], &[]);
    let err = failed(&["ls"], &out);
    assert!(err.contains("missing or wrong token"), "{err}");
    let bad = serve._dir.path().join("bad-token");
    std::fs::write(&bad, "not-the-token\n").unwrap();
    let out = serve.run_with(&["ls"], &["--token-file", bad.to_str().unwrap()]);
    assert!(failed(&["ls"], &out).contains("missing or wrong token"));

    // A compile error: the diagnostics, then the message; nothing is left.
    let (_tmp, dir) = counter_copy();
    let lib = dir.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("{text}\nfn broken( {{\n")).unwrap();
    let err = serve.fails(&[
        "create",
        "broken",
        dir.to_str().unwrap(),
        "--profile",
        "trusted",
    ]);
    assert!(
        err.contains("src/lib.rs"),
        "diagnostics name the file: {err}"
    );
    assert!(!serve.ok(&["ls"]).contains("broken"));

    // Bad input caught before any request, and a service that is not there.
    let err = serve.fails(&["call", "x", "counter", "{not json"]);
    assert!(err.contains("the input is not JSON"), "{err}");
    let out = sandbox()
        .args(["rollback", "x", "counter", "1", "--server", "not-a-url"])
        .output()
        .unwrap();
    assert!(failed(&["rollback"], &out).contains("give the service's URL"));
    let out = sandbox()
        .args(["ls", "--server", "http://127.0.0.1:1"])
        .env("SANDBOX_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(failed(&["ls"], &out).contains("cannot reach the service at http://127.0.0.1:1"));
}
