//! Compiler benchmarks on the `counter` example plugin:
//!
//! - `cache hit`: hashing the tree and answering from the cache;
//! - `cold compile`: a cache miss after `cargo clean -p counter`, so cargo
//!   recompiles the plugin crate itself (its dependencies stay built in the
//!   shared target directory).

// A bench reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, SamplingMode};
use sandbox_compiler::{BuildRequest, CargoCompiler, Compiler};
use sandbox_jail::spawn::{spawn, ChildSpec};

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
    let compiler = compiler_with_cache(cache.path());
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
    trust(c);
}

/// A compiler on the bench target dir with the plugin API as shared crate.
fn compiler_with_cache(cache: &Path) -> CargoCompiler {
    CargoCompiler::builder()
        .target_dir(target_dir())
        .cache_dir(cache)
        .shared_crate(repo_root().join("plugins/sandbox-plugin"))
        .build()
        .expect("compiler")
}

/// The own target dir the compiler gives untrusted tree `source`.
fn tree_dir(source: &Path) -> PathBuf {
    use sha2::Digest as _;
    let canonical = source.canonicalize().expect("canonical source");
    let key = hex::encode(sha2::Sha256::digest(
        canonical.as_os_str().as_encoded_bytes(),
    ));
    target_dir().join("sandbox-compiler/trees").join(&key[..24])
}

/// The cost of building untrusted source in the jail, beside the same build
/// trusted: a new tree (create: admission, its own target dir seeded with
/// the shared dependencies, fetch, build) and a one-line edit (reload).
fn trust(c: &mut Criterion) {
    let mut group = c.benchmark_group("build trust");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(20));
    for jailed in [false, true] {
        let label = if jailed { "jailed" } else { "trusted" };
        // Warm the seed and the shared dir once, outside the measurement.
        {
            let dir = tempfile::tempdir().expect("temp dir");
            let cache = tempfile::tempdir().expect("temp dir");
            let source = counter(dir.path());
            compiler_with_cache(cache.path())
                .build(&BuildRequest::new(&source).offline(true).jailed(jailed))
                .expect("warm-up build");
            let _ = std::fs::remove_dir_all(tree_dir(&source));
        }
        group.bench_function(format!("create, new tree ({label})"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let cache = tempfile::tempdir().expect("temp dir");
                    let source = counter(dir.path());
                    let compiler = compiler_with_cache(cache.path());
                    let request = BuildRequest::new(&source).offline(true).jailed(jailed);
                    let started = Instant::now();
                    let output = compiler.build(&request).expect("build");
                    total += started.elapsed();
                    assert!(!output.cached);
                    let _ = std::fs::remove_dir_all(tree_dir(&source));
                }
                total
            })
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = tempfile::tempdir().expect("temp dir");
        let source = counter(dir.path());
        let compiler = compiler_with_cache(cache.path());
        let request = BuildRequest::new(&source).offline(true).jailed(jailed);
        compiler.build(&request).expect("first build");
        let lib = source.join("src/lib.rs");
        let original = std::fs::read_to_string(&lib).expect("read lib.rs");
        let mut edit = 0u64;
        group.bench_function(format!("reload, one-line edit ({label})"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    edit += 1;
                    std::fs::write(&lib, format!("{original}\n// edit {edit}\n"))
                        .expect("edit lib.rs");
                    let started = Instant::now();
                    let output = compiler.build(&request).expect("incremental build");
                    total += started.elapsed();
                    assert!(!output.cached);
                }
                total
            })
        });
        let _ = std::fs::remove_dir_all(tree_dir(&source));
    }
    group.finish();
}

// `criterion_group!` defines an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(compile, super::benches);
}
criterion_main!(group::compile);
