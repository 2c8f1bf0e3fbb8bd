//! The host <-> worker protocol: length-prefixed `bincode` frames over a
//! Unix stream socket.
//!
//! A frame is a little-endian `u32` length followed by that many bytes of a
//! `bincode`-encoded [`ToWorker`] or [`FromWorker`]. File descriptors (the
//! work folder, artifact folders, an artifact to load) travel as
//! `SCM_RIGHTS` ancillary data on the first byte of the frame that names
//! them. The worker is untrusted once plugin code ran: the host caps frame
//! sizes and decodes with a size limit, and never trusts a reply it did not
//! ask for.

use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::error::{Error, SwapStage};
use crate::jail::{LayerReport, Layers};
use crate::runtime::{ModuleMeta, PluginErrorKind, SavedState, SwapOutcome};
use crate::spawn::ChildLimits;
use crate::Limit;

/// Bumped on every incompatible change of the messages below.
pub(crate) const PROTOCOL: u32 = 3;

/// The largest frame either side accepts.
pub(crate) const MAX_FRAME: usize = 256 << 20;

fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(MAX_FRAME as u64)
}

/// Encodes `message` as one frame (length prefix included).
pub(crate) fn encode<T: Serialize>(message: &T) -> io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 4];
    codec()
        .serialize_into(&mut frame, message)
        .map_err(io::Error::other)?;
    let len = u32::try_from(frame.len() - 4).map_err(io::Error::other)?;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    Ok(frame)
}

/// Decodes a frame body.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<T> {
    codec()
        .deserialize(body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one frame body; `Ok(None)` at a clean end of stream.
pub(crate) fn read_frame(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit"),
        ));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(Some(body))
}

/// What the host tells the worker right after its `Hello`. Carries the
/// work folder's fd, then one fd per artifact folder.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Configure {
    pub sandbox: String,
    pub limits: ChildLimits,
    pub network: bool,
    pub require: Layers,
    pub artifact_dirs: u32,
    /// The most verbose `tracing` level the host wants forwarded
    /// (0 = error ... 4 = trace, 5 = none).
    pub log_level: u8,
    /// The deadline of each lifecycle entry point
    /// ([`LaunchSpec::lifecycle_timeout`](crate::LaunchSpec::lifecycle_timeout)).
    pub lifecycle_timeout: Option<Duration>,
}

/// Host to worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    Configure(Configure),
    Request {
        id: u64,
        op: Op,
    },
    MigrateReply {
        id: u64,
        result: Result<Vec<u8>, String>,
    },
    /// Carries the worker's end of a new call lane: a socket of its own on
    /// which one host thread at a time sends `Request`s with `Op::Call` and
    /// reads each `Reply`, without the shared channel's reader in between.
    Lane,
}

/// One operation of the [`Runtime`](crate::Runtime) trait.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    /// Carries the artifact's fd.
    Load {
        version: u32,
        artifact: PathBuf,
    },
    Swap {
        swap: u64,
        steps: Vec<Step>,
    },
    Call {
        module: String,
        request: Vec<u8>,
    },
    Checkpoint,
    Remove {
        module: String,
    },
    Forget {
        module: String,
        version: u32,
    },
}

/// A [`SwapStep`](crate::SwapStep) without its closure: the worker asks the
/// host to run a migration when `migration` is set.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Step {
    pub module: String,
    pub version: u32,
    pub carry_state: bool,
    pub initial_state: Option<SavedState>,
    pub migration: bool,
    pub health_check: Option<Vec<u8>>,
}

/// Worker to host.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    Hello {
        pid: u32,
        protocol: u32,
    },
    Configured(Result<LayerReport, String>),
    Reply {
        id: u64,
        result: Result<Answer, WireError>,
    },
    Log {
        level: u8,
        module: Option<String>,
        target: String,
        message: String,
    },
    Migrate {
        id: u64,
        swap: u64,
        step: u32,
        bytes: Vec<u8>,
        from: u32,
        to: u32,
    },
}

/// A successful answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Answer {
    Meta(ModuleMeta),
    Swapped(Vec<SwapOutcome>),
    Bytes(Vec<u8>),
    States(Vec<(String, SavedState)>),
    Done,
}

/// [`Error`] as it crosses the socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireError {
    Load {
        path: PathBuf,
        message: String,
    },
    NotAPlugin {
        path: PathBuf,
        reason: String,
    },
    Incompatible {
        path: PathBuf,
        details: String,
    },
    AlreadyLoaded {
        module: String,
        version: u32,
    },
    UnknownModule {
        module: String,
        known: Vec<String>,
    },
    UnknownVersion {
        module: String,
        version: u32,
    },
    UndeclaredDependency {
        caller: String,
        callee: String,
    },
    Plugin {
        module: String,
        kind: PluginErrorKind,
        message: String,
    },
    Timeout {
        module: String,
        after: Duration,
        stopped: bool,
    },
    Abandoned {
        module: String,
        stage: SwapStage,
        after: Duration,
    },
    Exhausted {
        action: String,
        limit: Limit,
        usage: String,
    },
    Swap {
        module: String,
        version: u32,
        stage: SwapStage,
        source: Box<WireError>,
    },
    Migration {
        module: String,
        from: u32,
        to: u32,
        message: String,
    },
    VersionInUse {
        module: String,
        version: u32,
    },
    Io {
        action: String,
        path: PathBuf,
        message: String,
        errno: Option<i32>,
    },
    /// An error of the worker itself (`Error::Worker`, `Error::InWorker`):
    /// its bare message, so the host adds its advice once.
    Worker {
        message: String,
    },
    Other {
        message: String,
    },
}

/// `Error::Io` takes a `&'static str` action: the ones the runtimes use.
const ACTIONS: &[&str] = &[
    "creating the runtime folder",
    "copying the artifact",
    "starting a call thread for",
    "staging the artifact",
];

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::Load { path, message } => Self::Load {
                path: path.clone(),
                message: message.clone(),
            },
            Error::NotAPlugin { path, reason } => Self::NotAPlugin {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::Incompatible { path, details } => Self::Incompatible {
                path: path.clone(),
                details: details.clone(),
            },
            Error::AlreadyLoaded { module, version } => Self::AlreadyLoaded {
                module: module.clone(),
                version: *version,
            },
            Error::UnknownModule { module, known } => Self::UnknownModule {
                module: module.clone(),
                known: known.clone(),
            },
            Error::UnknownVersion { module, version } => Self::UnknownVersion {
                module: module.clone(),
                version: *version,
            },
            Error::UndeclaredDependency { caller, callee } => Self::UndeclaredDependency {
                caller: caller.clone(),
                callee: callee.clone(),
            },
            Error::Plugin {
                module,
                kind,
                message,
            } => Self::Plugin {
                module: module.clone(),
                kind: *kind,
                message: message.clone(),
            },
            Error::Timeout {
                module,
                after,
                stopped,
            } => Self::Timeout {
                module: module.clone(),
                after: *after,
                stopped: *stopped,
            },
            Error::Abandoned {
                module,
                stage,
                after,
            } => Self::Abandoned {
                module: module.clone(),
                stage: *stage,
                after: *after,
            },
            Error::Exhausted {
                action,
                limit,
                usage,
            } => Self::Exhausted {
                action: action.clone(),
                limit: *limit,
                usage: usage.clone(),
            },
            Error::Worker { message } | Error::InWorker { message } => Self::Worker {
                message: message.clone(),
            },
            Error::Swap {
                module,
                version,
                stage,
                source,
            } => Self::Swap {
                module: module.clone(),
                version: *version,
                stage: *stage,
                source: Box::new(Self::from(&**source)),
            },
            Error::Migration {
                module,
                from,
                to,
                message,
            } => Self::Migration {
                module: module.clone(),
                from: *from,
                to: *to,
                message: message.clone(),
            },
            Error::VersionInUse { module, version } => Self::VersionInUse {
                module: module.clone(),
                version: *version,
            },
            Error::Io {
                action,
                path,
                source,
            } => Self::Io {
                action: (*action).to_owned(),
                path: path.clone(),
                message: source.to_string(),
                errno: source.raw_os_error(),
            },
            other => Self::Other {
                message: other.to_string(),
            },
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Load { path, message } => Error::Load { path, message },
            WireError::NotAPlugin { path, reason } => Error::NotAPlugin { path, reason },
            WireError::Incompatible { path, details } => Error::Incompatible { path, details },
            WireError::AlreadyLoaded { module, version } => {
                Error::AlreadyLoaded { module, version }
            }
            WireError::UnknownModule { module, known } => Error::UnknownModule { module, known },
            WireError::UnknownVersion { module, version } => {
                Error::UnknownVersion { module, version }
            }
            WireError::UndeclaredDependency { caller, callee } => {
                Error::UndeclaredDependency { caller, callee }
            }
            WireError::Plugin {
                module,
                kind,
                message,
            } => Error::Plugin {
                module,
                kind,
                message,
            },
            WireError::Timeout {
                module,
                after,
                stopped,
            } => Error::Timeout {
                module,
                after,
                stopped,
            },
            WireError::Abandoned {
                module,
                stage,
                after,
            } => Error::Abandoned {
                module,
                stage,
                after,
            },
            WireError::Exhausted {
                action,
                limit,
                usage,
            } => Error::Exhausted {
                action,
                limit,
                usage,
            },
            WireError::Worker { message } | WireError::Other { message } => {
                Error::InWorker { message }
            }
            WireError::Swap {
                module,
                version,
                stage,
                source,
            } => Error::Swap {
                module,
                version,
                stage,
                source: Box::new(Error::from(*source)),
            },
            WireError::Migration {
                module,
                from,
                to,
                message,
            } => Error::Migration {
                module,
                from,
                to,
                message,
            },
            WireError::VersionInUse { module, version } => Error::VersionInUse { module, version },
            WireError::Io {
                action,
                path,
                message,
                errno,
            } => Error::Io {
                action: ACTIONS
                    .iter()
                    .find(|a| **a == action)
                    .copied()
                    .unwrap_or("in the worker process:"),
                path,
                source: match errno {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::other(message),
                },
            },
        }
    }
}
