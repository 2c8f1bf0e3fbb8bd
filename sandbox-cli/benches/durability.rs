//! What every-call durability costs: one call's round trip through the
//! `Manager` to a jailed worker (this package's `sandbox __worker`), with
//! state saved on an interval (the default) and after every call, for a
//! module with a few bytes of state (the counter example) and one with
//! 1 MiB.
//!
//! - `durability/<interval|every_call>/<small|1mib>`: criterion, one call
//!   at a time (so every call pays for its own save; concurrent calls
//!   share saves).
//!
//! It lives here, not in `sandbox-core`, because this package has a worker
//! binary to start (`CARGO_BIN_EXE_sandbox`).

// A bench reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(missing_docs)]

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sandbox_core::isolate::{Process, WorkerCommand};
use sandbox_core::{Config, Durability, Manager, SandboxSpec};

/// A module holding 1 MiB of state; each call changes one byte of it.
const BIG: &str = r#"
use sandbox_plugin::{export_plugin, Host, Plugin, Result};

pub struct Big { data: Vec<u8>, calls: u64 }

impl Default for Big {
    fn default() -> Self { Self { data: vec![0; 1 << 20], calls: 0 } }
}

impl Plugin for Big {
    const NAME: &'static str = "big";
    const SCHEMA: u32 = 1;

    fn handle(&mut self, _host: &Host<'_>, _request: &[u8]) -> Result<Vec<u8>> {
        self.calls += 1;
        let i = self.calls as usize % self.data.len();
        self.data[i] = self.data[i].wrapping_add(1);
        Ok(self.calls.to_string().into_bytes())
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(self.data.clone())
    }

    fn restore_state(&mut self, _host: &Host<'_>, bytes: &[u8], _from_schema: u32) -> Result<()> {
        self.data = bytes.to_vec();
        Ok(())
    }
}

export_plugin!(Big);
"#;

fn manager(scratch: &Path) -> Manager {
    let worker = WorkerCommand {
        program: env!("CARGO_BIN_EXE_sandbox").into(),
        args: vec!["__worker".into()],
    };
    Manager::builder(Config {
        work_dir: scratch.join("work"),
        ..Config::with_cache_root(sandbox_testkit::shared_cache_root())
    })
    .isolator(Process::new(worker))
    .build()
    .expect("a manager")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let counter = scratch.path().join("counter");
    sandbox_testkit::fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &counter)
        .expect("copy the counter");
    let big = sandbox_testkit::fixtures::write_plugin(&scratch.path().join("big"), "big", BIG)
        .expect("write the big-state module");
    let manager = manager(scratch.path());
    let cases = [
        ("small", &counter, "counter", &br#"{"add":1}"#[..]),
        ("1mib", &big, "big", &b"{}"[..]),
    ];
    let mut group = c.benchmark_group("durability");
    group.measurement_time(Duration::from_secs(5));
    for (size, src, module, input) in cases {
        for (name, durability) in [
            ("interval", Durability::ConfigInterval),
            ("every_call", Durability::EveryCall),
        ] {
            let id = format!("{module}-{name}");
            rt.block_on(manager.create(id.as_str(), SandboxSpec::new(src).durability(durability)))
                .expect("create the sandbox");
            group.bench_function(format!("{name}/{size}"), |b| {
                b.to_async(&rt).iter(|| async {
                    manager.call(&id, module, input).await.expect("a call");
                })
            });
            rt.block_on(manager.destroy(&id)).expect("destroy");
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
