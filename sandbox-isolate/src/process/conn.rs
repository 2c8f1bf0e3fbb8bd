//! The host's connection to one worker: the channel, requests matched to
//! replies by id, the reader thread that reads every frame and reaps the
//! worker, and killing the worker with a reason.
//!
//! What else the host keeps per worker hangs off [`Conn`] and lives with
//! its job: call lanes ([`super::lanes`]), the output watchdog's state
//! ([`super::watchdog`]), host migrations in flight ([`super::migrate`]).

use std::collections::HashMap;
use std::io::BufReader;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::fds::{readable_within, send_all, send_with_fds};
use super::handle;
use super::lanes::Lanes;
use super::migrate::{self, Migrations};
use super::watchdog::Output;
use super::wire::{self, Answer, FromWorker, Op, ToWorker};
use super::{crash, log};
use crate::error::{Error, Result, SwapStage};
use crate::runtime::CrashHandler;
use crate::spawn::{ChildKiller, JailedChild};
use crate::Limit;

/// What a request gets back.
pub(super) type Reply = Result<Answer>;

/// Requests waiting for their replies.
#[derive(Default)]
pub(super) struct Pending {
    waiting: HashMap<u64, crossbeam_channel::Sender<Reply>>,
    /// Set once the worker is gone: why.
    pub(super) dead: Option<String>,
}

/// What the reader thread, the output thread and callers share.
pub(crate) struct Conn {
    pub(super) sandbox: String,
    /// The channel's writing end (requests, lanes, migration replies).
    pub(super) writer: Mutex<UnixStream>,
    pub(super) pending: Mutex<Pending>,
    /// Notified (with `pending` held) once `pending.dead` is set.
    pub(super) died: Condvar,
    next_id: AtomicU64,
    /// Why the host killed the worker, if it did: (cause, limit).
    kill_reason: Mutex<Option<(String, Option<Limit>)>>,
    /// Set when the host stops the worker on purpose (the runtime is
    /// dropped): its death is then not a crash.
    pub(super) intentional: AtomicBool,
    /// The worker's pid in the host's pid namespace.
    pub(super) pid: u32,
    pidfd: Option<OwnedFd>,
    /// The jail's reaper, killed when there is no pidfd.
    reaper: Option<ChildKiller>,
    /// Idle call lanes (see [`Conn::call_on_lane`]).
    pub(super) lanes: Lanes,
    /// What the output thread keeps (see [`super::watchdog`]).
    pub(super) output: Output,
    /// Host migrations of the swaps in flight.
    pub(super) migrations: Migrations,
    /// Why the worker should be replaced: code of a new instance overran
    /// its lifecycle deadline and was abandoned in it.
    pub(super) abandoned: Mutex<Option<String>>,
}

impl Conn {
    /// A connection over `writer` to the worker `pid` (signalled through
    /// `pidfd`, or through its jail's `reaper` without one).
    pub(super) fn new(
        sandbox: String,
        writer: UnixStream,
        pid: u32,
        pidfd: Option<OwnedFd>,
        reaper: Option<ChildKiller>,
    ) -> Self {
        Self {
            sandbox,
            writer: Mutex::new(writer),
            pending: Mutex::new(Pending::default()),
            died: Condvar::new(),
            next_id: AtomicU64::new(1),
            kill_reason: Mutex::new(None),
            intentional: AtomicBool::new(false),
            pid,
            pidfd,
            reaper,
            lanes: Lanes::default(),
            output: Output::default(),
            migrations: Migrations::default(),
            abandoned: Mutex::new(None),
        }
    }

    /// A call to `module` overran `timeout`: kills the worker and says so.
    pub(super) fn overran(&self, module: &str, timeout: Option<Duration>) -> Error {
        let after = timeout.unwrap_or_default();
        self.kill_for(
            format!(
                "call to `{module}` did not answer within {after:?}; the host killed the worker"
            ),
            Some(Limit::CallTimeout),
        );
        Error::Timeout {
            module: module.to_owned(),
            after,
            stopped: true,
        }
    }

    /// A swap or checkpoint failed because an old instance's `save_state`
    /// never returned: that instance — the module's live state — is stuck
    /// in the worker for good, so the worker is killed (the crash handler
    /// restarts the sandbox from its last saved state) and the error says
    /// so. Code of a new instance that never returns (`init`,
    /// `restore_state`, a migration, the health check) only failed its
    /// swap: the old instances keep serving, and the worker keeps the
    /// abandoned thread until it is replaced
    /// ([`Runtime::needs_replacing`] says so).
    pub(super) fn stuck(&self, e: Error) -> Error {
        fn stopped(e: Error) -> Error {
            match e {
                Error::Timeout { module, after, .. } => Error::Timeout {
                    module,
                    after,
                    stopped: true,
                },
                Error::Swap {
                    module,
                    version,
                    stage,
                    source,
                } => Error::Swap {
                    module,
                    version,
                    stage,
                    source: Box::new(stopped(*source)),
                },
                other => other,
            }
        }
        let (module, after) = match &e {
            Error::Swap {
                stage: SwapStage::Save,
                source,
                ..
            } => match &**source {
                Error::Timeout { module, after, .. } => (module.clone(), *after),
                _ => return e,
            },
            Error::Swap { stage, source, .. } => {
                if let Error::Timeout { module, after, .. } = &**source {
                    self.abandoned.lock().get_or_insert_with(|| {
                        format!("{stage} of `{module}` did not return within {after:?} and was abandoned in the worker")
                    });
                }
                return e;
            }
            Error::Timeout { module, after, .. } => (module.clone(), *after),
            _ => return e,
        };
        self.kill_for(
            format!("save_state of `{module}` did not return within {after:?}; the host killed the worker"),
            Some(Limit::LifecycleTimeout),
        );
        stopped(e)
    }

    /// Kills the worker, recording why and the limit it hit, if one did
    /// (the first reason wins).
    pub(crate) fn kill_for(&self, cause: String, limit: Option<Limit>) {
        {
            let mut reason = self.kill_reason.lock();
            if reason.is_none() && !self.intentional.load(Ordering::Acquire) {
                *reason = Some((cause, limit));
            }
        }
        self.kill();
    }

    pub(super) fn kill(&self) {
        handle::kill(self.pidfd.as_ref(), self.reaper.as_ref());
    }

    /// Whether the worker exits within `wait` (`true` without a pidfd).
    pub(super) fn exits_within(&self, wait: Duration) -> bool {
        let Some(fd) = &self.pidfd else { return true };
        readable_within(fd, wait).unwrap_or(true)
    }

    pub(super) fn dead(&self) -> Option<String> {
        self.pending.lock().dead.clone()
    }

    /// Sends a request and waits for its answer (up to `timeout`, after
    /// which the worker is killed).
    pub(super) fn request(
        &self,
        op: Op,
        fd: Option<BorrowedFd<'_>>,
        timeout: Option<Duration>,
        module: &str,
    ) -> Reply {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let mut pending = self.pending.lock();
            if let Some(cause) = &pending.dead {
                return Err(Error::WorkerDied {
                    cause: cause.clone(),
                });
            }
            pending.waiting.insert(id, tx);
        }
        let frame = wire::encode(&ToWorker::Request { id, op }).map_err(|e| Error::Worker {
            message: format!("cannot encode a request: {e}"),
        })?;
        let sent = {
            let writer = self.writer.lock();
            match fd {
                Some(fd) => send_with_fds(&writer, &frame, &[fd]),
                None => send_all(&writer, &frame),
            }
        };
        if let Err(e) = sent {
            self.pending.lock().waiting.remove(&id);
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut
            {
                self.kill_for("it stopped reading its channel".into(), None);
            }
            return Err(Error::WorkerDied {
                cause: self
                    .dead()
                    .unwrap_or_else(|| format!("the channel to the worker broke: {e}")),
            });
        }
        let received = match timeout {
            Some(limit) => rx.recv_timeout(limit).map_err(|e| e.is_timeout()),
            None => rx.recv().map_err(|_| false),
        };
        match received {
            Ok(reply) => reply,
            Err(true) => {
                self.pending.lock().waiting.remove(&id);
                Err(self.overran(module, timeout))
            }
            Err(false) => Err(Error::WorkerDied {
                cause: self.dead().unwrap_or_else(|| "the worker went away".into()),
            }),
        }
    }
}

/// Reads the worker's frames until the channel closes, then reaps the
/// worker and reports the crash.
pub(super) fn read_loop(
    conn: &Arc<Conn>,
    stream: UnixStream,
    mut child: JailedChild,
    on_crash: Option<CrashHandler>,
) {
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let violation = loop {
        let body = match wire::read_frame(&mut reader) {
            Ok(Some(body)) => body,
            Ok(None) => break None,
            Err(e) => break Some(format!("it broke the protocol ({e})")),
        };
        match wire::decode::<FromWorker>(&body) {
            Ok(FromWorker::Reply { id, result }) => {
                if let Some(waiter) = conn.pending.lock().waiting.remove(&id) {
                    let _ = waiter.send(result.map_err(Error::from));
                }
            }
            Ok(FromWorker::Log {
                level,
                module,
                target,
                message,
            }) => {
                log::forward(&conn.sandbox, level, module.as_deref(), &target, &message);
            }
            Ok(FromWorker::Migrate {
                id,
                swap,
                step,
                bytes,
                from,
                to,
            }) => migrate::run(conn, id, swap, step, bytes, from, to),
            Ok(other) => break Some(format!("it sent an unexpected message ({})", kind(&other))),
            Err(e) => break Some(format!("it sent a malformed frame ({e})")),
        }
    };
    match violation {
        Some(violation) => conn.kill_for(violation, None),
        // The channel closes when the worker exits; if it is still running
        // a moment later, it closed the channel itself.
        None if !conn.exits_within(Duration::from_millis(200)) => {
            conn.kill_for("it closed its channel while still running".into(), None);
        }
        None => {}
    }
    // Whatever closed the channel, the worker must be gone before we say so.
    conn.kill();
    let status = child.wait().ok();
    conn.output.wait_drained(Duration::from_millis(500));
    let tail = conn.output.stderr_tail();
    let crash = crash::classify(status, conn.kill_reason.lock().clone(), &tail);
    let waiting = {
        let mut pending = conn.pending.lock();
        pending.dead = Some(crash.cause.clone());
        conn.died.notify_all();
        std::mem::take(&mut pending.waiting)
    };
    for (_, waiter) in waiting {
        let _ = waiter.send(Err(Error::WorkerDied {
            cause: crash.cause.clone(),
        }));
    }
    if conn.intentional.load(Ordering::Acquire) {
        tracing::debug!(sandbox = %conn.sandbox, pid = conn.pid, "worker stopped");
        return;
    }
    tracing::warn!(sandbox = %conn.sandbox, pid = conn.pid, cause = %crash.cause, limit = crash.limit.map(Limit::as_str), "worker process died");
    if let Some(on_crash) = on_crash {
        on_crash(crash);
    }
}

/// What a message is, for a protocol violation's cause.
fn kind(message: &FromWorker) -> &'static str {
    match message {
        FromWorker::Hello { .. } => "hello",
        FromWorker::Configured(_) => "configured",
        FromWorker::Reply { .. } => "reply",
        FromWorker::Log { .. } => "log",
        FromWorker::Migrate { .. } => "migrate",
    }
}
