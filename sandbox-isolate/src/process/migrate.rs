//! Host migrations: a swap step whose state the host migrates (a function
//! registered with the host, not the plugin's own) makes the worker ask the
//! host mid-swap; the host runs the function and answers on the channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::conn::Conn;
use super::fds::send_all;
use super::wire::{self, ToWorker};
use crate::runtime::{Migration, SwapStep};

/// The host migrations of the swaps in flight, by swap number.
pub(super) struct Migrations {
    by_swap: Mutex<HashMap<u64, Vec<Option<Migration>>>>,
    next_swap: AtomicU64,
}

impl Default for Migrations {
    fn default() -> Self {
        Self {
            by_swap: Mutex::new(HashMap::new()),
            next_swap: AtomicU64::new(1),
        }
    }
}

impl Migrations {
    /// Numbers a new swap of `steps` and keeps their host migrations (if
    /// any) until [`Migrations::end`].
    pub(super) fn begin(&self, steps: &[SwapStep]) -> u64 {
        let swap = self.next_swap.fetch_add(1, Ordering::Relaxed);
        let migrations: Vec<Option<Migration>> =
            steps.iter().map(|s| s.migration.clone()).collect();
        if migrations.iter().any(Option::is_some) {
            self.by_swap.lock().insert(swap, migrations);
        }
        swap
    }

    /// Swap `swap` is over: its migrations are dropped.
    pub(super) fn end(&self, swap: u64) {
        self.by_swap.lock().remove(&swap);
    }

    fn get(&self, swap: u64, step: u32) -> Option<Migration> {
        self.by_swap
            .lock()
            .get(&swap)
            .and_then(|steps| steps.get(step as usize).cloned().flatten())
    }
}

/// Runs a host-registered migration the worker asked for, on a thread of
/// its own so the reader keeps reading.
pub(super) fn run(
    conn: &Arc<Conn>,
    id: u64,
    swap: u64,
    step: u32,
    bytes: Vec<u8>,
    from: u32,
    to: u32,
) {
    let migration = conn.migrations.get(swap, step);
    let conn = Arc::clone(conn);
    let run = move || {
        let result = match migration {
            Some(m) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m(&bytes, from, to)))
                    .unwrap_or_else(|_| Err("the migration panicked".into()))
            }
            None => Err("no migration is registered for this swap step".into()),
        };
        if let Ok(frame) = wire::encode(&ToWorker::MigrateReply { id, result }) {
            let writer = conn.writer.lock();
            let _ = send_all(&writer, &frame);
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("sandbox-migrate".into())
        .spawn(run)
    {
        tracing::error!(error = %e, "cannot start a migration thread");
    }
}
