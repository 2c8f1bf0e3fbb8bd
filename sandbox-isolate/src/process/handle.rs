//! A started, not yet configured worker process, as the host holds it.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use super::wire::{self, FromWorker, PROTOCOL};
use super::{spawner, WorkerCommand};
use crate::error::{Error, Result};
use crate::jail::{probe, JailConfig, Layers, UidPolicy, UidSlot};
use crate::spawn::{self, ChildKiller, ChildLimits, ChildSpec, JailedChild, SpawnError};
use crate::worker::WORKER_FD_ENV;

/// How long a new worker may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);

/// A worker process that said hello and waits for its configuration.
/// Dropped, it is killed and reaped (its [`JailedChild`] sees to it).
#[derive(Debug)]
pub(crate) struct Worker {
    /// The jail's reaper (or the worker itself without a pid namespace).
    pub(crate) child: Option<JailedChild>,
    pub(crate) stream: UnixStream,
    /// The worker's pid in the host's pid namespace.
    pub(crate) pid: u32,
    pub(crate) pidfd: Option<OwnedFd>,
    pub(crate) slot: Option<UidSlot>,
}

/// A worker process started in its jail that has not said hello yet.
/// Dropped before its hello (its configuration could not be sent), it is
/// killed and reaped (its [`JailedChild`] sees to it).
#[derive(Debug)]
pub(crate) struct Spawned {
    /// `None` once handed on by [`Spawned::hello`].
    child: Option<JailedChild>,
    stream: Option<UnixStream>,
    slot: Option<UidSlot>,
    program: std::path::PathBuf,
}

impl Worker {
    /// Starts a worker in a jail and waits for its hello.
    pub(crate) fn start(
        command: &WorkerCommand,
        limits: &ChildLimits,
        network: bool,
        require: Layers,
    ) -> Result<Self> {
        Self::spawn(command, limits, network, require)?.hello()
    }

    /// Starts a worker in a jail without waiting for it: the caller may
    /// queue its first message on [`Spawned::stream`] before
    /// [`Spawned::hello`], so the worker finds it as soon as it runs.
    pub(crate) fn spawn(
        command: &WorkerCommand,
        limits: &ChildLimits,
        network: bool,
        require: Layers,
    ) -> Result<Spawned> {
        // A missing layer `require` names fails the spawn (`Error::Jail`).
        let slot = if probe().root {
            UidSlot::allocate()
        } else {
            None
        };
        let uid = slot
            .as_ref()
            .map_or(UidPolicy::Keep, |s| UidPolicy::Fixed(s.uid()));
        let (stream, theirs) =
            UnixStream::pair().map_err(|e| worker_error("cannot create its socket", e))?;
        let limits = ChildLimits {
            core_size: Some(0),
            ..limits.clone()
        };
        // The worker enters its jail itself (posix_spawn, then the pid
        // namespace's forks from the small worker image, not the host's),
        // with its end of the channel at the number it has here.
        let fd = theirs.as_raw_fd();
        let spec = ChildSpec::new(&command.program)
            .args(&command.args)
            .clear_inherited_env()
            .env(WORKER_FD_ENV, fd.to_string())
            .pass_fd(OwnedFd::from(theirs), fd)
            .limits(limits)
            .jail(JailConfig::worker(uid, network, require))
            .jailed_by_program();
        let spawned = spawner::run(move || spawn::spawn(&spec)).ok_or_else(|| Error::Worker {
            message: "the spawner thread panicked".into(),
        })?;
        let child = spawned.map_err(|e| match e {
            SpawnError::Jail(jail) => Error::Jail(jail),
            other => Error::Worker {
                message: format!("cannot start `{}`: {other}", command.program.display()),
            },
        })?;
        Ok(Spawned {
            child: Some(child),
            stream: Some(stream),
            slot,
            program: command.program.clone(),
        })
    }
}

impl Spawned {
    /// The host's end of the worker's channel.
    pub(crate) fn stream(&self) -> &UnixStream {
        self.stream
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken by hello"))
    }

    /// The uid slot the worker runs as, if it has one of its own.
    pub(crate) fn uid(&self) -> Option<u32> {
        self.slot.as_ref().map(UidSlot::uid)
    }

    /// Waits for the worker's hello; a worker that does not say it properly
    /// is killed and reaped, and the error carries the end of its stderr.
    pub(crate) fn hello(mut self) -> Result<Worker> {
        let (Some(mut child), Some(stream)) = (self.child.take(), self.stream.take()) else {
            unreachable!("hello is called once")
        };
        let program = std::mem::take(&mut self.program);
        let mut worker = Worker {
            child: None,
            stream,
            pid: child.id(),
            pidfd: None,
            slot: self.slot.take(),
        };
        match worker.hello(&child) {
            Ok(pid) => {
                worker.pid = pid;
                worker.pidfd = pidfd_open(
                    Pid::from_raw(pid as i32).ok_or_else(no_pid)?,
                    PidfdFlags::empty(),
                )
                .ok();
                worker.child = Some(child);
                Ok(worker)
            }
            Err(message) => {
                let _ = child.kill();
                let status = child.wait().ok();
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = (&mut err).take(4096).read_to_string(&mut stderr);
                }
                let status = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown status".into());
                Err(Error::Worker {
                    message: format!(
                        "`{}` did not start as a worker ({message}; it ended with {status}){}",
                        program.display(),
                        if stderr.trim().is_empty() {
                            String::new()
                        } else {
                            format!(": {}", stderr.trim())
                        }
                    ),
                })
            }
        }
    }
}

impl Worker {
    /// Reads the hello and checks the pid it names is the jail's init.
    fn hello(&self, child: &JailedChild) -> std::result::Result<u32, String> {
        self.stream
            .set_read_timeout(Some(HELLO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let frame = wire::read_frame(&mut &self.stream)
            .map_err(|e| format!("no hello: {e}"))?
            .ok_or("it closed its channel before saying hello")?;
        self.stream
            .set_read_timeout(None)
            .map_err(|e| e.to_string())?;
        let FromWorker::Hello { pid, protocol } =
            wire::decode(&frame).map_err(|e| format!("bad hello: {e}"))?
        else {
            return Err("its first message was not a hello".into());
        };
        if protocol != PROTOCOL {
            return Err(format!("it speaks protocol {protocol}, this host {PROTOCOL}; use a worker built from the same sandbox-isolate"));
        }
        // Without a pid namespace the worker is the child itself; with one,
        // the child's grandchild (reaper -> init -> worker).
        if pid != child.id() && spawn::parent_of(pid).and_then(spawn::parent_of) != Some(child.id())
        {
            return Err(format!(
                "it claims pid {pid}, which is not the jail's program"
            ));
        }
        Ok(pid)
    }
}

/// Kills the worker through its pidfd (never a recycled pid), or through
/// its jail's reaper (init first; a no-op once the reaper was reaped) when
/// there is no pidfd.
pub(crate) fn kill(pidfd: Option<&OwnedFd>, reaper: Option<&ChildKiller>) {
    match (pidfd, reaper) {
        (Some(fd), _) => {
            let _ = pidfd_send_signal(fd, Signal::KILL);
        }
        (None, Some(reaper)) => {
            let _ = reaper.kill();
        }
        (None, None) => {}
    }
}

fn no_pid() -> Error {
    Error::Worker {
        message: "it reported pid 0".into(),
    }
}

fn worker_error(what: &str, e: std::io::Error) -> Error {
    Error::Worker {
        message: format!("{what}: {e}"),
    }
}
