//! Auto-reload: real files, real inotify events, real builds.

use std::time::Duration;

use sandbox_core::EventKind;
use sandbox_testkit::{fixtures, TestSandbox};
use serde_json::json;

use crate::BUILD;

/// The counter example with auto-reload on, its creation events drained.
async fn watched() -> TestSandbox {
    let mut sb = TestSandbox::example("counter").await.unwrap();
    sb.manager.enable_auto_reload(sb.id.as_str()).await.unwrap();
    sb.drain_events();
    sb
}

/// Adds `n` to the counter and returns the total.
async fn add(sb: &TestSandbox, n: i64) -> i64 {
    sb.call("counter", json!({ "add": n })).await.unwrap()["value"]
        .as_i64()
        .unwrap()
}

fn swapped_to(v: u32) -> impl Fn(&EventKind) -> bool {
    move |k| matches!(k, EventKind::Swapped { to, .. } if *to == v)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_save_swaps_the_module_and_keeps_its_state() {
    let mut sb = watched().await;
    assert!(sb.manager.auto_reload_enabled(sb.id.as_str()));
    sb.call("counter", json!({"add": 2})).await.unwrap();
    fixtures::bump_version(&sb.source().join("Cargo.toml")).unwrap();
    sb.await_event("swap to v2", BUILD, swapped_to(2))
        .await
        .unwrap();
    assert_eq!(add(&sb, 1).await, 3);
}

/// Ten saves in a burst are one change to build, not ten: the watcher's
/// debounce merges them, and saves that land while a build runs queue a
/// single follow-up build. So at most two builds run — one when the burst
/// falls in one debounce window, two when a busy machine stretches it over
/// a build — never one per save, and the last build has the last save.
#[tokio::test(flavor = "multi_thread")]
async fn rapid_saves_are_coalesced_into_at_most_one_queued_compile() {
    let mut sb = watched().await;
    let lib = sb.read("src/lib.rs").unwrap();
    for i in 0..10 {
        sb.write("src/lib.rs", &format!("{lib}\n// save {i}\n"))
            .unwrap();
    }
    let mut compiles = 0;
    loop {
        // The first build may wait on a busy machine; after it, a quiet
        // spell with no build starting ends the burst.
        let quiet = if compiles == 0 {
            BUILD
        } else {
            Duration::from_secs(5)
        };
        let started = sb
            .await_event("a compile", quiet, |k| {
                matches!(k, EventKind::CompileStarted { .. })
            })
            .await;
        if started.is_err() {
            break;
        }
        compiles += 1;
        assert!(compiles <= 2, "ten rapid saves caused {compiles} compiles");
        let finished = sb
            .await_event("the compile's end", BUILD, |k| {
                matches!(k, EventKind::CompileFinished { .. })
            })
            .await
            .unwrap();
        assert!(
            matches!(finished.kind, EventKind::CompileFinished { ok: true, .. }),
            "{finished:?}"
        );
    }
    assert!(compiles >= 1, "ten saves built nothing");
    // Nothing is left half-built: the sandbox serves, from the last save.
    assert_eq!(
        sb.read("src/lib.rs").unwrap(),
        format!("{lib}\n// save 9\n")
    );
    assert_eq!(add(&sb, 1).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_in_one_sandbox_never_reloads_another() {
    let mut a = TestSandbox::example("counter").await.unwrap();
    let mut b = TestSandbox::example("counter").await.unwrap();
    a.manager.enable_auto_reload(a.id.as_str()).await.unwrap();
    b.manager.enable_auto_reload(b.id.as_str()).await.unwrap();
    a.drain_events();
    b.drain_events();
    fixtures::bump_version(&a.source().join("Cargo.toml")).unwrap();
    a.await_event("a swaps", BUILD, swapped_to(2))
        .await
        .unwrap();
    let b_event = b
        .await_event("b compiles", Duration::from_secs(3), |k| {
            matches!(k, EventKind::CompileStarted { .. })
        })
        .await;
    assert!(
        b_event.is_err(),
        "sandbox b reacted to an edit of sandbox a"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_save_then_a_fixed_save() {
    let mut sb = watched().await;
    sb.call("counter", json!({"add": 4})).await.unwrap();
    let lib = sb.read("src/lib.rs").unwrap();
    sb.write("src/lib.rs", &format!("{lib}\nfn broken( {{\n"))
        .unwrap();
    let failed = sb
        .await_event("a failed compile", BUILD, |k| {
            matches!(k, EventKind::CompileFinished { ok: false, .. })
        })
        .await
        .unwrap();
    let EventKind::CompileFinished { diagnostics, .. } = failed.kind else {
        unreachable!()
    };
    assert!(diagnostics
        .iter()
        .any(|d| d.file.as_ref().is_some_and(|f| f.ends_with("src/lib.rs")) && d.line.is_some()));
    assert_eq!(add(&sb, 1).await, 5, "the old version kept serving");
    sb.write(
        "src/lib.rs",
        &lib.replacen("checked_add(add)", "checked_add(add * 2)", 1),
    )
    .unwrap();
    sb.await_event("swap to v2", BUILD, swapped_to(2))
        .await
        .unwrap();
    assert_eq!(add(&sb, 1).await, 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_folder_removed_is_an_error_event_and_the_sandbox_keeps_serving() {
    let mut sb = watched().await;
    sb.call("counter", json!({"add": 1})).await.unwrap();
    std::fs::remove_dir_all(sb.source()).unwrap();
    let e = sb
        .await_event(
            "a watch failure",
            BUILD,
            |k| matches!(k, EventKind::Failed { operation, .. } if operation == "watch"),
        )
        .await
        .unwrap();
    assert!(format!("{:?}", e.kind).contains("disappeared"), "{e:?}");
    assert_eq!(add(&sb, 1).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn disable_stops_reloads() {
    let mut sb = watched().await;
    sb.manager
        .disable_auto_reload(sb.id.as_str())
        .await
        .unwrap();
    assert!(!sb.manager.auto_reload_enabled(sb.id.as_str()));
    fixtures::bump_version(&sb.source().join("Cargo.toml")).unwrap();
    let e = sb
        .await_event("a compile", Duration::from_secs(3), |k| {
            matches!(k, EventKind::CompileStarted { .. })
        })
        .await;
    assert!(e.is_err(), "a disabled sandbox reloaded");
    // A manual reload still works.
    let report = sb.manager.hot_reload(sb.id.as_str()).await.unwrap();
    assert_eq!(report.swapped.len(), 1);
}
