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
//! - [`InProcess`] (feature `loader`, on by default): modules run in the
//!   host process; a call is a function-pointer call under `catch_unwind`.
//!   For code you trust.
//! - [`Process`] (feature `loader`): each sandbox runs in a worker process
//!   ([`worker::worker_main`]) inside the [`jail`]: namespaces, a uid of its
//!   own, rlimits, landlock, seccomp; calls are framed messages over a Unix
//!   socket, a call that overruns its timeout kills the worker, and a dead
//!   worker is reported to the launch spec's crash handler. For code you do
//!   not trust.
//!
//! [`spawn`] is the workspace's only way to start a child process (cargo,
//! workers), so limits and environment scrubbing are never forgotten; it and
//! the [`jail`] are available without the `loader` feature for crates such
//! as `sandbox-compiler` that only need them.
//!
//! Hosting sandboxes? You want `sandbox-core`'s `Manager`, which drives this
//! crate. Writing a plugin? You want `sandbox-plugin`.

pub mod jail;
pub mod spawn;

#[cfg(feature = "loader")]
mod error;
#[cfg(feature = "loader")]
mod inprocess;
#[cfg(feature = "loader")]
mod process;
#[cfg(feature = "loader")]
mod runtime;
#[cfg(feature = "loader")]
pub mod worker;

#[cfg(feature = "loader")]
pub use error::{Error, Result, SwapStage};
#[cfg(feature = "loader")]
pub use inprocess::InProcess;
#[cfg(feature = "loader")]
pub use process::{Process, WorkerCommand, DEFAULT_OUTPUT_LIMIT};
#[cfg(feature = "loader")]
pub use runtime::{
    Crash, CrashHandler, IsolationKind, Isolator, LaunchSpec, Migration, ModuleMeta,
    PluginErrorKind, Runtime, RuntimeInfo, SavedState, SwapOutcome, SwapStep,
    DEFAULT_LIFECYCLE_TIMEOUT,
};
