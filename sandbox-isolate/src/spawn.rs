//! The one place that starts child processes.
//!
//! Every child the workspace starts — `cargo` for the compiler, the worker
//! process of a sandbox — is built with [`ChildSpec`] and started by
//! [`spawn`], so a scrubbed environment, resource limits, a process group of
//! its own and death-with-parent cannot be forgotten.

#![allow(unsafe_code)] // `pre_exec` to set rlimits in the child.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

    /// The program this spec runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The limits this spec applies.
    pub fn child_limits(&self) -> &ChildLimits {
        &self.limits
    }
}

/// Starts a child: scrubbed environment, stdout and stderr piped, in a new
/// process group (so a timeout can kill the whole group with
/// [`kill_group`]), killed when the host dies, with `spec`'s rlimits.
pub fn spawn(spec: &ChildSpec) -> io::Result<Child> {
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
    let limits = spec.limits.clone();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // the async-signal-safe `prctl` and `setrlimit` syscalls (no allocation:
    // `limits` was cloned before the fork).
    unsafe {
        cmd.pre_exec(move || apply_in_child(&limits));
    }
    let child = cmd.spawn()?;
    tracing::debug!(program = %spec.program.display(), pid = child.id(), "spawned child");
    Ok(child)
}

fn apply_in_child(limits: &ChildLimits) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
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
    set(Resource::Cpu, limits.cpu_seconds)?;
    set(Resource::Fsize, limits.file_size)?;
    set(Resource::Nofile, limits.open_files)?;
    set(Resource::Nproc, limits.processes)?;
    set(Resource::Core, limits.core_size)?;
    Ok(())
}

/// Kills every process of the group led by `pid` (a child started by
/// [`spawn`]). A group that is already gone is not an error.
pub fn kill_group(pid: u32) -> io::Result<()> {
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
