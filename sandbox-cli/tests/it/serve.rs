//! `sandbox serve` as an operator runs it: over HTTP on loopback, killed
//! with `kill -9` and restarted with every acknowledged call kept, stopped
//! with SIGTERM (drained, checkpointed, exit 0), refusing a corrupted data
//! dir and a non-loopback address without a token.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use sandbox_serve::client::Client;
use serde_json::{json, Value};

use crate::host::{example, sandbox, BUILD};

const TOKEN: &str = "serve-test-token-0123456789";

/// A running `sandbox serve` (killed on drop).
pub(crate) struct Served {
    pid: i32,
    /// Its stderr, line by line.
    lines: Receiver<String>,
    exited: Receiver<ExitStatus>,
    status: Option<ExitStatus>,
    seen: Vec<String>,
    /// Where it listens, once [`ready`](Self::ready).
    pub(crate) addr: Option<SocketAddr>,
}

impl Served {
    /// Starts `sandbox serve` on a free loopback port with `data` as its
    /// data dir and `extra` flags.
    pub(crate) fn start(data: &Path, extra: &[&str]) -> Self {
        let mut child = sandbox()
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            // The tests create the repository's own example as trusted.
            .arg("--allow-trusted")
            .args(extra)
            .env("SANDBOX_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sandbox serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = child.id() as i32;
        let (done, exited) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = done.send(status);
            }
        });
        Self {
            pid,
            lines,
            exited,
            status: None,
            seen: Vec::new(),
            addr: None,
        }
    }

    /// Waits for a stderr line with `needle`, within `deadline`.
    fn wait_line(&mut self, needle: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        loop {
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {deadline:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits until it listens and has restored its sandboxes; returns a client.
    pub(crate) fn ready(&mut self) -> Client {
        let line = self.wait_line("listening on http://", BUILD);
        let addr = line
            .rsplit("http://")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        self.addr = Some(addr);
        self.wait_line("sandbox serve: ready", BUILD);
        Client::new(addr, Some(TOKEN.into()))
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("signal sandbox serve");
    }

    /// Whether it has exited (its status is then `exit_status`'s).
    fn has_exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.exited.try_recv().ok();
        }
        self.status.is_some()
    }

    /// Waits for the process to exit, within `deadline`.
    fn exit_status(&mut self, deadline: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let status = self
            .exited
            .recv_timeout(deadline)
            .unwrap_or_else(|_| panic!("sandbox serve still runs {deadline:?} later"));
        self.status = Some(status);
        status
    }

    /// The rest of stderr (after it exited).
    fn rest(&mut self) -> String {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if !self.has_exited() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

async fn add(c: &Client, id: &str) -> Value {
    let a = c
        .post_json(
            &format!("/v1/sandboxes/{id}/modules/counter/call"),
            &json!({"add": 1}),
        )
        .await
        .expect("answered");
    assert_eq!(a.status, 200, "{id}: {}", a.text());
    a.json()
}

async fn create(c: &Client, body: Value) {
    let a = tokio::time::timeout(BUILD, c.post_json("/v1/sandboxes", &body))
        .await
        .expect("created in time")
        .expect("answered");
    assert_eq!(a.status, 201, "{body}: {}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_acknowledged_call_and_sigterm_drains_and_checkpoints() {
    let (tmp, src) = example("counter");
    let data = tmp.path().join("data");
    let mut s = Served::start(&data, &[]);
    let c = s.ready();
    assert_eq!(
        c.with_token(None)
            .get("/v1/sandboxes")
            .await
            .unwrap()
            .status,
        401
    );
    // A jailed worker and an in-process sandbox, both saving every call;
    // one saving only on the (far) interval.
    create(&c, json!({"id": "p", "source": src, "durability": "call"})).await;
    create(
        &c,
        json!({"id": "t", "source": src, "profile": "trusted", "durability": "call"}),
    )
    .await;
    create(
        &c,
        json!({"id": "i", "source": src, "profile": "trusted", "durability": "interval=3600000"}),
    )
    .await;
    let info = c.get("/v1/sandboxes/p").await.unwrap().json();
    assert_eq!(info["isolation"], "process", "{info}");
    for _ in 0..5 {
        add(&c, "p").await;
        add(&c, "t").await;
    }
    s.signal(rustix::process::Signal::KILL);
    s.exit_status(Duration::from_secs(30));

    let mut s = Served::start(&data, &[]);
    let c = s.ready();
    let ready = c.get("/readyz").await.unwrap().json();
    assert_eq!(ready["restored"], json!(["i", "p", "t"]), "{ready}");
    assert_eq!(
        add(&c, "p").await["value"],
        6,
        "no acknowledged call lost (process)"
    );
    assert_eq!(
        add(&c, "t").await["value"],
        6,
        "no acknowledged call lost (in-process)"
    );
    let i = add(&c, "i").await["value"].as_i64().unwrap();
    add(&c, "i").await;

    // SIGTERM: drained, checkpointed (even `i`, saved on no interval), exit 0.
    s.signal(rustix::process::Signal::TERM);
    let status = s.exit_status(Duration::from_secs(60));
    assert!(status.success(), "exit {status:?}; stderr:\n{}", s.rest());
    let mut s = Served::start(&data, &[]);
    let c = s.ready();
    assert_eq!(
        add(&c, "i").await["value"],
        i + 2,
        "the shutdown checkpoint kept `i`"
    );
    assert_eq!(add(&c, "p").await["value"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_concurrent_calls_loses_no_acknowledged_call() {
    let (tmp, src) = example("counter");
    let data = tmp.path().join("data");
    // A rate limit above the 300 calls, so all of them run.
    let mut s = Served::start(&data, &["--rate-limit", "1000"]);
    let c = s.ready();
    create(&c, json!({"id": "p", "source": src, "durability": "call"})).await;
    // 300 calls at once; killed once 30 are answered.
    let (answered_tx, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let (c, answered_tx) = (c.clone(), answered_tx.clone());
        calls.spawn(async move {
            let path = "/v1/sandboxes/p/modules/counter/call";
            if let Ok(a) = c.post_json(path, &json!({"add": 1})).await {
                if a.status == 200 {
                    let _ = answered_tx.send(());
                }
            }
        });
    }
    drop(answered_tx);
    for _ in 0..30 {
        tokio::time::timeout(BUILD, answered.recv())
            .await
            .expect("30 calls answered in time")
            .expect("30 calls answered");
    }
    s.signal(rustix::process::Signal::KILL);
    s.exit_status(Duration::from_secs(30));
    while calls.join_next().await.is_some() {}
    let mut acknowledged = 30;
    while answered.try_recv().is_ok() {
        acknowledged += 1;
    }

    let mut s = Served::start(&data, &[]);
    let c = s.ready();
    let a = c
        .post_json("/v1/sandboxes/p/modules/counter/call", &json!({"add": 0}))
        .await
        .unwrap();
    let value = a.json()["value"].as_i64().expect("a value");
    assert!(
        value >= acknowledged && value <= 300,
        "{acknowledged} calls were acknowledged before kill -9, the state after it has {value}"
    );
}

/// A trusted module whose call, given `"gate": [in, out]` (two FIFOs),
/// opens `in` for writing (so the test knows the call is running) and
/// then waits until `out` is written and closed.
const GATE: &str = r#"
use std::io::{Read, Write};

use sandbox_plugin::{export_plugin, json, state, Host, Plugin, Result};

#[derive(Default)]
pub struct Gate {
    total: i64,
}

impl Plugin for Gate {
    const NAME: &'static str = "gate";

    fn handle(&mut self, _host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let request: serde_json::Value = json::decode(request)?;
        if let Some(gate) = request["gate"].as_array() {
            let (inn, out) = (gate[0].as_str().unwrap(), gate[1].as_str().unwrap());
            std::fs::OpenOptions::new().write(true).open(inn).unwrap().write_all(b"in").unwrap();
            let mut go = String::new();
            std::fs::File::open(out).unwrap().read_to_string(&mut go).unwrap();
        }
        self.total += request["add"].as_i64().unwrap_or(0);
        json::encode(&serde_json::json!({ "value": self.total }))
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        state::save(&self.total)
    }

    fn restore_state(&mut self, _host: &Host<'_>, bytes: &[u8], from: u32) -> Result<()> {
        self.total = state::load(bytes, from, Self::SCHEMA)?;
        Ok(())
    }
}

export_plugin!(Gate);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_call_in_flight_finish_then_checkpoints_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let src = sandbox_testkit::fixtures::write_plugin(&tmp.path().join("gate"), "gate", GATE)
        .expect("write the plugin");
    let fifo = |name: &str| {
        let path = tmp.path().join(name);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        path
    };
    let (inn, out) = (fifo("in"), fifo("out"));
    let data = tmp.path().join("data");
    let mut s = Served::start(&data, &[]);
    let c = s.ready();
    create(
        &c,
        json!({"id": "g", "source": src, "profile": "trusted", "durability": "interval=3600000"}),
    )
    .await;
    let call = "/v1/sandboxes/g/modules/gate/call";
    assert_eq!(
        c.post_json(call, &json!({"add": 5})).await.unwrap().status,
        200
    );

    let in_flight = {
        let (c, body) = (c.clone(), json!({"add": 1, "gate": [inn, out]}));
        tokio::spawn(async move { c.post_json(call, &body).await })
    };
    // The call is in the module once it opened `in`.
    let reader = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::open(&inn).unwrap(), &mut text).unwrap();
        text
    });
    let text = tokio::time::timeout(BUILD, reader).await.unwrap().unwrap();
    assert_eq!(text, "in");
    s.signal(rustix::process::Signal::TERM);
    s.wait_line("shutting down", Duration::from_secs(30));
    // Let the call go on: it is answered, then the service exits 0.
    std::fs::write(&out, "go").unwrap();
    let a = tokio::time::timeout(Duration::from_secs(30), in_flight)
        .await
        .expect("the call in flight is answered")
        .unwrap()
        .expect("answered");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["value"], 6);
    let status = s.exit_status(Duration::from_secs(60));
    assert!(status.success(), "exit {status:?}; stderr:\n{}", s.rest());

    // What it answered was checkpointed on the way out.
    let mut s = Served::start(&data, &[]);
    let c = s.ready();
    let a = c.post_json(call, &json!({"add": 0})).await.unwrap();
    assert_eq!(a.json()["value"], 6, "{}", a.text());
}

#[test]
fn a_corrupted_data_dir_is_reported_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("serve.redb");
    let junk = b"definitely not a redb file\n".repeat(1000);
    std::fs::write(&file, &junk).unwrap();
    let mut s = Served::start(tmp.path(), &[]);
    let status = s.exit_status(Duration::from_secs(60));
    assert!(!status.success(), "started on a corrupted store");
    let stderr = s.rest();
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), junk, "the store was written");
}

#[test]
fn without_a_token_only_loopback_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = sandbox()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path())
        .env_remove("SANDBOX_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sandbox serve");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(stderr.contains("without a token"), "{stderr}");
}
