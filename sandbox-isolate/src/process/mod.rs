//! The process backend: one jailed worker process per sandbox (see
//! [`Process`]).

mod conn;
mod crash;
mod fds;
mod handle;
mod lanes;
pub(crate) mod log;
mod migrate;
mod runtime;
mod spawner;
mod watchdog;
pub(crate) mod wire;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rustix::fs::{Mode, OFlags};

use handle::Worker;
use runtime::{ProcessRuntime, Start};
use wire::{Configure, FromWorker, ToWorker};

use crate::error::{Error, Result};
use crate::jail::{probe, JailSupport, Layers, UidSlot};
use crate::runtime::{IsolationKind, Isolator, LaunchSpec, Runtime};
use crate::spawn::ChildLimits;

pub(crate) use fds::{readable_within, send_all, FdReader};

/// How long a worker may take to apply its configuration.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(20);

/// The default cap on a worker's stdout + stderr: 16 MiB, the default of
/// `ResourceLimits::output_bytes`.
pub const DEFAULT_OUTPUT_LIMIT: u64 = sandbox_monitor::defaults::OUTPUT_BYTES;

/// The program (and arguments) that runs a worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl WorkerCommand {
    /// Runs `program` with no arguments (e.g. the `sandbox-worker` binary).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// The default worker: the `sandbox-worker` program (built from this
    /// crate), looked for, in order, at `$SANDBOX_WORKER`, beside the
    /// current executable, one folder up from it (where cargo puts binaries
    /// when the executable is a test in `target/<profile>/deps`), and on
    /// `PATH`. `Err` says where it looked and how to install it.
    pub fn find_default() -> std::result::Result<Self, String> {
        const NAME: &str = "sandbox-worker";
        if let Some(path) = std::env::var_os("SANDBOX_WORKER") {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(Self::new(path))
            } else {
                Err(format!(
                    "SANDBOX_WORKER is {} but no such file exists; point it at the `{NAME}` program",
                    path.display()
                ))
            };
        }
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf));
        let beside = exe_dir
            .iter()
            .flat_map(|dir| [Some(dir.clone()), dir.parent().map(Path::to_path_buf)])
            .flatten();
        let on_path = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default();
        beside
            .chain(on_path)
            .map(|dir| dir.join(NAME))
            .find(|candidate| candidate.is_file())
            .map(Self::new)
            .ok_or_else(|| {
                format!(
                    "no `{NAME}` program beside this executable or on PATH, and SANDBOX_WORKER is not set; install it with `cargo install --path sandbox-isolate --bin {NAME}` (or build the workspace), or point SANDBOX_WORKER at it"
                )
            })
    }

    /// Runs the current executable with `args` — for a binary that hosts
    /// the worker behind a subcommand, e.g. `sandbox __worker`.
    pub fn current_exe_with<I, S>(args: I) -> std::io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Ok(Self {
            program: std::env::current_exe()?,
            args: args.into_iter().map(Into::into).collect(),
        })
    }
}

#[derive(Debug)]
struct Config {
    command: WorkerCommand,
    require: Layers,
    output_limit: Option<u64>,
    disk_limit: Option<u64>,
}

/// Runs each sandbox in a jailed worker process.
///
/// [`Process::launch`] starts (or takes from the warm pool) a worker — a
/// program that calls [`worker_main`](crate::worker::worker_main) — inside
/// the [jail](crate::jail), hands it the sandbox's folders and limits, and
/// returns a [`Runtime`] whose every operation is a request over a Unix
/// socket. The worker runs the in-process backend inside itself, so the
/// semantics (ABI checks, per-version copies, all-or-nothing swaps, calls
/// waiting during a swap, module-to-module calls limited to declared
/// dependencies and refused from `init`/`restore_state`) are the same.
///
/// What the host adds:
/// - **Timeouts that stop the code**: a call that overruns its timeout
///   kills the worker ([`Error::Timeout`](crate::Error::Timeout) for the
///   caller, a crash with limit [`Limit::CallTimeout`](crate::Limit) for the handler).
/// - **Crash detection**: when the worker exits, is killed or closes its
///   channel, every request in flight gets
///   [`Error::WorkerDied`](crate::Error::WorkerDied) and the launch spec's
///   crash handler is called once, from the runtime's reader thread, with a
///   [`Crash`](crate::Crash) naming the signal, exit code and, when the host
///   can tell, the limit that was hit. Not when the runtime is dropped.
/// - **Host-side limits**: the worker's stdout and stderr are drained into
///   `tracing` and capped ([`Process::output_limit`]), and the disk use of
///   its work folder is checked every 100 ms ([`Process::disk_limit`]); a
///   worker over either is killed.
/// - **Clean teardown**: dropping the runtime kills the worker — its whole
///   pid namespace with it —, reaps it and removes the work folder.
///
/// Recycling a worker (to give back memory held by old library versions) is
/// the caller's move: launch a new runtime, load, and swap with the state
/// [`Runtime::checkpoint`] returned.
///
/// Concurrency: requests from many threads share the one socket; a reader
/// thread matches replies to requests by id. In the worker, requests run on
/// a pool of threads, so calls to different modules run in parallel and
/// calls to one module are serialized, as in-process.
///
/// # Example
///
/// ```no_run
/// use sandbox_isolate::{Isolator, LaunchSpec, Process, WorkerCommand};
///
/// # fn main() -> sandbox_isolate::Result<()> {
/// let isolator = Process::new(WorkerCommand::new("/usr/libexec/sandbox-worker")).with_pool(2);
/// let mut spec = LaunchSpec::new("untrusted", "/var/lib/sandbox/untrusted");
/// spec.limits.address_space = Some(512 << 20);
/// spec.on_crash = Some(std::sync::Arc::new(|crash| eprintln!("worker died: {}", crash.cause)));
/// let runtime = isolator.launch(&spec)?;
/// println!("worker pid {}", runtime.info().pid);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Process {
    config: Arc<Config>,
    pool: Option<Arc<Pool>>,
}

impl Process {
    /// A process isolator starting workers with `command`, requiring every
    /// jail layer of [`Layers::UNTRUSTED`], with a 16 MiB output cap and no
    /// disk cap. Cheap: the kernel's jail support is probed (and missing
    /// layers are logged) at the first launch, not here — a `Manager` builds
    /// one of these by default and may never start a worker.
    pub fn new(command: WorkerCommand) -> Self {
        Self {
            config: Arc::new(Config {
                command,
                require: Layers::UNTRUSTED,
                output_limit: Some(DEFAULT_OUTPUT_LIMIT),
                disk_limit: None,
            }),
            pool: None,
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        if Arc::get_mut(&mut self.config).is_none() {
            self.config = Arc::new(Config {
                command: self.config.command.clone(),
                require: self.config.require,
                output_limit: self.config.output_limit,
                disk_limit: self.config.disk_limit,
            });
        }
        Arc::get_mut(&mut self.config).unwrap_or_else(|| unreachable!("just made unique"))
    }

    /// Sets the jail layers a worker requires unless its sandbox's
    /// [`LaunchSpec::require`] says otherwise (a launch fails when one is
    /// missing). Pooled workers are started requiring these.
    pub fn require(mut self, layers: Layers) -> Self {
        self.config_mut().require = layers;
        self
    }

    /// Sets the cap on the bytes each worker may write to stdout + stderr in
    /// its lifetime (`None`: no cap; a sandbox's own
    /// [`LaunchSpec::output_limit`] applies too, the lower one wins); a
    /// worker past it is killed (crash limit [`Limit::Output`](crate::Limit)).
    pub fn output_limit(mut self, bytes: Option<u64>) -> Self {
        self.config_mut().output_limit = bytes;
        self
    }

    /// Sets the cap on the bytes each sandbox's files may take in its work
    /// folder (`None`: no cap; a sandbox's own
    /// [`LaunchSpec::disk_limit`] applies too, the lower one wins). `RLIMIT_FSIZE` caps one file; this caps the
    /// sum, checked by the host every 100 ms, so a fast writer may overshoot
    /// by what it writes in that time. A worker past it is killed (crash
    /// limit [`Limit::Disk`](crate::Limit)).
    pub fn disk_limit(mut self, bytes: Option<u64>) -> Self {
        self.config_mut().disk_limit = bytes;
        self
    }

    /// Keeps `size` pre-started workers ready, so a launch does not pay for
    /// starting a process. Pooled workers are jailed (namespaces, uid,
    /// rlimits) but not yet confined to a sandbox's folders: each applies
    /// landlock, seccomp and the sandbox's lower rlimits on its first
    /// message, before any plugin code runs. A sandbox that may use the
    /// network gets a fresh worker (pooled ones have no network namespace
    /// to share). Set the layers and limits before this call.
    pub fn with_pool(mut self, size: usize) -> Self {
        let pool = Arc::new(Pool {
            idle: Mutex::new(VecDeque::new()),
            filled: Condvar::new(),
            size,
            filling: AtomicUsize::new(0),
            config: Arc::clone(&self.config),
        });
        pool.refill();
        self.pool = Some(pool);
        self
    }

    /// Pre-started workers ready right now.
    pub fn pool_idle(&self) -> usize {
        self.pool.as_ref().map_or(0, |p| p.idle.lock().len())
    }

    /// Waits until the pool is full (or `timeout` passes); `false` on
    /// timeout or without a pool.
    pub fn wait_for_pool(&self, timeout: Duration) -> bool {
        let Some(pool) = &self.pool else { return false };
        let deadline = std::time::Instant::now() + timeout;
        let mut idle = pool.idle.lock();
        while idle.len() < pool.size {
            if pool.filled.wait_until(&mut idle, deadline).timed_out() {
                return idle.len() >= pool.size;
            }
        }
        true
    }

    /// What the kernel offers (see [`probe`]).
    pub fn jail_support(&self) -> &'static JailSupport {
        probe()
    }

    /// The jail layers `spec` needs.
    fn required(&self, spec: &LaunchSpec) -> Layers {
        spec.require.unwrap_or(self.config.require)
    }

    /// A configured worker for `spec`: from the pool when one fits (pooled
    /// workers have no network and were started requiring the isolator's
    /// layers), else a new one.
    fn start_configured(&self, spec: &LaunchSpec) -> Result<ProcessRuntime> {
        let missing = self.required(spec).missing(probe(), spec.network);
        if !missing.is_empty() {
            return Err(Error::Jail(crate::jail::JailError::Missing { missing }));
        }
        if !spec.network {
            if let Some(worker) = self.pool.as_ref().and_then(|p| p.take()) {
                let uid = worker.slot.as_ref().map(UidSlot::uid);
                self.send_configuration(&worker.stream, uid, spec)?;
                return self.await_configured(worker, spec);
            }
        }
        self.start_fresh(spec)
    }

    /// Starts a worker for `spec` with its configuration queued on its
    /// channel before it runs, so it applies its jail without waiting for
    /// the host to read its hello.
    fn start_fresh(&self, spec: &LaunchSpec) -> Result<ProcessRuntime> {
        let spawned = Worker::spawn(
            &self.config.command,
            &spec.limits,
            spec.network,
            self.required(spec),
        )?;
        // On error, dropping `spawned` kills and reaps the worker.
        self.send_configuration(spawned.stream(), spawned.uid(), spec)?;
        let worker = spawned.hello()?;
        self.await_configured(worker, spec)
    }
}

impl Isolator for Process {
    fn kind(&self) -> IsolationKind {
        IsolationKind::PROCESS
    }

    /// Every worker is jailed; a launch whose required layers the kernel
    /// cannot apply fails instead of running unjailed.
    fn confines_untrusted(&self) -> bool {
        true
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Runtime>> {
        let _span = tracing::debug_span!("launch", sandbox = %spec.sandbox, isolation = "process")
            .entered();
        std::fs::create_dir_all(&spec.work_dir).map_err(|source| Error::Io {
            action: "creating the runtime folder",
            path: spec.work_dir.clone(),
            source,
        })?;
        let grants = grants_dir(&spec.work_dir);
        if let Err(source) = std::fs::create_dir_all(&grants) {
            let _ = std::fs::remove_dir_all(&spec.work_dir);
            return Err(Error::Io {
                action: "creating the worker's artifact folder",
                path: grants,
                source,
            });
        }
        let launched = self.start_configured(spec).or_else(|e| match e {
            // A pooled worker that died while it waited: start a fresh one.
            Error::WorkerDied { .. } if self.pool.is_some() => self.start_fresh(spec),
            other => Err(other),
        });
        // Refill after the launch, so forking the next worker does not
        // compete with this one's start.
        if let Some(pool) = &self.pool {
            pool.refill();
        }
        match launched {
            Ok(runtime) => Ok(Box::new(runtime)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&spec.work_dir);
                let _ = std::fs::remove_dir_all(grants_dir(&spec.work_dir));
                Err(e)
            }
        }
    }
}

impl Process {
    /// Sends a worker (running as `uid`, when it has one of its own) the
    /// sandbox's folders and limits.
    fn send_configuration(
        &self,
        stream: &std::os::unix::net::UnixStream,
        uid: Option<u32>,
        spec: &LaunchSpec,
    ) -> Result<()> {
        let dir_error = |action, path: &PathBuf| {
            let path = path.clone();
            move |e: rustix::io::Errno| Error::Io {
                action,
                path,
                source: e.into(),
            }
        };
        if let Some(id) = uid {
            rustix::fs::chown(
                &spec.work_dir,
                Some(rustix::fs::Uid::from_raw(id)),
                Some(rustix::fs::Gid::from_raw(id)),
            )
            .map_err(dir_error(
                "handing the runtime folder to the worker's uid",
                &spec.work_dir,
            ))?;
            rustix::fs::chmod(&spec.work_dir, Mode::from_raw_mode(0o700)).map_err(dir_error(
                "handing the runtime folder to the worker's uid",
                &spec.work_dir,
            ))?;
        }
        let open = |path: &PathBuf| {
            rustix::fs::open(
                path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let work_fd = open(&spec.work_dir)
            .map_err(dir_error("opening the runtime folder", &spec.work_dir))?;
        // The only artifacts a worker may read are the ones its host linked
        // into its own artifact folder (see `ProcessRuntime::load`): not
        // the build cache, which holds every sandbox's.
        let grants = grants_dir(&spec.work_dir);
        let mut dirs: Vec<OwnedFd> = Vec::new();
        for dir in std::iter::once(&grants).chain(&spec.artifact_dirs) {
            match open(dir) {
                Ok(fd) => dirs.push(fd),
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "artifact folder not readable by the worker")
                }
            }
        }
        let limits = ChildLimits {
            core_size: Some(0),
            ..spec.limits.clone()
        };
        let configure = ToWorker::Configure(Configure {
            sandbox: spec.sandbox.clone(),
            limits: limits.clone(),
            network: spec.network,
            require: self.required(spec),
            artifact_dirs: dirs.len() as u32,
            log_level: log::wanted(),
            lifecycle_timeout: spec.lifecycle_timeout,
        });
        let frame = wire::encode(&configure).map_err(died)?;
        let mut fds = vec![work_fd.as_fd()];
        fds.extend(dirs.iter().map(|d| d.as_fd()));
        fds::send_with_fds(stream, &frame, &fds).map_err(died)?;
        Ok(())
    }

    /// Waits until a worker that was sent its configuration applied its
    /// jail layers, and starts its runtime.
    fn await_configured(&self, worker: Worker, spec: &LaunchSpec) -> Result<ProcessRuntime> {
        worker
            .stream
            .set_read_timeout(Some(CONFIGURE_TIMEOUT))
            .map_err(died)?;
        let report = loop {
            let frame = wire::read_frame(&mut &worker.stream)
                .map_err(died)?
                .ok_or_else(|| Error::WorkerDied {
                    cause: "it closed its channel while configuring".into(),
                })?;
            match wire::decode::<FromWorker>(&frame).map_err(died)? {
                FromWorker::Configured(Ok(report)) => break report,
                FromWorker::Configured(Err(message)) => {
                    return Err(Error::Worker {
                        message: format!("it could not apply its jail: {message}"),
                    })
                }
                FromWorker::Log {
                    level,
                    target,
                    message,
                    ..
                } => {
                    tracing::debug!(sandbox = %spec.sandbox, level, target, "{message}");
                }
                _ => {
                    return Err(Error::Worker {
                        message: "it answered its configuration with something else".into(),
                    })
                }
            }
        };
        worker.stream.set_read_timeout(None).map_err(died)?;
        tracing::debug!(sandbox = %spec.sandbox, pid = worker.pid, landlock = %report.landlock, seccomp = report.seccomp, "worker jailed");
        ProcessRuntime::start(
            worker,
            Start {
                sandbox: spec.sandbox.clone(),
                work_dir: spec.work_dir.clone(),
                grants: grants_dir(&spec.work_dir),
                network: spec.network,
                on_crash: spec.on_crash.clone(),
                output_limit: lower(spec.output_limit, self.config.output_limit),
                disk_limit: lower(spec.disk_limit, self.config.disk_limit),
                report,
            },
        )
    }
}

/// The folder a worker may read its artifacts from: beside its runtime
/// folder (`<id>@<n>.artifacts`), written by the host only.
pub(crate) fn grants_dir(work_dir: &std::path::Path) -> PathBuf {
    let mut name = work_dir.file_name().unwrap_or_default().to_owned();
    name.push(".artifacts");
    work_dir.with_file_name(name)
}

/// A worker that did not take its configuration.
fn died(e: std::io::Error) -> Error {
    Error::WorkerDied {
        cause: format!("it did not take its configuration: {e}"),
    }
}

/// The lower of two caps (`None`: no cap).
fn lower(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Pre-started workers.
#[derive(Debug)]
struct Pool {
    idle: Mutex<VecDeque<Worker>>,
    filled: Condvar,
    size: usize,
    filling: AtomicUsize,
    config: Arc<Config>,
}

impl Pool {
    fn take(&self) -> Option<Worker> {
        self.idle.lock().pop_front()
    }

    /// Starts workers in the background until the pool is full.
    fn refill(self: &Arc<Self>) {
        loop {
            let have = self.idle.lock().len() + self.filling.load(Ordering::Acquire);
            if have >= self.size {
                return;
            }
            self.filling.fetch_add(1, Ordering::AcqRel);
            let pool: Weak<Pool> = Arc::downgrade(self);
            spawner::submit(move || {
                let Some(pool) = pool.upgrade() else { return };
                match Worker::start(
                    &pool.config.command,
                    &ChildLimits::default(),
                    false,
                    pool.config.require,
                ) {
                    Ok(worker) => {
                        pool.idle.lock().push_back(worker);
                        pool.filled.notify_all();
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot pre-start a worker for the pool"),
                }
                pool.filling.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }
}
