//! The in-process backend: the shared scenarios (loading, ABI checks,
//! calls, swaps) plus what only this backend does.

use std::path::Path;

use sandbox_isolate::{InProcess, Isolator, LaunchSpec, Runtime};

use crate::scenarios;
use crate::support::{self, counter, probe};

fn runtime(dir: &Path) -> Box<dyn Runtime> {
    InProcess::new()
        .launch(&LaunchSpec::new("test", dir.join("rt")))
        .expect("launch")
}

scenarios::backend_tests!(runtime);

#[test]
fn loads_a_plugin_and_reads_its_metadata() {
    let (dir, rt) = scenarios::load_counter_and_check_its_metadata(&runtime);
    // In process the copies go straight into the work folder: it is empty.
    assert_eq!(std::fs::read_dir(dir.path().join("rt")).unwrap().count(), 0);
    assert_eq!(rt.info().pid, std::process::id());
}

#[test]
fn a_call_past_its_timeout_returns_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let err = support::time_out_a_hanging_probe(&*rt, dir.path(), 100);
    assert!(err.to_string().contains("abandoned"), "{err}");
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
    let meta = second.load(&probe(dir.path(), "other", &[]), 1).unwrap();
    assert_eq!(meta.name, "other");
}

#[test]
fn a_started_call_answers_on_a_call_thread_and_an_unknown_module_at_once() {
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    support::start(&*rt, &counter(), "counter");
    let caller = std::thread::current().id();

    let (tx, rx) = mpsc::channel();
    let started = rt.start_call(
        "counter",
        br#"{"add":4}"#,
        Box::new(move |result| {
            let _ = tx.send((std::thread::current().id(), result));
        }),
    );
    assert!(started.is_ok(), "the in-process backend starts calls");
    let (thread, result) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_ne!(thread, caller, "the call ran on a call thread");
    let out: serde_json::Value = serde_json::from_slice(&result.unwrap()).unwrap();
    assert_eq!(out["value"], 4);

    // Refused before it starts: `done` hears at once, on the caller's thread.
    let (tx, rx) = mpsc::channel();
    let started = rt.start_call(
        "missing",
        b"{}",
        Box::new(move |result| {
            let _ = tx.send((std::thread::current().id(), result));
        }),
    );
    assert!(started.is_ok());
    let (thread, result) = rx.try_recv().unwrap();
    assert_eq!(thread, caller);
    assert!(matches!(
        result,
        Err(sandbox_isolate::Error::UnknownModule { .. })
    ));
}
