//! The library's hand-over guarantees with real jailed workers (this
//! binary's `__worker`), under many concurrent callers: recycling a worker
//! after every swap and restarting it lose no answered call, and under
//! every-call durability neither does a `kill -9` of the worker.
//!
//! Each test counts the calls that were answered (`{"add": 1}` each) and
//! checks the counter's total equals that count at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sandbox_core::isolate::{Process, WorkerCommand};
use sandbox_core::{Config, Durability, EventKind, EventStream, Manager, SandboxSpec};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Long enough for a cold (jailed) build of the counter.
const BUILD: Duration = Duration::from_secs(600);
/// Long enough for anything but a build.
const STEP: Duration = Duration::from_secs(120);
/// Concurrent callers.
const CALLERS: usize = 8;

struct Counter {
    manager: Manager,
    id: String,
    src: PathBuf,
    events: EventStream,
    _tmp: tempfile::TempDir,
}

/// A copy of the counter example in a process sandbox of a manager of its
/// own whose workers are `sandbox __worker`.
async fn counter(recycle_after_swaps: u32, durability: Durability) -> Counter {
    let tmp = tempfile::tempdir().expect("temp dir");
    let src = tmp.path().join("counter");
    sandbox_testkit::fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src)
        .expect("copy the counter");
    let config = Config {
        recycle_after_swaps,
        ..sandbox_testkit::test_config(tmp.path())
    };
    let worker = WorkerCommand {
        program: env!("CARGO_BIN_EXE_sandbox").into(),
        args: vec!["__worker".into()],
    };
    let manager = Manager::builder(config)
        .isolator(Process::new(worker))
        .build()
        .expect("a manager");
    let events = manager.subscribe();
    let id = sandbox_testkit::unique_id("handover").to_string();
    let spec = SandboxSpec::new(&src).durability(durability);
    tokio::time::timeout(BUILD, manager.create(id.as_str(), spec))
        .await
        .expect("create within the build deadline")
        .expect("create");
    Counter {
        manager,
        id,
        src,
        events,
        _tmp: tmp,
    }
}

/// Callers adding 1 in a loop until told to stop; `acked` counts the
/// answered calls as they come.
struct Load {
    stop: watch::Sender<bool>,
    acked: watch::Receiver<u64>,
    tasks: JoinSet<(u64, u64, Vec<String>)>,
}

fn load(manager: &Manager, id: &str) -> Load {
    let (stop, stopped) = watch::channel(false);
    let (ack, acked) = watch::channel(0u64);
    let ack = Arc::new(ack);
    let mut tasks = JoinSet::new();
    for _ in 0..CALLERS {
        let (manager, id, stopped, ack) = (
            manager.clone(),
            id.to_owned(),
            stopped.clone(),
            Arc::clone(&ack),
        );
        tasks.spawn(async move {
            let (mut mine, mut failed, mut errors) = (0u64, 0u64, Vec::new());
            while !*stopped.borrow() {
                match manager.call_json(&id, "counter", &json!({"add": 1})).await {
                    Ok(_) => {
                        mine += 1;
                        ack.send_modify(|n| *n += 1);
                    }
                    Err(e) => {
                        // Keep a few to show; count them all.
                        if errors.len() < 5 {
                            errors.push(e.to_string());
                        }
                        failed += 1;
                        // Not running (a restart): wait for the status to change.
                        tokio::task::yield_now().await;
                    }
                }
            }
            (mine, failed, errors)
        });
    }
    Load { stop, acked, tasks }
}

impl Load {
    /// Waits until `more` calls beyond those answered so far are answered.
    async fn answered(&mut self, more: u64) {
        let target = *self.acked.borrow() + more;
        tokio::time::timeout(STEP, self.acked.wait_for(|n| *n >= target))
            .await
            .unwrap_or_else(|_| panic!("{more} more calls were not answered within {STEP:?}"))
            .expect("callers alive");
    }

    /// Stops the callers: the calls they saw answered, how many failed, and
    /// some of the errors.
    async fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.send_replace(true);
        let (mut acked, mut failed, mut errors) = (0, 0, Vec::new());
        while let Some(joined) = self.tasks.join_next().await {
            let (n, f, e) = joined.expect("a caller task");
            acked += n;
            failed += f;
            errors.extend(e);
        }
        (acked, failed, errors)
    }
}

async fn total(c: &Counter) -> i64 {
    let out = c
        .manager
        .call_json(&c.id, "counter", &json!({"add": 0}))
        .await
        .expect("read the total");
    out["value"].as_i64().expect("a value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recycling_after_every_swap_loses_no_answered_call() {
    let mut c = counter(1, Durability::default()).await;
    // A second version to swap back and forth between.
    sandbox_testkit::fixtures::bump_version(&c.src.join("Cargo.toml")).expect("bump");
    let pid = c.manager.info(&c.id).expect("info").pid;
    let mut load = load(&c.manager, &c.id);
    load.answered(200).await;
    c.manager.hot_reload(&c.id).await.expect("reload to v2");
    const SWAPS: u32 = 20;
    for i in 0..SWAPS {
        load.answered(50).await;
        let to = if i % 2 == 0 { 1 } else { 2 };
        c.manager
            .rollback(&c.id, "counter", to)
            .await
            .expect("rollback");
    }
    load.answered(50).await;
    let (acked, failed, errors) = load.finish().await;
    let recycled = std::iter::from_fn(|| c.events.try_recv().ok())
        .filter(|e| matches!(e.kind, EventKind::Recycled { .. }))
        .count();
    assert_eq!(
        recycled,
        SWAPS as usize + 1,
        "every swap recycled the worker"
    );
    assert_ne!(c.manager.info(&c.id).expect("info").pid, pid);
    assert_eq!(
        failed, 0,
        "calls wait during a recycle, they do not fail: {errors:?}"
    );
    assert_eq!(
        total(&c).await,
        acked as i64,
        "the total is the number of answered calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_during_calls_loses_no_answered_call() {
    let c = counter(0, Durability::default()).await;
    let mut load = load(&c.manager, &c.id);
    const RESTARTS: u32 = 10;
    for _ in 0..RESTARTS {
        load.answered(100).await;
        c.manager.restart(&c.id).await.expect("restart");
    }
    load.answered(100).await;
    let (acked, _refused_while_starting, _) = load.finish().await;
    assert_eq!(c.manager.info(&c.id).expect("info").restart_count, RESTARTS);
    assert_eq!(
        total(&c).await,
        acked as i64,
        "the total is the number of answered calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_every_call_durability_a_killed_worker_loses_no_answered_call() {
    let mut c = counter(0, Durability::EveryCall).await;
    let pid = c.manager.info(&c.id).expect("info").pid;
    let mut load = load(&c.manager, &c.id);
    load.answered(300).await;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("a pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill -9 the worker");
    let id = c.id.clone();
    sandbox_testkit::await_event(&mut c.events, "restarted", STEP, |e| {
        e.sandbox.as_str() == id && matches!(e.kind, EventKind::Restarted { .. })
    })
    .await
    .expect("the worker is restarted by itself");
    load.answered(300).await;
    let (acked, failed, errors) = load.finish().await;
    assert!(
        failed > 0,
        "some calls saw the worker die (else the kill missed the calls)"
    );
    assert_ne!(c.manager.info(&c.id).expect("info").pid, pid);
    assert_eq!(
        total(&c).await,
        acked as i64,
        "the total is the number of answered calls ({failed} failed, e.g. {errors:?})"
    );
}
