//! The worker process: the program a [`Process`](crate::Process) runtime
//! starts for each sandbox.
//!
//! Any binary can host it by calling [`worker_main`] (the `sandbox` command
//! line does from a hidden `sandbox __worker` subcommand; this crate ships a
//! `sandbox-worker` binary that does nothing else). The host starts it in a
//! jail with one Unix socket as descriptor [`WORKER_FD_ENV`] names; the
//! worker then:
//!
//! 1. says hello (its pid as the host sees it);
//! 2. waits for its configuration — which sandbox, its limits, its work
//!    folder and artifact folders (as descriptors) — and applies its own
//!    jail layers: lowered rlimits, landlock limited to those folders and
//!    the system libraries, `no_new_privs` and the worker seccomp filter.
//!    Only then does any plugin code run. (A worker of the warm pool sits
//!    in step 2 until a sandbox takes it.);
//! 3. runs an [`InProcess`] runtime and forwards each
//!    request to it, so loading, ABI checks, swaps, module-to-module calls
//!    and their rules are exactly the in-process backend's.
//!
//! Calls usually arrive on lanes: a socket per calling host thread, sent
//! over the channel, each served by a thread of its own (see
//! `ToWorker::Lane`). Other requests run on a small pool of threads (grown
//! on demand), so calls to
//! different modules run in parallel and a swap waits for calls in flight
//! exactly as in-process; calls to one module are serialized by the
//! in-process runtime. Plugin log lines and the runtime's own `tracing`
//! events are sent to the host, which emits them with the sandbox id.
//!
//! Memory: the worker's limit is `RLIMIT_AS`, address space. The allocator
//! is held to two arenas (see `MALLOC_ARENAS`), because glibc's arena per
//! thread reserves 64 MiB each and a worker serving many callers ran out
//! of address space with little memory in use. A load that fails for lack
//! of address space or descriptors is reported as
//! [`Error::Exhausted`], the limit at fault named.
//! Each lifecycle entry point of a module runs within the sandbox's
//! lifecycle timeout, as in-process.

#![allow(unsafe_code)] // Adopting the inherited descriptor; ignoring SIGXFSZ.

mod logs;

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::inprocess::InProcessRuntime;
use crate::jail::{apply_worker_layers, prepare_worker_layers, PreparedLayers, WorkerLayers};
use crate::process::wire::{
    self, Answer, Configure, FromWorker, Op, Step, ToWorker, WireError, PROTOCOL,
};
use crate::process::{readable_within, FdReader};
use crate::runtime::{LaunchSpec, Migration, Runtime, SwapStep};
use crate::{InProcess, Limit};

/// The environment variable naming the descriptor of the worker's channel
/// to the host.
pub const WORKER_FD_ENV: &str = "SANDBOX_WORKER_FD";

/// Most threads the worker starts to run requests.
const MAX_EXECUTORS: usize = 64;

/// Runs the worker process: reads the channel descriptor from
/// [`WORKER_FD_ENV`], serves the host until the channel closes, and
/// returns the process's exit code. Call it from `main` of any binary:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     sandbox_isolate::worker::worker_main()
/// }
/// ```
pub fn worker_main() -> ExitCode {
    bound_malloc_arenas();
    let fd = match std::env::var(WORKER_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        Some(fd) if fd >= 0 => fd,
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "this is a sandbox worker process; it is started by the sandbox host, not by hand ({WORKER_FD_ENV} is not set)"
            );
            return ExitCode::from(2);
        }
    };
    // SAFETY: F_GETFD only checks that the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        let _ = writeln!(
            std::io::stderr(),
            "sandbox worker: descriptor {fd} from {WORKER_FD_ENV} is not open"
        );
        return ExitCode::from(2);
    }
    // First, while this process has one thread: the jail the host planned
    // (uid, rlimits, namespaces, the pid namespace's reaper and init).
    if let Err(e) = crate::jail::enter_planned_jail(fd) {
        let _ = writeln!(
            std::io::stderr(),
            "sandbox worker: cannot enter its jail: {e}"
        );
        return ExitCode::from(71);
    }
    // SAFETY: the host passed this descriptor to this process for the
    // worker's exclusive use; nothing else in the process owns it.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: ignoring SIGXFSZ makes a write past RLIMIT_FSIZE fail with
    // EFBIG (an error the plugin reports) instead of killing the worker.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    match serve(stream) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "sandbox worker: {e}");
            ExitCode::from(70)
        }
    }
}

/// Most malloc arenas the worker's allocator keeps (`M_ARENA_MAX`).
///
/// The worker's memory limit is `RLIMIT_AS`, which counts address space, not
/// memory in use. glibc gives each thread that allocates an arena of its own
/// (up to 8 × cores), and each arena reserves 64 MiB of address space up
/// front: 20 threads serving pipelined calls took a worker from 89 MiB to
/// 510 MiB of its 512 MiB, with little of it used, and the next library
/// could not be mapped. Two arenas bound that for any number of threads, at
/// the cost of some contention between threads allocating at once (calls
/// to one module are serialized anyway). `RLIMIT_AS` stays the limit (not
/// `RLIMIT_DATA`): it is the one that also bounds `mmap`, which a module
/// can call directly.
const MALLOC_ARENAS: libc::c_int = 2;

/// Caps the allocator's arenas ([`MALLOC_ARENAS`]); first thing in `main`,
/// before any thread allocates.
fn bound_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes
    // any positive count, and this runs while the process has one thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// The host-side pid of this process: `/proc/self` is the host's procfs,
/// which names processes by their pid in the host's namespace.
fn host_pid() -> u32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(std::process::id)
}

/// Frames out to the host, from any thread.
pub(crate) struct Outbox {
    stream: Mutex<UnixStream>,
}

impl Outbox {
    pub(crate) fn send(&self, message: &FromWorker) {
        let Ok(frame) = wire::encode(message) else {
            return;
        };
        let stream = self.stream.lock();
        if crate::process::send_all(&stream, &frame).is_err() {
            // The host is gone: nothing left to serve.
            std::process::exit(0);
        }
    }
}

/// Where the host's answer to one migration request goes.
type MigrationReply = crossbeam_channel::Sender<Result<Vec<u8>, String>>;

/// Migrations the host runs for a swap in progress.
struct Migrations {
    next: AtomicU64,
    waiting: Mutex<std::collections::HashMap<u64, MigrationReply>>,
}

struct State {
    runtime: InProcessRuntime,
    /// Artifacts loaded in place: the descriptors (kept open for good, so
    /// their `/proc/self/fd/N` names stay unique) and their inodes.
    in_place: Mutex<InPlace>,
    outbox: Arc<Outbox>,
    migrations: Arc<Migrations>,
    staged: AtomicU64,
    dispatch: tracing::Dispatch,
}

fn serve(stream: UnixStream) -> std::io::Result<()> {
    let outbox = Arc::new(Outbox {
        stream: Mutex::new(stream.try_clone()?),
    });
    outbox.send(&FromWorker::Hello {
        pid: host_pid(),
        protocol: PROTOCOL,
    });
    // A pooled worker waits for its sandbox: build what its jail does not
    // need the sandbox for meanwhile (pooled workers never have the
    // network). A configuration already waiting is applied straight away.
    let prepared = if readable_within(&stream, std::time::Duration::ZERO).unwrap_or(false) {
        None
    } else {
        prepare_worker_layers(false).ok()
    };
    let mut reader = FdReader::new(stream);

    let Some(first) = reader.read_frame()? else {
        return Ok(());
    };
    let ToWorker::Configure(config) = wire::decode::<ToWorker>(&first)? else {
        outbox.send(&FromWorker::Configured(Err(
            "the first message was not the configuration".into(),
        )));
        return Ok(());
    };
    let state = match configure(&config, &mut reader, &outbox, prepared) {
        Ok(state) => Arc::new(state),
        Err(message) => {
            outbox.send(&FromWorker::Configured(Err(message)));
            return Ok(());
        }
    };
    let crew = Arc::new(Crew {
        reader: Mutex::new(reader),
        waiting: AtomicUsize::new(0),
        threads: AtomicUsize::new(1),
        state,
    });
    serve_frames(&crew)
}

/// The threads that serve requests, leader/follower style: whichever
/// thread holds the reader reads the next frame, hands the reader to a
/// waiting thread (starting one if none waits, up to [`MAX_EXECUTORS`]) and
/// runs the request itself — no hand-off between a reader and an executor
/// on the way of a call.
struct Crew {
    reader: Mutex<FdReader>,
    /// Threads waiting for (or holding) the reader.
    waiting: AtomicUsize,
    threads: AtomicUsize,
    state: Arc<State>,
}

fn serve_frames(crew: &Arc<Crew>) -> ! {
    let _dispatch = tracing::dispatcher::set_default(&crew.state.dispatch);
    loop {
        crew.waiting.fetch_add(1, Ordering::AcqRel);
        let next = {
            let mut reader = crew.reader.lock();
            match reader.read_frame() {
                Ok(Some(frame)) => match wire::decode::<ToWorker>(&frame) {
                    Ok(ToWorker::Lane) => {
                        if let Some(fd) = reader.take_fd() {
                            open_lane(&crew.state, fd);
                        }
                        Some(Err(ToWorker::Lane))
                    }
                    Ok(ToWorker::Request { id, op }) => {
                        let fd = if matches!(op, Op::Load { .. }) {
                            reader.take_fd()
                        } else {
                            None
                        };
                        Some(Ok(Job { id, op, fd }))
                    }
                    Ok(other) => Some(Err(other)),
                    Err(_) => None,
                },
                Ok(None) | Err(_) => None,
            }
        };
        crew.waiting.fetch_sub(1, Ordering::AcqRel);
        // The channel closed (the host is gone or dropped the runtime), or
        // it broke: nothing left to serve.
        let Some(next) = next else {
            std::process::exit(0)
        };
        match next {
            Ok(job) => {
                if crew.waiting.load(Ordering::Acquire) == 0 {
                    crew.recruit();
                }
                run(&crew.state, job);
            }
            Err(ToWorker::MigrateReply { id, result }) => {
                if let Some(waiter) = crew.state.migrations.waiting.lock().remove(&id) {
                    let _ = waiter.send(result);
                }
            }
            Err(ToWorker::Lane) => {}
            Err(_) => crew.state.outbox.send(&FromWorker::Configured(Err(
                "the worker is already configured".into(),
            ))),
        }
    }
}

impl Crew {
    /// Starts one more thread to take the reader. Out of threads
    /// (`RLIMIT_NPROC`), the busy ones take it back when they finish.
    fn recruit(self: &Arc<Self>) {
        if self.threads.fetch_add(1, Ordering::AcqRel) >= MAX_EXECUTORS {
            self.threads.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let crew = Arc::clone(self);
        let started = std::thread::Builder::new()
            .name("sandbox-serve".into())
            .spawn(move || {
                serve_frames(&crew);
            });
        if started.is_err() {
            self.threads.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Serves a call lane on a thread of its own. Without a thread to spare
/// (`RLIMIT_NPROC`), the lane is closed unread: the host sees it close
/// while the worker lives on and sends its calls on the channel instead.
fn open_lane(state: &Arc<State>, fd: OwnedFd) {
    let state = Arc::clone(state);
    let _ = std::thread::Builder::new()
        .name("sandbox-lane".into())
        .spawn(move || serve_lane(&state, UnixStream::from(fd)));
}

/// Answers the calls of one lane, one at a time, until the host closes it.
fn serve_lane(state: &State, stream: UnixStream) {
    let _dispatch = tracing::dispatcher::set_default(&state.dispatch);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = std::io::BufReader::new(read_half);
    while let Ok(Some(frame)) = wire::read_frame(&mut reader) {
        let Ok(ToWorker::Request {
            id,
            op: op @ Op::Call { .. },
        }) = wire::decode::<ToWorker>(&frame)
        else {
            return;
        };
        let Ok(reply) = wire::encode(&answer(state, id, op, None)) else {
            return;
        };
        if crate::process::send_all(&stream, &reply).is_err() {
            return;
        }
    }
}

/// Applies the jail layers and starts the in-process runtime.
fn configure(
    config: &Configure,
    reader: &mut FdReader,
    outbox: &Arc<Outbox>,
    prepared: Option<PreparedLayers>,
) -> Result<State, String> {
    let work_dir = reader
        .take_fd()
        .ok_or("the configuration came without the work folder")?;
    let mut dirs = Vec::new();
    for _ in 0..config.artifact_dirs {
        dirs.push(
            reader
                .take_fd()
                .ok_or("the configuration came without its artifact folders")?,
        );
    }
    rustix::process::fchdir(&work_dir).map_err(|e| format!("cannot enter the work folder: {e}"))?;
    let layers = WorkerLayers {
        limits: &config.limits,
        work_dir: work_dir.as_fd(),
        read_only: dirs
            .iter()
            .map(|d| d.as_fd())
            .collect::<Vec<BorrowedFd<'_>>>(),
        network: config.network,
        require: config.require,
    };
    let report = apply_worker_layers(&layers, prepared).map_err(|e| e.to_string())?;
    drop(dirs);
    drop(work_dir);

    let dispatch = tracing::Dispatch::new(logs::Forward::new(Arc::clone(outbox), config.log_level));
    let mut spec = LaunchSpec::new(config.sandbox.clone(), "lib");
    spec.lifecycle_timeout = config.lifecycle_timeout;
    let runtime = InProcess::new().launch_here(&spec);
    outbox.send(&FromWorker::Configured(Ok(report)));
    Ok(State {
        runtime,
        in_place: Mutex::new(InPlace::default()),
        outbox: Arc::clone(outbox),
        migrations: Arc::new(Migrations {
            next: AtomicU64::new(1),
            waiting: Mutex::new(Default::default()),
        }),
        staged: AtomicU64::new(0),
        dispatch,
    })
}

struct Job {
    id: u64,
    op: Op,
    fd: Option<OwnedFd>,
}

fn run(state: &State, job: Job) {
    state.outbox.send(&answer(state, job.id, job.op, job.fd));
}

/// The reply to request `id`. Plugin panics are caught below this; anything
/// else must not leave the host waiting for an answer that never comes.
fn answer(state: &State, id: u64, op: Op, fd: Option<OwnedFd>) -> FromWorker {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(state, op, fd)))
        .unwrap_or_else(|_| {
            Err(Error::Worker {
                message: "the worker failed while running a request".into(),
            })
        })
        .map_err(|e| WireError::from(&e));
    FromWorker::Reply { id, result }
}

fn handle(state: &State, op: Op, fd: Option<OwnedFd>) -> Result<Answer> {
    let rt = &state.runtime;
    Ok(match op {
        Op::Load { version, artifact } => {
            Answer::Meta(load(state, fd, &artifact, version).map_err(|e| exhausted(e, &artifact))?)
        }
        Op::Swap { swap, steps } => {
            let steps: Vec<SwapStep> = steps
                .into_iter()
                .enumerate()
                .map(|(i, s)| step(state, swap, i, s))
                .collect();
            Answer::Swapped(rt.swap(&steps)?)
        }
        Op::Call { module, request } => Answer::Bytes(rt.call(&module, &request, None)?),
        Op::Checkpoint => Answer::States(rt.checkpoint()?),
        Op::Remove { module } => {
            rt.remove(&module)?;
            Answer::Done
        }
        Op::Forget { module, version } => {
            rt.forget(&module, version)?;
            Answer::Done
        }
    })
}

/// Most artifacts loaded in place (each keeps a descriptor open); later
/// loads copy.
const MAX_IN_PLACE: usize = 32;

/// The artifacts this worker mapped where they are.
#[derive(Default)]
struct InPlace {
    fds: Vec<OwnedFd>,
    inodes: std::collections::HashSet<(u64, u64)>,
}

/// Loads the artifact the host opened.
///
/// The first load of a file maps it in place, through the descriptor's
/// `/proc/self/fd/N` path, when the jail lets the worker read it there (it
/// is in an artifact folder): no copy, which is most of a cold start's
/// loading time. The descriptor is then kept open for the life of the
/// process, so that path names this file alone — the dynamic loader
/// matches libraries by path and by inode and would hand back the old
/// image. A file already mapped (the same artifact loaded again) or past
/// [`MAX_IN_PLACE`] goes through the in-process backend's per-load copy;
/// one the jail does not let the worker read is staged in the work folder
/// first. Errors name the host's path.
fn load(
    state: &State,
    fd: Option<OwnedFd>,
    artifact: &Path,
    version: u32,
) -> Result<crate::ModuleMeta> {
    use std::os::fd::AsRawFd;
    let Some(fd) = fd else {
        // The descriptor is dropped by the kernel when the worker has no
        // room for it (`exhausted` tells); anything else is a host bug.
        return Err(Error::Worker {
            message: "a load request came without the artifact's descriptor".into(),
        });
    };
    let direct = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if std::fs::File::open(&direct).is_ok() {
        let inode = rustix::fs::fstat(&fd)
            .ok()
            // Not `u64` on every target.
            .map(|st| {
                #[allow(clippy::unnecessary_cast)]
                (st.st_dev as u64, st.st_ino as u64)
            });
        let fresh = {
            let in_place = state.in_place.lock();
            inode.filter(|id| in_place.fds.len() < MAX_IN_PLACE && !in_place.inodes.contains(id))
        };
        let Some(inode) = fresh else {
            return state
                .runtime
                .load(&direct, version)
                .map_err(|e| rename(e, artifact));
        };
        let loaded = state.runtime.load_in_place(&direct, artifact, version);
        // Kept whatever the outcome: a load that failed its checks may
        // still have been mapped under this name.
        let mut in_place = state.in_place.lock();
        in_place.inodes.insert(inode);
        in_place.fds.push(fd);
        return loaded;
    }
    let staged = PathBuf::from(format!(
        "stage-{}.so",
        state.staged.fetch_add(1, Ordering::Relaxed)
    ));
    let copied = std::fs::File::create(&staged)
        .and_then(|mut out| std::io::copy(&mut std::fs::File::from(fd), &mut out));
    if let Err(source) = copied {
        let _ = std::fs::remove_file(&staged);
        return Err(Error::Io {
            action: "staging the artifact",
            path: artifact.to_owned(),
            source,
        });
    }
    let result = state.runtime.load(&staged, version);
    let _ = std::fs::remove_file(&staged);
    result.map_err(|e| rename(e, artifact))
}

/// Turns a failed load into [`Error::Exhausted`] when the worker is out of
/// address space or descriptors: the dynamic loader says "failed to map
/// segment from shared object" or "cannot allocate memory" when `mmap`
/// hits `RLIMIT_AS`, and a descriptor sent with the request is dropped when
/// the worker is at `RLIMIT_NOFILE`. Those are the sandbox's limits, not
/// its source, at fault.
fn exhausted(e: Error, artifact: &Path) -> Error {
    let action = format!("cannot load `{}`", artifact.display());
    let (address_space, files) = match &e {
        Error::Load { message, .. } => {
            let m = message.to_ascii_lowercase();
            let nomem = m.contains("cannot allocate memory") || m.contains("out of memory");
            (
                nomem || (m.contains("failed to map segment") && near_address_space_limit()),
                m.contains("too many open files"),
            )
        }
        Error::Io { source, .. } => (
            source.raw_os_error() == Some(libc::ENOMEM),
            source.raw_os_error() == Some(libc::EMFILE),
        ),
        Error::Worker { .. } => (false, true),
        _ => (false, false),
    };
    if address_space {
        let usage = match (vm_size(), limit_of(rustix::process::Resource::As)) {
            (Some(used), Some(limit)) => format!(
                "{} MiB of address space in use of its {} MiB",
                used >> 20,
                limit >> 20
            ),
            _ => "the kernel refused to map more memory".to_owned(),
        };
        return Error::Exhausted {
            action,
            limit: Limit::AddressSpace,
            usage,
        };
    }
    if files {
        let limit = limit_of(rustix::process::Resource::Nofile);
        let open = std::fs::read_dir("/proc/self/fd").map(|d| d.count());
        let at_limit = match (&open, limit) {
            (Err(e), _) => e.raw_os_error() == Some(libc::EMFILE),
            // Reading the folder took a descriptor of its own.
            (Ok(n), Some(limit)) => (*n as u64).saturating_add(2) >= limit,
            (Ok(_), None) => false,
        };
        if at_limit {
            let usage = match (open, limit) {
                (Ok(n), Some(limit)) => format!(
                    "{} of its {limit} open files in use; a module keeps files open",
                    n.saturating_sub(1)
                ),
                (_, Some(limit)) => {
                    format!("all {limit} of its open files in use; a module keeps files open")
                }
                _ => "every open file it may have in use".to_owned(),
            };
            return Error::Exhausted {
                action,
                limit: Limit::OpenFiles,
                usage,
            };
        }
    }
    e
}

/// This process's soft limit on `resource` (`None`: unlimited or unknown).
fn limit_of(resource: rustix::process::Resource) -> Option<u64> {
    rustix::process::getrlimit(resource).current
}

/// This process's address space (`VmSize`), in bytes.
fn vm_size() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// Whether this process uses more than three quarters of its `RLIMIT_AS`
/// (a library's segments are mapped in one go, so a load fails well
/// before the last byte).
fn near_address_space_limit() -> bool {
    match (vm_size(), limit_of(rustix::process::Resource::As)) {
        (Some(used), Some(limit)) => used.saturating_mul(4) > limit.saturating_mul(3),
        // Nothing to tell by: the loader's message is all there is.
        _ => true,
    }
}

/// Puts the host's artifact path into errors that name the staged copy.
fn rename(e: Error, artifact: &Path) -> Error {
    let path = artifact.to_owned();
    match e {
        Error::Load { message, .. } => Error::Load { path, message },
        Error::NotAPlugin { reason, .. } => Error::NotAPlugin { path, reason },
        Error::Incompatible { details, .. } => Error::Incompatible { path, details },
        Error::Io { action, source, .. } => Error::Io {
            action,
            path,
            source,
        },
        other => other,
    }
}

fn step(state: &State, swap: u64, index: usize, s: Step) -> SwapStep {
    let migration: Option<Migration> = s.migration.then(|| {
        let (outbox, migrations) = (Arc::clone(&state.outbox), Arc::clone(&state.migrations));
        let step = index as u32;
        Arc::new(move |bytes: &[u8], from: u32, to: u32| {
            let id = migrations.next.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = crossbeam_channel::bounded(1);
            migrations.waiting.lock().insert(id, tx);
            outbox.send(&FromWorker::Migrate {
                id,
                swap,
                step,
                bytes: bytes.to_vec(),
                from,
                to,
            });
            rx.recv()
                .unwrap_or_else(|_| Err("the host did not answer the migration request".into()))
        }) as Migration
    });
    SwapStep {
        module: s.module,
        version: s.version,
        carry_state: s.carry_state,
        initial_state: s.initial_state,
        migration,
        health_check: s.health_check,
    }
}
