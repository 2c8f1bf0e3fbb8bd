//! Compiler benchmarks on the `counter` example plugin:
//!
//! - `cache hit`: hashing the tree and answering from the cache;
//! - `cold compile`: a cache miss after `cargo clean -p counter`, so cargo
//!   recompiles the plugin crate itself (its dependencies stay built in the
//!   shared target directory).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, SamplingMode};
use sandbox_compiler::{BuildRequest, CargoCompiler, Compiler};
use sandbox_isolate::spawn::{spawn, ChildSpec};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_owned()
}

fn target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    base.join("compiler-tests-target")
}

/// A copy of the counter example whose plugin API dependency is absolute.
fn counter(dir: &Path) -> PathBuf {
    let from = repo_root().join("plugins/examples/counter");
    let to = dir.join("counter");
    std::fs::create_dir_all(to.join("src")).expect("create the copy");
    for file in ["Cargo.toml", "Cargo.lock", "src/lib.rs"] {
        std::fs::copy(from.join(file), to.join(file)).expect("copy the example");
    }
    let manifest = to.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("read the manifest");
    let api = repo_root().join("plugins/sandbox-plugin");
    let text = text.replace(
        "path = \"../../sandbox-plugin\"",
        &format!("path = {:?}", api.display().to_string()),
    );
    std::fs::write(manifest, text).expect("write the manifest");
    to
}

/// `cargo clean -p counter` in `source`, through the spawning chokepoint.
fn clean_counter(source: &Path) {
    let spec = ChildSpec::new("cargo")
        .args(["clean", "--offline", "-p", "counter", "--target-dir"])
        .arg(target_dir())
        .current_dir(source);
    let output = spawn(&spec)
        .expect("start cargo clean")
        .wait_with_output()
        .expect("run cargo clean");
    assert!(
        output.status.success(),
        "cargo clean failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = counter(dir.path());
    let request = BuildRequest::new(&source).offline(true);

    let cache = tempfile::tempdir().expect("temp dir");
    let compiler = CargoCompiler::builder()
        .target_dir(target_dir())
        .cache_dir(cache.path())
        .build()
        .expect("compiler");
    compiler
        .build(&request)
        .expect("the counter example builds");
    c.bench_function("cache hit", |b| {
        b.iter(|| {
            let output = compiler.build(&request).expect("cache hit");
            assert!(output.cached);
        })
    });

    let mut group = c.benchmark_group("cold");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("cold compile", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let cache = tempfile::tempdir().expect("temp dir");
                let compiler = CargoCompiler::builder()
                    .target_dir(target_dir())
                    .cache_dir(cache.path())
                    .build()
                    .expect("compiler");
                clean_counter(&source);
                let started = Instant::now();
                let output = compiler.build(&request).expect("cold build");
                total += started.elapsed();
                assert!(!output.cached);
            }
            total
        })
    });
    group.finish();
}

// `criterion_group!` defines an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(compile, super::benches);
}
criterion_main!(group::compile);
