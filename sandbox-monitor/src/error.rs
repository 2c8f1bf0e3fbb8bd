//! The one error type of the monitor: what went wrong while watching a process, and what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong while monitoring a process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No process is registered under this key.
    #[error("no process is registered under key `{key}`; call `register` first")]
    UnknownKey {
        /// The key that was asked for.
        key: String,
    },

    /// A process is already registered under this key.
    #[error(
        "key `{key}` is already registered (pid {pid}); call `unregister` first or use another key"
    )]
    DuplicateKey {
        /// The key that was asked for.
        key: String,
        /// The pid already registered under it.
        pid: u32,
    },

    /// `register` was given a pid that names no running process.
    #[error("no running process has pid {pid}; pass the pid of a live process")]
    NoSuchProcess {
        /// The pid that was asked for.
        pid: u32,
    },

    /// The registered process exited (or became a zombie, or its pid was
    /// reused by another process) since it was registered.
    #[error("process {pid} has exited (key `{key}`); unregister the key, or register the restarted process")]
    ProcessExited {
        /// The key the process was registered under.
        key: String,
        /// The pid of the process.
        pid: u32,
    },

    /// A limit that can never be met, or a warning fraction outside `(0, 1]`.
    #[error("invalid resource limits: {reason}; fix the value and register again")]
    InvalidLimits {
        /// What is wrong with the limits.
        reason: String,
    },

    /// Reading a `/proc` file failed for another reason than the process
    /// having exited.
    #[error("cannot read {}: {source}; the monitor needs a mounted /proc (linux) and permission to read it", path.display())]
    Proc {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A `/proc` file had an unexpected format.
    #[error("cannot parse {}: {reason}; this kernel's /proc format is not supported", path.display())]
    Parse {
        /// The file that could not be parsed.
        path: PathBuf,
        /// What was unexpected.
        reason: String,
    },

    /// The monitor does not implement this operation.
    #[error("{operation} is not supported by this monitor; use a monitor that implements it (such as `ProcMonitor`)")]
    Unsupported {
        /// The operation that was asked for.
        operation: &'static str,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
