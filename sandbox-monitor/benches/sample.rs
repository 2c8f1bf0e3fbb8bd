//! How long one `/proc` sample of a process takes.

// A bench reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use sandbox_monitor::{Monitor, ProcMonitor, ResourceLimits};

fn sample(c: &mut Criterion) {
    let monitor = ProcMonitor::new();
    if let Err(e) = monitor.register("bench", std::process::id(), ResourceLimits::default()) {
        eprintln!("cannot monitor the bench process: {e}");
        return;
    }
    c.bench_function("proc_monitor_sample_self", |b| {
        b.iter(|| monitor.sample("bench").map(|u| u.memory_bytes).unwrap_or(0))
    });
}

criterion_group!(benches, sample);
criterion_main!(benches);
