//! Deadlines on every lifecycle entry point, not only `handle`: `init`,
//! `save_state` and `restore_state` that never return fail their swap with
//! a typed timeout, in-process and in a worker, and the runtime answers the
//! next request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::Receiver;
use sandbox_isolate::{
    Crash, Error, InProcess, Isolator, LaunchSpec, Limit, Runtime, SwapStage, SwapStep,
};
use sandbox_testkit::fixtures;

use crate::support::{self, call};

/// The lifecycle deadline the tests run with.
const LIFECYCLE: Duration = Duration::from_millis(500);

/// The library of module `m` hanging in `hang` (`none`: a well-behaved
/// one), built below `dir`.
fn stuck(dir: &Path, hang: &str) -> PathBuf {
    let src = dir.join(format!("deadline-{hang}"));
    fixtures::write_plugin(
        &src,
        &format!("deadline-{hang}"),
        &fixtures::stuck_plugin(hang),
    )
    .unwrap();
    fixtures::build(&src).unwrap().remove(0).path
}

fn in_process(dir: &Path) -> (Box<dyn Runtime>, Option<Receiver<Crash>>) {
    let mut spec = LaunchSpec::new("deadlines", dir.join("rt"));
    spec.lifecycle_timeout = Some(LIFECYCLE);
    (InProcess::new().launch(&spec).expect("launch"), None)
}

fn in_worker(dir: &Path) -> (Box<dyn Runtime>, Option<Receiver<Crash>>) {
    let (mut spec, crashes) = support::spec(dir, "deadlines");
    spec.lifecycle_timeout = Some(LIFECYCLE);
    (
        support::isolator().launch(&spec).expect("launch"),
        Some(crashes),
    )
}

type Launch = fn(&Path) -> (Box<dyn Runtime>, Option<Receiver<Crash>>);

/// Asserts `err` is a swap of `m` that failed at `stage` because the plugin
/// overran the lifecycle deadline.
fn assert_timed_out(err: &Error, stage: SwapStage) {
    match err {
        Error::Swap {
            module,
            stage: failed,
            source,
            ..
        } => {
            assert_eq!((module.as_str(), *failed), ("m", stage), "{err}");
            assert!(
                matches!(**source, Error::Timeout { after, .. } if after == LIFECYCLE),
                "{err}"
            );
        }
        other => panic!("expected a swap that timed out at {stage}, got: {other}"),
    }
}

fn add(rt: &dyn Runtime, n: i64) -> Result<i64, Error> {
    call(rt, "m", serde_json::json!({ "add": n })).map(|v| v["value"].as_i64().unwrap())
}

/// A first start whose `init` never returns fails; nothing is left
/// running and the runtime starts a good version next.
fn an_init_that_never_returns_fails_the_start(launch: Launch) {
    let dir = tempfile::tempdir().unwrap();
    let (hang, good) = (stuck(dir.path(), "init"), stuck(dir.path(), "none"));
    let (rt, crashes) = launch(dir.path());
    rt.load(&hang, 1).unwrap();
    let err = rt.swap(&[SwapStep::new("m", 1)]).unwrap_err();
    assert_timed_out(&err, SwapStage::Init);
    assert!(rt.info().modules.is_empty(), "{:?}", rt.info());
    rt.load(&good, 2).unwrap();
    rt.swap(&[SwapStep::new("m", 2)]).unwrap();
    assert_eq!(add(&*rt, 3).unwrap(), 3);
    if let Some(crashes) = crashes {
        assert!(crashes.try_recv().is_err(), "the worker was killed");
    }
}

/// A swap to a version whose `init` or `restore_state` never returns is
/// rolled back: the old version keeps serving with its state.
fn a_new_version_that_never_starts_leaves_the_old_one_serving(launch: Launch, at: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (good, hang) = (stuck(dir.path(), "none"), stuck(dir.path(), at));
    let (rt, crashes) = launch(dir.path());
    support::start(&*rt, &good, "m");
    assert_eq!(add(&*rt, 5).unwrap(), 5);
    rt.load(&hang, 2).unwrap();
    let err = rt.swap(&[SwapStep::new("m", 2)]).unwrap_err();
    let stage = if at == "init" {
        SwapStage::Init
    } else {
        SwapStage::Restore
    };
    assert_timed_out(&err, stage);
    assert_eq!(rt.info().modules, [("m".to_owned(), 1)]);
    assert_eq!(add(&*rt, 1).unwrap(), 6);
    // A worker keeps the abandoned thread and says it wants replacing; in
    // process nothing can replace the host.
    assert_eq!(rt.needs_replacing().is_some(), crashes.is_some());
    if let Some(crashes) = crashes {
        assert!(crashes.try_recv().is_err(), "the worker was killed");
    }
}

#[test]
fn in_process_an_init_that_never_returns_fails_the_start() {
    an_init_that_never_returns_fails_the_start(in_process);
}

#[test]
fn in_a_worker_an_init_that_never_returns_fails_the_start() {
    an_init_that_never_returns_fails_the_start(in_worker);
}

#[test]
fn in_process_a_swap_to_an_init_that_never_returns_is_rolled_back() {
    a_new_version_that_never_starts_leaves_the_old_one_serving(in_process, "init");
}

#[test]
fn in_a_worker_a_swap_to_an_init_that_never_returns_is_rolled_back() {
    a_new_version_that_never_starts_leaves_the_old_one_serving(in_worker, "init");
}

#[test]
fn in_process_a_swap_to_a_restore_that_never_returns_is_rolled_back() {
    a_new_version_that_never_starts_leaves_the_old_one_serving(in_process, "restore");
}

#[test]
fn in_a_worker_a_swap_to_a_restore_that_never_returns_is_rolled_back() {
    a_new_version_that_never_starts_leaves_the_old_one_serving(in_worker, "restore");
}

#[test]
fn in_process_a_save_state_that_never_returns_fails_the_swap_and_the_module_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (hang, good) = (stuck(dir.path(), "save"), stuck(dir.path(), "none"));
    let (rt, _) = in_process(dir.path());
    support::start(&*rt, &hang, "m");
    assert_eq!(add(&*rt, 5).unwrap(), 5);
    rt.load(&good, 2).unwrap();
    let err = rt.swap(&[SwapStep::new("m", 2)]).unwrap_err();
    assert_timed_out(&err, SwapStage::Save);
    assert!(err.to_string().contains("abandoned"), "{err}");
    // The instance went with the thread that never returned: calls are
    // told so at once instead of waiting for it.
    let err = add(&*rt, 1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Abandoned {
                stage: SwapStage::Save,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("restart the sandbox"), "{err}");
    // The runtime answers, and a new swap starts the module afresh.
    rt.swap(&[SwapStep::new("m", 2)]).unwrap();
    assert_eq!(add(&*rt, 2).unwrap(), 2);
}

#[test]
fn in_a_worker_a_save_state_that_never_returns_kills_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (hang, good) = (stuck(dir.path(), "save"), stuck(dir.path(), "none"));
    let (rt, crashes) = in_worker(dir.path());
    let crashes = crashes.unwrap();
    support::start(&*rt, &hang, "m");
    assert_eq!(add(&*rt, 5).unwrap(), 5);
    rt.load(&good, 2).unwrap();
    let err = rt.swap(&[SwapStep::new("m", 2)]).unwrap_err();
    assert_timed_out(&err, SwapStage::Save);
    let text = err.to_string();
    assert!(
        text.contains("killed its worker") && !text.contains("abandoned"),
        "{text}"
    );
    let crash = crashes
        .recv_timeout(Duration::from_secs(10))
        .expect("a crash report");
    assert_eq!(crash.limit, Some(Limit::LifecycleTimeout), "{crash:?}");
    assert!(crash.cause.contains("save_state of `m`"), "{crash:?}");
}

#[test]
fn in_a_worker_a_checkpoint_whose_save_state_never_returns_kills_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let hang = stuck(dir.path(), "save");
    let (rt, crashes) = in_worker(dir.path());
    support::start(&*rt, &hang, "m");
    let err = rt.checkpoint().unwrap_err();
    assert!(matches!(err, Error::Timeout { stopped: true, .. }), "{err}");
    let crash = crashes
        .unwrap()
        .recv_timeout(Duration::from_secs(10))
        .expect("a crash report");
    assert_eq!(crash.limit, Some(Limit::LifecycleTimeout), "{crash:?}");
}

/// Through the `Manager`, in a worker: a reload whose new `init` never
/// returns fails with a timeout, and the worker holding the abandoned code
/// is replaced by a fresh one from the live state (`recycled`) before the
/// reload answers — the old version serves on, nothing answered is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_manager_replaces_a_worker_left_with_an_init_that_never_returns() {
    use sandbox_core::{EventKind, Manager, SandboxSpec, Status};
    use sandbox_testkit::{test_config, unique_id};

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fixtures::write_plugin(&src, "deadline", &fixtures::stuck_plugin("none")).unwrap();
    let manager = Manager::builder(test_config(dir.path()))
        .isolator(sandbox_isolate::Process::new(support::worker()))
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    let id = unique_id("hang");
    let mut spec = SandboxSpec::new(&src)
        .isolation(sandbox_core::isolate::IsolationKind::PROCESS)
        .profile(sandbox_core::security::Profile::Trusted);
    spec.limits.lifecycle_timeout = Some(LIFECYCLE);
    manager.create(id.clone(), spec).await.unwrap();
    let add = |n: i64| {
        let manager = manager.clone();
        let id = id.clone();
        async move {
            manager
                .call_json(id.as_str(), "m", &serde_json::json!({ "add": n }))
                .await
                .unwrap()["value"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!(add(5).await, 5);
    let first = manager.info(id.as_str()).unwrap().pid;
    fixtures::write_plugin(&src, "deadline", &fixtures::stuck_plugin("init")).unwrap();
    let err = manager.hot_reload(id.as_str()).await.unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    // Replaced before the reload answered.
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event.kind);
    }
    assert!(
        seen.iter().any(|k| matches!(k, EventKind::Recycled { .. })),
        "{seen:?}"
    );
    let info = manager.info(id.as_str()).unwrap();
    assert_ne!(info.pid, first);
    assert_eq!(info.status, Status::Running);
    assert_eq!(info.modules[0].version, 1);
    assert!(
        support::gone(first),
        "the worker with the abandoned init lives on"
    );
    assert_eq!(add(1).await, 6);
    manager.shutdown().await;
}
