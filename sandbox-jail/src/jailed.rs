//! [`JailedChild`]: a child started by [`spawn`](crate::spawn::spawn) that
//! knows how it must be killed, is killed and reaped when dropped
//! (rust-analyzer's `JodChild` is the model), and can be run to a deadline
//! with its output capped.
//!
//! Killing and reaping share one lock, so a child is never signalled after
//! it was reaped: its pid (which is also its process group's id) cannot
//! have been handed to another process while the lock says "not reaped".

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, ExitStatus, Output};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};

use crate::spawn::{kill_group, kill_jailed};

/// How long a run waits for a killed child's pipes to close and its exit to
/// be seen.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// How a child must be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillBy {
    /// A jail: its pid namespace's init first, so nothing is orphaned
    /// (falls back to the group when there is no init).
    JailInit,
    /// Its process group.
    Group,
}

/// What the child, its killers and its waiter share.
#[derive(Debug)]
struct Shared {
    pid: u32,
    kill_by: KillBy,
    /// `Some` once the child is reaped. Held while signalling and while
    /// reaping.
    status: Mutex<Option<ExitStatus>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<ExitStatus>> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn kill(&self) -> io::Result<()> {
        let status = self.lock();
        if status.is_some() {
            return Ok(());
        }
        match self.kill_by {
            KillBy::JailInit => kill_jailed(self.pid),
            KillBy::Group => kill_group(self.pid),
        }
    }
}

/// A child process started by [`spawn`](crate::spawn::spawn).
///
/// - It knows how it must be killed: a jailed child (its
///   [`ChildSpec::jail`](crate::spawn::ChildSpec::jail)) init first, so the
///   jail unwinds in order and nothing of it is left for whoever adopts
///   orphans; any other child with its whole process group.
/// - Dropped while running, it is killed and reaped: no stray process, no
///   zombie. (Waiting for it, or [running it to a
///   deadline](Self::run_to_deadline), reaps it too.)
/// - Its pipes are public fields, as on [`std::process::Child`]: a caller
///   that needs them (a worker's connection) takes them.
/// - [`killer`](Self::killer) hands out a [`ChildKiller`] for other threads
///   while one thread waits.
#[derive(Debug)]
pub struct JailedChild {
    child: Child,
    shared: Arc<Shared>,
    /// The child's stdin, when the spec asked for a pipe
    /// ([`ChildSpec::piped_stdin`](crate::spawn::ChildSpec::piped_stdin)).
    pub stdin: Option<ChildStdin>,
    /// The child's stdout (always piped until taken).
    pub stdout: Option<ChildStdout>,
    /// The child's stderr (always piped until taken).
    pub stderr: Option<ChildStderr>,
}

/// Kills a [`JailedChild`] from another thread than the one waiting for it;
/// does nothing once the child was reaped (its pid may belong to another
/// process by then).
#[derive(Debug, Clone)]
pub struct ChildKiller {
    shared: Arc<Shared>,
}

impl ChildKiller {
    /// Kills the child the way it must be killed (see [`JailedChild`]).
    /// A child that already exited or was reaped is not an error.
    pub fn kill(&self) -> io::Result<()> {
        self.shared.kill()
    }

    /// The child's pid in the host's pid namespace.
    pub fn id(&self) -> u32 {
        self.shared.pid
    }
}

/// A child that ran to completion under [`JailedChild::run_to_deadline`].
#[derive(Debug)]
pub struct Finished<T> {
    /// How it exited.
    pub status: ExitStatus,
    /// What the stdout reader returned.
    pub stdout: T,
    /// The last bytes of its stderr (at most the cap), lossily decoded.
    pub stderr: String,
}

/// Why [`JailedChild::run_to_deadline`] returned without a [`Finished`] child.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The deadline passed; the child (its jail, or its process group) was
    /// killed and reaped.
    #[error("the child did not finish before its deadline and was killed")]
    TimedOut,
    /// The host could not watch the child (a thread could not start, or
    /// waiting for it failed); the child was killed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl From<RunError> for io::Error {
    fn from(e: RunError) -> Self {
        match e {
            RunError::TimedOut => io::Error::new(io::ErrorKind::TimedOut, e),
            RunError::Io { source, .. } => source,
        }
    }
}

enum Event<T> {
    Stdout(T),
    Stderr(String),
    Exit(io::Result<ExitStatus>),
}

/// Kills the child unless it was reaped when a run returns or unwinds.
struct KillOnExit(ChildKiller);

impl Drop for KillOnExit {
    fn drop(&mut self) {
        if let Err(error) = self.0.kill() {
            tracing::warn!(pid = self.0.id(), %error, "could not kill a child");
        }
    }
}

impl JailedChild {
    pub(crate) fn new(mut child: Child, jailed: bool) -> Self {
        let shared = Arc::new(Shared {
            pid: child.id(),
            kill_by: if jailed {
                KillBy::JailInit
            } else {
                KillBy::Group
            },
            status: Mutex::new(None),
        });
        Self {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            shared,
        }
    }

    /// The child's pid in the host's pid namespace (for a jailed child, its
    /// jail's reaper).
    pub fn id(&self) -> u32 {
        self.shared.pid
    }

    /// Whether the child runs in a jail (and is killed init first).
    pub fn is_jailed(&self) -> bool {
        self.shared.kill_by == KillBy::JailInit
    }

    /// A handle that kills this child from another thread.
    pub fn killer(&self) -> ChildKiller {
        ChildKiller {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Kills the child the way it must be killed (see [`JailedChild`]);
    /// does not reap it. A child that already exited is not an error.
    pub fn kill(&self) -> io::Result<()> {
        self.shared.kill()
    }

    /// Waits for the child to exit, kills whatever it left in its process
    /// group (a daemon a build script started, say), and reaps it. Returns
    /// the same status when called again.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = *self.shared.lock() {
            return Ok(status);
        }
        // Wait without reaping: while the child is a zombie its pid, which
        // is also its group's id, cannot be reused, so killers may still
        // signal it.
        if let Some(pid) = Pid::from_raw(self.shared.pid as i32) {
            loop {
                match waitid(
                    WaitId::Pid(pid),
                    WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
                ) {
                    Err(e) if e == rustix::io::Errno::INTR => continue,
                    _ => break,
                }
            }
        }
        self.reap()
    }

    /// The child's status if it has exited (reaping it, and killing what
    /// it left in its group), `None` if it is still running.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = *self.shared.lock() {
            return Ok(Some(status));
        }
        let Some(pid) = Pid::from_raw(self.shared.pid as i32) else {
            return Ok(None);
        };
        let exited = waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG,
        )
        .map_err(io::Error::from)?;
        if exited.is_none() {
            return Ok(None);
        }
        self.reap().map(Some)
    }

    /// Reaps a child that has exited (or blocks until it does), under the
    /// lock, after killing its group's leftovers.
    fn reap(&mut self) -> io::Result<ExitStatus> {
        let mut status = self.shared.lock();
        if let Some(status) = *status {
            return Ok(status);
        }
        let _ = kill_group(self.shared.pid);
        let exited = self.child.wait()?;
        *status = Some(exited);
        Ok(exited)
    }

    /// Reads stdout and stderr to their ends (all of them: for children
    /// whose output is known to be small; see
    /// [`run_to_deadline`](Self::run_to_deadline) otherwise), then waits.
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.stdin.take());
        let stderr = self.stderr.take().map(|mut pipe| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                pipe.read_to_end(&mut bytes).map(|_| bytes)
            })
        });
        let mut stdout = Vec::new();
        if let Some(mut pipe) = self.stdout.take() {
            pipe.read_to_end(&mut stdout)?;
        }
        let stderr = match stderr {
            Some(reader) => reader
                .join()
                .map_err(|_| io::Error::other("the stderr reader panicked"))??,
            None => Vec::new(),
        };
        let status = self.wait()?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Runs the child until it exits or `deadline` passes, keeping the last
    /// `cap` bytes of stdout and of stderr (lossily decoded).
    pub fn output_to_deadline(
        self,
        deadline: Instant,
        cap: usize,
    ) -> Result<Finished<String>, RunError> {
        self.run_to_deadline(deadline, cap, move |stdout| read_tail(stdout, cap))
    }

    /// Runs the child until it exits or `deadline` passes.
    ///
    /// stdout goes to `read_stdout` on a thread of its own (which returns
    /// what it collected: it must bound what it keeps), the last
    /// `stderr_cap` bytes of stderr are kept, and a third thread waits for
    /// the exit; this thread blocks on a channel with the deadline, no
    /// polling. When the deadline passes the child is killed the way it
    /// must be (its jail, or its process group) and reaped, and the run
    /// fails with [`RunError::TimedOut`]. A run that returns early or
    /// unwinds kills the child too.
    ///
    /// Call it on a thread that outlives the child: the child's
    /// parent-death signal fires when the thread that spawned it exits.
    pub fn run_to_deadline<T, F>(
        mut self,
        deadline: Instant,
        stderr_cap: usize,
        read_stdout: F,
    ) -> Result<Finished<T>, RunError>
    where
        T: Send + 'static,
        F: FnOnce(ChildStdout) -> T + Send + 'static,
    {
        let pid = self.id();
        let killer = self.killer();
        let _kill_on_exit = KillOnExit(killer.clone());
        let thread_error = |source| RunError::Io {
            action: "cannot start a thread to watch the child",
            source,
        };
        let (tx, rx) = crossbeam_channel::bounded::<Event<T>>(3);
        let mut pending = 0;
        drop(self.stdin.take());
        let Some(stdout) = self.stdout.take() else {
            return Err(RunError::Io {
                action: "running the child",
                source: io::Error::other(
                    "its stdout was taken before the run, which reads it; leave it in place",
                ),
            });
        };
        {
            let tx = tx.clone();
            pending += 1;
            thread::Builder::new()
                .name("child-stdout".into())
                .spawn(move || {
                    let _ = tx.send(Event::Stdout(read_stdout(stdout)));
                })
                .map_err(thread_error)?;
        }
        if let Some(stderr) = self.stderr.take() {
            let tx = tx.clone();
            pending += 1;
            thread::Builder::new()
                .name("child-stderr".into())
                .spawn(move || {
                    let _ = tx.send(Event::Stderr(read_tail(stderr, stderr_cap)));
                })
                .map_err(thread_error)?;
        }
        pending += 1;
        // On failure the closure, and with it the child, is dropped: killed
        // and reaped.
        thread::Builder::new()
            .name("child-wait".into())
            .spawn(move || {
                let _ = tx.send(Event::Exit(self.wait()));
            })
            .map_err(thread_error)?;

        let mut stdout = None;
        let mut stderr = String::new();
        let mut status = None;
        let mut timed_out = false;
        while pending > 0 {
            let received = if timed_out {
                rx.recv_timeout(KILL_GRACE)
            } else {
                rx.recv_deadline(deadline)
            };
            let event = match received {
                Ok(event) => event,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if !timed_out => {
                    tracing::warn!(pid, "child deadline passed; killing it");
                    if let Err(error) = killer.kill() {
                        tracing::warn!(pid, %error, "could not kill the child");
                    }
                    timed_out = true;
                    continue;
                }
                Err(_) => {
                    // Something outside the group still holds a pipe; the
                    // reader threads end when it lets go.
                    tracing::warn!(pid, "the child left its pipes open; not waiting for them");
                    break;
                }
            };
            pending -= 1;
            match event {
                Event::Stdout(value) => stdout = Some(value),
                Event::Stderr(text) => stderr = text,
                Event::Exit(result) => {
                    status = Some(result.map_err(|source| RunError::Io {
                        action: "cannot wait for the child",
                        source,
                    })?)
                }
            }
        }
        if timed_out {
            return Err(RunError::TimedOut);
        }
        match (status, stdout) {
            (Some(status), Some(stdout)) => Ok(Finished {
                status,
                stdout,
                stderr,
            }),
            _ => Err(RunError::Io {
                action: "running the child",
                source: io::Error::other("lost track of the child process"),
            }),
        }
    }
}

impl Drop for JailedChild {
    /// Kills and reaps a child that is still running (or not reaped yet).
    fn drop(&mut self) {
        if self.shared.lock().is_some() {
            return;
        }
        if let Err(error) = self.shared.kill() {
            tracing::warn!(pid = self.shared.pid, %error, "could not kill a dropped child");
        }
        if let Err(error) = self.wait() {
            tracing::warn!(pid = self.shared.pid, %error, "could not reap a dropped child");
        }
    }
}

/// Reads `reader` to the end, keeping the last `cap` bytes, and logs each
/// line at trace level.
pub(crate) fn read_tail(reader: impl Read, cap: usize) -> String {
    let mut reader = BufReader::new(reader);
    let mut tail: VecDeque<u8> = VecDeque::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line is read whole, however long: bound it by the cap too.
        match (&mut reader)
            .take(cap.max(1) as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                tracing::trace!(line = %String::from_utf8_lossy(&line).trim_end(), "child output");
                tail.extend(&line);
                if tail.len() > cap {
                    let excess = tail.len() - cap;
                    tail.drain(..excess);
                }
            }
        }
    }
    String::from_utf8_lossy(tail.make_contiguous()).into_owned()
}
