//! Fan-out, the max-wait bound, shutdown.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use crossbeam_channel::RecvTimeoutError;
use sandbox_watch::{NotifyWatcher, WatchConfig, WatchEvent, WatchSpec, Watcher};

use crate::support::{next_change, package, paths, write, DEADLINE};

#[test]
fn every_subscriber_gets_every_event() -> Result<()> {
    let dir = package()?;
    let watcher = NotifyWatcher::new(WatchConfig::default())?;
    let (first, second) = (watcher.subscribe(), watcher.subscribe());
    drop(watcher.subscribe()); // a dropped receiver is forgotten, not an error
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    write(&dir.path().join("src/lib.rs"), "pub fn f() -> u8 { 1 }")?;
    let one = next_change(&first, "a")?;
    let two = next_change(&second, "a")?;
    assert_eq!(one, two);
    assert_eq!(one.paths, paths(dir.path(), &["src/lib.rs"]));
    Ok(())
}

#[test]
fn a_constant_stream_still_emits_after_max_wait() -> Result<()> {
    let dir = package()?;
    let config = WatchConfig {
        debounce: Duration::from_millis(100),
        settle: Duration::from_millis(100),
        max_wait: Duration::from_millis(300),
    };
    let watcher = NotifyWatcher::new(config.clone())?;
    let events = watcher.subscribe();
    watcher.watch("a", WatchSpec::new(dir.path()))?;

    // Keep writing (never quiet for a whole debounce) until a change set
    // arrives; without the max-wait bound this would run into the deadline.
    let lib = dir.path().join("src/lib.rs");
    let deadline = Instant::now() + DEADLINE;
    let mut round = 0u64;
    let changes = loop {
        if Instant::now() > deadline {
            bail!("no change set while writing continuously for {DEADLINE:?}");
        }
        write(&lib, &format!("pub fn f() -> u64 {{ {round} }}"))?;
        round += 1;
        match events.try_recv() {
            Ok(WatchEvent::Changed(changes)) => break changes,
            Ok(other) => bail!("unexpected {other:?}"),
            Err(_) => continue,
        }
    };
    assert_eq!(changes.paths, paths(dir.path(), &["src/lib.rs"]));
    assert!(changes.emitted_at.duration_since(changes.first_change) >= config.max_wait);
    Ok(())
}

#[test]
fn dropping_the_watcher_stops_it_and_hangs_up_subscribers() -> Result<()> {
    let dir = package()?;
    let watcher = NotifyWatcher::new(WatchConfig::default())?;
    let events = watcher.subscribe();
    watcher.watch("a", WatchSpec::new(dir.path()))?;
    assert!(format!("{watcher:?}").contains("NotifyWatcher"));
    drop(watcher);
    // The worker joined and released the subscribers' senders.
    match events.recv_timeout(DEADLINE) {
        Err(RecvTimeoutError::Disconnected) => Ok(()),
        other => bail!("expected the channel to hang up, got {other:?}"),
    }
}
