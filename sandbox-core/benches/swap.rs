//! Hot-swap costs: create on a cache hit, swap latency (save + load +
//! restore + commit, compile excluded) with a small and a 10 MB state,
//! rollback latency, and memory kept per retained version.

// A bench reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sandbox_core::compiler::Profile;
use sandbox_core::isolate::{InProcess, Isolator, LaunchSpec, Runtime, SwapStep};
use sandbox_core::{Manager, SandboxSpec};

mod common;

fn launch(dir: &std::path::Path) -> Box<dyn Runtime> {
    InProcess::new()
        .launch(&LaunchSpec::new("bench", dir.join("rt")))
        .unwrap()
}

/// Loads `lib` as versions 2.. and swaps to each, `n` times; returns each
/// swap's latency (load + save + restore + commit).
fn swaps(rt: &dyn Runtime, module: &str, lib: &std::path::Path, n: u32) -> Vec<Duration> {
    (2..2 + n)
        .map(|v| {
            let t = Instant::now();
            rt.load(lib, v).unwrap();
            rt.swap(&[SwapStep::new(module, v)]).unwrap();
            let elapsed = t.elapsed();
            rt.forget(module, v - 1).unwrap();
            elapsed
        })
        .collect()
}

fn hot_swap(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let counter_src = dir.path().join("counter");
    sandbox_testkit::fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &counter_src)
        .unwrap();
    let counter = common::build(&counter_src, Profile::Debug);

    // Swap latency, small state (the counter).
    let rt = launch(dir.path());
    rt.load(&counter, 1).unwrap();
    rt.swap(&[SwapStep::new("counter", 1)]).unwrap();
    rt.call("counter", br#"{"add":5}"#, None).unwrap();
    let mut small = swaps(&*rt, "counter", &counter, 200);
    common::record(
        "swap-small",
        "swap latency, small state (load + save + restore + commit)",
        &mut small,
        "counter, debug build without debug info",
    );

    // Swap latency, 10 MB state.
    let blob_src = dir.path().join("blob");
    sandbox_testkit::fixtures::write_plugin(&blob_src, "blob-bench", common::BLOB).unwrap();
    let blob = common::build(&blob_src, Profile::Debug);
    let rt = launch(dir.path());
    let meta = rt.load(&blob, 1).unwrap();
    assert_eq!(meta.name, "blob", "{meta:?} from {}", blob.display());
    rt.swap(&[SwapStep::new("blob", 1)]).unwrap();
    rt.call("blob", br#"{"fill":10485760}"#, None).unwrap();
    let mut large = swaps(&*rt, "blob", &blob, 50);
    common::record(
        "swap-10mb",
        "swap latency, 10 MB state",
        &mut large,
        "state saved, copied to the host and restored",
    );

    // Rollback: a switch between two loaded versions, state carried.
    let rt = launch(dir.path());
    rt.load(&counter, 1).unwrap();
    rt.load(&counter, 2).unwrap();
    rt.swap(&[SwapStep::new("counter", 1)]).unwrap();
    let mut rollbacks: Vec<Duration> = (0..2000)
        .map(|i| {
            let t = Instant::now();
            rt.swap(&[SwapStep::new("counter", 2 - (i % 2))]).unwrap();
            t.elapsed()
        })
        .collect();
    common::record(
        "rollback",
        "rollback latency (switch to a retained version)",
        &mut rollbacks,
        "counter, state carried",
    );

    // Memory kept per retained version.
    let rt = launch(dir.path());
    let before = common::rss();
    for v in 1..=20 {
        rt.load(&counter, v).unwrap();
    }
    let per_version = (common::rss().saturating_sub(before)) as f64 / 20.0;
    let mem_dir = sandbox_testkit::repo_root()
        .join("target")
        .join("sandbox-bench");
    let _ = std::fs::create_dir_all(&mem_dir);
    let _ = std::fs::write(
        mem_dir.join("memory-per-version.json"),
        serde_json::json!({
            "name": "memory kept per retained version (RSS)",
            "p50_ns": null, "p99_ns": null, "n": 20,
            "note": format!("{:.2} MiB per version (counter, {} KiB library)", per_version / 1048576.0,
                std::fs::metadata(&counter).map(|m| m.len() / 1024).unwrap_or(0)),
        })
        .to_string(),
    );
    eprintln!(
        "memory per retained version: {:.2} MiB",
        per_version / 1048576.0
    );

    // Criterion: create on a cache hit (compile answered from the cache, load, start).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let manager = Manager::new(sandbox_testkit::test_config(dir.path())).unwrap();
    let mut group = c.benchmark_group("lifecycle");
    group.sample_size(30);
    group.bench_function("create on a cache hit (+ destroy)", |b| {
        b.to_async(&runtime).iter(|| async {
            manager
                .create("bench", SandboxSpec::trusted(&counter_src))
                .await
                .unwrap();
            manager.destroy("bench").await.unwrap();
        })
    });
    let rt = launch(dir.path());
    rt.load(&counter, 1).unwrap();
    rt.load(&counter, 2).unwrap();
    rt.swap(&[SwapStep::new("counter", 1)]).unwrap();
    let mut flip = 1;
    group.bench_function("rollback (switch between two loaded versions)", |b| {
        b.iter(|| {
            flip = 3 - flip;
            rt.swap(&[SwapStep::new("counter", flip)]).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, hot_swap);
criterion_main!(benches);
