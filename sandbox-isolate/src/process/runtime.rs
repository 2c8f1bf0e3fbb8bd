//! The host side of a running worker: [`ProcessRuntime`], the [`Runtime`]
//! the process backend hands out.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::fds::{readable_within, send_all, send_with_fds};
use super::handle::{self, Worker};
use super::wire::{self, Answer, FromWorker, Op, Step, ToWorker};
use crate::error::{Error, Result, SwapStage};
use crate::jail::{disk_usage, LayerReport, UidSlot};
use crate::runtime::{
    Crash, CrashHandler, IsolationKind, Migration, ModuleMeta, Runtime, RuntimeInfo, SavedState,
    SwapOutcome, SwapStep,
};

/// How often the host checks a worker's disk use.
const DISK_CHECK_EVERY: Duration = Duration::from_millis(100);
/// How much of a dead worker's stderr is kept to tell why it died.
const STDERR_TAIL: usize = 8 << 10;
/// Longest line of worker output emitted as one event.
const MAX_LINE: usize = 4 << 10;
/// Most call lanes per worker (one per host thread calling at once); calls
/// beyond them share the channel.
const MAX_LANES: usize = 8;

type Reply = Result<Answer>;

#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, crossbeam_channel::Sender<Reply>>,
    /// Set once the worker is gone: why.
    dead: Option<String>,
}

#[derive(Default)]
struct Mirror {
    modules: BTreeMap<String, u32>,
    loaded: BTreeSet<(String, u32)>,
}

/// What the reader thread, the output thread and callers share.
pub(crate) struct Conn {
    sandbox: String,
    writer: Mutex<UnixStream>,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    /// Why the host killed the worker, if it did: (cause, limit).
    kill_reason: Mutex<Option<(String, &'static str)>>,
    intentional: AtomicBool,
    pid: u32,
    pidfd: Option<OwnedFd>,
    reaper: Option<u32>,
    migrations: Mutex<HashMap<u64, Vec<Option<Migration>>>>,
    next_swap: AtomicU64,
    mirror: Mutex<Mirror>,
    stderr_tail: Mutex<VecDeque<u8>>,
    output_done: (Mutex<bool>, Condvar),
    /// Notified (with `pending` held) once `pending.dead` is set.
    died: Condvar,
    /// Idle call lanes (see [`Conn::call_on_lane`]).
    lanes: Mutex<Vec<Lane>>,
    lanes_open: std::sync::atomic::AtomicUsize,
    /// Set when the worker could not serve a lane: calls use the channel.
    lanes_off: AtomicBool,
    /// Why the worker should be replaced: code of a new instance overran
    /// its lifecycle deadline and was abandoned in it.
    abandoned: Mutex<Option<String>>,
}

/// The host's end of a call lane.
struct Lane {
    reader: BufReader<UnixStream>,
    timeout: Option<Duration>,
}

impl Conn {
    /// Calls `module` on a lane of its own: the caller writes the request
    /// and reads the reply itself, so a call costs two wake-ups (the
    /// worker's and the caller's) instead of also waking the channel's
    /// reader. `None`: no lane to be had (all in use, or the worker cannot
    /// serve one) — use the channel.
    fn call_on_lane(
        &self,
        module: &str,
        request: &[u8],
        timeout: Option<Duration>,
    ) -> Option<Reply> {
        if self.lanes_off.load(Ordering::Acquire) || self.dead().is_some() {
            return None;
        }
        let popped = self.lanes.lock().pop();
        let mut lane = match popped {
            Some(lane) => lane,
            None => self.open_lane()?,
        };
        let frame = wire::encode(&ToWorker::Request {
            id: 0,
            op: Op::Call {
                module: module.to_owned(),
                request: request.to_vec(),
            },
        })
        .ok()?;
        if lane.timeout != timeout {
            if lane.reader.get_ref().set_read_timeout(timeout).is_err() {
                return self.lane_broke(lane);
            }
            lane.timeout = timeout;
        }
        if send_all(lane.reader.get_ref(), &frame).is_err() {
            return self.lane_broke(lane);
        }
        match wire::read_frame(&mut lane.reader) {
            Ok(Some(body)) => match wire::decode::<FromWorker>(&body) {
                Ok(FromWorker::Reply { result, .. }) => {
                    self.lanes.lock().push(lane);
                    Some(result.map_err(Error::from))
                }
                _ => {
                    self.kill_for(
                        "it sent a malformed reply on a call lane".into(),
                        "protocol",
                    );
                    self.lane_broke(lane)
                }
            },
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                drop(lane);
                self.lanes_open.fetch_sub(1, Ordering::AcqRel);
                Some(Err(self.overran(module, timeout)))
            }
            Ok(None) | Err(_) => self.lane_broke(lane),
        }
    }

    /// A call to `module` overran `timeout`: kills the worker and says so.
    fn overran(&self, module: &str, timeout: Option<Duration>) -> Error {
        let after = timeout.unwrap_or_default();
        self.kill_for(
            format!(
                "call to `{module}` did not answer within {after:?}; the host killed the worker"
            ),
            "call_timeout",
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
    fn stuck(&self, e: Error) -> Error {
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
            "lifecycle_timeout",
        );
        stopped(e)
    }

    /// Opens a lane: a socket pair whose other end goes to the worker over
    /// the channel. `None` past [`MAX_LANES`] or when that fails.
    fn open_lane(&self) -> Option<Lane> {
        let open = self
            .lanes_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LANES).then_some(n + 1)
            });
        if open.is_err() {
            return None;
        }
        let opened = (|| {
            let (ours, theirs) = UnixStream::pair().ok()?;
            let frame = wire::encode(&ToWorker::Lane).ok()?;
            send_with_fds(&self.writer.lock(), &frame, &[theirs.as_fd()]).ok()?;
            Some(Lane {
                reader: BufReader::with_capacity(64 << 10, ours),
                timeout: None,
            })
        })();
        if opened.is_none() {
            self.lanes_open.fetch_sub(1, Ordering::AcqRel);
        }
        opened
    }

    /// A lane closed under a call. If the worker died, the caller gets why
    /// (once the reader thread knows); if it lives on, it had no thread for
    /// the lane and never read the request, so the call goes on the channel
    /// (`None`), as every later one does.
    fn lane_broke(&self, lane: Lane) -> Option<Reply> {
        drop(lane);
        self.lanes_open.fetch_sub(1, Ordering::AcqRel);
        if !self.exits_within(Duration::from_millis(200)) {
            self.lanes_off.store(true, Ordering::Release);
            return None;
        }
        let mut pending = self.pending.lock();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pending.dead.is_none() {
            if self.died.wait_until(&mut pending, deadline).timed_out() {
                break;
            }
        }
        Some(Err(Error::WorkerDied {
            cause: pending
                .dead
                .clone()
                .unwrap_or_else(|| "the worker went away".into()),
        }))
    }

    /// Kills the worker, recording why (the first reason wins).
    pub(crate) fn kill_for(&self, cause: String, limit: &'static str) {
        {
            let mut reason = self.kill_reason.lock();
            if reason.is_none() && !self.intentional.load(Ordering::Acquire) {
                *reason = Some((cause, limit));
            }
        }
        self.kill();
    }

    fn kill(&self) {
        handle::kill(self.pidfd.as_ref(), self.reaper);
    }

    /// Whether the worker exits within `wait` (`true` without a pidfd).
    fn exits_within(&self, wait: Duration) -> bool {
        let Some(fd) = &self.pidfd else { return true };
        readable_within(fd, wait).unwrap_or(true)
    }

    fn dead(&self) -> Option<String> {
        self.pending.lock().dead.clone()
    }

    /// Sends a request and waits for its answer (up to `timeout`, after
    /// which the worker is killed).
    fn request(
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
                self.kill_for("it stopped reading its channel".into(), "channel");
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

    fn emit_log(&self, level: u8, module: Option<&str>, target: &str, message: &str) {
        let sandbox = self.sandbox.as_str();
        let module = module.unwrap_or("");
        macro_rules! emit {
            ($target:literal) => {
                match level {
                    0 => tracing::error!(target: $target, sandbox, module, "{message}"),
                    1 => tracing::warn!(target: $target, sandbox, module, "{message}"),
                    2 => tracing::info!(target: $target, sandbox, module, "{message}"),
                    3 => tracing::debug!(target: $target, sandbox, module, "{message}"),
                    _ => tracing::trace!(target: $target, sandbox, module, "{message}"),
                }
            };
        }
        if target == "sandbox::plugin" {
            emit!("sandbox::plugin")
        } else {
            emit!("sandbox::worker")
        }
    }
}

/// The pieces [`ProcessRuntime::start`] needs.
pub(crate) struct Start {
    pub(crate) sandbox: String,
    pub(crate) work_dir: PathBuf,
    /// The worker's artifact folder (see `grants_dir`).
    pub(crate) grants: PathBuf,
    /// Whether the worker may use the network.
    pub(crate) network: bool,
    pub(crate) on_crash: Option<CrashHandler>,
    pub(crate) output_limit: Option<u64>,
    pub(crate) disk_limit: Option<u64>,
    pub(crate) report: LayerReport,
}

/// A sandbox runtime in a jailed worker process.
pub(crate) struct ProcessRuntime {
    conn: Arc<Conn>,
    reader: Option<JoinHandle<()>>,
    reader_id: Option<ThreadId>,
    output: Option<JoinHandle<()>>,
    work_dir: PathBuf,
    grants: PathBuf,
    network: bool,
    report: LayerReport,
    _slot: Option<UidSlot>,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("sandbox", &self.conn.sandbox)
            .field("pid", &self.conn.pid)
            .field("layers", &self.report)
            .finish()
    }
}

impl ProcessRuntime {
    /// Takes over a configured worker: starts the reader and output threads.
    pub(crate) fn start(mut worker: Worker, start: Start) -> Result<Self> {
        let Some(mut child) = worker.child.take() else {
            return Err(Error::Worker {
                message: "the worker was already reaped".into(),
            });
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let stream = worker.stream.try_clone().map_err(|e| Error::Worker {
            message: format!("cannot share its socket: {e}"),
        })?;
        // A worker that stops reading its channel must not block callers forever.
        let _ = worker
            .stream
            .set_write_timeout(Some(Duration::from_secs(30)));
        let conn = Arc::new(Conn {
            sandbox: start.sandbox.clone(),
            writer: Mutex::new(stream),
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            kill_reason: Mutex::new(None),
            intentional: AtomicBool::new(false),
            pid: worker.pid,
            pidfd: worker.pidfd.take(),
            reaper: Some(child.id()),
            migrations: Mutex::new(HashMap::new()),
            next_swap: AtomicU64::new(1),
            mirror: Mutex::new(Mirror::default()),
            stderr_tail: Mutex::new(VecDeque::new()),
            output_done: (Mutex::new(false), Condvar::new()),
            died: Condvar::new(),
            lanes: Mutex::new(Vec::new()),
            lanes_open: std::sync::atomic::AtomicUsize::new(0),
            lanes_off: AtomicBool::new(false),
            abandoned: Mutex::new(None),
        });
        let read_stream = worker.stream.try_clone().map_err(|e| Error::Worker {
            message: format!("cannot share its socket: {e}"),
        })?;
        let slot = worker.slot.take();
        drop(worker);

        let output = {
            let conn = Arc::clone(&conn);
            let (limit, disk) = (
                start.output_limit,
                start.disk_limit.map(|d| (start.work_dir.clone(), d)),
            );
            std::thread::Builder::new()
                .name("sandbox-output".into())
                .spawn(move || drain(&conn, stdout, stderr, limit, disk))
                .map_err(|e| Error::Worker {
                    message: format!("cannot start its output thread: {e}"),
                })?
        };
        let reader = {
            let conn = Arc::clone(&conn);
            let on_crash = start.on_crash.clone();
            std::thread::Builder::new()
                .name("sandbox-reader".into())
                .spawn(move || read_loop(&conn, read_stream, child, on_crash))
                .map_err(|e| Error::Worker {
                    message: format!("cannot start its reader thread: {e}"),
                })?
        };
        Ok(Self {
            conn,
            reader_id: Some(reader.thread().id()),
            reader: Some(reader),
            output: Some(output),
            work_dir: start.work_dir,
            grants: start.grants,
            network: start.network,
            report: start.report,
            _slot: slot,
        })
    }
}

impl ProcessRuntime {
    /// Makes `artifact` readable by this worker: a hard link (a copy
    /// across file systems) in its own artifact folder, which its landlock
    /// rules allow and which nothing but this host writes. The worker maps
    /// the file through the descriptor the host opens on that name, so it
    /// never needs the build cache, which holds every sandbox's artifacts.
    fn grant(&self, artifact: &Path, version: u32) -> Result<PathBuf> {
        let name = artifact.file_name().unwrap_or_default().to_string_lossy();
        let granted = self.grants.join(format!("v{version}-{name}"));
        let _ = std::fs::remove_file(&granted);
        let io = |source| Error::Io {
            action: "making the artifact readable by the worker",
            path: granted.clone(),
            source,
        };
        if std::fs::hard_link(artifact, &granted).is_err() {
            std::fs::copy(artifact, &granted).map_err(io)?;
        }
        Ok(granted)
    }
}

impl Drop for ProcessRuntime {
    fn drop(&mut self) {
        self.conn.intentional.store(true, Ordering::Release);
        self.conn.kill();
        let on_reader = self.reader_id == Some(std::thread::current().id());
        if let Some(reader) = self.reader.take() {
            if !on_reader {
                let _ = reader.join();
            }
        }
        if let Some(output) = self.output.take() {
            if !on_reader {
                let _ = output.join();
            }
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
        let _ = std::fs::remove_dir_all(&self.grants);
    }
}

/// Reads the worker's frames until the channel closes, then reaps the
/// worker and reports the crash.
fn read_loop(
    conn: &Arc<Conn>,
    stream: UnixStream,
    mut child: Child,
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
                conn.emit_log(level, module.as_deref(), &target, &message);
            }
            Ok(FromWorker::Migrate {
                id,
                swap,
                step,
                bytes,
                from,
                to,
            }) => migrate(conn, id, swap, step, bytes, from, to),
            Ok(other) => break Some(format!("it sent an unexpected message ({})", kind(&other))),
            Err(e) => break Some(format!("it sent a malformed frame ({e})")),
        }
    };
    match violation {
        Some(violation) => conn.kill_for(violation, "protocol"),
        // The channel closes when the worker exits; if it is still running
        // a moment later, it closed the channel itself.
        None if !conn.exits_within(Duration::from_millis(200)) => {
            conn.kill_for(
                "it closed its channel while still running".into(),
                "protocol",
            );
        }
        None => {}
    }
    // Whatever closed the channel, the worker must be gone before we say so.
    conn.kill();
    let status = child.wait().ok();
    {
        let (done, cv) = &conn.output_done;
        let mut done = done.lock();
        let deadline = Instant::now() + Duration::from_millis(500);
        while !*done {
            if cv.wait_until(&mut done, deadline).timed_out() {
                break;
            }
        }
    }
    let tail = String::from_utf8_lossy(conn.stderr_tail.lock().make_contiguous()).into_owned();
    let crash = classify(status, conn.kill_reason.lock().clone(), &tail);
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
    tracing::warn!(sandbox = %conn.sandbox, pid = conn.pid, cause = %crash.cause, limit = crash.limit.as_deref(), "worker process died");
    if let Some(on_crash) = on_crash {
        on_crash(crash);
    }
}

fn kind(message: &FromWorker) -> &'static str {
    match message {
        FromWorker::Hello { .. } => "hello",
        FromWorker::Configured(_) => "configured",
        FromWorker::Reply { .. } => "reply",
        FromWorker::Log { .. } => "log",
        FromWorker::Migrate { .. } => "migrate",
    }
}

/// Runs a host-registered migration the worker asked for, on a thread of
/// its own so the reader keeps reading.
fn migrate(conn: &Arc<Conn>, id: u64, swap: u64, step: u32, bytes: Vec<u8>, from: u32, to: u32) {
    let migration = conn
        .migrations
        .lock()
        .get(&swap)
        .and_then(|steps| steps.get(step as usize).cloned().flatten());
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

/// Tells why a worker died from its exit status, the host's own kill
/// reason and the end of its stderr.
pub(crate) fn classify(
    status: Option<ExitStatus>,
    reason: Option<(String, &'static str)>,
    stderr: &str,
) -> Crash {
    let signal = status.and_then(|s| s.signal());
    let exit_code = status.and_then(|s| s.code());
    let how = match (signal, exit_code) {
        (Some(sig), _) => format!("killed by signal {sig} ({})", signal_name(sig)),
        (None, Some(code)) => format!("exited with code {code}"),
        (None, None) => "ended".to_owned(),
    };
    let (cause, limit) = if let Some((cause, limit)) = reason {
        (format!("{cause} ({how})"), Some(limit))
    } else if signal == Some(libc::SIGXCPU) {
        (
            format!("CPU time limit (RLIMIT_CPU) exceeded ({how})"),
            Some("cpu"),
        )
    } else if signal == Some(libc::SIGXFSZ) {
        (
            format!("file size limit (RLIMIT_FSIZE) exceeded ({how})"),
            Some("file_size"),
        )
    } else if stderr.contains("memory allocation of") || stderr.contains("out of memory") {
        (
            format!("memory limit (RLIMIT_AS) exhausted ({how})"),
            Some("memory"),
        )
    } else if stderr.contains("has overflowed its stack") {
        (format!("stack overflow ({how})"), Some("stack"))
    } else if signal == Some(libc::SIGSYS) {
        (format!("a forbidden system call ({how})"), Some("seccomp"))
    } else {
        (how, None)
    };
    Crash {
        cause,
        signal,
        exit_code,
        limit: limit.map(str::to_owned),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTRAP => "SIGTRAP",
        _ => "signal",
    }
}

/// Drains the worker's stdout and stderr into `tracing` (lines, capped in
/// total), keeps the end of stderr, and checks the disk use of the work
/// folder every [`DISK_CHECK_EVERY`]. Ends when both pipes close — which
/// happens when the worker's pid namespace is gone, whatever it started.
fn drain(
    conn: &Conn,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    limit: Option<u64>,
    disk: Option<(PathBuf, u64)>,
) {
    let mut streams: Vec<(std::fs::File, bool, Vec<u8>)> = Vec::new();
    if let Some(out) = stdout {
        streams.push((std::fs::File::from(OwnedFd::from(out)), false, Vec::new()));
    }
    if let Some(err) = stderr {
        streams.push((std::fs::File::from(OwnedFd::from(err)), true, Vec::new()));
    }
    let mut total = 0u64;
    let mut over = false;
    let mut last_check = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    while !streams.is_empty() {
        let mut ready = vec![false; streams.len()];
        {
            let mut polls: Vec<rustix::event::PollFd<'_>> = streams
                .iter()
                .map(|(fd, _, _)| rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN))
                .collect();
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: DISK_CHECK_EVERY.as_nanos() as _,
            };
            match rustix::event::poll(&mut polls, Some(&timeout)) {
                Ok(_) => {
                    for (i, p) in polls.iter().enumerate() {
                        ready[i] = !p.revents().is_empty();
                    }
                }
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(_) => break,
            }
        }
        let mut closed = Vec::new();
        for (i, (fd, is_err, line)) in streams.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            let n = match fd.read(&mut buf) {
                Ok(0) | Err(_) => {
                    closed.push(i);
                    continue;
                }
                Ok(n) => n,
            };
            total += n as u64;
            let chunk = &buf[..n];
            if *is_err {
                let mut tail = conn.stderr_tail.lock();
                tail.extend(chunk);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
            if let Some(cap) = limit {
                if total > cap && !over {
                    over = true;
                    tracing::warn!(sandbox = %conn.sandbox, limit = cap, "worker output over its limit; killing the worker");
                    conn.kill_for(
                        format!("it wrote more than {cap} bytes to stdout/stderr"),
                        "output",
                    );
                }
            }
            if over {
                continue;
            }
            line.extend_from_slice(chunk);
            while let Some(pos) = line
                .iter()
                .position(|b| *b == b'\n')
                .or((line.len() > MAX_LINE).then_some(MAX_LINE))
            {
                let text: Vec<u8> = line.drain(..=pos).collect();
                emit_line(conn, *is_err, &text);
            }
        }
        for i in closed.into_iter().rev() {
            let (_, is_err, line) = streams.remove(i);
            if !line.is_empty() && !over {
                emit_line(conn, is_err, &line);
            }
        }
        if let Some((dir, cap)) = &disk {
            if last_check.elapsed() >= DISK_CHECK_EVERY {
                last_check = Instant::now();
                if let Ok(used) = disk_usage(dir, 100_000) {
                    if used > *cap {
                        conn.kill_for(
                            format!("its files take {used} bytes, over the disk limit of {cap}"),
                            "disk",
                        );
                    }
                }
            }
        }
    }
    let (done, cv) = &conn.output_done;
    *done.lock() = true;
    cv.notify_all();
}

fn emit_line(conn: &Conn, stderr: bool, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    let sandbox = conn.sandbox.as_str();
    if stderr {
        tracing::warn!(target: "sandbox::worker", sandbox, stream = "stderr", "{text}");
    } else {
        tracing::info!(target: "sandbox::worker", sandbox, stream = "stdout", "{text}");
    }
}

impl Runtime for ProcessRuntime {
    fn load(&self, artifact: &Path, version: u32) -> Result<ModuleMeta> {
        let _span = tracing::debug_span!("load", sandbox = %self.conn.sandbox, version, artifact = %artifact.display())
            .entered();
        let granted = self.grant(artifact, version)?;
        let file = std::fs::File::open(&granted).map_err(|source| Error::Io {
            action: "opening the artifact",
            path: granted.clone(),
            source,
        })?;
        let op = Op::Load {
            version,
            artifact: artifact.to_owned(),
        };
        match self.conn.request(op, Some(file.as_fd()), None, "")? {
            Answer::Meta(meta) => {
                self.conn
                    .mirror
                    .lock()
                    .loaded
                    .insert((meta.name.clone(), version));
                Ok(meta)
            }
            other => Err(unexpected(&other)),
        }
    }

    fn swap(&self, steps: &[SwapStep]) -> Result<Vec<SwapOutcome>> {
        let _span =
            tracing::debug_span!("swap", sandbox = %self.conn.sandbox, modules = steps.len())
                .entered();
        let swap = self.conn.next_swap.fetch_add(1, Ordering::Relaxed);
        let migrations: Vec<Option<Migration>> =
            steps.iter().map(|s| s.migration.clone()).collect();
        if migrations.iter().any(Option::is_some) {
            self.conn.migrations.lock().insert(swap, migrations);
        }
        let wire_steps = steps
            .iter()
            .map(|s| Step {
                module: s.module.clone(),
                version: s.version,
                carry_state: s.carry_state,
                initial_state: s.initial_state.clone(),
                migration: s.migration.is_some(),
                health_check: s.health_check.clone(),
            })
            .collect();
        let result = self.conn.request(
            Op::Swap {
                swap,
                steps: wire_steps,
            },
            None,
            None,
            "",
        );
        self.conn.migrations.lock().remove(&swap);
        match result.map_err(|e| self.conn.stuck(e))? {
            Answer::Swapped(outcomes) => {
                let mut mirror = self.conn.mirror.lock();
                for o in &outcomes {
                    mirror.modules.insert(o.module.clone(), o.to);
                }
                Ok(outcomes)
            }
            other => Err(unexpected(&other)),
        }
    }

    fn call(&self, module: &str, request: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>> {
        if let Some(reply) = self.conn.call_on_lane(module, request, timeout) {
            return match reply? {
                Answer::Bytes(bytes) => Ok(bytes),
                other => Err(unexpected(&other)),
            };
        }
        let op = Op::Call {
            module: module.to_owned(),
            request: request.to_vec(),
        };
        match self.conn.request(op, None, timeout, module)? {
            Answer::Bytes(bytes) => Ok(bytes),
            other => Err(unexpected(&other)),
        }
    }

    fn checkpoint(&self) -> Result<Vec<(String, SavedState)>> {
        match self
            .conn
            .request(Op::Checkpoint, None, None, "")
            .map_err(|e| self.conn.stuck(e))?
        {
            Answer::States(states) => Ok(states),
            other => Err(unexpected(&other)),
        }
    }

    fn remove(&self, module: &str) -> Result<()> {
        self.conn.request(
            Op::Remove {
                module: module.to_owned(),
            },
            None,
            None,
            module,
        )?;
        self.conn.mirror.lock().modules.remove(module);
        Ok(())
    }

    fn forget(&self, module: &str, version: u32) -> Result<()> {
        self.conn.request(
            Op::Forget {
                module: module.to_owned(),
                version,
            },
            None,
            None,
            module,
        )?;
        self.conn
            .mirror
            .lock()
            .loaded
            .remove(&(module.to_owned(), version));
        Ok(())
    }

    fn needs_replacing(&self) -> Option<String> {
        self.conn.abandoned.lock().clone()
    }

    fn info(&self) -> RuntimeInfo {
        let mirror = self.conn.mirror.lock();
        RuntimeInfo {
            isolation: IsolationKind::PROCESS,
            pid: self.conn.pid,
            modules: mirror
                .modules
                .iter()
                .map(|(m, v)| (m.clone(), *v))
                .collect(),
            loaded_versions: mirror.loaded.len(),
            jail: Some(crate::jail::AppliedLayers::of_worker(
                crate::jail::probe(),
                self.network,
                self._slot.is_some(),
                &self.report,
            )),
        }
    }
}

fn unexpected(answer: &Answer) -> Error {
    let what = match answer {
        Answer::Meta(_) => "module metadata",
        Answer::Swapped(_) => "swap outcomes",
        Answer::Bytes(_) => "bytes",
        Answer::States(_) => "states",
        Answer::Done => "done",
    };
    Error::Worker {
        message: format!("it answered with {what} where something else was asked"),
    }
}
