//! Running one child process to completion under a wall-clock deadline.
//!
//! stdout and stderr are drained on their own threads (a full pipe never
//! blocks the child), a third thread waits for the exit status, and the
//! calling thread blocks on a channel with a deadline: no polling. When the
//! deadline passes, the child's whole process group is killed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, ExitStatus};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
use sandbox_jail::spawn::{kill_group, kill_jailed, spawn, ChildSpec};

use crate::{Error, Result};

/// How much of stderr is kept (the tail).
pub(crate) const STDERR_CAP: usize = 64 * 1024;

/// How long to wait for a killed group's pipes to close.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// A child that ran to completion.
#[derive(Debug)]
pub(crate) struct Finished<T> {
    pub status: ExitStatus,
    pub stdout: T,
    pub stderr: String,
}

/// Why [`run`] returned without a [`Finished`] child.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The child could not be started.
    Spawn(std::io::Error),
    /// The deadline passed; the group was killed.
    TimedOut,
}

enum Event<T> {
    Stdout(T),
    Stderr(String),
    Exit(std::io::Result<ExitStatus>),
}

/// Whether the child has been reaped. Held while the waiter thread kills
/// the group and reaps the leader, so nobody signals a process group whose
/// id the kernel may already have handed to someone else.
type Reaped = Arc<Mutex<bool>>;

fn kill_unless_reaped(pid: u32, jailed: bool, reaped: &Reaped) {
    let reaped = reaped.lock().unwrap_or_else(PoisonError::into_inner);
    if !*reaped {
        // A jail goes init first, so none of it is left for pid 1 to adopt.
        let killed = if jailed {
            kill_jailed(pid)
        } else {
            kill_group(pid)
        };
        if let Err(error) = killed {
            tracing::warn!(pid, %error, "could not kill the child's process group");
        }
    }
}

/// Kills the group if the caller unwinds or returns early while the child
/// may still be running.
struct GroupGuard {
    pid: u32,
    jailed: bool,
    reaped: Reaped,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_unless_reaped(self.pid, self.jailed, &self.reaped);
    }
}

/// Waits until `child` has exited, kills whatever it left behind in its
/// process group, then reaps it.
fn wait_and_reap(mut child: Child, reaped: &Reaped) -> std::io::Result<ExitStatus> {
    let pid = child.id();
    if let Some(raw) = Pid::from_raw(pid as i32) {
        // Wait without reaping: while the leader is a zombie its pid, which
        // is also the process group id, cannot be reused.
        loop {
            match waitid(
                WaitId::Pid(raw),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Err(e) if e == rustix::io::Errno::INTR => continue,
                _ => break,
            }
        }
    }
    let mut reaped = reaped.lock().unwrap_or_else(PoisonError::into_inner);
    // Stray processes the child left in its group (a daemon started by a
    // build script, say) die with it.
    let _ = kill_group(pid);
    let status = child.wait();
    *reaped = true;
    status
}

/// Runs `spec` until it exits or `deadline` passes. `read_stdout` consumes
/// the child's stdout on a separate thread and returns what it collected.
///
/// Must be called on a thread that outlives the child: the chokepoint sets
/// a parent-death signal, which fires when the spawning thread exits.
pub(crate) fn run<T, F>(
    spec: &ChildSpec,
    deadline: Instant,
    read_stdout: F,
) -> Result<Finished<T>, RunError>
where
    T: Send + 'static,
    F: FnOnce(ChildStdout) -> T + Send + 'static,
{
    let mut child = spawn(spec).map_err(RunError::Spawn)?;
    let pid = child.id();
    let jailed = spec.jail_config().is_some();
    let reaped: Reaped = Arc::new(Mutex::new(false));
    let _guard = GroupGuard {
        pid,
        jailed,
        reaped: Arc::clone(&reaped),
    };
    let (tx, rx) = crossbeam_channel::bounded::<Event<T>>(3);
    let mut pending = 0;

    if let Some(stdout) = child.stdout.take() {
        let tx = tx.clone();
        pending += 1;
        thread::Builder::new()
            .name("compiler-stdout".into())
            .spawn(move || {
                let _ = tx.send(Event::Stdout(read_stdout(stdout)));
            })
            .map_err(RunError::Spawn)?;
    }
    if let Some(stderr) = child.stderr.take() {
        let tx = tx.clone();
        pending += 1;
        thread::Builder::new()
            .name("compiler-stderr".into())
            .spawn(move || {
                let _ = tx.send(Event::Stderr(read_tail(stderr, STDERR_CAP)));
            })
            .map_err(RunError::Spawn)?;
    }
    {
        let reaped = Arc::clone(&reaped);
        pending += 1;
        thread::Builder::new()
            .name("compiler-wait".into())
            .spawn(move || {
                let _ = tx.send(Event::Exit(wait_and_reap(child, &reaped)));
            })
            .map_err(RunError::Spawn)?;
    }

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
            Err(RecvTimeoutError::Timeout) if !timed_out => {
                tracing::warn!(pid, "build deadline passed; killing its process group");
                kill_unless_reaped(pid, jailed, &reaped);
                timed_out = true;
                continue;
            }
            Err(_) => {
                // Something outside the group still holds a pipe; the reader
                // threads end when it lets go.
                tracing::warn!(pid, "the child left its pipes open; not waiting for them");
                break;
            }
        };
        pending -= 1;
        match event {
            Event::Stdout(value) => stdout = Some(value),
            Event::Stderr(text) => stderr = text,
            Event::Exit(result) => status = Some(result.map_err(RunError::Spawn)?),
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
        _ => Err(RunError::Spawn(std::io::Error::other(
            "lost track of the child process",
        ))),
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
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                tracing::trace!(line = %String::from_utf8_lossy(&line).trim_end(), "cargo");
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

/// Converts a [`RunError`] for a build whose timeout was `after`.
pub(crate) fn build_error(error: RunError, after: Duration) -> Error {
    match error {
        RunError::Spawn(e) => Error::Spawn(e),
        RunError::TimedOut => Error::Timeout { after },
    }
}
