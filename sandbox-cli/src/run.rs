//! `sandbox run DIR`: one sandbox, JSON lines on stdin/stdout.
//!
//! Three parts run at once:
//!
//! - the **reader** (the loop in [`run`]) reads stdin as raw bytes, one line
//!   at a time with a cap of [`protocol::MAX_LINE`], from the first moment:
//!   also while the sandbox is being created, so `quit` is always seen;
//! - one **task per request**, at most [`MAX_RUNNING`] running at once; a
//!   request that arrives while the sandbox is still starting waits for it.
//!   Finished tasks are reaped as the reader goes, so memory stays flat
//!   however many requests come;
//! - the **writer** ([`write_lines`]), the only writer of stdout: events as
//!   they come, and before each reply every event already emitted. A request
//!   that failed because the worker died waits (at most
//!   [`CRASH_EVENT_WAIT`]) until the `crashed` event is written, which the
//!   host reports a moment after the call fails.
//!
//! `quit` or end of input: the reader stops, what was asked gets
//! [`QUIT_GRACE`] to finish (time spent building does not count: a build has
//! its own timeout), what is still running then is answered with an error,
//! `bye` is written, and the sandbox is shut down within
//! [`SHUTDOWN_DEADLINE`]. A plugin that never returns cannot keep the host
//! alive: past the deadline the host exits without waiting for it (a worker
//! dies with the host).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sandbox_core::isolate::{Process, WorkerCommand};
use sandbox_core::{Config, EventKind, EventStream, Manager, SandboxId, SandboxSpec};
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::protocol::{self, Request};
use crate::RunArgs;

/// How long requests (and the sandbox's creation) may still run after
/// `quit` or end of input, not counting time spent building.
pub const QUIT_GRACE: Duration = Duration::from_secs(10);

/// How long shutting the sandbox down may take before the host exits
/// without waiting for it.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// How long the reply to a request that failed because the worker died
/// waits for the `crashed` event to be written first.
pub const CRASH_EVENT_WAIT: Duration = Duration::from_secs(5);

/// Requests that run at once; more wait their turn (each running request
/// may hold a thread of its own in the manager).
pub const MAX_RUNNING: usize = 16;

/// How long the writer may take to write what is left when the host exits.
const WRITER_DEADLINE: Duration = Duration::from_secs(5);

/// A sandbox id from a folder name: its usable characters, or `sandbox`.
pub fn id_for(dir: &std::path::Path) -> SandboxId {
    let name: String = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(64)
        .collect();
    SandboxId::new(name)
        .or_else(|_| SandboxId::new("sandbox"))
        .expect("`sandbox` is a valid id")
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let base = match &args.cache_dir {
        Some(dir) => Config::with_cache_root(dir),
        None => Config::default(),
    };
    let config = Config {
        offline: args.offline,
        history: args.history,
        recycle_after_swaps: args.recycle_after,
        max_restarts: args.max_restarts,
        audit_log: Some(crate::audit::log_path(args.audit_log.as_ref(), &base)),
        ..base
    };
    let worker = WorkerCommand::current_exe_with([crate::WORKER_SUBCOMMAND])
        .context("finding this executable to run sandbox workers")?;
    let manager = Manager::builder(config)
        .isolator(Process::new(worker).with_pool(args.warm_pool))
        .build()
        .context("starting the sandbox manager")?;
    let id = match &args.id {
        Some(id) => SandboxId::new(id.clone())?,
        None => id_for(&args.dir),
    };
    let (tx, rx) = mpsc::unbounded_channel::<Out>();
    let (crashes_tx, crashes) = watch::channel(0u64);
    let (builds_tx, builds) = watch::channel(0u32);
    let tally = Tally {
        crashes: crashes_tx,
        builds: builds_tx,
    };
    let writer = tokio::spawn(write_lines(rx, manager.subscribe(), tally));

    let spec = SandboxSpec::new(&args.dir)
        .isolation(args.isolation())
        .profile(args.profile)
        .durability(args.durability);
    let (ready_tx, ready) = watch::channel(Startup::Starting);
    let startup = tokio::spawn(start(manager.clone(), id.clone(), spec, args.watch));
    let mut host = Host {
        ctx: Ctx {
            manager: manager.clone(),
            id,
            tx,
            crashes,
            ready,
            process: !args.isolation().shares_host(),
            running: Arc::new(Semaphore::new(MAX_RUNNING)),
        },
        ready_tx,
        startup: Some(startup),
        tasks: JoinSet::new(),
        pending: HashMap::new(),
    };

    let mut input = LineReader::new(BufReader::new(tokio::io::stdin()));
    let mut quit_id = None;
    // Left by `quit` or end of input (else: the sandbox failed to start).
    let mut ended = false;
    while !ended && host.startup_state() != Startup::Failed {
        tokio::select! {
            done = join(&mut host.startup) => host.started(done),
            line = input.next() => match line {
                Line::Eof => ended = true,
                Line::TooLong { head, len } => host.send(protocol::too_long(&head, len)),
                Line::Whole(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {}
                Line::Whole(bytes) => match protocol::parse(&bytes) {
                    Err(error_line) => host.send(error_line),
                    Ok(Request::Quit { id }) => {
                        quit_id = id;
                        ended = true;
                    }
                    Ok(request) => host.spawn(request),
                },
            },
        }
        host.reap();
    }

    let mut clean = host.settle(builds).await;
    let code = if host.startup_state() == Startup::Failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    };
    if ended {
        host.send(protocol::reply(quit_id, json!("bye")));
        // `bye` is out before the sandbox's last events (`destroyed`).
        let (written, flushed) = oneshot::channel();
        let _ = host.ctx.tx.send(Out::Flush(written));
        let _ = tokio::time::timeout(WRITER_DEADLINE, flushed).await;
    }
    if tokio::time::timeout(SHUTDOWN_DEADLINE, manager.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "the sandbox did not shut down within {SHUTDOWN_DEADLINE:?} (a plugin is still running); exiting without waiting for it"
        );
        clean = false;
    }
    drop(host);
    if tokio::time::timeout(WRITER_DEADLINE, writer).await.is_err() {
        tracing::warn!("stdout did not take the last lines within {WRITER_DEADLINE:?}");
    }
    if !clean {
        // Plugin code still runs on a thread of this process (or holds the
        // sandbox); returning would wait for it when the async runtime
        // drops. Everything is written: end here.
        std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 2 });
    }
    Ok(code)
}

/// Creates the sandbox (and turns on auto-reload for `--watch`).
async fn start(
    manager: Manager,
    id: SandboxId,
    spec: SandboxSpec,
    watch: bool,
) -> Result<(), sandbox_core::Error> {
    manager.create(id.clone(), spec).await?;
    if watch {
        manager.enable_auto_reload(id.as_str()).await?;
    }
    Ok(())
}

/// Awaits the handle while there is one (never resolves otherwise).
async fn join<T>(handle: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match handle {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// Where the sandbox's creation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Startup {
    Starting,
    Ready,
    Failed,
}

/// What each request task needs.
#[derive(Clone)]
struct Ctx {
    manager: Manager,
    id: SandboxId,
    /// Reply lines, to the writer.
    tx: mpsc::UnboundedSender<Out>,
    /// `crashed` events written so far.
    crashes: watch::Receiver<u64>,
    ready: watch::Receiver<Startup>,
    /// The modules run in a worker process (whose death is reported as an event).
    process: bool,
    /// One permit per request running.
    running: Arc<Semaphore>,
}

/// The reader's side: the sandbox's creation and the requests in flight.
struct Host {
    ctx: Ctx,
    ready_tx: watch::Sender<Startup>,
    /// The creation, until it finished.
    startup: Option<JoinHandle<Result<(), sandbox_core::Error>>>,
    tasks: JoinSet<()>,
    /// The id of each request in flight, by task.
    pending: HashMap<tokio::task::Id, Option<Value>>,
}

impl Host {
    fn send(&self, line: Value) {
        // The writer outlives the host; a closed channel means stdout is gone.
        let _ = self.ctx.tx.send(Out::Line(line));
    }

    fn startup_state(&self) -> Startup {
        *self.ctx.ready.borrow()
    }

    /// The creation finished.
    fn started(&mut self, done: Result<Result<(), sandbox_core::Error>, tokio::task::JoinError>) {
        self.startup = None;
        let state = match done {
            Ok(Ok(())) => Startup::Ready,
            Ok(Err(e)) => {
                self.send(protocol::from_error(None, &e));
                Startup::Failed
            }
            Err(e) => {
                self.send(protocol::error_line(
                    None,
                    "system",
                    "system",
                    "escalate",
                    &format!("creating the sandbox failed unexpectedly ({e}); this is a bug in sandbox, please report it"),
                    None,
                ));
                Startup::Failed
            }
        };
        self.ready_tx.send_replace(state);
    }

    fn spawn(&mut self, request: Request) {
        let rid = request.id();
        let ctx = self.ctx.clone();
        let task = self.tasks.spawn(async move {
            let line = serve(&ctx, request).await;
            let _ = ctx.tx.send(Out::Line(line));
        });
        self.pending.insert(task.id(), rid);
    }

    /// Forgets the tasks that finished.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.finished(done);
        }
    }

    fn finished(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match &done {
            Ok((id, ())) => *id,
            Err(e) => e.id(),
        };
        let rid = self.pending.remove(&id).flatten();
        if let Err(e) = done {
            if e.is_panic() {
                self.send(protocol::error_line(
                    rid,
                    "system",
                    "system",
                    "escalate",
                    "the host failed while handling this request; this is a bug in sandbox, please report it",
                    None,
                ));
            }
        }
    }

    /// After `quit` or end of input: lets the creation and the requests in
    /// flight finish, for [`QUIT_GRACE`] once no build runs. What is left
    /// then is abandoned, each request answered with an error. Returns
    /// whether everything finished.
    async fn settle(&mut self, mut builds: watch::Receiver<u32>) -> bool {
        let mut deadline = Instant::now() + QUIT_GRACE;
        let mut building = *builds.borrow_and_update() > 0;
        let mut counting = true;
        while self.startup.is_some() || !self.tasks.is_empty() {
            tokio::select! {
                done = join(&mut self.startup) => self.started(done),
                Some(done) = self.tasks.join_next_with_id() => self.finished(done),
                changed = builds.changed(), if counting => {
                    counting = changed.is_ok();
                    let now = *builds.borrow_and_update() > 0;
                    if building && !now {
                        deadline = Instant::now() + QUIT_GRACE;
                    }
                    building = now;
                },
                () = tokio::time::sleep_until(deadline), if !building => break,
            }
        }
        if self.startup.is_none() && self.tasks.is_empty() {
            return true;
        }
        let starting = self.startup.take().is_some();
        if starting {
            tracing::warn!(
                "the sandbox was still starting {QUIT_GRACE:?} after quit (a module's init may never return); giving up on it"
            );
        }
        self.tasks.abort_all();
        while let Some(done) = self.tasks.join_next_with_id().await {
            let cancelled = matches!(&done, Err(e) if e.is_cancelled());
            let id = match &done {
                Ok((id, ())) => *id,
                Err(e) => e.id(),
            };
            if !cancelled {
                self.finished(done);
                continue;
            }
            let rid = self.pending.remove(&id).flatten();
            let message = if starting {
                format!("not run: the host quit while the sandbox was still starting, {QUIT_GRACE:?} after quit or end of input (a module's init may never return); check the modules' init and start the host again")
            } else {
                format!("abandoned: the host quit while this request still ran, {QUIT_GRACE:?} after quit or end of input; it may or may not have taken effect — wait for replies before quitting, and check the plugin if it never answers")
            };
            self.send(protocol::error_line(
                rid,
                if starting { "not_running" } else { "timeout" },
                "runtime",
                "escalate",
                &message,
                None,
            ));
        }
        false
    }
}

/// Runs one request (once the sandbox started) and returns its line.
async fn serve(ctx: &Ctx, request: Request) -> Value {
    let rid = request.id();
    let mut ready = ctx.ready.clone();
    let startup = ready
        .wait_for(|s| *s != Startup::Starting)
        .await
        .map(|s| *s)
        .unwrap_or(Startup::Failed);
    if startup != Startup::Ready {
        return protocol::error_line(
            rid,
            "not_running",
            "request",
            "fix_request",
            "the sandbox did not start (see the error line without an id); fix what it says and start the host again",
            None,
        );
    }
    // (Never closed: a permit or, in theory, none.)
    let _running = ctx.running.acquire().await.ok();
    let crashes = *ctx.crashes.borrow();
    match handle(&ctx.manager, &ctx.id, request).await {
        Ok(output) => protocol::reply(rid, output),
        Err(e) => {
            // A worker that died (or was killed for a timeout) is reported
            // by an event the host emits a moment later: it goes first.
            if ctx.process
                && matches!(
                    e.kind(),
                    sandbox_core::ErrorKind::Crashed | sandbox_core::ErrorKind::Timeout
                )
            {
                let mut written = ctx.crashes.clone();
                let _ = tokio::time::timeout(CRASH_EVENT_WAIT, written.wait_for(|n| *n > crashes))
                    .await;
            }
            protocol::from_error(rid, &e)
        }
    }
}

async fn handle(
    manager: &Manager,
    id: &SandboxId,
    request: Request,
) -> Result<Value, sandbox_core::Error> {
    let id = id.as_str();
    match request {
        Request::Call { module, input, .. } => {
            let bytes = serde_json::to_vec(&input).unwrap_or_default();
            let out = manager.call(id, &module, &bytes).await?;
            Ok(serde_json::from_slice(&out)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out).into_owned())))
        }
        Request::Info { .. } => Ok(to_json(&manager.info(id)?)),
        Request::Reload { .. } => {
            let report = manager.hot_reload(id).await?;
            let mut v = to_json(&report);
            if report.is_unchanged() {
                v["message"] = json!("nothing changed; no module was swapped");
            }
            Ok(v)
        }
        Request::Versions { module, .. } => Ok(to_json(&manager.versions(id, &module)?)),
        Request::Rollback {
            module, version, ..
        } => Ok(to_json(&manager.rollback(id, &module, version).await?)),
        Request::Restart { .. } => Ok(to_json(&manager.restart(id).await?)),
        Request::Quit { .. } => Ok(json!("bye")),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({ "unserializable": e.to_string() }))
}

/// One line of input.
enum Line {
    /// A line (without its newline) of at most [`protocol::MAX_LINE`] bytes.
    Whole(Vec<u8>),
    /// A longer line: its first [`protocol::MAX_LINE`] bytes and its length.
    TooLong { head: Vec<u8>, len: usize },
    /// End of input (or stdin failed).
    Eof,
}

/// Reads lines of raw bytes, keeping at most [`protocol::MAX_LINE`] bytes
/// of each. Cancel safe: a partly read line stays in `self`.
struct LineReader<R> {
    inner: R,
    line: Vec<u8>,
    /// Bytes of the current line past the cap, skipped.
    skipped: usize,
    eof: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            line: Vec::new(),
            skipped: 0,
            eof: false,
        }
    }

    async fn next(&mut self) -> Line {
        loop {
            if self.eof {
                return Line::Eof;
            }
            let available = match self.inner.fill_buf().await {
                Ok(available) => available,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading stdin failed; taking it as the end of input");
                    &[]
                }
            };
            if available.is_empty() {
                self.eof = true;
                if self.line.is_empty() && self.skipped == 0 {
                    return Line::Eof;
                }
                return self.take();
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let part = &available[..newline.unwrap_or(available.len())];
            let keep = part
                .len()
                .min(protocol::MAX_LINE.saturating_sub(self.line.len()));
            self.line.extend_from_slice(&part[..keep]);
            self.skipped += part.len() - keep;
            let used = newline.map_or(part.len(), |at| at + 1);
            self.inner.consume(used);
            if newline.is_some() {
                return self.take();
            }
        }
    }

    fn take(&mut self) -> Line {
        let line = std::mem::take(&mut self.line);
        match std::mem::take(&mut self.skipped) {
            0 => Line::Whole(line),
            skipped => Line::TooLong {
                len: line.len() + skipped,
                head: line,
            },
        }
    }
}

/// What the writer is asked to do.
enum Out {
    /// Write a reply or error line (after the events emitted so far).
    Line(Value),
    /// Say when everything before is written.
    Flush(oneshot::Sender<()>),
}

/// What the writer has written, for those who wait on it.
struct Tally {
    /// `crashed` events written.
    crashes: watch::Sender<u64>,
    /// Builds started and not finished.
    builds: watch::Sender<u32>,
}

impl Tally {
    fn note(&self, event: &EventKind) {
        match event.name() {
            "crashed" => self.crashes.send_modify(|n| *n += 1),
            "compile_started" => self.builds.send_modify(|n| *n += 1),
            "compile_finished" => self.builds.send_modify(|n| *n = n.saturating_sub(1)),
            _ => {}
        }
    }

    /// Events were missed: whatever waited for a crash report waits no more.
    fn lagged(&self) {
        self.crashes.send_modify(|n| *n += 1);
    }
}

/// The only writer of stdout: events as they come, and before each reply
/// every event already emitted, so a request's events precede its reply.
async fn write_lines(
    mut replies: mpsc::UnboundedReceiver<Out>,
    mut events: EventStream,
    tally: Tally,
) {
    let mut out = tokio::io::stdout();
    let mut events_open = true;
    loop {
        tokio::select! {
            reply = replies.recv() => {
                let reply = match reply {
                    Some(Out::Line(reply)) => reply,
                    Some(Out::Flush(written)) => {
                        let _ = written.send(());
                        continue;
                    }
                    None => break,
                };
                while events_open {
                    match events.try_recv() {
                        Ok(event) => {
                            emit(&mut out, &protocol::event_line(&event)).await;
                            tally.note(&event.kind);
                        }
                        Err(TryRecvError::Lagged(n)) => {
                            emit(&mut out, &lagged(n)).await;
                            tally.lagged();
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Closed) => events_open = false,
                    }
                }
                emit(&mut out, &reply).await;
            }
            event = events.recv(), if events_open => match event {
                Ok(event) => {
                    emit(&mut out, &protocol::event_line(&event)).await;
                    tally.note(&event.kind);
                }
                Err(RecvError::Lagged(n)) => {
                    emit(&mut out, &lagged(n)).await;
                    tally.lagged();
                }
                Err(RecvError::Closed) => events_open = false,
            },
        }
    }
    // Events emitted during shutdown (destroyed).
    while let Ok(event) = events.try_recv() {
        emit(&mut out, &protocol::event_line(&event)).await;
    }
}

fn lagged(missed: u64) -> Value {
    json!({"type": "event", "event": "lagged", "missed": missed})
}

async fn emit(out: &mut tokio::io::Stdout, line: &Value) {
    let mut text = line.to_string();
    text.push('\n');
    if out.write_all(text.as_bytes()).await.is_err() || out.flush().await.is_err() {
        tracing::debug!("stdout closed");
    }
}
