//! Create, info, list, restart, destroy, events.

use sandbox_core::{EventKind, Status};
use sandbox_testkit::{assert_module_version, assert_running, await_event, TestSandbox};
use serde_json::json;

use crate::BUILD;

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_is_created_called_and_destroyed() {
    let mut sb = TestSandbox::example("counter").await.unwrap();
    let id = sb.id.clone();
    assert_running(&sb.manager, id.as_str()).unwrap();
    assert_module_version(&sb.manager, id.as_str(), "counter", 1).unwrap();
    assert_eq!(
        sb.call("counter", json!({"add": 5})).await.unwrap()["value"],
        5
    );
    assert_eq!(
        sb.call("counter", json!({"add": 2})).await.unwrap()["value"],
        7
    );

    let info = sb.info().unwrap();
    assert_eq!(info.status, Status::Running);
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.modules.len(), 1);
    assert_eq!(info.modules[0].schema, 2);
    assert_eq!(info.restart_count, 0);
    assert!(info.created_at <= info.updated_at);
    assert_eq!(sb.manager.list().len(), 1);

    // The events of creation, in order.
    let names: Vec<&str> = {
        let mut names = Vec::new();
        while let Ok(e) = sb.events.try_recv() {
            names.push(e.kind.name());
        }
        names
    };
    let expected = [
        "created",
        "status",
        "compile_started",
        "compile_finished",
        "status",
        "swapped",
        "status",
    ];
    assert_eq!(names, expected);

    sb.manager.destroy(id.as_str()).await.unwrap();
    await_event(&mut sb.events, "destroyed", BUILD, |e| {
        e.kind == EventKind::Destroyed
    })
    .await
    .unwrap();
    assert!(sb.manager.list().is_empty());
    let err = sb
        .manager
        .call(id.as_str(), "counter", b"{}")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found");
    // The runtime's scratch folder is gone with it.
    assert!(
        sandbox_testkit::scratch_of(&sb.manager, id.as_str()).is_empty(),
        "scratch folders left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_rebuilds_instances_with_state_kept() {
    let mut sb = TestSandbox::example("counter").await.unwrap();
    sb.call("counter", json!({"add": 9})).await.unwrap();
    let info = sb.manager.restart(sb.id.as_str()).await.unwrap();
    assert_eq!(info.restart_count, 1);
    sb.await_event("restarted", BUILD, |k| {
        matches!(k, EventKind::Restarted { restart_count: 1 })
    })
    .await
    .unwrap();
    assert_eq!(
        sb.call("counter", json!({"add": 1})).await.unwrap()["value"],
        10
    );
    assert_module_version(&sb.manager, sb.id.as_str(), "counter", 1).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_sandbox_starts_its_modules_in_dependency_order() {
    let mut sb = TestSandbox::example("pipeline").await.unwrap();
    let mut order = Vec::new();
    while let Ok(e) = sb.events.try_recv() {
        if let EventKind::Swapped { module, .. } = e.kind {
            order.push(module);
        }
    }
    assert_eq!(order, ["tokenize", "score", "report"]);
    let out = sb
        .call("report", json!({"text": "Hot swapping Rust plugins"}))
        .await
        .unwrap();
    assert_eq!(out["summary"], "4 tokens, score 22");
    let info = sb.info().unwrap();
    let deps: Vec<(String, Vec<String>)> = info
        .modules
        .iter()
        .map(|m| (m.name.clone(), m.dependencies.clone()))
        .collect();
    assert_eq!(
        deps,
        [
            ("report".to_owned(), vec!["score".to_owned()]),
            ("score".to_owned(), vec!["tokenize".to_owned()]),
            ("tokenize".to_owned(), vec![])
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_log_lines_reach_the_host_tracing_subscriber() {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    // Plugin calls run on blocking threads, so the subscriber must be global
    // (each test runs in its own process under nextest; no other test sets one).
    tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");

    let sb = TestSandbox::from_snippet(
        "logger",
        &sandbox_testkit::fixtures::probe_plugin("logger", &[], false, false),
    )
    .await
    .unwrap();
    sb.call(
        "logger",
        json!({"op": "log", "message": "hello from the plugin"}),
    )
    .await
    .unwrap();
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("hello from the plugin"), "{text}");
    assert!(
        text.contains(&format!("sandbox=\"{}\"", sb.id))
            || text.contains(&format!("sandbox={}", sb.id)),
        "{text}"
    );
    assert!(
        text.contains("module=\"logger\"") || text.contains("module=logger"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_recreated_under_the_same_id_runs_its_new_code() {
    let sb = TestSandbox::example("counter").await.unwrap();
    let id = sb.id.clone();
    assert_eq!(
        sb.call("counter", json!({"add": 1})).await.unwrap()["value"],
        1
    );
    sb.manager.destroy(id.as_str()).await.unwrap();
    let lib = sb.read("src/lib.rs").unwrap();
    sb.write(
        "src/lib.rs",
        &lib.replacen("checked_add(add)", "checked_add(add * 100)", 1),
    )
    .unwrap();
    sb.manager
        .create(id.clone(), sandbox_core::SandboxSpec::trusted(sb.source()))
        .await
        .unwrap();
    assert_eq!(
        sb.call("counter", json!({"add": 1})).await.unwrap()["value"],
        100
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_manager_leaves_no_scratch_folder() {
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("counter");
    sandbox_testkit::fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src).unwrap();
    let config = sandbox_testkit::test_config(scratch.path());
    let work_dir = config.work_dir.clone();
    let manager = sandbox_core::Manager::new(config).unwrap();
    manager
        .create("a", sandbox_core::SandboxSpec::trusted(&src))
        .await
        .unwrap();
    assert!(work_dir.exists());
    drop(manager);
    assert!(!work_dir.exists(), "the work dir outlived its manager");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handle_does_what_the_manager_does_for_its_sandbox_and_sees_only_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("counter");
    sandbox_testkit::fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src).unwrap();
    let other = dir.path().join("other");
    sandbox_testkit::fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &other)
        .unwrap();
    let manager = sandbox_core::Manager::new(sandbox_testkit::test_config(dir.path())).unwrap();
    let counter = manager
        .create("h", sandbox_core::SandboxSpec::trusted(&src))
        .await
        .unwrap();
    let mut events = counter.events();
    manager
        .create("other", sandbox_core::SandboxSpec::trusted(&other))
        .await
        .unwrap();
    let out = counter
        .call_json("counter", &serde_json::json!({"add": 4}))
        .await
        .unwrap();
    assert_eq!(out["value"], 4);
    assert_eq!(counter.info().unwrap().id.as_str(), "h");
    assert_eq!(counter.versions("counter").unwrap().len(), 1);
    assert_eq!(manager.sandbox("h").unwrap().id().as_str(), "h");
    counter.clone().destroy().await.unwrap();
    // Its own `destroyed` arrives; the other sandbox's creation never does.
    let deadline = std::time::Duration::from_secs(60);
    loop {
        let event = tokio::time::timeout(deadline, events.next())
            .await
            .expect("no destroyed event within the deadline")
            .expect("the stream ended");
        assert_eq!(event.sandbox.as_str(), "h", "{event:?}");
        if event.kind.name() == "destroyed" {
            break;
        }
    }
    let err = counter.info().unwrap_err();
    assert!(
        matches!(err, sandbox_core::Error::UnknownSandbox { .. }),
        "{err}"
    );
}
