//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Limit, PluginErrorKind};

/// A result whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an error is: the `kind` of an error object in the
/// `sandbox run` protocol and of a `failed` event, serialized in
/// `snake_case` (`"limit_exceeded"`).
///
/// One vocabulary for the whole error chain: [`Error::kind`] says it for
/// this crate's errors, and `sandbox_core::Error::kind` for the manager's,
/// handing those that wrap an isolation error to [`Error::kind`]. It lives
/// here, below `sandbox-core`, so that the isolation backends can say it;
/// the compiler (a leaf crate, which may not depend on this one) reports
/// typed errors that `sandbox-core` maps.
///
/// ```
/// use sandbox_isolate::ErrorKind;
///
/// assert_eq!(serde_json::to_string(&ErrorKind::LimitExceeded).unwrap(), r#""limit_exceeded""#);
/// assert_eq!("bad_request".parse(), Ok(ErrorKind::BadRequest));
/// assert_eq!(ErrorKind::Timeout, "timeout");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed or names something that cannot be (a bad
    /// id, a duplicate id, a missing source folder, an unknown backend).
    BadRequest,
    /// What the request names does not exist (a sandbox, a module).
    NotFound,
    /// The source did not build, or built something that is not a usable
    /// plugin.
    Compile,
    /// The modules' declared dependencies are not usable (a cycle, an
    /// unknown module).
    Dependency,
    /// A version is unknown, already loaded, or in use.
    Version,
    /// The plugin returned an error, or called a module it did not declare.
    Plugin,
    /// A swap or rollback failed (nothing was switched) or was refused.
    Swap,
    /// Plugin code — a call, or a lifecycle entry point — overran its
    /// deadline.
    Timeout,
    /// The worker ran out of something its limits cap (a
    /// [`Limit`](crate::Limit)).
    LimitExceeded,
    /// The worker died; the host restarts it by itself.
    Crashed,
    /// The security policy refused the source or an operation.
    Security,
    /// Watching the source for auto-reload failed.
    Watch,
    /// The sandbox is not in a state that allows the operation.
    NotRunning,
    /// The host itself failed.
    System,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::BadRequest,
        ErrorKind::NotFound,
        ErrorKind::Compile,
        ErrorKind::Dependency,
        ErrorKind::Version,
        ErrorKind::Plugin,
        ErrorKind::Swap,
        ErrorKind::Timeout,
        ErrorKind::LimitExceeded,
        ErrorKind::Crashed,
        ErrorKind::Security,
        ErrorKind::Watch,
        ErrorKind::NotRunning,
        ErrorKind::System,
    ];

    /// The name it is serialized as (`"bad_request"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Compile => "compile",
            ErrorKind::Dependency => "dependency",
            ErrorKind::Version => "version",
            ErrorKind::Plugin => "plugin",
            ErrorKind::Swap => "swap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::Crashed => "crashed",
            ErrorKind::Security => "security",
            ErrorKind::Watch => "watch",
            ErrorKind::NotRunning => "not_running",
            ErrorKind::System => "system",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = String;

    /// Parses the serialized name (`"limit_exceeded"`).
    fn from_str(name: &str) -> std::result::Result<Self, String> {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "`{name}` is not an error kind; use one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A kind equals its serialized name.
impl PartialEq<str> for ErrorKind {
    fn eq(&self, name: &str) -> bool {
        self.as_str() == name
    }
}

/// A kind equals its serialized name.
impl PartialEq<&str> for ErrorKind {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

/// Which step of a swap failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwapStage {
    /// Saving the old instance's state.
    Save,
    /// Creating the new instance.
    Create,
    /// The new instance's `init`.
    Init,
    /// The host migration or the new instance's `restore_state`.
    Restore,
    /// The health-check request.
    Health,
}

impl std::fmt::Display for SwapStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Save => "save_state",
            Self::Create => "create",
            Self::Init => "init",
            Self::Restore => "restore_state",
            Self::Health => "health check",
        })
    }
}

/// What went wrong while loading or running a module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened as a dynamic library.
    #[error("cannot load `{}` as a library: {message}; is it a cdylib built for this machine?", path.display())]
    Load {
        /// The artifact.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The library loaded but does not export a sandbox plugin.
    #[error("`{}` is not a sandbox plugin: {reason}; export one with `sandbox_plugin::export_plugin!`", path.display())]
    NotAPlugin {
        /// The artifact.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The plugin was built against an incompatible plugin API; none of its code ran.
    #[error("`{}` was built against an incompatible plugin API: {details}; rebuild it against this host's sandbox-plugin", path.display())]
    Incompatible {
        /// The artifact.
        path: PathBuf,
        /// The layout or version mismatch, as reported by the ABI check.
        details: String,
    },
    /// The same module version was loaded twice.
    #[error("version {version} of module `{module}` is already loaded")]
    AlreadyLoaded {
        /// Module name.
        module: String,
        /// Version number.
        version: u32,
    },
    /// No module of that name is active.
    #[error("no module `{module}` in this sandbox; known modules: {}", list(known))]
    UnknownModule {
        /// The requested name.
        module: String,
        /// The active modules.
        known: Vec<String>,
    },
    /// The version is not loaded in this runtime.
    #[error("version {version} of module `{module}` is not loaded")]
    UnknownVersion {
        /// Module name.
        module: String,
        /// Version number.
        version: u32,
    },
    /// A module called one it did not declare.
    #[error("module `{caller}` called `{callee}` without declaring it; add \"{callee}\" to its DEPENDENCIES")]
    UndeclaredDependency {
        /// The calling module.
        caller: String,
        /// The module it tried to call.
        callee: String,
    },
    /// The plugin returned an error.
    #[error("module `{module}` failed ({kind}): {message}")]
    Plugin {
        /// Module name.
        module: String,
        /// The class the plugin gave.
        kind: PluginErrorKind,
        /// The plugin's message.
        message: String,
    },
    /// Plugin code (a call, or a lifecycle entry point: `init`,
    /// `save_state`, `restore_state`, a migration, a health check) did not
    /// return in time. In-process it was abandoned on a thread of its own
    /// (code in the host cannot be stopped); in a worker the host killed
    /// the worker when the stuck code held live state (`stopped`).
    #[error("module `{module}` did not return within {after:?}; {}", timeout_outcome(*stopped))]
    Timeout {
        /// Module name.
        module: String,
        /// The limit.
        after: Duration,
        /// Whether the code was stopped (its worker process killed); else
        /// it was abandoned and may still be running.
        stopped: bool,
    },
    /// A module lost its instance: a lifecycle entry point of it
    /// (`save_state` during a swap or a checkpoint) never returned, so its
    /// instance and state stayed with the abandoned thread.
    #[error("module `{module}` has no instance: its {stage} did not return within {after:?} and was abandoned with the instance's state; restart the sandbox to start the module again from empty state, and fix the code that does not return")]
    Abandoned {
        /// Module name.
        module: String,
        /// The entry point that never returned.
        stage: SwapStage,
        /// The limit it overran.
        after: Duration,
    },
    /// The worker process ran out of something its limits cap (address
    /// space, open files), so an operation failed.
    #[error("{action}: the worker process is out of {limit} ({usage}); raise the sandbox's {} limit, or restart the sandbox to start a fresh worker", limit.field().unwrap_or(limit.as_str()))]
    Exhausted {
        /// What failed, e.g. "cannot load `x.so`".
        action: String,
        /// What ran out: [`Limit::AddressSpace`], [`Limit::OpenFiles`].
        limit: Limit,
        /// How much was in use of how much, for people.
        usage: String,
    },
    /// A step of a swap failed; nothing was switched.
    #[error("swap of `{module}` to version {version} failed at {stage}, {}: {source}", swap_outcome(*stage, source))]
    Swap {
        /// The module whose step failed.
        module: String,
        /// The target version.
        version: u32,
        /// The step.
        stage: SwapStage,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// A host-registered migration refused the state.
    #[error("migration of `{module}` state from schema {from} to {to} failed: {message}")]
    Migration {
        /// Module name.
        module: String,
        /// Old schema.
        from: u32,
        /// New schema.
        to: u32,
        /// The migration's message.
        message: String,
    },
    /// The version is active and cannot be forgotten.
    #[error(
        "version {version} of `{module}` is running; switch to another version before dropping it"
    )]
    VersionInUse {
        /// Module name.
        module: String,
        /// Version number.
        version: u32,
    },
    /// A file-system operation failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The worker process hosting the sandbox's modules died (or was
    /// killed); the request did not complete and the runtime is unusable.
    #[error("the worker process of this sandbox died ({cause}) and the request did not complete; the host restarts the worker from the last saved state by itself, so retry once the sandbox is running again")]
    WorkerDied {
        /// Why it died, as [`Crash::cause`](crate::Crash::cause) says.
        cause: String,
    },
    /// The worker process could not be started, or broke the protocol.
    #[error("worker process: {message}; check that the worker command runs `sandbox_isolate::worker::worker_main`")]
    Worker {
        /// What went wrong.
        message: String,
    },
    /// Something failed inside the worker process that is not one of the
    /// errors above (its message as the worker put it).
    #[error("in the worker process: {message}; the request did not complete, retry it (the worker keeps serving)")]
    InWorker {
        /// The worker's message.
        message: String,
    },
    /// The jail could not be set up, or this kernel lacks a layer the
    /// sandbox requires.
    #[error("cannot jail the worker process: {0}")]
    Jail(#[from] crate::jail::JailError),
}

fn swap_outcome(stage: SwapStage, source: &Error) -> &'static str {
    if stage == SwapStage::Save && matches!(source, Error::Timeout { .. }) {
        "so nothing was switched, but the old instance never came back from it"
    } else {
        "so nothing was switched and the old versions keep serving"
    }
}

fn timeout_outcome(stopped: bool) -> &'static str {
    if stopped {
        "the host killed its worker process; raise the limit (call_timeout for calls, lifecycle_timeout for init, save_state, restore_state and migrations) or fix the code that does not return"
    } else {
        "it was abandoned, still running, on a thread of its own (code in the host process cannot be stopped); raise the limit (call_timeout for calls, lifecycle_timeout for init, save_state, restore_state and migrations) or fix the code that does not return"
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

impl Error {
    /// A call of `module` whose caller stopped waiting after `after`: the
    /// code was abandoned, not stopped, and may still be running.
    pub fn abandoned(module: &str, after: std::time::Duration) -> Self {
        Self::Timeout {
            module: module.to_owned(),
            after,
            stopped: false,
        }
    }

    /// The error behind a [`Error::Swap`], or the error itself.
    pub fn root(&self) -> &Error {
        match self {
            Self::Swap { source, .. } => source.root(),
            other => other,
        }
    }

    /// What kind of failure this is. A swap that failed because plugin
    /// code overran its deadline is a [`ErrorKind::Timeout`], and one that
    /// failed because the worker ran out of memory or descriptors is
    /// [`ErrorKind::LimitExceeded`], whatever step it was at; any other
    /// failed swap is [`ErrorKind::Swap`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Swap { .. } => match self.root() {
                Self::Timeout { .. } => ErrorKind::Timeout,
                Self::Exhausted { .. } => ErrorKind::LimitExceeded,
                _ => ErrorKind::Swap,
            },
            Self::Exhausted { .. } => ErrorKind::LimitExceeded,
            Self::Abandoned { .. } | Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Load { .. } | Self::NotAPlugin { .. } | Self::Incompatible { .. } => {
                ErrorKind::Compile
            }
            Self::UnknownModule { .. } => ErrorKind::NotFound,
            Self::UnknownVersion { .. }
            | Self::AlreadyLoaded { .. }
            | Self::VersionInUse { .. } => ErrorKind::Version,
            Self::Plugin { .. } | Self::UndeclaredDependency { .. } => ErrorKind::Plugin,
            Self::Migration { .. } => ErrorKind::Swap,
            Self::WorkerDied { .. } => ErrorKind::Crashed,
            Self::Io { .. } | Self::Worker { .. } | Self::InWorker { .. } | Self::Jail(_) => {
                ErrorKind::System
            }
        }
    }
}
