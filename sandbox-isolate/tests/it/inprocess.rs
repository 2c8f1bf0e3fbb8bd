//! The in-process backend: loading, ABI checks, calls, swaps.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sandbox_isolate::{
    Error, InProcess, Isolator, LaunchSpec, PluginErrorKind, Runtime, SavedState, SwapStep,
};
use sandbox_testkit::fixtures;

fn runtime(dir: &Path) -> Box<dyn Runtime> {
    InProcess::new()
        .launch(&LaunchSpec::new("test", dir.join("rt")))
        .expect("launch")
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
    // Copies are unlinked as soon as they are mapped: nothing stays behind.
    assert_eq!(std::fs::read_dir(dir.path().join("rt")).unwrap().count(), 0);
    assert_eq!(rt.info().loaded_versions, 1);
    assert_eq!(rt.info().pid, std::process::id());
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
fn a_call_past_its_timeout_returns_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    rt.load(&probe(dir.path(), "probe", &[], false, false), 1)
        .unwrap();
    rt.swap(&[SwapStep::new("probe", 1)]).unwrap();
    let err = rt
        .call(
            "probe",
            br#"{"op":"sleep","ms":2000}"#,
            Some(Duration::from_millis(100)),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("abandoned"), "{err}");
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
fn runtimes_sharing_a_folder_never_get_each_others_libraries() {
    // The loader matches a loaded library by path name even after its file
    // is gone: every load must use a path never used before in the process.
    let dir = tempfile::tempdir().unwrap();
    let first = runtime(dir.path());
    assert_eq!(first.load(&counter(), 1).unwrap().name, "counter");
    drop(first);
    let second = runtime(dir.path());
    let meta = second
        .load(&probe(dir.path(), "other", &[], false, false), 1)
        .unwrap();
    assert_eq!(meta.name, "other");
}
