//! Watch latency and setup cost.
//!
//! `cargo bench -p sandbox-watch --bench watch` runs:
//! - `watch/write_to_change_set_default`: from a file write (closed, so
//!   settled) to the change set arriving, with the default config (8 ms
//!   settle; the 30 ms debounce applies to files still open);
//! - `watch/setup_100_roots_x_50_files`: a new watcher and 100 `watch` calls;
//! - then (only under `--bench`) the idle CPU use of a watcher holding those
//!   100 roots over 5 s, from `/proc/self/stat`.

// A bench reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// A bench measures time: its pauses are the measurement (settling, idle
// windows) and the programs it compares against run as they are.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use sandbox_watch::{NotifyWatcher, WatchConfig, WatchEvent, WatchSpec, Watcher};
use tempfile::TempDir;

const ROOTS: usize = 100;
const FILES_PER_ROOT: usize = 50;

fn package(dir: &Path, files: usize) {
    fs::create_dir_all(dir.join("src/m")).expect("create the package folders");
    fs::write(dir.join("Cargo.toml"), "[package]\nname = \"p\"\n").expect("write Cargo.toml");
    for i in 0..files.saturating_sub(1) {
        let folder = if i % 2 == 0 { "src" } else { "src/m" };
        fs::write(dir.join(format!("{folder}/f{i}.rs")), "pub fn f() {}\n")
            .expect("write a source file");
    }
}

fn roots() -> (TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let roots: Vec<PathBuf> = (0..ROOTS)
        .map(|i| dir.path().join(format!("sandbox-{i}")))
        .collect();
    for root in &roots {
        package(root, FILES_PER_ROOT);
    }
    (dir, roots)
}

fn watch_all(roots: &[PathBuf]) -> NotifyWatcher {
    let watcher = NotifyWatcher::new(WatchConfig::default()).expect("start the watcher");
    for (i, root) in roots.iter().enumerate() {
        watcher
            .watch(&format!("sandbox-{i}"), WatchSpec::new(root))
            .expect("watch a root");
    }
    watcher
}

fn latency(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("create a temp dir");
    package(dir.path(), 10);
    let watcher = NotifyWatcher::new(WatchConfig::default()).expect("start the watcher");
    let events = watcher.subscribe();
    watcher
        .watch("bench", WatchSpec::new(dir.path()))
        .expect("watch");
    let file = dir.path().join("src/f0.rs");

    let mut group = c.benchmark_group("watch");
    group.bench_function("write_to_change_set_default", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let start = Instant::now();
                fs::write(&file, format!("pub fn f() -> u64 {{ {i} }}\n")).expect("write");
                loop {
                    match events.recv_timeout(Duration::from_secs(10)) {
                        Ok(WatchEvent::Changed(_)) => break,
                        Ok(_) => continue,
                        Err(error) => panic!("no change set within 10 s: {error}"),
                    }
                }
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

fn setup(c: &mut Criterion) {
    let (_dir, roots) = roots();
    let mut group = c.benchmark_group("watch");
    group.bench_function("setup_100_roots_x_50_files", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let watcher = watch_all(&roots);
                total += start.elapsed();
                drop(watcher);
            }
            total
        });
    });
    group.finish();
}

/// utime + stime of this process, in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks() -> Option<u64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn idle_cpu() {
    let (_dir, roots) = roots();
    let watcher = watch_all(&roots);
    let window = Duration::from_secs(5);
    let (Some(before), start) = (cpu_ticks(), Instant::now()) else {
        println!("idle cpu: /proc/self/stat unreadable, skipped");
        return;
    };
    // Measuring idleness: this sleep is the measurement window itself.
    std::thread::sleep(window);
    let elapsed = start.elapsed();
    let after = cpu_ticks().unwrap_or(before);
    let cpu = Duration::from_millis((after - before) * 10);
    println!(
        "idle cpu: {ROOTS} roots x {FILES_PER_ROOT} files, {} keys, {:?} of cpu over {:?} = {:.3}% of one core",
        watcher.watched().len(),
        cpu,
        elapsed,
        cpu.as_secs_f64() * 100.0 / elapsed.as_secs_f64()
    );
}

/// The criterion part; `main` adds the idle measurement after it.
fn benches() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    latency(&mut criterion);
    setup(&mut criterion);
}

fn main() {
    benches();
    if std::env::args().any(|arg| arg == "--bench") {
        idle_cpu();
    }
    Criterion::default().configure_from_args().final_summary();
}
