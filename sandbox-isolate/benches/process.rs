//! Process-isolation benchmarks.
//!
//! - `process/cold_start`: a process runtime from nothing to the first
//!   successful call of a cached artifact (launch, load, swap, call);
//! - `process/pool_start`: the same from the warm pool, and the launch alone;
//! - `process/call_round_trip`: one small call (criterion);
//! - `bwrap`: `bwrap --unshare-all --ro-bind / / true`, when installed, for
//!   the ratio.
//!
//! p50 / p99 of the sampled ones are printed and written to
//! `<target>/sandbox-bench/*.json` for `cargo xtask bench`.

// A bench reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// A bench measures time: its pauses are the measurement (settling, idle
// windows) and the programs it compares against run as they are.
#![allow(clippy::disallowed_methods)]
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use sandbox_compiler::{BuildRequest, CargoCompiler, Compiler, Profile};
use sandbox_isolate::{InProcess, Isolator, LaunchSpec, Process, Runtime, SwapStep, WorkerCommand};

const SAMPLES: usize = 100;
/// Pause before each cold-start and bwrap sample (see `sampled`).
const SETTLE: Duration = Duration::from_millis(20);

fn worker() -> WorkerCommand {
    WorkerCommand::new(env!("CARGO_BIN_EXE_sandbox-worker"))
}

/// The counter example built with `profile` (cached in the shared test
/// build cache after the first run).
fn counter(profile: Profile) -> PathBuf {
    let root = sandbox_testkit::shared_cache_root();
    let compiler = CargoCompiler::builder()
        .target_dir(root.join("target"))
        .cache_dir(root.join("builds"))
        .build()
        .expect("a compiler");
    compiler
        .build(&BuildRequest::new(sandbox_testkit::example_dir("counter")).profile(profile))
        .expect("build the counter example")
        .artifacts
        .remove(0)
        .path
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn spec(dir: &std::path::Path, n: usize) -> LaunchSpec {
    let mut spec = LaunchSpec::new(format!("bench-{n}"), dir.join(format!("rt-{n}")));
    spec.artifact_dirs = vec![sandbox_testkit::shared_cache_root().join("builds")];
    spec.limits.address_space = Some(1 << 30);
    spec.limits.processes = Some(64);
    spec.limits.open_files = Some(256);
    spec
}

fn first_call(
    isolator: &dyn Isolator,
    spec: &LaunchSpec,
    lib: &std::path::Path,
) -> Box<dyn Runtime> {
    let rt = isolator.launch(spec).expect("launch");
    rt.load(lib, 1).expect("load");
    rt.swap(&[SwapStep::new("counter", 1)]).expect("swap");
    rt.call("counter", br#"{"add":1}"#, None).expect("call");
    rt
}

/// [`SAMPLES`] timed [`first_call`]s, each on a new runtime (dropped
/// untimed), numbered from `first + 1`.
fn first_calls(
    isolator: &dyn Isolator,
    dir: &std::path::Path,
    first: usize,
    lib: &std::path::Path,
) -> Vec<Duration> {
    (1..=SAMPLES)
        .map(|n| {
            let spec = spec(dir, first + n);
            let started = Instant::now();
            let rt = first_call(isolator, &spec, lib);
            let took = started.elapsed();
            drop(rt);
            took
        })
        .collect()
}

struct Stats {
    p50: Duration,
    p99: Duration,
    n: usize,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: at(0.5),
        p99: at(0.99),
        n: samples.len(),
    }
}

fn report(name: &str, s: &Stats, note: &str) {
    println!(
        "{name:<32} p50 {:>10.3?}  p99 {:>10.3?}  (n={}) {note}",
        s.p50, s.p99, s.n
    );
    let dir = target_dir().join("sandbox-bench");
    let _ = std::fs::create_dir_all(&dir);
    let json = serde_json::json!({
        "name": name,
        "p50_ns": s.p50.as_nanos() as f64,
        "p99_ns": s.p99.as_nanos() as f64,
        "n": s.n,
        "note": note,
    });
    let _ = std::fs::write(
        dir.join(format!("{}.json", name.replace('/', "-"))),
        json.to_string(),
    );
}

fn sampled() {
    let release = counter(Profile::Release);
    let debug = counter(Profile::Debug);
    let dir = tempfile::tempdir().expect("temp dir");

    let inprocess = InProcess::new();
    let samples = first_calls(&inprocess, dir.path(), 3000, &release);
    report(
        "inprocess/start_to_first_call",
        &stats(samples),
        "release artifact; the loading cost every backend pays",
    );

    let cold = Process::new(worker());
    // Warm the page cache.
    let _ = first_call(&cold, &spec(dir.path(), 0), &release);
    // bwrap runs interleaved with the release cold start, one of each per
    // round, so both see the same machine (this host is shared and its load
    // drifts over a run), each after a pause: the kernel tears a network
    // namespace down in the background after its last process exits, under
    // the lock a new one needs, so a sample started right after the other
    // one's exit would pay for that teardown.
    let bwrap = bwrap_installed();
    let mut release_samples = Vec::new();
    let mut bwrap_samples = Vec::new();
    for n in 1..=SAMPLES {
        if bwrap {
            std::thread::sleep(SETTLE);
            bwrap_samples.push(run_bwrap());
        }
        std::thread::sleep(SETTLE);
        let spec = spec(dir.path(), n);
        let started = Instant::now();
        let rt = first_call(&cold, &spec, &release);
        release_samples.push(started.elapsed());
        drop(rt);
    }
    let debug_samples = first_calls(&cold, dir.path(), 100, &debug);
    let cold_stats = stats(release_samples);
    report(
        "process/cold_start_to_first_call_release",
        &cold_stats,
        "launch + load + swap + call, cached release artifact",
    );
    report(
        "process/cold_start_to_first_call_debug",
        &stats(debug_samples),
        "launch + load + swap + call, cached debug artifact",
    );
    if bwrap {
        let bwrap = stats(bwrap_samples);
        let ratio = cold_stats.p50.as_secs_f64() / bwrap.p50.as_secs_f64();
        report(
            "bwrap/unshare_all_true",
            &bwrap,
            &format!("interleaved with the release cold start, whose p50 is {ratio:.2}x this"),
        );
    } else {
        println!("bwrap is not installed (apt-get install bubblewrap): no ratio");
    }
    let lib = release;
    let samples = (1..=SAMPLES)
        .map(|n| {
            let spec = spec(dir.path(), 500 + n);
            let started = Instant::now();
            let rt = cold.launch(&spec).expect("launch");
            let took = started.elapsed();
            drop(rt);
            took
        })
        .collect();
    report(
        "process/cold_launch",
        &stats(samples),
        "jailed worker started and configured, nothing loaded",
    );

    let pooled = Process::new(worker()).with_pool(2);
    let mut launch_only = Vec::new();
    let mut to_call = Vec::new();
    for n in 1..=SAMPLES {
        assert!(
            pooled.wait_for_pool(Duration::from_secs(30)),
            "the pool did not refill"
        );
        let spec = spec(dir.path(), 1000 + n);
        let started = Instant::now();
        let rt = pooled.launch(&spec).expect("launch from the pool");
        launch_only.push(started.elapsed());
        rt.load(&lib, 1).expect("load");
        rt.swap(&[SwapStep::new("counter", 1)]).expect("swap");
        rt.call("counter", br#"{"add":1}"#, None).expect("call");
        to_call.push(started.elapsed());
        drop(rt);
    }
    report(
        "process/pool_launch",
        &stats(launch_only),
        "a pooled worker takes its sandbox (jail applied)",
    );
    report(
        "process/pool_start_to_first_call",
        &stats(to_call),
        "pooled launch + load + swap + call",
    );
}

fn bwrap_installed() -> bool {
    std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok()
}

/// One `bwrap --unshare-all --ro-bind / / true`, timed.
fn run_bwrap() -> Duration {
    let started = Instant::now();
    let status = std::process::Command::new("bwrap")
        .args(["--unshare-all", "--ro-bind", "/", "/", "true"])
        .status()
        .expect("run bwrap");
    assert!(status.success());
    started.elapsed()
}

fn call_round_trip(c: &mut Criterion) {
    let lib = counter(Profile::Release);
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = first_call(&Process::new(worker()), &spec(dir.path(), 0), &lib);
    let mut samples = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let started = Instant::now();
        rt.call("counter", br#"{"add":1}"#, None).expect("call");
        samples.push(started.elapsed());
    }
    report(
        "process/call_round_trip",
        &stats(samples),
        "{\"add\":1} to the counter, one caller",
    );
    c.bench_function("process/call_round_trip", |b| {
        b.iter(|| rt.call("counter", br#"{"add":1}"#, None).expect("call"))
    });
}

criterion_group!(benches, call_round_trip);

fn main() {
    sampled();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
