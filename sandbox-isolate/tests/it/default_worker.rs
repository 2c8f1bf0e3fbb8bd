//! `Manager::new` runs process sandboxes with no isolator registered: the
//! default worker is found beside the executable (cargo puts the
//! `sandbox-worker` binary one folder up from this test), as documented on
//! `WorkerCommand::find_default`.

use sandbox_core::isolate::{IsolationKind, WorkerCommand};
use sandbox_core::{Manager, SandboxSpec};
use sandbox_testkit::{fixtures, test_config, unique_id};

#[test]
fn the_default_worker_is_the_sandbox_worker_program_cargo_built() {
    let found = WorkerCommand::find_default().unwrap();
    let built = std::path::Path::new(env!("CARGO_BIN_EXE_sandbox-worker"));
    assert_eq!(
        found.program.canonicalize().unwrap(),
        built.canonicalize().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manager_new_runs_a_process_sandbox_in_a_jailed_worker() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("counter");
    fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src).unwrap();
    let manager = Manager::new(test_config(dir.path())).unwrap();
    assert!(manager
        .isolation_kinds()
        .any(|k| *k == IsolationKind::PROCESS));
    // Trusted source, to build in the shared target dir; still a worker.
    let spec = SandboxSpec::new(&src)
        .isolation(IsolationKind::PROCESS)
        .profile(sandbox_core::security::Profile::Trusted);
    let sandbox = manager.create(unique_id("default"), spec).await.unwrap();
    let info = sandbox.info().unwrap();
    assert_eq!(info.isolation, IsolationKind::PROCESS);
    assert_ne!(info.pid, std::process::id(), "the module runs in a worker");
    let out = sandbox
        .call_json("counter", &serde_json::json!({"add": 3}))
        .await
        .unwrap();
    assert_eq!(out["value"], 3);
    sandbox.destroy().await.unwrap();
}
