//! `ProcMonitor` on real processes: sampling, threads, children, alerts, bounded history, key errors.

use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use sandbox_monitor::{
    AlertLevel, Error, Limit, Monitor, NoopMonitor, ProcMonitor, ResourceLimits, Usage,
};

use crate::Cat;

fn me() -> u32 {
    std::process::id()
}

#[test]
fn samples_the_test_process() -> anyhow::Result<()> {
    let monitor = ProcMonitor::new();
    monitor.register("self", me(), ResourceLimits::unlimited())?;
    let first = monitor.sample("self")?;
    assert!(first.memory_bytes > 0, "{first:?}");
    assert!(first.virtual_bytes >= first.memory_bytes, "{first:?}");
    assert!(first.threads >= 1, "{first:?}");
    assert!(first.uptime > Duration::ZERO, "{first:?}");
    assert!(first.open_files >= 1, "{first:?}");
    assert!(
        first.cpu_percent >= 0.0 && first.cpu_percent.is_finite(),
        "{first:?}"
    );
    // Burn CPU until the kernel's tick-granular accounting shows it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut x = 0u64;
    let second = loop {
        for i in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let usage = monitor.sample("self")?;
        if usage.cpu_seconds > first.cpu_seconds || Instant::now() > deadline {
            break usage;
        }
    };
    assert!(
        second.cpu_seconds > first.cpu_seconds,
        "{first:?} {second:?}"
    );
    assert!(
        second.cpu_percent > 0.0 && second.cpu_percent.is_finite(),
        "{second:?}"
    );
    assert!(second.uptime >= first.uptime);
    assert!(monitor.history("self")?.len() >= 2);
    assert!(monitor.alerts("self")?.is_empty());
    Ok(())
}

#[test]
fn spawning_threads_raises_the_thread_count() -> anyhow::Result<()> {
    let monitor = ProcMonitor::new();
    monitor.register("threads", me(), ResourceLimits::unlimited())?;
    let before = monitor.sample("threads")?.threads;
    let n = 16;
    let started = Arc::new(Barrier::new(n + 1));
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let stop_rx = Arc::new(std::sync::Mutex::new(stop_rx));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let started = Arc::clone(&started);
            let stop_rx = Arc::clone(&stop_rx);
            std::thread::spawn(move || {
                started.wait();
                // Blocks until the sender is dropped.
                let _ = stop_rx.lock().map(|rx| rx.recv());
            })
        })
        .collect();
    started.wait();
    let during = monitor.sample("threads")?.threads;
    drop(stop_tx);
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("thread panicked"))?;
    }
    assert!(during > n as u32, "during {during}");
    assert!(during > before, "before {before}, during {during}");
    Ok(())
}

#[test]
fn a_child_process_is_counted() -> anyhow::Result<()> {
    let cat = Cat::spawn();
    let monitor = ProcMonitor::new();
    monitor.register("self", me(), ResourceLimits::unlimited())?;
    monitor.register("cat", cat.pid(), ResourceLimits::unlimited())?;
    assert!(monitor.sample("self")?.child_processes >= 1);
    let cat_usage = monitor.sample("cat")?;
    assert_eq!(cat_usage.child_processes, 0);
    assert_eq!(cat_usage.threads, 1);
    Ok(())
}

#[test]
fn a_limit_below_usage_raises_exceeded_and_near_it_a_warning() -> anyhow::Result<()> {
    let cat = Cat::spawn();
    let monitor = ProcMonitor::new();
    // `cat` has exactly one thread: 1 > 0 exceeds, 1 > 0.8 × 1 warns.
    let exceeded = ResourceLimits {
        threads: Some(0),
        ..ResourceLimits::unlimited()
    };
    let warning = ResourceLimits {
        threads: Some(1),
        ..ResourceLimits::unlimited()
    };
    monitor.register("cat", cat.pid(), exceeded)?;
    assert!(
        monitor.alerts("cat")?.is_empty(),
        "no alerts before the first sample"
    );
    monitor.sample("cat")?;
    let alerts = monitor.alerts("cat")?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (alerts[0].resource, alerts[0].level),
        (Limit::Threads, AlertLevel::Exceeded)
    );
    assert_eq!((alerts[0].value, alerts[0].limit), (1.0, 0.0));

    monitor.set_limits("cat", warning.clone())?;
    monitor.sample("cat")?;
    let alerts = monitor.alerts("cat")?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (alerts[0].resource, alerts[0].level),
        (Limit::Threads, AlertLevel::Warning)
    );

    let strict = ProcMonitor::new().with_warning_fraction(1.0)?;
    strict.register("cat", cat.pid(), warning)?;
    strict.sample("cat")?;
    assert!(strict.alerts("cat")?.is_empty());

    let memory = ResourceLimits {
        memory_bytes: Some(1),
        ..ResourceLimits::unlimited()
    };
    monitor.register("self", me(), memory)?;
    monitor.sample("self")?;
    let alerts = monitor.alerts("self")?;
    assert!(
        alerts
            .iter()
            .any(|a| a.resource == Limit::Memory && a.level == AlertLevel::Exceeded),
        "{alerts:?}"
    );
    Ok(())
}

#[test]
fn history_is_bounded() -> anyhow::Result<()> {
    let cat = Cat::spawn();
    let monitor = ProcMonitor::new().with_history_len(3);
    monitor.register("cat", cat.pid(), ResourceLimits::default())?;
    for _ in 0..5 {
        monitor.sample("cat")?;
    }
    let history = monitor.history("cat")?;
    assert_eq!(history.len(), 3);
    assert!(history.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(history.iter().all(|(_, u)| u.threads == 1));
    Ok(())
}

#[test]
fn unknown_and_duplicate_keys_are_errors() -> anyhow::Result<()> {
    let monitor = ProcMonitor::new();
    let err = monitor.sample("nope").map(|_| ()).expect_err("unknown key");
    assert!(matches!(err, Error::UnknownKey { .. }));
    assert_eq!(
        err.to_string(),
        "no process is registered under key `nope`; call `register` first"
    );
    assert!(matches!(
        monitor.history("nope"),
        Err(Error::UnknownKey { .. })
    ));
    assert!(matches!(
        monitor.alerts("nope"),
        Err(Error::UnknownKey { .. })
    ));
    assert!(matches!(
        monitor.unregister("nope"),
        Err(Error::UnknownKey { .. })
    ));

    monitor.register("a", me(), ResourceLimits::default())?;
    let dup = monitor.register("a", me(), ResourceLimits::default());
    assert!(matches!(dup, Err(Error::DuplicateKey { .. })), "{dup:?}");
    assert_eq!(monitor.keys(), ["a"]);
    monitor.unregister("a")?;
    assert!(monitor.keys().is_empty());
    assert!(matches!(monitor.sample("a"), Err(Error::UnknownKey { .. })));

    let missing = monitor.register("b", 4_000_000_000, ResourceLimits::default());
    assert!(
        matches!(missing, Err(Error::NoSuchProcess { pid: 4_000_000_000 })),
        "{missing:?}"
    );
    let bad = ResourceLimits {
        cpu_percent: Some(-1.0),
        ..ResourceLimits::default()
    };
    assert!(matches!(
        monitor.register("c", me(), bad),
        Err(Error::InvalidLimits { .. })
    ));
    Ok(())
}

#[test]
fn an_exited_process_is_a_clear_error() -> anyhow::Result<()> {
    let mut cat = Cat::spawn();
    let pid = cat.pid();
    let monitor = ProcMonitor::new();
    monitor.register("cat", pid, ResourceLimits::default())?;
    monitor.sample("cat")?;
    drop(cat.0.stdin.take()); // EOF: cat exits
    cat.0.wait()?;
    let err = monitor
        .sample("cat")
        .map(|_| ())
        .expect_err("cat has exited");
    assert!(
        matches!(err, Error::ProcessExited { pid: p, .. } if p == pid),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("process {pid} has exited")),
        "{err}"
    );
    // The history taken before the exit stays readable until unregister.
    assert_eq!(monitor.history("cat")?.len(), 1);
    assert!(matches!(
        monitor.register("again", pid, ResourceLimits::default()),
        Err(Error::NoSuchProcess { .. })
    ));
    Ok(())
}

#[test]
fn a_zombie_counts_as_exited() -> anyhow::Result<()> {
    let mut cat = Cat::spawn();
    let pid = cat.pid();
    let monitor = ProcMonitor::new();
    monitor.register("cat", pid, ResourceLimits::default())?;
    cat.0.kill()?;
    // Wait for the exit without reaping it: the child stays a zombie until `Cat` drops.
    let child = rustix::process::Pid::from_raw(i32::try_from(pid)?)
        .ok_or_else(|| anyhow::anyhow!("pid 0"))?;
    let options = rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT;
    rustix::process::waitid(rustix::process::WaitId::Pid(child), options)?;
    let err = monitor
        .sample("cat")
        .map(|_| ())
        .expect_err("cat is a zombie");
    assert!(matches!(err, Error::ProcessExited { .. }), "{err:?}");
    Ok(())
}

#[test]
fn works_through_box_arc_and_noop() -> anyhow::Result<()> {
    let boxed: Box<dyn Monitor> = Box::new(ProcMonitor::new());
    boxed.register("self", me(), ResourceLimits::default())?;
    assert!(boxed.sample("self")?.memory_bytes > 0);
    let shared: Arc<dyn Monitor> = Arc::new(NoopMonitor);
    shared.register("x", 1, ResourceLimits::default())?;
    assert_eq!(shared.sample("x")?, Usage::default());
    assert!(shared.history("x")?.is_empty());
    assert!(shared.alerts("x")?.is_empty());
    shared.unregister("x")?;
    Ok(())
}
