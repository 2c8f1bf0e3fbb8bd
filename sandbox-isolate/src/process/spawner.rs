//! One long-lived thread that forks every worker.
//!
//! A child's parent-death signal fires when the *thread* that forked it
//! exits, not the process. Runtimes are launched from whatever thread the
//! caller has (a short-lived blocking-pool thread, a test thread...), so the
//! fork itself always happens on this thread, which lives as long as the
//! process.

use std::cell::Cell;
use std::sync::OnceLock;

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static ON_SPAWNER: Cell<bool> = const { Cell::new(false) };
}

fn queue() -> &'static crossbeam_channel::Sender<Job> {
    static QUEUE: OnceLock<crossbeam_channel::Sender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let started = std::thread::Builder::new().name("sandbox-spawner".into()).spawn(move || {
            ON_SPAWNER.with(|on| on.set(true));
            for job in rx {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the worker spawner thread; workers are forked by the calling thread");
        }
        tx
    })
}

/// Runs `job` on the spawner thread (right here when already on it, or when
/// the spawner thread could not start) and returns its result; `None` if
/// the job panicked.
pub(crate) fn run<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if ON_SPAWNER.with(Cell::get) {
        return Some(job());
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Box<dyn FnOnce() -> T + Send>>(1);
    let _ = job_tx.send(Box::new(job));
    let queued = queue().send(Box::new({
        let job_rx = job_rx.clone();
        move || {
            if let Ok(job) = job_rx.try_recv() {
                let _ = tx.send(job());
            }
        }
    }));
    if queued.is_ok() {
        if let Ok(result) = rx.recv() {
            return Some(result);
        }
    }
    // The spawner is gone (or the job panicked there): run it here if it
    // was never taken.
    job_rx.try_recv().ok().map(|job| job())
}

/// Queues `job` on the spawner thread without waiting for it.
pub(crate) fn submit(job: impl FnOnce() + Send + 'static) {
    if let Err(e) = queue().send(Box::new(job)) {
        (e.into_inner())();
    }
}
