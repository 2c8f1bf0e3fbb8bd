//! The one place that starts child processes.
//!
//! Every child the workspace starts — `cargo` for the compiler, the worker
//! process of a sandbox — is built with [`ChildSpec`] and started by
//! [`spawn`], so a scrubbed environment, resource limits, a process group of
//! its own and death-with-parent cannot be forgotten. A spec with a
//! [`JailConfig`] (see [`ChildSpec::jail`]) also gets the jail's namespaces,
//! uid, landlock and seccomp layers.
//!
//! [`spawn`] hands back a [`JailedChild`], which knows how its child must
//! be killed (a jail init first, otherwise its process group), kills and
//! reaps it when dropped, and can run it to a deadline with capped output
//! ([`JailedChild::run_to_deadline`]).

#![allow(unsafe_code)] // `pre_exec` to set rlimits and the jail in the child.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use crate::{JailConfig, JailError, Prepared};

pub use crate::jailed::{ChildKiller, Finished, JailedChild, RunError};

use rustix::process::{Resource, Rlimit};

/// Environment variables a child inherits from the host when present, unless
/// the spec says otherwise. Everything else is dropped.
pub const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "RUSTUP_HOME",
    "CARGO_HOME",
    "RUSTUP_TOOLCHAIN",
];

/// Kernel-enforced limits applied to a child with `setrlimit` before it execs.
///
/// Parsed strictly: an unknown field is an error, never a limit silently
/// left unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildLimits {
    /// Address space in bytes (`RLIMIT_AS`).
    pub address_space: Option<u64>,
    /// CPU time in seconds (`RLIMIT_CPU`).
    pub cpu_seconds: Option<u64>,
    /// Largest file the child may write, in bytes (`RLIMIT_FSIZE`).
    pub file_size: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes and threads of the child's user (`RLIMIT_NPROC`).
    pub processes: Option<u64>,
    /// Core dump size (`RLIMIT_CORE`); `Some(0)` disables core dumps.
    pub core_size: Option<u64>,
}

/// Everything needed to start a child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    program: PathBuf,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    inherit: Vec<OsString>,
    limits: ChildLimits,
    stdin: bool,
    jail: Option<JailConfig>,
    jailed_by_program: bool,
    pass_fd: Option<(Arc<OwnedFd>, RawFd)>,
}

impl ChildSpec {
    /// A child running `program` with the [`BASE_ENV`] variables of the host.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            inherit: BASE_ENV.iter().map(OsString::from).collect(),
            limits: ChildLimits {
                core_size: Some(0),
                ..ChildLimits::default()
            },
            stdin: false,
            jail: None,
            jailed_by_program: false,
            pass_fd: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs the child in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Also passes the host's value of `key` through, when it has one.
    pub fn inherit_env(mut self, key: impl AsRef<OsStr>) -> Self {
        self.inherit.push(key.as_ref().to_owned());
        self
    }

    /// Passes none of the host's environment through.
    pub fn clear_inherited_env(mut self) -> Self {
        self.inherit.clear();
        self
    }

    /// Sets the resource limits.
    pub fn limits(mut self, limits: ChildLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Gives the child a piped stdin (it gets `/dev/null` otherwise).
    pub fn piped_stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// Runs the child in a jail (see [the jail](crate)): namespaces, a
    /// non-root uid, and the landlock and seccomp layers `config` asks for.
    /// [`spawn`] fails if a layer `config` requires is missing.
    ///
    /// The [`JailedChild`] that [`spawn`] returns then holds the jail's
    /// reaper: the program itself runs as pid 2 of a new pid namespace
    /// (under its init), and the reaper exits the way the program does
    /// (same code, or killed by the same signal). [`JailedChild::kill`]
    /// kills the namespace's init first, so the whole jail unwinds in
    /// order.
    pub fn jail(mut self, config: JailConfig) -> Self {
        self.jail = Some(config);
        self
    }

    /// Has the program enter its [jail](Self::jail) itself, first thing in
    /// its `main` (with `sandbox_isolate::worker::worker_main`,
    /// the worker does), instead of the host entering it between `fork` and
    /// `exec`. The host then starts the program with `posix_spawn` (no copy
    /// of the host's page tables, which costs milliseconds for a large host)
    /// and the pid namespace's forks happen in the small fresh program. Only
    /// for a jail without landlock or seccomp chosen by the host, and with
    /// the passed descriptor at its own number
    /// (`pass_fd(fd, fd.as_raw_fd())`).
    pub fn jailed_by_program(mut self) -> Self {
        self.jailed_by_program = true;
        self
    }

    /// Passes `fd` to the child as descriptor number `target` (the only
    /// descriptor besides stdio that the child inherits).
    pub fn pass_fd(mut self, fd: OwnedFd, target: RawFd) -> Self {
        self.pass_fd = Some((Arc::new(fd), target));
        self
    }

    /// The jail this spec runs the child in, if any.
    pub fn jail_config(&self) -> Option<&JailConfig> {
        self.jail.as_ref()
    }

    /// The program this spec runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The limits this spec applies.
    pub fn child_limits(&self) -> &ChildLimits {
        &self.limits
    }
}

/// Why [`spawn`] could not start a child.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The jail could not be set up in the host: a layer the spec requires
    /// is missing, or building its landlock or seccomp layer failed.
    #[error(transparent)]
    Jail(#[from] JailError),
    /// The spec asks for something that cannot be done.
    #[error("invalid child spec: {reason}")]
    Spec {
        /// What is wrong with it, and what to do instead.
        reason: &'static str,
    },
    /// The program could not be started: it was not found or is not
    /// executable, or a step of its jail failed in the forked child.
    #[error("cannot start `{}`: {source}; check the program exists and that the host may create the jail it asks for", program.display())]
    Start {
        /// The program of the spec.
        program: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl From<SpawnError> for io::Error {
    fn from(e: SpawnError) -> Self {
        match e {
            SpawnError::Start { source, .. } => source,
            SpawnError::Spec { .. } => io::Error::new(io::ErrorKind::InvalidInput, e),
            SpawnError::Jail(jail) => jail.into(),
        }
    }
}

/// Starts a child: scrubbed environment, stdout and stderr piped, in a new
/// process group, killed when the spawning thread's process dies (a
/// parent-death signal: spawn from a thread that lives as long as the
/// child), with `spec`'s rlimits — and in its jail when `spec` has one.
///
/// The [`JailedChild`] it returns kills and reaps the child when dropped.
pub fn spawn(spec: &ChildSpec) -> Result<JailedChild, SpawnError> {
    // The one allowed use: this is the chokepoint the rule points to.
    #[allow(clippy::disallowed_methods)]
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args).env_clear();
    for key in &spec.inherit {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(if spec.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let start_error = |source| SpawnError::Start {
        program: spec.program.clone(),
        source,
    };
    if let Some(jail) = &spec.jail {
        let prepared = Prepared::new(jail, &spec.limits, spec.pass_fd.clone())?;
        if spec.jailed_by_program {
            let plan = prepared.plan_for_program().ok_or(SpawnError::Spec {
                reason: "a program can enter its jail itself only without landlock or seccomp chosen by the host; drop `jailed_by_program` or those layers",
            })?;
            cmd.env(crate::PLAN_ENV, plan.to_env()?);
            let child = spawn_inheriting(cmd, spec)?;
            return Ok(JailedChild::new(child, true));
        }
        // SAFETY: the closure runs in the forked child before exec and only
        // makes system calls on values prepared before the fork (see
        // `Prepared::run_in_child`); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || prepared.run_in_child());
        }
    } else {
        let limits = spec.limits.clone();
        let pass_fd = spec.pass_fd.clone();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes the async-signal-safe `prctl`, `setrlimit`, `dup2` and `fcntl`
        // syscalls (no allocation: `limits` was cloned before the fork).
        unsafe {
            cmd.pre_exec(move || apply_in_child(&limits, pass_fd.as_ref()));
        }
    }
    let child = {
        let _one_at_a_time = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
        cmd.spawn().map_err(start_error)?
    };
    tracing::debug!(program = %spec.program.display(), pid = child.id(), jailed = spec.jail.is_some(), "spawned child");
    Ok(JailedChild::new(child, spec.jail.is_some()))
}

/// Held while a child is being started: a descriptor made inheritable for
/// one child ([`spawn_inheriting`]) must not leak into another one started
/// at the same moment from another thread.
static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Starts `cmd` without a `pre_exec` step (so the standard library uses
/// `posix_spawn`), with `spec`'s passed descriptor inheritable for this one
/// child.
fn spawn_inheriting(mut cmd: Command, spec: &ChildSpec) -> Result<Child, SpawnError> {
    use std::os::fd::AsRawFd;
    let _one_at_a_time = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
    let passed = match &spec.pass_fd {
        Some((fd, target)) if fd.as_raw_fd() == *target => Some(fd.as_raw_fd()),
        Some(_) => {
            return Err(SpawnError::Spec {
                reason: "a program that enters its jail itself gets its descriptor at its own number; pass `pass_fd(fd, fd.as_raw_fd())`",
            })
        }
        None => None,
    };
    let start_error = |source| SpawnError::Start {
        program: spec.program.clone(),
        source,
    };
    let cloexec = |on: bool| -> io::Result<()> {
        if let Some(fd) = passed {
            // SAFETY: F_SETFD on a descriptor `spec` owns.
            let rc =
                unsafe { libc::fcntl(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 }) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    cloexec(false).map_err(start_error)?;
    let started = cmd.spawn();
    cloexec(true).map_err(start_error)?;
    let child = started.map_err(start_error)?;
    tracing::debug!(program = %spec.program.display(), pid = child.id(), "spawned child that enters its own jail");
    Ok(child)
}

fn apply_in_child(limits: &ChildLimits, pass_fd: Option<&(Arc<OwnedFd>, RawFd)>) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    set_rlimits(limits)?;
    if let Some((fd, target)) = pass_fd {
        use std::os::fd::AsRawFd;
        let src = fd.as_raw_fd();
        // SAFETY: plain descriptor system calls in the forked child.
        let rc = unsafe {
            if src == *target {
                libc::fcntl(src, libc::F_SETFD, 0)
            } else {
                libc::dup2(src, *target)
            }
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets the rlimits `limits` names (soft and hard) on the calling process.
/// Allocation-free, so it may run between fork and exec.
pub(crate) fn set_rlimits(limits: &ChildLimits) -> io::Result<()> {
    let set = |resource, value: Option<u64>| -> io::Result<()> {
        if let Some(v) = value {
            rustix::process::setrlimit(
                resource,
                Rlimit {
                    current: Some(v),
                    maximum: Some(v),
                },
            )?;
        }
        Ok(())
    };
    set(Resource::As, limits.address_space)?;
    // The soft CPU limit sends SIGXCPU, which a host can tell apart from any
    // other kill; the hard one (SIGKILL) follows a second later.
    if let Some(v) = limits.cpu_seconds {
        rustix::process::setrlimit(
            Resource::Cpu,
            Rlimit {
                current: Some(v),
                maximum: Some(v.saturating_add(1)),
            },
        )?;
    }
    set(Resource::Fsize, limits.file_size)?;
    set(Resource::Nofile, limits.open_files)?;
    set(Resource::Nproc, limits.processes)?;
    set(Resource::Core, limits.core_size)?;
    Ok(())
}

/// Kills a child started by [`spawn`] with a [jail](ChildSpec::jail), and
/// everything in it, in an order that leaves no orphan behind: its pid
/// namespace's init first (the namespace dies with it, the jail's reaper
/// reaps the init and then exits the same way), so no process of the jail
/// outlives its parent and ends up adopted by whichever process reaps
/// orphans on this host (the host itself, if it runs as a container's pid
/// 1). Without a pid namespace (or before the init is started) it is
/// [`kill_group`]. `pid` must not have been reaped (see
/// [`JailedChild`], the only caller).
pub(crate) fn kill_jailed(pid: u32) -> io::Result<()> {
    match jail_init_of(pid) {
        Some(init) => {
            match rustix::process::pidfd_send_signal(&init, rustix::process::Signal::KILL) {
                Ok(()) => Ok(()),
                Err(e) if e == rustix::io::Errno::SRCH => kill_group(pid),
                Err(e) => Err(e.into()),
            }
        }
        None => kill_group(pid),
    }
}

/// A pidfd of the jail's init: the one child of the reaper `pid`, checked
/// to be its child after the pidfd pins it (so a recycled pid is never
/// signalled).
fn jail_init_of(pid: u32) -> Option<OwnedFd> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let init: i32 = children.split_whitespace().next()?.parse().ok()?;
    let fd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(init)?,
        rustix::process::PidfdFlags::empty(),
    )
    .ok()?;
    (parent_of(init as u32)? == pid).then_some(fd)
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Kills every process of the group led by `pid` (a child started by
/// [`spawn`], not reaped yet). A group that is already gone is not an
/// error.
pub(crate) fn kill_group(pid: u32) -> io::Result<()> {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "pid 0 names no process group",
        ));
    };
    match rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::SRCH => Ok(()),
        Err(e) => Err(e.into()),
    }
}
