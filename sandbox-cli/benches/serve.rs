//! `sandbox serve` under load, on loopback, bounded in count and time.
//!
//! - `serve/http floor (GET /livez)`, `serve/call, in-process sandbox`,
//!   `serve/call, process sandbox`: `wrk` (Debian's; `apt-get install wrk`)
//!   against this package's `sandbox serve`, one connection for the latency
//!   percentiles and requests/s, then 16 connections for requests/s. Each
//!   run lasts [`WRK_SECONDS`]; the three targets are run in turn,
//!   [`ROUNDS`] times, and each statistic is the median of the rounds' (the
//!   machine's other load then falls on all three alike); a non-2xx answer
//!   fails the bench.
//! - `serve/run protocol call, in-process sandbox`, `… process sandbox`:
//!   the same call through `sandbox run` (JSON lines on stdin/stdout), one
//!   request at a time ([`RUN_CALLS`] of them) for the percentiles, then
//!   in batches of 16 for requests/s.
//! - `serve/restart to ready, 100 cached sandboxes` (trusted, in-process)
//!   and `… 100 cached process sandboxes` (medium profile, a jailed worker
//!   each): a service holding [`RESTORED`] sandboxes of one source (built
//!   once) is stopped with SIGTERM and started again on its data dir,
//!   [`RESTARTS`] times: the time from starting the process to its "ready"
//!   log line (`/readyz` answers 200 from then on).
//!
//! Results go to `target/sandbox-bench/serve_*.json` for `cargo xtask
//! bench`; the numbers are measured here, never asserted in tests. The
//! sandbox, its worker and wrk share the machine's cores.

// A bench reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(missing_docs)]
// It drives the `sandbox` binary and `wrk` from outside, as a user runs them.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

const TOKEN: &str = "bench-token";
/// How long each wrk run lasts.
const WRK_SECONDS: u32 = 3;
/// Rounds of wrk runs (every target in each), whose median is reported.
const ROUNDS: usize = 3;
/// Sequential calls through `sandbox run`.
const RUN_CALLS: usize = 5_000;
/// Sandboxes restored at each restart.
const RESTORED: usize = 100;
/// Restarts measured.
const RESTARTS: usize = 5;
/// Long enough for a cold build of the example's dependencies.
const BUILD: Duration = Duration::from_secs(600);

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench` (and a filter); this bench runs whole.
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("counter");
    sandbox_testkit::fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src)?;
    let out = target_dir().join("sandbox-bench");
    std::fs::create_dir_all(&out)?;
    let machine = machine();
    println!("machine: {machine}");

    // HTTP: the floor, then a call on each kind of sandbox.
    match find("wrk") {
        Some(wrk) => http(&wrk, tmp.path(), &src, &out)?,
        None => println!("wrk not found (`apt-get install wrk`): the HTTP rows are not measured"),
    }

    // The same calls through `sandbox run`.
    for (name, file, args) in [
        (
            "serve/run protocol call, in-process sandbox",
            "serve_run_inprocess",
            &["--profile", "trusted"][..],
        ),
        (
            "serve/run protocol call, process sandbox",
            "serve_run_process",
            &["--isolation", "process"][..],
        ),
    ] {
        let mut run = Run::start(&src, args)?;
        let (p50, p99, rps1) = run.sequential(RUN_CALLS)?;
        let rps16 = run.batches(RUN_CALLS, 16)?;
        let note = format!("{rps1:.0} req/s one at a time, {rps16:.0} req/s 16 at a time");
        println!(
            "{name}: p50 {:.1} µs, p99 {:.1} µs; {note}",
            p50 / 1e3,
            p99 / 1e3
        );
        write(&out, file, name, p50, p99, RUN_CALLS as u64, &note)?;
    }

    // Restart to ready with many cached sandboxes, of each kind.
    for (kind, file, name, spec) in [
        (
            "trusted in-process",
            "serve_restart_to_ready",
            "serve/restart to ready, 100 cached sandboxes",
            json!({"profile": "trusted"}),
        ),
        (
            "process (medium profile, jailed workers)",
            "serve_restart_to_ready_process",
            "serve/restart to ready, 100 cached process sandboxes",
            json!({"isolation": "process"}),
        ),
    ] {
        let data = tmp.path().join(file);
        let times = restart_to_ready(&data, &src, &spec)?;
        let p50 = times[times.len() / 2];
        let max = times[times.len() - 1];
        let note = format!(
            "{RESTORED} {kind} sandboxes, {RESTARTS} restarts, max {:.0} ms",
            max.as_secs_f64() * 1e3
        );
        println!("{name}: p50 {:.0} ms; {note}", p50.as_secs_f64() * 1e3);
        write(
            &out,
            file,
            name,
            p50.as_nanos() as f64,
            max.as_nanos() as f64,
            RESTARTS as u64,
            &note,
        )?;
    }
    Ok(())
}

/// A service on `data` holding [`RESTORED`] sandboxes of `src` created
/// with `spec`'s fields, stopped (SIGTERM) and started again [`RESTARTS`]
/// times: each start's time to ready, sorted.
fn restart_to_ready(data: &Path, src: &Path, spec: &Value) -> anyhow::Result<Vec<Duration>> {
    let serve = Serve::start(data)?;
    for i in 0..RESTORED {
        let mut body = json!({"id": format!("s{i:03}"), "source": src});
        for (k, v) in spec.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        serve.request("POST", "/v1/sandboxes", Some(body))?;
    }
    let mut serve = Some(serve);
    let mut times = Vec::new();
    for _ in 0..RESTARTS {
        if let Some(s) = serve.take() {
            s.terminate()?;
        }
        let s = Serve::start(data)?;
        times.push(s.ready_after);
        let ready = s.request("GET", "/readyz", None)?;
        let restored = ready["restored"].as_array().map_or(0, Vec::len);
        if restored != RESTORED {
            bail!("the restart restored {restored} sandboxes, not {RESTORED}: {ready}");
        }
        serve = Some(s);
    }
    if let Some(s) = serve.take() {
        s.terminate()?;
    }
    times.sort();
    Ok(times)
}

/// The HTTP rows: wrk on the floor and on a call to each kind of sandbox.
fn http(wrk: &Path, tmp: &Path, src: &Path, out: &Path) -> anyhow::Result<()> {
    let serve = Serve::start(&tmp.join("data"))?;
    serve.request(
        "POST",
        "/v1/sandboxes",
        Some(json!({"id": "inproc", "source": src, "profile": "trusted"})),
    )?;
    serve.request(
        "POST",
        "/v1/sandboxes",
        Some(json!({"id": "proc", "source": src, "isolation": "process"})),
    )?;
    let script = tmp.join("call.lua");
    std::fs::write(&script, wrk_script(true))?;
    let get_script = tmp.join("get.lua");
    std::fs::write(&get_script, wrk_script(false))?;
    let [floor, inproc, process] = serve.load(
        wrk,
        [
            (&get_script, "/livez"),
            (&script, "/v1/sandboxes/inproc/modules/counter/call"),
            (&script, "/v1/sandboxes/proc/modules/counter/call"),
        ],
    )?;
    drop(serve);
    for (name, file, load) in [
        ("serve/http floor (GET /livez)", "serve_http_floor", &floor),
        (
            "serve/call, in-process sandbox",
            "serve_call_inprocess",
            &inproc,
        ),
        (
            "serve/call, process sandbox",
            "serve_call_process",
            &process,
        ),
    ] {
        let over = load.one.p50_us - floor.one.p50_us;
        let note = format!(
            "{:.0} req/s on 1 connection, {:.0} req/s on 16 (p99 {:.2} ms){}",
            load.one.rps,
            load.sixteen.rps,
            load.sixteen.p99_us / 1e3,
            if name.contains("floor") {
                String::new()
            } else {
                format!("; p50 {over:+.0} µs over the floor")
            }
        );
        write(
            out,
            file,
            name,
            load.one.p50_us * 1e3,
            load.one.p99_us * 1e3,
            load.one.requests,
            &note,
        )?;
    }
    Ok(())
}

/// A `sandbox serve` of this package on 127.0.0.1, killed on drop.
struct Serve {
    child: Child,
    base: String,
    agent: ureq::Agent,
    /// From starting the process to its "ready" line.
    ready_after: Duration,
    _log: Receiver<String>,
}

impl Serve {
    fn start(data: &Path) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = sandbox()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--rate-limit",
                "100000000",
                "--allow-trusted",
                "--data-dir",
            ])
            .arg(data)
            .env("SANDBOX_TOKEN", TOKEN)
            .env("SANDBOX_LOG", "sandbox_serve=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting sandbox serve")?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut base = None;
        let ready_after = loop {
            let line = log
                .recv_timeout(BUILD)
                .context("sandbox serve did not become ready")?;
            if let Some(rest) = line.split("listening on ").nth(1) {
                base = Some(rest.trim().to_owned());
            }
            if line.contains("ready") && base.is_some() {
                break started.elapsed();
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            child,
            base: base.unwrap_or_default(),
            agent,
            ready_after,
            _log: log,
        })
    }

    fn request(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {TOKEN}");
        let mut response = match (method, body) {
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .content_type("application/json")
                .send(body.to_string().as_bytes())?,
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty()?,
            _ => self.agent.get(&url).header("Authorization", &auth).call()?,
        };
        let status = response.status();
        let text = response.body_mut().read_to_string()?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// wrk on each of `targets`, interleaved: [`ROUNDS`] rounds, each
    /// running every target on 1 connection, then on 16, so that the
    /// machine's other load falls on all of them alike; each statistic is
    /// the median of the rounds'.
    fn load<const N: usize>(
        &self,
        wrk: &Path,
        targets: [(&Path, &str); N],
    ) -> anyhow::Result<[Load; N]> {
        let mut rounds: Vec<[(WrkResult, WrkResult); N]> = Vec::new();
        for (script, path) in targets {
            // A short warm-up: connections, allocator, caches.
            run_wrk(wrk, script, &format!("{}{path}", self.base), 1, 1)?;
        }
        for _ in 0..ROUNDS {
            let mut round = Vec::new();
            for (script, path) in targets {
                let url = format!("{}{path}", self.base);
                let one = run_wrk(wrk, script, &url, 1, WRK_SECONDS)?;
                let sixteen = run_wrk(wrk, script, &url, 16, WRK_SECONDS)?;
                round.push((one, sixteen));
            }
            rounds.push(
                round
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("a round of {N}"))?,
            );
        }
        let loads = std::array::from_fn(|i| {
            let median = |f: &dyn Fn(&(WrkResult, WrkResult)) -> f64| {
                let mut v: Vec<f64> = rounds.iter().map(|r| f(&r[i])).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let result = |sixteen: bool| WrkResult {
                p50_us: median(&|r| if sixteen { r.1.p50_us } else { r.0.p50_us }),
                p99_us: median(&|r| if sixteen { r.1.p99_us } else { r.0.p99_us }),
                rps: median(&|r| if sixteen { r.1.rps } else { r.0.rps }),
                requests: rounds
                    .iter()
                    .map(|r| {
                        if sixteen {
                            r[i].1.requests
                        } else {
                            r[i].0.requests
                        }
                    })
                    .sum(),
            };
            Load {
                one: result(false),
                sixteen: result(true),
            }
        });
        for ((_, path), l) in targets.iter().zip(&loads) {
            println!(
                "{path}: 1 connection p50 {:.1} µs p99 {:.1} µs {:.0} req/s; 16 connections p50 {:.1} µs p99 {:.1} µs {:.0} req/s",
                l.one.p50_us, l.one.p99_us, l.one.rps, l.sixteen.p50_us, l.sixteen.p99_us, l.sixteen.rps
            );
        }
        Ok(loads)
    }

    /// SIGTERM, and the graceful shutdown's end.
    fn terminate(mut self) -> anyhow::Result<()> {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id())?).context("pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("sandbox serve exited with {status} after SIGTERM");
        }
        Ok(())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Load {
    one: WrkResult,
    sixteen: WrkResult,
}

struct WrkResult {
    p50_us: f64,
    p99_us: f64,
    rps: f64,
    requests: u64,
}

/// The wrk script: the token, and for calls a POST with a JSON body; its
/// `done` prints the result as one JSON line.
fn wrk_script(call: bool) -> String {
    let request = if call {
        "wrk.method = \"POST\"\nwrk.body = '{\"add\":1}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
    } else {
        ""
    };
    format!(
        "{request}wrk.headers[\"Authorization\"] = \"Bearer {TOKEN}\"\n\
         function done(summary, latency, requests)\n\
           local e = summary.errors\n\
           io.write(string.format('{{\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,\"errors\":%d}}\\n',\n\
             summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),\n\
             e.connect + e.read + e.write + e.status + e.timeout))\n\
         end\n"
    )
}

fn run_wrk(
    wrk: &Path,
    script: &Path,
    url: &str,
    connections: u32,
    seconds: u32,
) -> anyhow::Result<WrkResult> {
    let out = Command::new(wrk)
        .args([
            "-t",
            "1",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "-s",
        ])
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with('{')).with_context(|| {
        format!(
            "wrk printed no result: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let v: Value = serde_json::from_str(line)?;
    let errors = v["errors"].as_u64().unwrap_or(0);
    if errors > 0 {
        bail!("wrk saw {errors} errors or non-2xx answers on {url}: {text}");
    }
    let requests = v["requests"].as_u64().unwrap_or(0);
    let duration = v["duration_us"].as_f64().unwrap_or(1.0);
    Ok(WrkResult {
        p50_us: v["p50_us"].as_f64().unwrap_or(0.0),
        p99_us: v["p99_us"].as_f64().unwrap_or(0.0),
        rps: requests as f64 / (duration / 1e6),
        requests,
    })
}

/// A `sandbox run` of the counter, driven over its stdin/stdout.
struct Run {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<Value>,
    next: u64,
}

impl Run {
    fn start(src: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = sandbox()
            .arg("run")
            .arg(src)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sandbox run")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["type"] != "event" && tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut run = Self {
            child,
            stdin,
            replies,
            next: 0,
        };
        // Created and answering (the first call waits for the build).
        run.send(1)?;
        run.reply(BUILD)?;
        Ok(run)
    }

    fn send(&mut self, n: usize) -> anyhow::Result<()> {
        let mut text = String::new();
        for _ in 0..n {
            self.next += 1;
            text.push_str(&format!(
                "{{\"op\":\"call\",\"module\":\"counter\",\"input\":{{\"add\":1}},\"id\":{}}}\n",
                self.next
            ));
        }
        self.stdin.write_all(text.as_bytes())?;
        self.stdin.flush()?;
        Ok(())
    }

    fn reply(&mut self, deadline: Duration) -> anyhow::Result<Value> {
        let v = self
            .replies
            .recv_timeout(deadline)
            .context("sandbox run did not answer")?;
        if v["type"] != "reply" {
            bail!("sandbox run answered {v}");
        }
        Ok(v)
    }

    /// `n` calls one at a time: p50, p99 (ns) and requests/s.
    fn sequential(&mut self, n: usize) -> anyhow::Result<(f64, f64, f64)> {
        let mut samples = Vec::with_capacity(n);
        let started = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            self.send(1)?;
            self.reply(Duration::from_secs(30))?;
            samples.push(t.elapsed());
        }
        let rps = n as f64 / started.elapsed().as_secs_f64();
        samples.sort();
        let at = |q: f64| {
            samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_nanos() as f64
        };
        Ok((at(0.5), at(0.99), rps))
    }

    /// `n` calls in batches of `batch` in flight: requests/s.
    fn batches(&mut self, n: usize, batch: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        for _ in 0..n / batch {
            self.send(batch)?;
            for _ in 0..batch {
                self.reply(Duration::from_secs(30))?;
            }
        }
        Ok((n / batch * batch) as f64 / started.elapsed().as_secs_f64())
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sandbox() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandbox"));
    cmd.env("SANDBOX_CACHE_DIR", sandbox_testkit::shared_cache_root());
    cmd.env_remove("SANDBOX_TOKEN");
    cmd
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| sandbox_testkit::repo_root().join("target"))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

#[allow(clippy::too_many_arguments)]
fn write(
    out: &Path,
    file: &str,
    name: &str,
    p50_ns: f64,
    p99_ns: f64,
    n: u64,
    note: &str,
) -> anyhow::Result<()> {
    let value = json!({ "name": name, "p50_ns": p50_ns, "p99_ns": p99_ns, "n": n, "note": note });
    std::fs::write(out.join(format!("{file}.json")), format!("{value:#}\n"))?;
    Ok(())
}
