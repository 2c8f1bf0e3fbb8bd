//! What every backend does the same way, written once against `dyn Runtime`.
//! `inprocess.rs` and `process.rs` run each scenario as a test of their own
//! with [`backend_tests!`]; what differs between backends (timeouts, crashes,
//! the worker's lifetime) stays in their modules.

use std::path::Path;
use std::sync::Arc;

use sandbox_isolate::{Error, PluginErrorKind, Runtime, SavedState, SwapStage, SwapStep};
use sandbox_testkit::fixtures;
use serde_json::json;
use tempfile::TempDir;

use crate::support::{self, add, call, counter, probe, start};

/// Starts a runtime of the backend under test with its work folder at
/// `dir/rt`.
pub type Launch<'a> = &'a dyn Fn(&Path) -> Box<dyn Runtime>;

/// One `#[test]` per scenario below, each on runtimes started by `$launch`
/// (a `fn(&Path) -> Box<dyn Runtime>`). A new scenario goes in this list, so
/// every backend runs it.
macro_rules! backend_tests {
    ($launch:path) => {
        $crate::scenarios::backend_tests!(@each $launch;
            a_swap_carries_state_to_a_fresh_copy_of_the_library,
            every_load_of_a_file_is_a_fresh_image,
            a_library_that_is_not_a_plugin_is_refused,
            an_incompatible_plugin_is_refused_before_any_of_its_code_runs,
            a_panic_in_a_plugin_is_an_error_and_the_module_keeps_serving,
            calls_from_many_threads_are_safe_and_none_is_lost,
            calls_wait_for_a_swap_in_progress,
            modules_call_declared_dependencies_and_only_those,
            a_failed_batch_changes_nothing,
            a_host_migration_rewrites_state_across_schemas,
        );
    };
    (@each $launch:path; $($scenario:ident),+ $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                $crate::scenarios::$scenario(&$launch);
            }
        )+
    };
}
pub(crate) use backend_tests;

/// The first half of each backend's `loads_a_plugin_and_reads_its_metadata`:
/// loads `counter` into a fresh runtime and checks what `load` reports.
/// Returns the runtime (and its folder) for the backend's own checks.
pub fn load_counter_and_check_its_metadata(launch: Launch<'_>) -> (TempDir, Box<dyn Runtime>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = launch(dir.path());
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
    let files = support::files_below(&dir.path().join("rt"));
    assert!(files.is_empty(), "{files:?}");
    assert_eq!(rt.info().loaded_versions, 1);
    (dir, rt)
}

pub fn a_swap_carries_state_to_a_fresh_copy_of_the_library(launch: Launch<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = launch(dir.path());
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

/// The dynamic loader hands back the image it already has for a path or an
/// inode it has seen; each load must still get a library of its own (its
/// own statics), however it is loaded.
pub fn every_load_of_a_file_is_a_fresh_image(launch: Launch<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = launch(dir.path());
    let lib = probe(dir.path(), "probe", &[]);
    let image_calls = |rt: &dyn Runtime| {
        call(rt, "probe", json!({"op": "image"})).unwrap()["calls"]
            .as_u64()
            .unwrap()
    };
    start(&*rt, &lib, "probe");
    assert_eq!(image_calls(&*rt), 1);
    assert_eq!(image_calls(&*rt), 2);
    for version in [2, 3] {
        rt.load(&lib, version).unwrap();
        rt.swap(&[SwapStep::new("probe", version)]).unwrap();
        assert_eq!(image_calls(&*rt), 1, "version {version} shares an image");
    }
    // Back to the first image, which kept its own count.
    rt.swap(&[SwapStep::new("probe", 1)]).unwrap();
    assert_eq!(image_calls(&*rt), 3);
    // A second runtime loading the same file gets its own image too.
    let other = launch(&dir.path().join("other"));
    start(&*other, &lib, "probe");
    assert_eq!(image_calls(&*other), 1);
}

/// Builds the broken fixture `fixture` (library `lib_name`) and loads it
/// into a fresh runtime, which must refuse it; returns the runtime and the
/// error.
fn load_broken(
    launch: Launch<'_>,
    dir: &Path,
    fixture: &str,
    lib_name: &str,
) -> (Box<dyn Runtime>, Error) {
    let so = fixtures::build_raw(
        &sandbox_testkit::fixture_dir(fixture),
        lib_name,
        &dir.join(format!("{lib_name}.so")),
    )
    .unwrap();
    let rt = launch(dir);
    let err = rt.load(&so, 1).expect_err("a broken library was loaded");
    (rt, err)
}

pub fn a_library_that_is_not_a_plugin_is_refused(launch: Launch<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let (rt, err) = load_broken(launch, dir.path(), "not-a-plugin", "not_a_plugin");
    assert!(matches!(err, Error::NotAPlugin { .. }), "{err}");
    assert!(err.to_string().contains("export_plugin!"), "{err}");
    assert_eq!(rt.info().loaded_versions, 0);
    let err = rt.load(&dir.path().join("missing.so"), 1).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

pub fn an_incompatible_plugin_is_refused_before_any_of_its_code_runs(launch: Launch<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let marker = std::env::temp_dir().join("incompatible-api-ran");
    let _ = std::fs::remove_file(&marker);
    let (_rt, err) = load_broken(launch, dir.path(), "incompatible-api", "incompatible_api");
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("incompatible plugin API"), "{text}");
    assert!(!marker.exists(), "the incompatible library's code ran");
}

pub fn a_panic_in_a_plugin_is_an_error_and_the_module_keeps_serving(launch: Launch<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = launch(dir.path());
    start(&*rt, &probe(dir.path(), "probe", &[]), "probe");
    for (op, kind) in [
        ("panic", PluginErrorKind::Panic),
        ("fail", PluginErrorKind::Failed),
        ("nope", PluginErrorKind::BadRequest),
    ] {
        let err = call(&*rt, "probe", json!({ "op": op })).unwrap_err();
        assert_eq!(support::plugin_error_kind(&err), Some(kind), "{op}: {err}");
        if op == "panic" {
            assert!(err.to_string().contains("panics on purpose"), "{err}");
        }
    }
    assert_eq!(
        call(&*rt, "probe", json!({"op": "add", "n": 2})).unwrap()["value"],
        2
    );
}

/// Starts `threads` threads that each send `{"add":1}` to `counter`
/// `calls` times, all on `rt`; the returned handles end when they are done.
fn add_from_threads(
    rt: &Arc<dyn Runtime>,
    threads: usize,
    calls: usize,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|_| {
            let rt = Arc::clone(rt);
            std::thread::spawn(move || {
                for _ in 0..calls {
                    rt.call("counter", br#"{"add":1}"#, None)
                        .expect("no call fails");
                }
            })
        })
        .collect()
}

pub fn calls_from_many_threads_are_safe_and_none_is_lost(launch: Launch<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let rt: Arc<dyn Runtime> = Arc::from(launch(dir.path()));
    start(&*rt, &counter(), "counter");
    // More threads than a worker has call lanes: the rest share the channel.
    for t in add_from_threads(&rt, 12, 400) {
        t.join().unwrap();
    }
    assert_eq!(add(&*rt, 0), 4800);
}

pub fn calls_wait_for_a_swap_in_progress(launch: Launch<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let rt: Arc<dyn Runtime> = Arc::from(launch(dir.path()));
    start(&*rt, &counter(), "counter");
    rt.load(&counter(), 2).unwrap();
    let callers = add_from_threads(&rt, 4, 100);
    for i in 0..20 {
        let version = if i % 2 == 0 { 2 } else { 1 };
        rt.swap(&[SwapStep::new("counter", version)]).unwrap();
    }
    for c in callers {
        c.join().unwrap();
    }
    assert_eq!(add(&*rt, 0), 400);
}

pub fn modules_call_declared_dependencies_and_only_those(launch: Launch<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = launch(dir.path());
    rt.load(&probe(dir.path(), "leaf", &[]), 1).unwrap();
    rt.load(&probe(dir.path(), "caller", &["leaf"]), 1).unwrap();
    rt.swap(&[SwapStep::new("leaf", 1), SwapStep::new("caller", 1)])
        .unwrap();
    let out = call(
        &*rt,
        "caller",
        json!({"op": "call", "module": "leaf", "input": {"op": "add", "n": 3}}),
    );
    assert_eq!(out.unwrap()["value"], 3);
    for (from, to, input) in [
        ("leaf", "caller", json!({"op": "echo"})),
        ("caller", "caller", json!({})),
    ] {
        let err = call(
            &*rt,
            from,
            json!({"op": "call", "module": to, "input": input}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("without declaring it"),
            "{from} → {to}: {err}"
        );
    }
}

pub fn a_failed_batch_changes_nothing(launch: Launch<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = launch(dir.path());
    rt.load(&probe(dir.path(), "a", &[]), 1).unwrap();
    rt.load(&probe(dir.path(), "b", &[]), 1).unwrap();
    rt.swap(&[SwapStep::new("a", 1), SwapStep::new("b", 1)])
        .unwrap();
    call(&*rt, "a", json!({"op": "add", "n": 10})).unwrap();
    call(&*rt, "b", json!({"op": "add", "n": 20})).unwrap();
    // Version 2 of `b` panics in init: the batch (a ok, then b) must leave both on 1.
    let b2 = fixtures::build_probe(&dir.path().join("b2"), "b", &[], true, false)
        .unwrap()
        .path;
    rt.load(&b2, 2).unwrap();
    let a2 = fixtures::build_probe(&dir.path().join("a-v2"), "a", &[], false, false)
        .unwrap()
        .path;
    rt.load(&a2, 2).unwrap();
    let err = rt
        .swap(&[SwapStep::new("a", 2), SwapStep::new("b", 2)])
        .unwrap_err();
    assert!(
        matches!(err, Error::Swap { ref module, stage: SwapStage::Init, .. } if module == "b"),
        "{err}"
    );
    assert_eq!(
        rt.info().modules,
        vec![("a".to_owned(), 1), ("b".to_owned(), 1)]
    );
    for (module, value) in [("a", 11), ("b", 21)] {
        let out = call(&*rt, module, json!({"op": "add", "n": 1})).unwrap();
        assert_eq!(out["value"], value, "{module}");
    }
}

pub fn a_host_migration_rewrites_state_across_schemas(launch: Launch<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = launch(dir.path());
    let v1 = dir.path().join("v1");
    fixtures::write_plugin(&v1, "counter", fixtures::COUNTER_SCHEMA_1).unwrap();
    let v1 = fixtures::build(&v1).unwrap().remove(0).path;
    start(&*rt, &v1, "counter");
    assert_eq!(add(&*rt, 4), 4);
    rt.load(&counter(), 2).unwrap();
    // The host migration turns schema 1 `{"total": n}` into schema 2 `{"value": n, "calls": 100}`.
    let migration: sandbox_isolate::Migration = Arc::new(|bytes, from, to| {
        assert_eq!((from, to), (1, 2));
        let old: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(json!({"value": old["total"], "calls": 100})
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
        json!({"value": 5, "calls": 101})
    );
    let saved = rt.checkpoint().unwrap();
    assert_eq!(saved[0].0, "counter");
    assert_eq!(saved[0].1.schema, 2);
}
