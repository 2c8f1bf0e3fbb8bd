//! Running cargo (or rustc) to a deadline: a thin use of
//! [`JailedChild::run_to_deadline`](sandbox_jail::spawn::JailedChild::run_to_deadline),
//! which kills the child — its jail init first, or its process group — when
//! the deadline passes, keeps a capped tail of its stderr, and reaps it.

use std::process::ChildStdout;
use std::time::{Duration, Instant};

use sandbox_jail::spawn::{spawn, ChildSpec, Finished, SpawnError};

use crate::Error;

pub(crate) use sandbox_jail::spawn::RunError as Failure;

/// How much of stderr is kept (the tail).
pub(crate) const STDERR_CAP: usize = 64 * 1024;

/// Why [`run`] returned without a [`Finished`] child.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The child could not be started.
    Spawn(SpawnError),
    /// It could not be run to its end: the deadline passed (it was killed)
    /// or it could not be watched.
    Run(Failure),
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
    spawn(spec)
        .map_err(RunError::Spawn)?
        .run_to_deadline(deadline, STDERR_CAP, read_stdout)
        .map_err(RunError::Run)
}

/// Runs `spec` like [`run`], keeping the tail of its stdout as text (at
/// most [`STDERR_CAP`] bytes, as of stderr): for children that answer a
/// question (`rustc -vV`).
pub(crate) fn output(spec: &ChildSpec, deadline: Instant) -> Result<Finished<String>, RunError> {
    spawn(spec)
        .map_err(RunError::Spawn)?
        .output_to_deadline(deadline, STDERR_CAP)
        .map_err(RunError::Run)
}

/// Reads stdout to its end and drops it (cargo's human output goes to
/// stderr; `fetch` and `clean` print nothing worth keeping on stdout).
pub(crate) fn discard(mut stdout: ChildStdout) {
    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
}

/// Converts a [`RunError`] for a build whose timeout was `after`.
pub(crate) fn build_error(error: RunError, after: Duration) -> Error {
    match error {
        RunError::Spawn(e) => Error::Spawn(e.into()),
        RunError::Run(Failure::TimedOut) => Error::Timeout { after },
        RunError::Run(e) => Error::Spawn(e.into()),
    }
}
