//! The hand-driven watcher and the trait's pointer impls.

use std::sync::Arc;

use anyhow::Result;
use sandbox_watch::{Error, ManualWatcher, WatchEvent, WatchSpec, Watcher};

use crate::support::{next_change, next_event, package, watched};

#[test]
fn manual_watcher_fans_out_to_every_subscriber() -> Result<()> {
    let dir = package()?;
    let manual = Arc::new(ManualWatcher::new());
    let watcher: Arc<dyn Watcher> = manual.clone();
    let (first, second) = (watcher.subscribe(), watcher.subscribe());
    watcher.watch("a", WatchSpec::new(dir.path()))?;
    assert_eq!(
        manual.spec("a").map(|spec| spec.root),
        Some(dir.path().to_owned())
    );

    assert!(manual.change("a", [dir.path().join("src/lib.rs")]));
    assert!(!manual.change("unknown", [dir.path().join("src/lib.rs")]));
    assert!(!manual.change("a", Vec::<std::path::PathBuf>::new()));
    let one = next_change(&first, "a")?;
    let two = next_change(&second, "a")?;
    assert_eq!(one, two);

    assert!(manual.emit(WatchEvent::RootRemoved {
        key: "a".into(),
        root: dir.path().into()
    }));
    assert!(matches!(
        next_event(&first)?,
        WatchEvent::RootRemoved { .. }
    ));
    assert!(watched(&watcher).is_empty());
    Ok(())
}

#[test]
fn boxed_watchers_forward_every_method() -> Result<()> {
    let dir = package()?;
    let watcher: Box<dyn Watcher> = Box::new(ManualWatcher::new());
    let nested: Box<Box<dyn Watcher>> = Box::new(watcher);
    nested.watch("a", WatchSpec::new(dir.path()))?;
    assert!(matches!(
        nested.watch("a", WatchSpec::new(dir.path())),
        Err(Error::AlreadyWatched { .. })
    ));
    assert_eq!(nested.watched(), ["a"]);
    nested.unwatch("a")?;
    assert!(matches!(nested.unwatch("a"), Err(Error::NotWatched { .. })));
    assert!(matches!(
        nested.watch("b", WatchSpec::new(dir.path().join("nope"))),
        Err(Error::RootMissing { .. })
    ));
    Ok(())
}
