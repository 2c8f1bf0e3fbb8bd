//! A running `sandbox run …` driven over its stdin/stdout.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Long enough for a cold build of the plugin's dependencies.
pub const BUILD: Duration = Duration::from_secs(600);

// The binary under test is driven from outside, as a user runs it.
#[allow(clippy::disallowed_methods)]
pub fn sandbox() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandbox"));
    cmd.env("SANDBOX_CACHE_DIR", sandbox_testkit::shared_cache_root());
    cmd
}

pub struct Host {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    pub seen: Vec<Value>,
    next_id: u64,
}

impl Host {
    pub fn run(dir: &Path, extra: &[&str]) -> Self {
        let mut child = sandbox()
            .arg("run")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sandbox run");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| json!({"unparsable": line, "error": e.to_string()}));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            next_id: 0,
        }
    }

    /// The `sandbox` process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send_raw(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    /// Writes `bytes` as they are (no newline added).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write");
        stdin.flush().expect("flush");
    }

    /// Sends `requests` (each with a fresh id) in one go and waits for the
    /// reply to the last; lines read meanwhile are checked and dropped, not
    /// kept in `seen`. Returns the last reply.
    pub fn pipeline(&mut self, requests: &[Value], deadline: Duration) -> Value {
        let mut text = String::new();
        for request in requests {
            self.next_id += 1;
            let mut request = request.clone();
            request["id"] = json!(self.next_id);
            text.push_str(&request.to_string());
            text.push('\n');
        }
        let last = json!(self.next_id);
        self.send_bytes(text.as_bytes());
        let end = Instant::now() + deadline;
        loop {
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(v) => {
                    assert!(
                        v["type"] != "error" && v.get("unparsable").is_none(),
                        "a pipelined request failed: {v}"
                    );
                    if v["id"] == last {
                        return v;
                    }
                }
                Err(_) => panic!("no reply to pipelined request {last} within {deadline:?}"),
            }
        }
    }

    /// Closes stdin and waits up to `deadline` for the process to close its
    /// stdout (it exits), keeping every line in `seen`; then its exit code.
    pub fn close_within(&mut self, deadline: Duration) -> i32 {
        drop(self.stdin.take());
        let end = Instant::now() + deadline;
        loop {
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(v) => self.seen.push(v),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "`sandbox run` still runs {deadline:?} after the end of its input; last lines: {:?}",
                    &self.seen[self.seen.len().saturating_sub(3)..]
                ),
            }
        }
        wait(&mut self.child)
    }

    /// Waits up to `deadline` for a line matching `pred` (looking at lines
    /// already seen first).
    pub fn wait_for(
        &mut self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let end = Instant::now() + deadline;
        loop {
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(v) => {
                    assert!(
                        v.get("unparsable").is_none(),
                        "stdout line is not JSON: {v}"
                    );
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "no {what} within {deadline:?}; last lines: {:?}",
                        &self.seen[self.seen.len().saturating_sub(3)..]
                    )
                }
            }
        }
    }

    /// Sends `request` with a fresh id and returns its reply or error.
    pub fn request(&mut self, mut request: Value, deadline: Duration) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        request["id"] = json!(id);
        self.send_raw(&request.to_string());
        self.wait_for(&format!("reply to {request}"), deadline, |v| {
            v["id"] == json!(id) && (v["type"] == "reply" || v["type"] == "error")
        })
    }

    pub fn call(&mut self, add: i64) -> Value {
        self.request(
            json!({"op": "call", "module": "counter", "input": {"add": add}}),
            BUILD,
        )
    }

    pub fn events(&self, name: &str) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|v| v["type"] == "event" && v["event"] == name)
            .collect()
    }

    /// Sends quit and waits for the exit code.
    pub fn quit(mut self) -> i32 {
        self.send_raw(r#"{"op":"quit"}"#);
        drop(self.stdin.take());
        wait(&mut self.child)
    }

    /// Closes stdin and waits for the exit code.
    pub fn close(mut self) -> i32 {
        drop(self.stdin.take());
        wait(&mut self.child)
    }
}

fn wait(child: &mut Child) -> i32 {
    // `wait` blocks until the exit; a hang shows up as the test's own timeout.
    child.wait().expect("wait").code().unwrap_or(-1)
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of example `name` in a temp dir.
pub fn example(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    copy_into_temp(&sandbox_testkit::example_dir(name), name)
}

/// A copy of the `hostile-attacks` fixture (module `hostile`) in a temp dir.
pub fn hostile() -> (tempfile::TempDir, std::path::PathBuf) {
    copy_into_temp(&sandbox_testkit::fixture_dir("hostile-attacks"), "hostile")
}

fn copy_into_temp(from: &Path, folder: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join(folder);
    sandbox_testkit::fixtures::copy_crate(from, &src).unwrap();
    (dir, src)
}
