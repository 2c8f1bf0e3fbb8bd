//! Save-to-swapped latency of auto-reload for a one-line change to the
//! counter example, split into debounce (+ dispatch), compile and swap.
//! Not a criterion loop: each sample is a real edit, a real inotify event
//! and a real incremental cargo build, so it records percentiles itself.

// A bench reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sandbox_core::{EventKind, Manager, SandboxSpec};

mod common;

fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn main() {
    // `cargo bench -- FILTER` passes a filter; run only when it matches.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter
        .as_deref()
        .is_some_and(|f| !"autoreload save-to-swapped".contains(f))
    {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("counter");
        sandbox_testkit::fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src)
            .unwrap();
        let manager = Manager::new(sandbox_testkit::test_config(dir.path())).unwrap();
        manager
            .create("watch", SandboxSpec::trusted(&src))
            .await
            .unwrap();
        manager.enable_auto_reload("watch").await.unwrap();
        let mut events = manager.subscribe();
        let lib = src.join("src/lib.rs");
        let original = std::fs::read_to_string(&lib).unwrap();
        let (mut total, mut debounce, mut compile, mut swap) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let stamp = millis_since_epoch(SystemTime::now());
        for i in 0..12 {
            // A one-line change: the overflow message of the counter.
            let edited = original.replacen(
                "overflows the total",
                &format!("overflows (edit {stamp}-{i}) the total"),
                1,
            );
            let (written, wall) = (Instant::now(), millis_since_epoch(SystemTime::now()));
            std::fs::write(&lib, edited).unwrap();
            let (mut started, mut finished, mut compile_ms) = (None, None, 0);
            loop {
                let e = tokio::time::timeout(Duration::from_secs(300), events.recv())
                    .await
                    .unwrap()
                    .unwrap();
                let at = millis_since_epoch(e.at);
                match e.kind {
                    EventKind::CompileStarted { .. } => started = Some(at),
                    EventKind::CompileFinished { millis, ok, .. } => {
                        assert!(ok, "the edit did not build");
                        compile_ms = millis;
                        finished = Some(at);
                    }
                    EventKind::Swapped { .. } => {
                        let elapsed = written.elapsed();
                        // The first edit warms the incremental build; not counted.
                        if i > 1 {
                            total.push(elapsed);
                            debounce.push(Duration::from_millis(
                                started.unwrap_or(wall).saturating_sub(wall),
                            ));
                            compile.push(Duration::from_millis(compile_ms));
                            swap.push(Duration::from_millis(
                                at.saturating_sub(finished.unwrap_or(at)),
                            ));
                        }
                        break;
                    }
                    EventKind::Unchanged => panic!("an edit produced no new version"),
                    _ => {}
                }
            }
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let note = format!(
            "median split: debounce+dispatch {:?}, compile {:?}, swap {:?}",
            median(&mut debounce),
            median(&mut compile),
            median(&mut swap)
        );
        common::record(
            "save-to-swapped",
            "auto-reload: save to swapped (one-line edit of counter)",
            &mut total,
            &note,
        );
        eprintln!("{note}");
        manager.shutdown().await;
    });
}
