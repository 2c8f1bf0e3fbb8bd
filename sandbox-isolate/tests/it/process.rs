//! The process backend does everything the in-process one does (the shared
//! scenarios, each in a real jailed worker process), plus what only a
//! worker process can: be killed, crash, be pooled.

use std::path::Path;
use std::time::Duration;

use crossbeam_channel::Receiver;
use sandbox_isolate::{Crash, Error, IsolationKind, Isolator, Limit, Runtime, SwapStep};

use crate::scenarios;
use crate::support::{self, add, counter, start};

/// A worker runtime named `name` in `dir`, and its crash reports.
fn launch_watched(dir: &Path, name: &str) -> (Box<dyn Runtime>, Receiver<Crash>) {
    let (spec, crashes) = support::spec(dir, name);
    let rt = support::isolator().launch(&spec).expect("launch");
    (rt, crashes)
}

fn runtime(dir: &Path) -> Box<dyn Runtime> {
    launch_watched(dir, "rt").0
}

scenarios::backend_tests!(runtime);

#[test]
fn loads_a_plugin_and_reads_its_metadata() {
    let (dir, rt) = scenarios::load_counter_and_check_its_metadata(&runtime);
    let info = rt.info();
    assert_eq!(info.isolation, IsolationKind::PROCESS);
    assert_ne!(info.pid, std::process::id());
    assert!(!support::gone(info.pid));
    drop(rt);
    assert!(support::gone(info.pid), "the worker outlived its runtime");
    assert!(
        !dir.path().join("rt").exists(),
        "the work folder outlived its runtime"
    );
}

#[test]
fn a_call_past_its_timeout_kills_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, crashes) = launch_watched(dir.path(), "rt");
    let pid = rt.info().pid;
    support::time_out_a_hanging_probe(&*rt, dir.path(), 200);
    let crash = crashes
        .recv_timeout(Duration::from_secs(10))
        .expect("a crash report");
    assert_eq!(crash.limit, Some(Limit::CallTimeout), "{crash:?}");
    assert_eq!(crash.signal, Some(9), "{crash:?}");
    assert!(support::gone(pid));
    let err = rt.call("probe", br#"{"op":"echo"}"#, None).unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    assert!(crashes.try_recv().is_err(), "the crash was reported twice");
}

#[test]
fn a_worker_killed_from_outside_is_reported_once_and_a_new_one_resumes_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, crashes) = support::spec(dir.path(), "rt");
    let isolator = support::isolator();
    let rt = isolator.launch(&spec).unwrap();
    start(&*rt, &counter(), "counter");
    assert_eq!(add(&*rt, 41), 41);
    let saved = rt.checkpoint().unwrap();
    let pid = rt.info().pid;

    // SAFETY-free: kill(2) through rustix on the worker's host pid.
    let worker = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(worker, rustix::process::Signal::KILL).unwrap();
    let crash = crashes
        .recv_timeout(Duration::from_secs(10))
        .expect("a crash report");
    assert_eq!(crash.signal, Some(9), "{crash:?}");
    assert!(crash.cause.contains("SIGKILL"), "{crash:?}");
    assert!(support::gone(pid));
    let err = rt.call("counter", b"{}", None).unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    drop(rt);
    assert!(crashes.try_recv().is_err(), "reported twice");

    // What the Manager does: launch again and restore the checkpoint.
    let (spec, _crashes) = support::spec(dir.path(), "rt2");
    let rt = isolator.launch(&spec).unwrap();
    rt.load(&counter(), 1).unwrap();
    let (module, state) = saved.into_iter().next().unwrap();
    rt.swap(&[SwapStep {
        carry_state: false,
        initial_state: Some(state),
        ..SwapStep::new(module, 1)
    }])
    .unwrap();
    assert_eq!(add(&*rt, 1), 42);
}

#[test]
fn dropping_the_runtime_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, crashes) = launch_watched(dir.path(), "rt");
    let pid = rt.info().pid;
    drop(rt);
    assert!(support::gone(pid));
    assert!(
        crashes.try_recv().is_err(),
        "a deliberate drop was reported as a crash"
    );
}

#[test]
fn a_pooled_worker_serves_a_sandbox_like_a_fresh_one() {
    let isolator = support::isolator().with_pool(1);
    assert!(
        isolator.wait_for_pool(Duration::from_secs(20)),
        "the pool never filled"
    );
    let dir = tempfile::tempdir().unwrap();
    let (spec, _crashes) = support::spec(dir.path(), "pooled");
    let rt = isolator.launch(&spec).unwrap();
    start(&*rt, &counter(), "counter");
    assert_eq!(add(&*rt, 3), 3);
    let pid = rt.info().pid;
    drop(rt);
    assert!(support::gone(pid));
    // The pool refills in the background; dropping the isolator kills the spare.
    assert!(
        isolator.wait_for_pool(Duration::from_secs(20)),
        "the pool never refilled"
    );
    drop(isolator);
}

#[test]
fn calls_go_on_the_channel_when_the_worker_has_no_thread_for_a_lane() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spec, crashes) = support::spec(dir.path(), "rt");
    // The jail's reaper and init, the worker's main thread and one more: no
    // thread is left for a call lane.
    spec.limits.processes = Some(4);
    let rt = support::isolator().launch(&spec).unwrap();
    start(&*rt, &counter(), "counter");
    for n in 1..=20 {
        assert_eq!(add(&*rt, 1), n);
    }
    assert!(crashes.try_recv().is_err(), "the worker crashed");
    assert!(!support::gone(rt.info().pid));
}
