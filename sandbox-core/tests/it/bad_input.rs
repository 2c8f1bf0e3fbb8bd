//! Every kind of bad input: a typed error with a clear message, and nothing
//! left behind (no registry entry, no scratch folder).

use std::path::Path;

use sandbox_core::{Error, ErrorClass, Manager, SandboxSpec};
use sandbox_testkit::{fixtures, test_config, TestSandbox};

fn manager(scratch: &Path) -> Manager {
    Manager::new(test_config(scratch)).unwrap()
}

/// Creating fails with `kind` and leaves nothing behind.
async fn refused(scratch: &Path, source: &Path, kind: &str) -> Error {
    let m = manager(scratch);
    let err = m
        .create("bad", SandboxSpec::trusted(source))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
    assert!(m.list().is_empty(), "a failed create left a sandbox behind");
    assert!(m.info("bad").is_err());
    assert!(
        sandbox_testkit::scratch_of(&m, "bad").is_empty(),
        "a failed create left its scratch folder"
    );
    // The id is free again: a second attempt fails the same way, not as a duplicate.
    let again = m
        .create("bad", SandboxSpec::trusted(source))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), kind, "{again}");
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused(dir.path(), &dir.path().join("nope"), "bad_request").await;
    assert!(matches!(err, Error::SourceMissing { .. }));
    assert_eq!(err.class(), ErrorClass::Request);
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_that_is_not_a_cargo_project() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let err = refused(dir.path(), &src, "bad_request").await;
    assert!(matches!(err, Error::NotCargoProject { .. }));
    assert!(err.to_string().contains("no Cargo.toml"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compile_error_carries_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("broken");
    fixtures::write_plugin(
        &src,
        "broken",
        "pub fn f() -> u32 {\n    \"not a number\"\n}\n",
    )
    .unwrap();
    let err = refused(dir.path(), &src, "compile").await;
    assert_eq!(err.class(), ErrorClass::Compilation);
    let d = err
        .diagnostics()
        .iter()
        .find(|d| d.line.is_some())
        .expect("a located diagnostic");
    assert!(d.file.as_ref().unwrap().ends_with("src/lib.rs"), "{d:?}");
    assert_eq!(d.line, Some(2));
    assert!(d.message.contains("mismatched types"), "{d:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cdylib_that_is_not_a_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("np");
    fixtures::copy_crate(&sandbox_testkit::fixture_dir("not-a-plugin"), &src).unwrap();
    let m = manager(dir.path());
    // `#[no_mangle]` is refused by the default profile: allow it to reach the loader check.
    let spec = SandboxSpec::trusted(&src);
    let err = m.create("bad", spec).await.unwrap_err();
    assert_eq!(err.kind(), "compile", "{err}");
    assert!(err.to_string().contains("not a sandbox plugin"), "{err}");
    assert!(m.list().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_an_incompatible_api() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("inc");
    fixtures::copy_crate(&sandbox_testkit::fixture_dir("incompatible-api"), &src).unwrap();
    let m = manager(dir.path());
    // The fixture depends on abi_stable directly: allow it past the source policy.
    let spec = SandboxSpec::trusted(&src);
    let err = m.create("bad", spec).await.unwrap_err();
    assert_eq!(err.kind(), "compile", "{err}");
    assert!(err.to_string().contains("incompatible plugin API"), "{err}");
    assert!(m.list().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dependency_cycle_is_refused_with_the_cycle_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("cycle");
    fixtures::write_workspace(
        &src,
        &[
            (
                "alpha",
                &fixtures::probe_plugin("alpha", &["beta"], false, false),
            ),
            (
                "beta",
                &fixtures::probe_plugin("beta", &["alpha"], false, false),
            ),
        ],
    )
    .unwrap();
    let err = refused(dir.path(), &src, "dependency").await;
    let text = err.to_string();
    assert!(
        text.contains("alpha -> beta -> alpha") || text.contains("beta -> alpha -> beta"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_id_unknown_ids_and_unknown_modules() {
    let sb = TestSandbox::example("counter").await.unwrap();
    let err = sb
        .manager
        .create(sb.id.clone(), SandboxSpec::trusted(sb.source()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateSandbox { .. }), "{err}");
    assert_eq!(
        sb.manager.list().len(),
        1,
        "the duplicate did not disturb the original"
    );

    let err = sb.manager.call("nope", "counter", b"{}").await.unwrap_err();
    assert!(matches!(err, Error::UnknownSandbox { .. }));
    assert!(
        err.to_string().contains(sb.id.as_str()),
        "lists the known ids: {err}"
    );

    let err = sb
        .manager
        .call(sb.id.as_str(), "nosuch", b"{}")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found");
    assert!(err.to_string().contains("known modules: counter"), "{err}");

    let err = sb
        .manager
        .create("bad id!", SandboxSpec::trusted(sb.source()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidId { .. }), "{err}");
    assert!(sb.manager.destroy("nope").await.is_err());
    assert!(sb.manager.hot_reload("nope").await.is_err());
    assert!(sb.manager.versions(sb.id.as_str(), "nosuch").is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_the_plugin_cannot_read_is_a_runtime_error() {
    let sb = TestSandbox::example("counter").await.unwrap();
    let err = sb
        .manager
        .call(sb.id.as_str(), "counter", b"{not json")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "plugin");
    assert_eq!(err.class(), ErrorClass::Runtime);
    assert!(err.to_string().contains("bad request"), "{err}");
    // and the sandbox keeps serving
    assert_eq!(
        sb.call("counter", serde_json::json!({"add": 1}))
            .await
            .unwrap()["value"],
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn source_that_breaks_the_security_profile_is_refused_before_it_builds() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("spawner");
    fixtures::write_plugin(
        &src,
        "spawner",
        "pub fn run() { let _ = std::process::Command::new(\"true\").status(); }\n",
    )
    .unwrap();
    let m = manager(dir.path());
    let mut events = m.subscribe();
    let spec = SandboxSpec::new(&src).profile(sandbox_core::security::Profile::High);
    let err = m.create("bad", spec).await.unwrap_err();
    assert_eq!(err.kind(), "security", "{err}");
    assert_eq!(err.class(), ErrorClass::Security);
    assert!(err.to_string().contains("src/lib.rs:1"), "{err}");
    // No build was started.
    while let Ok(e) = events.try_recv() {
        assert_ne!(e.kind.name(), "compile_started");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_process_isolation_of_untrusted_source_is_refused_naming_both_ways_out() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("counter");
    fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src).unwrap();
    let m = manager(dir.path());
    let mut events = m.subscribe();
    for profile in [
        sandbox_core::security::Profile::High,
        sandbox_core::security::Profile::Medium,
    ] {
        let spec = SandboxSpec::trusted(&src).profile(profile);
        let err = m.create("untrusted", spec).await.unwrap_err();
        assert!(matches!(err, Error::UntrustedInProcess { .. }), "{err}");
        assert_eq!(err.kind(), "security");
        let text = err.to_string();
        assert!(
            text.contains("profile `trusted`") && text.contains("isolation `process`"),
            "{text}"
        );
    }
    assert!(m.list().is_empty());
    // Refused before anything ran: no build was started.
    while let Ok(e) = events.try_recv() {
        assert_ne!(e.kind.name(), "compile_started");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn process_isolation_without_a_worker_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("counter");
    fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src).unwrap();
    let missing = dir.path().join("no-such-worker");
    let m = Manager::new(sandbox_core::Config {
        worker: Some(missing.clone()),
        ..sandbox_testkit::test_config(dir.path())
    })
    .unwrap();
    let err = m.create("p", SandboxSpec::new(&src)).await.unwrap_err();
    assert!(matches!(err, Error::NoIsolator { .. }), "{err}");
    assert_eq!(err.kind(), "bad_request");
    let message = err.to_string();
    assert!(message.contains("`process`"), "{message}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(m.list().is_empty());
    // The in-process backend is still there for trusted source.
    m.create("t", SandboxSpec::trusted(&src)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unregistered_isolation_kind_names_the_kinds_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("counter");
    fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src).unwrap();
    let m = manager(dir.path());
    let wasm = sandbox_core::isolate::IsolationKind::new("wasm").unwrap();
    let err = m
        .create("w", SandboxSpec::new(&src).isolation(wasm))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoIsolator { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("`wasm`") && message.contains("in-process"),
        "{message}"
    );
    assert!(m.list().is_empty());
}
