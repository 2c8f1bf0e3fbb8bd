//! The process backend does everything the in-process one does: the same
//! scenarios as `inprocess.rs`, each in a real jailed worker process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sandbox_isolate::{
    Error, IsolationKind, Isolator, PluginErrorKind, Runtime, SavedState, SwapStep,
};
use sandbox_testkit::fixtures;

use crate::support;

fn runtime(dir: &Path) -> Box<dyn Runtime> {
    let (spec, _crashes) = support::spec(dir, "rt");
    support::isolator().launch(&spec).expect("launch")
}

fn counter() -> std::path::PathBuf {
    fixtures::build(&sandbox_testkit::example_dir("counter"))
        .expect("build counter")
        .remove(0)
        .path
}

fn add(rt: &dyn Runtime, n: i64) -> i64 {
    let out = rt
        .call("counter", format!(r#"{{"add":{n}}}"#).as_bytes(), None)
        .expect("call");
    serde_json::from_slice::<serde_json::Value>(&out).expect("json")["value"]
        .as_i64()
        .expect("value")
}

#[test]
fn loads_a_plugin_and_reads_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let meta = rt.load(&counter(), 1).unwrap();
    assert_eq!(meta.name, "counter");
    assert_eq!(meta.version, "0.1.0");
    assert_eq!(meta.schema, 2);
    assert!(meta.dependencies.is_empty() && !meta.pure);
    assert!(matches!(
        rt.load(&counter(), 1),
        Err(Error::AlreadyLoaded { version: 1, .. })
    ));
    // Copies are unlinked as soon as they are mapped: nothing stays behind
    // (the worker's own copy folder is empty).
    let files = walk_files(&dir.path().join("rt"));
    assert!(files.is_empty(), "{files:?}");
    let info = rt.info();
    assert_eq!(info.loaded_versions, 1);
    assert_eq!(info.isolation, IsolationKind::Process);
    assert_ne!(info.pid, std::process::id());
    assert!(!support::gone(info.pid));
    drop(rt);
    assert!(support::gone(info.pid), "the worker outlived its runtime");
    assert!(
        !dir.path().join("rt").exists(),
        "the work folder outlived its runtime"
    );
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            files.extend(walk_files(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}

#[test]
fn a_swap_carries_state_to_a_fresh_copy_of_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let lib = counter();
    rt.load(&lib, 1).unwrap();
    rt.swap(&[SwapStep {
        carry_state: false,
        ..SwapStep::new("counter", 1)
    }])
    .unwrap();
    assert_eq!(add(&*rt, 5), 5);
    // The same file loaded again is a distinct image (a fresh copy per version).
    rt.load(&lib, 2).unwrap();
    let out = rt.swap(&[SwapStep::new("counter", 2)]).unwrap();
    assert_eq!((out[0].from, out[0].to), (Some(1), 2));
    assert_eq!(out[0].carried.as_ref().map(|s| s.schema), Some(2));
    assert_eq!(add(&*rt, 1), 6);
    assert_eq!(rt.info().modules, vec![("counter".to_owned(), 2)]);
    // Back to 1 keeps the live state too.
    rt.swap(&[SwapStep::new("counter", 1)]).unwrap();
    assert_eq!(add(&*rt, 1), 7);
    assert!(matches!(
        rt.forget("counter", 1),
        Err(Error::VersionInUse { .. })
    ));
    rt.forget("counter", 2).unwrap();
    assert!(matches!(
        rt.swap(&[SwapStep::new("counter", 2)]),
        Err(Error::UnknownVersion { .. })
    ));
}

#[test]
fn a_library_that_is_not_a_plugin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let so = fixtures::build_raw(
        &sandbox_testkit::fixture_dir("not-a-plugin"),
        "not_a_plugin",
        &dir.path().join("n.so"),
    )
    .unwrap();
    let rt = runtime(dir.path());
    let err = rt.load(&so, 1).unwrap_err();
    assert!(matches!(err, Error::NotAPlugin { .. }), "{err}");
    assert!(err.to_string().contains("export_plugin!"), "{err}");
    assert_eq!(rt.info().loaded_versions, 0);
    let err = rt.load(&dir.path().join("missing.so"), 1).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn an_incompatible_plugin_is_refused_before_any_of_its_code_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = std::env::temp_dir().join("incompatible-api-ran");
    let _ = std::fs::remove_file(&marker);
    let so = fixtures::build_raw(
        &sandbox_testkit::fixture_dir("incompatible-api"),
        "incompatible_api",
        &dir.path().join("i.so"),
    )
    .unwrap();
    let rt = runtime(dir.path());
    let err = rt.load(&so, 1).unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("incompatible plugin API"), "{text}");
    assert!(!marker.exists(), "the incompatible library's code ran");
}

fn probe(
    dir: &Path,
    name: &str,
    deps: &[&str],
    panic_in_init: bool,
    fail_restore: bool,
) -> std::path::PathBuf {
    fixtures::build_probe(&dir.join(name), name, deps, panic_in_init, fail_restore)
        .expect("build probe")
        .path
}

fn call(
    rt: &dyn Runtime,
    module: &str,
    request: serde_json::Value,
) -> Result<serde_json::Value, Error> {
    rt.call(module, request.to_string().as_bytes(), None)
        .map(|out| serde_json::from_slice(&out).expect("json"))
}

#[test]
fn a_panic_in_a_plugin_is_an_error_and_the_module_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    rt.load(&probe(dir.path(), "probe", &[], false, false), 1)
        .unwrap();
    rt.swap(&[SwapStep::new("probe", 1)]).unwrap();
    let err = call(&*rt, "probe", serde_json::json!({"op": "panic"})).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Plugin {
                kind: PluginErrorKind::Panic,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("panics on purpose"), "{err}");
    let err = call(&*rt, "probe", serde_json::json!({"op": "fail"})).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Plugin {
                kind: PluginErrorKind::Failed,
                ..
            }
        ),
        "{err}"
    );
    let err = call(&*rt, "probe", serde_json::json!({"op": "nope"})).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Plugin {
                kind: PluginErrorKind::BadRequest,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        call(&*rt, "probe", serde_json::json!({"op": "add", "n": 2})).unwrap()["value"],
        2
    );
}

#[test]
fn calls_from_many_threads_are_safe_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let rt: Arc<dyn Runtime> = Arc::from(runtime(dir.path()));
    rt.load(&counter(), 1).unwrap();
    rt.swap(&[SwapStep::new("counter", 1)]).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let rt = Arc::clone(&rt);
            std::thread::spawn(move || {
                for _ in 0..500 {
                    rt.call("counter", br#"{"add":1}"#, None).expect("call");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(add(&*rt, 0), 4000);
}

#[test]
fn a_call_past_its_timeout_kills_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, crashes) = support::spec(dir.path(), "rt");
    let rt = support::isolator().launch(&spec).unwrap();
    rt.load(&probe(dir.path(), "probe", &[], false, false), 1)
        .unwrap();
    rt.swap(&[SwapStep::new("probe", 1)]).unwrap();
    let pid = rt.info().pid;
    let err = rt
        .call(
            "probe",
            br#"{"op":"sleep","ms":20000}"#,
            Some(Duration::from_millis(200)),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let crash = crashes
        .recv_timeout(Duration::from_secs(10))
        .expect("a crash report");
    assert_eq!(crash.limit.as_deref(), Some("call_timeout"), "{crash:?}");
    assert_eq!(crash.signal, Some(9), "{crash:?}");
    assert!(support::gone(pid));
    let err = rt.call("probe", br#"{"op":"echo"}"#, None).unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    assert!(crashes.try_recv().is_err(), "the crash was reported twice");
}

#[test]
fn modules_call_declared_dependencies_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    rt.load(&probe(dir.path(), "leaf", &[], false, false), 1)
        .unwrap();
    rt.load(&probe(dir.path(), "caller", &["leaf"], false, false), 1)
        .unwrap();
    rt.swap(&[SwapStep::new("leaf", 1), SwapStep::new("caller", 1)])
        .unwrap();
    let out = call(
        &*rt,
        "caller",
        serde_json::json!({"op": "call", "module": "leaf", "input": {"op": "add", "n": 3}}),
    );
    assert_eq!(out.unwrap()["value"], 3);
    let err = call(
        &*rt,
        "leaf",
        serde_json::json!({"op": "call", "module": "caller", "input": {"op": "echo"}}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("without declaring it"), "{err}");
    let err = call(
        &*rt,
        "caller",
        serde_json::json!({"op": "call", "module": "caller", "input": {}}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("without declaring it"), "{err}");
}

#[test]
fn a_failed_batch_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    rt.load(&probe(dir.path(), "a", &[], false, false), 1)
        .unwrap();
    rt.load(&probe(dir.path(), "b", &[], false, false), 1)
        .unwrap();
    rt.swap(&[SwapStep::new("a", 1), SwapStep::new("b", 1)])
        .unwrap();
    call(&*rt, "a", serde_json::json!({"op": "add", "n": 10})).unwrap();
    call(&*rt, "b", serde_json::json!({"op": "add", "n": 20})).unwrap();
    // Version 2 of `b` panics in init: the batch (a ok, then b) must leave both on 1.
    let bad = dir.path().join("b2");
    let lib = fixtures::build_probe(&bad, "b", &[], true, false)
        .unwrap()
        .path;
    rt.load(&lib, 2).unwrap();
    let a2 = fixtures::build_probe(&dir.path().join("a-v2"), "a", &[], false, false)
        .unwrap()
        .path;
    rt.load(&a2, 2).unwrap();
    let err = rt
        .swap(&[SwapStep::new("a", 2), SwapStep::new("b", 2)])
        .unwrap_err();
    assert!(
        matches!(err, Error::Swap { ref module, stage: sandbox_isolate::SwapStage::Init, .. } if module == "b"),
        "{err}"
    );
    assert_eq!(
        rt.info().modules,
        vec![("a".to_owned(), 1), ("b".to_owned(), 1)]
    );
    assert_eq!(
        call(&*rt, "a", serde_json::json!({"op": "add", "n": 1})).unwrap()["value"],
        11
    );
    assert_eq!(
        call(&*rt, "b", serde_json::json!({"op": "add", "n": 1})).unwrap()["value"],
        21
    );
}

#[test]
fn a_host_migration_rewrites_state_across_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let v1 = dir.path().join("v1");
    fixtures::write_plugin(&v1, "counter", fixtures::COUNTER_SCHEMA_1).unwrap();
    let v1 = fixtures::build(&v1).unwrap().remove(0).path;
    rt.load(&v1, 1).unwrap();
    rt.swap(&[SwapStep::new("counter", 1)]).unwrap();
    assert_eq!(add(&*rt, 4), 4);
    rt.load(&counter(), 2).unwrap();
    // The host migration turns schema 1 `{"total": n}` into schema 2 `{"value": n, "calls": 100}`.
    let migration: sandbox_isolate::Migration = Arc::new(|bytes, from, to| {
        assert_eq!((from, to), (1, 2));
        let old: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(serde_json::json!({"value": old["total"], "calls": 100})
            .to_string()
            .into_bytes())
    });
    let out = rt
        .swap(&[SwapStep {
            migration: Some(migration),
            ..SwapStep::new("counter", 2)
        }])
        .unwrap();
    assert_eq!(
        out[0].carried,
        Some(SavedState {
            schema: 1,
            bytes: br#"{"total":4}"#.to_vec()
        })
    );
    let reply = rt.call("counter", br#"{"add":1}"#, None).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&reply).unwrap(),
        serde_json::json!({"value": 5, "calls": 101})
    );
    let saved = rt.checkpoint().unwrap();
    assert_eq!(saved[0].0, "counter");
    assert_eq!(saved[0].1.schema, 2);
}

#[test]
fn a_worker_killed_from_outside_is_reported_once_and_a_new_one_resumes_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, crashes) = support::spec(dir.path(), "rt");
    let isolator = support::isolator();
    let rt = isolator.launch(&spec).unwrap();
    rt.load(&counter(), 1).unwrap();
    rt.swap(&[SwapStep::new("counter", 1)]).unwrap();
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
    let (spec, crashes) = support::spec(dir.path(), "rt");
    let rt = support::isolator().launch(&spec).unwrap();
    let pid = rt.info().pid;
    drop(rt);
    assert!(support::gone(pid));
    assert!(
        crashes.try_recv().is_err(),
        "a deliberate drop was reported as a crash"
    );
}

#[test]
fn calls_wait_for_a_swap_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let rt: Arc<dyn Runtime> = Arc::from(runtime(dir.path()));
    rt.load(&counter(), 1).unwrap();
    rt.load(&counter(), 2).unwrap();
    rt.swap(&[SwapStep::new("counter", 1)]).unwrap();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let rt = Arc::clone(&rt);
            std::thread::spawn(move || {
                for _ in 0..100 {
                    rt.call("counter", br#"{"add":1}"#, None)
                        .expect("no call fails during swaps");
                }
            })
        })
        .collect();
    for i in 0..20 {
        let version = if i % 2 == 0 { 2 } else { 1 };
        rt.swap(&[SwapStep::new("counter", version)]).unwrap();
    }
    for c in callers {
        c.join().unwrap();
    }
    assert_eq!(add(&*rt, 0), 400);
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
    rt.load(&counter(), 1).unwrap();
    rt.swap(&[SwapStep::new("counter", 1)]).unwrap();
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
