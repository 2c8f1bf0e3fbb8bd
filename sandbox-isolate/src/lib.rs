//! Isolation backends for sandbox modules, and the one function that spawns
//! child processes.
//!
//! An [`Isolator`] launches a [`Runtime`] per sandbox: the place where the
//! sandbox's module libraries are loaded and their instances live. The
//! runtime loads each version of a module from its own copy of the artifact
//! (so the dynamic loader never hands back an older image), checks its ABI
//! before any plugin code runs, and swaps instances transactionally: for a
//! whole batch of modules, state is saved, new instances are created and
//! restored, and only when every step succeeded are they switched in, at
//! once. Calls that arrive meanwhile wait; calls in flight finish first.
//!
//! Backends:
//! - [`InProcess`]: modules run in the
//!   host process; a call is a function-pointer call under `catch_unwind`.
//!   For code you trust.
//! - [`Process`]: each sandbox runs in a worker process
//!   ([`worker::worker_main`]) inside the [`jail`]: namespaces, a uid of its
//!   own, rlimits, landlock, seccomp; calls are framed messages over a Unix
//!   socket, a call that overruns its timeout kills the worker, and a dead
//!   worker is reported to the launch spec's crash handler. For code you do
//!   not trust.
//!
//! [`spawn`] (the workspace's only way to start a child process) and the
//! [`jail`] live in `sandbox-jail`, which `sandbox-compiler` uses directly;
//! they are re-exported here for the backends' users.
//!
//! Hosting sandboxes? You want `sandbox-core`'s `Manager`, which drives this
//! crate. Writing a plugin? You want `sandbox-plugin`.

/// The jail (re-exported from `sandbox-jail`).
pub use sandbox_jail as jail;
/// The spawning chokepoint (re-exported from `sandbox-jail`).
pub use sandbox_jail::spawn;

mod error;
mod inprocess;
mod process;
mod runtime;
pub mod worker;

pub use error::{Error, ErrorKind, Result, SwapStage};
pub use inprocess::InProcess;
pub use process::{Process, WorkerCommand, DEFAULT_OUTPUT_LIMIT};
pub use runtime::{
    CallDone, Crash, CrashHandler, IsolationKind, Isolator, LaunchSpec, Migration, ModuleMeta,
    PluginErrorKind, Runtime, RuntimeInfo, SavedState, SwapOutcome, SwapStep,
    DEFAULT_LIFECYCLE_TIMEOUT,
};
/// The limits a sandbox can hit (re-exported from `sandbox-monitor`).
pub use sandbox_monitor::Limit;
