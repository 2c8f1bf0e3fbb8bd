//! Call overhead: a call through the plugin boundary against a direct call
//! of the same code, and through the async `Manager` for reference.

// A bench reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sandbox_core::compiler::Profile;
use sandbox_core::isolate::{InProcess, Isolator, LaunchSpec, SwapStep};
use sandbox_core::{Config, Manager, SandboxSpec};

mod common;

#[inline(never)]
fn direct_echo(request: &[u8]) -> Vec<u8> {
    request.to_vec()
}

fn calls(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("echo");
    sandbox_testkit::fixtures::write_plugin(&src, "echo-bench", common::ECHO).unwrap();
    let lib = common::build(&src, Profile::Release);
    let rt = InProcess::new()
        .launch(&LaunchSpec::new("bench", dir.path().join("rt")))
        .unwrap();
    rt.load(&lib, 1).unwrap();
    rt.swap(&[SwapStep::new("echo", 1)]).unwrap();
    let request = br#"{"add":1}"#;

    let mut group = c.benchmark_group("call");
    group.bench_function("direct function call", |b| {
        b.iter(|| direct_echo(black_box(request)))
    });
    group.bench_function("in-process plugin call", |b| {
        b.iter(|| rt.call("echo", black_box(request), None).unwrap())
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let manager = Manager::new(sandbox_testkit::test_config(dir.path())).unwrap();
    runtime
        .block_on(manager.create("echo", SandboxSpec::trusted(&src)))
        .unwrap();
    group.bench_function("Manager::call (async, timeout guard)", |b| {
        b.to_async(&runtime).iter(|| async {
            manager
                .call("echo", "echo", black_box(request))
                .await
                .unwrap()
        })
    });
    group.finish();
    let _ = Config::default();
}

criterion_group!(benches, calls);
criterion_main!(benches);
