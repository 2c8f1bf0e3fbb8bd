//! Shared helpers: the worker binary, plugin builds, launch specs, waiting,
//! and the small steps every backend's tests take (load and start a module,
//! call it, classify its errors).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_channel::Receiver;
use sandbox_isolate::spawn::ChildLimits;
use sandbox_isolate::{
    Crash, Error, LaunchSpec, PluginErrorKind, Process, Runtime, SwapStep, WorkerCommand,
};
use sandbox_testkit::fixtures;

/// The `sandbox-worker` binary of this crate.
pub fn worker() -> WorkerCommand {
    WorkerCommand::new(env!("CARGO_BIN_EXE_sandbox-worker"))
}

/// A process isolator with the default (all layers required) jail, a
/// 1 MiB output cap and a 256 MiB disk cap.
pub fn isolator() -> Process {
    Process::new(worker())
        .output_limit(Some(1 << 20))
        .disk_limit(Some(256 << 20))
}

/// Builds the Cargo project at `dir` once per test binary (the shared
/// target dir and build cache of `sandbox-testkit` make later runs cheap)
/// and returns its artifacts by module crate name.
pub fn artifacts(dir: &Path) -> HashMap<String, PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<PathBuf, HashMap<String, PathBuf>>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(dir.to_owned())
        .or_insert_with(|| {
            fixtures::build(dir)
                .unwrap_or_else(|e| panic!("building {}: {e}", dir.display()))
                .into_iter()
                .map(|a| (a.package, a.path))
                .collect()
        })
        .clone()
}

/// The hostile fixture's library.
pub fn hostile() -> PathBuf {
    artifacts(&sandbox_testkit::fixture_dir("hostile-attacks"))["hostile-attacks"].clone()
}

/// The folder every built artifact lives below.
pub fn artifact_dir() -> PathBuf {
    sandbox_testkit::shared_cache_root().join("builds")
}

/// Limits for tests: small enough that attacks hit them fast.
pub fn limits() -> ChildLimits {
    ChildLimits {
        address_space: Some(1 << 30),
        cpu_seconds: Some(60),
        file_size: Some(64 << 20),
        open_files: Some(128),
        processes: Some(48),
        core_size: Some(0),
    }
}

/// A launch spec for sandbox `name` with its work folder in `dir`, test
/// limits, and a crash handler feeding the returned channel.
pub fn spec(dir: &Path, name: &str) -> (LaunchSpec, Receiver<Crash>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut spec = LaunchSpec::new(name, dir.join(name));
    spec.artifact_dirs = vec![artifact_dir()];
    spec.limits = limits();
    spec.on_crash = Some(Arc::new(move |crash| {
        let _ = tx.send(crash);
    }));
    (spec, rx)
}

/// Whether process `pid` is gone (not even a zombie).
pub fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Every file below `dir`, at any depth (folders themselves are not listed).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            files.extend(files_below(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}

/// The `counter` example plugin's library.
pub fn counter() -> PathBuf {
    fixtures::build(&sandbox_testkit::example_dir("counter"))
        .expect("build counter")
        .remove(0)
        .path
}

/// A probe plugin named `name` depending on `deps`, built in `dir/name`.
pub fn probe(dir: &Path, name: &str, deps: &[&str]) -> PathBuf {
    fixtures::build_probe(&dir.join(name), name, deps, false, false)
        .expect("build probe")
        .path
}

/// Loads `artifact` as version 1 and swaps it in as `module`.
pub fn start(rt: &dyn Runtime, artifact: &Path, module: &str) {
    rt.load(artifact, 1).expect("load");
    rt.swap(&[SwapStep::new(module, 1)]).expect("swap in");
}

/// Starts a probe module on `rt` (built below `dir`) and makes a call that
/// never answers with a `timeout_ms` call timeout: the call must time out.
/// Returns the error.
pub fn time_out_a_hanging_probe(rt: &dyn Runtime, dir: &Path, timeout_ms: u64) -> Error {
    start(rt, &probe(dir, "probe", &[]), "probe");
    let request = serde_json::json!({"op": "hang"}).to_string();
    let err = rt
        .call(
            "probe",
            request.as_bytes(),
            Some(Duration::from_millis(timeout_ms)),
        )
        .expect_err("the call came back before its timeout");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    err
}

/// Sends `{"add": n}` to the `counter` module; returns the new value.
pub fn add(rt: &dyn Runtime, n: i64) -> i64 {
    let out = rt
        .call("counter", format!(r#"{{"add":{n}}}"#).as_bytes(), None)
        .expect("call");
    serde_json::from_slice::<serde_json::Value>(&out).expect("json")["value"]
        .as_i64()
        .expect("value")
}

/// Calls `module` with a JSON request and parses the JSON reply.
pub fn call(
    rt: &dyn Runtime,
    module: &str,
    request: serde_json::Value,
) -> Result<serde_json::Value, Error> {
    rt.call(module, request.to_string().as_bytes(), None)
        .map(|out| serde_json::from_slice(&out).expect("json"))
}

/// The class of `err` if it is an error the plugin returned.
pub fn plugin_error_kind(err: &Error) -> Option<PluginErrorKind> {
    match err {
        Error::Plugin { kind, .. } => Some(*kind),
        _ => None,
    }
}
