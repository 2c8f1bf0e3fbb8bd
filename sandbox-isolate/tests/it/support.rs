//! Shared helpers: the worker binary, plugin builds, launch specs, waiting.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crossbeam_channel::Receiver;
use sandbox_isolate::spawn::ChildLimits;
use sandbox_isolate::{Crash, LaunchSpec, Process, WorkerCommand};

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
            sandbox_testkit::fixtures::build(dir)
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
