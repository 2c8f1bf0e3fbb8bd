//! Typed events: every operation of the `Manager` reports what happened on a
//! stream any number of subscribers can read.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use tokio::sync::broadcast;

use crate::{SandboxId, Status};

/// One thing that happened to a sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The sandbox it happened to.
    pub sandbox: SandboxId,
    /// When, as milliseconds since the Unix epoch in JSON.
    #[serde(serialize_with = "unix_millis")]
    pub at: SystemTime,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. Serialized with its name under `"event"`, e.g.
/// `{"event":"swapped","module":"counter","from":1,"to":2}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The sandbox was registered (it is compiling next).
    Created {
        /// Its source folder.
        source: String,
    },
    /// The status changed.
    Status {
        /// Before.
        from: Status,
        /// After.
        to: Status,
    },
    /// A build started.
    CompileStarted,
    /// A build finished, with its diagnostics (errors when it failed,
    /// warnings otherwise).
    CompileFinished {
        /// It produced artifacts.
        ok: bool,
        /// It was answered from the content-hash cache without running cargo.
        cached: bool,
        /// Wall time in milliseconds.
        millis: u64,
        /// Compiler messages.
        diagnostics: Vec<sandbox_compiler::Diagnostic>,
    },
    /// A module now runs a new version (one per module of a batch, in swap order).
    Swapped {
        /// The module.
        module: String,
        /// The version before (`null` for a module that is new).
        from: Option<u32>,
        /// The version now.
        to: u32,
    },
    /// A swap batch failed and every module in it stayed on its previous
    /// version with its live state.
    RolledBack {
        /// Modules of the batch.
        modules: Vec<String>,
        /// Why.
        reason: String,
    },
    /// A module was rolled back to an earlier version on request.
    Rollback {
        /// The module.
        module: String,
        /// The version before.
        from: u32,
        /// The version now.
        to: u32,
    },
    /// A reload found nothing to swap.
    Unchanged,
    /// The sandbox was restarted from its saved state.
    Restarted {
        /// How many restarts so far.
        restart_count: u32,
    },
    /// The sandbox hit a resource limit.
    LimitExceeded {
        /// Which limit.
        resource: String,
        /// The measured value.
        value: f64,
        /// The limit.
        limit: f64,
    },
    /// The process hosting the modules died; a restart from the last saved
    /// state follows (`restarted`) unless the crash budget is spent.
    Crashed {
        /// Why, as far as the host can tell.
        cause: String,
        /// The signal that ended it.
        signal: Option<i32>,
        /// Its exit code.
        exit_code: Option<i32>,
        /// The limit that was hit, when known.
        limit: Option<String>,
    },
    /// The worker was replaced by a fresh one (state carried) after `swaps`
    /// swaps, giving back the memory of old library versions.
    Recycled {
        /// Swaps since the previous worker started.
        swaps: u32,
    },
    /// An operation failed (details in `message`).
    Failed {
        /// The operation.
        operation: String,
        /// Error kind (as in the protocol).
        kind: String,
        /// The error.
        message: String,
    },
    /// The sandbox was destroyed.
    Destroyed,
}

impl EventKind {
    /// The event's name as serialized (`"swapped"`, `"compile_finished"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Created { .. } => "created",
            Self::Status { .. } => "status",
            Self::CompileStarted => "compile_started",
            Self::CompileFinished { .. } => "compile_finished",
            Self::Swapped { .. } => "swapped",
            Self::RolledBack { .. } => "rolled_back",
            Self::Rollback { .. } => "rollback",
            Self::Unchanged => "unchanged",
            Self::Restarted { .. } => "restarted",
            Self::LimitExceeded { .. } => "limit_exceeded",
            Self::Crashed { .. } => "crashed",
            Self::Recycled { .. } => "recycled",
            Self::Failed { .. } => "failed",
            Self::Destroyed => "destroyed",
        }
    }
}

fn unix_millis<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let millis = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64;
    s.serialize_u64(millis)
}

/// A subscription to the event stream (see `Manager::subscribe`).
///
/// A subscriber that falls more than the channel capacity behind loses the
/// oldest events and is told how many with [`broadcast::error::RecvError::Lagged`].
pub type EventStream = broadcast::Receiver<Event>;

#[derive(Debug, Clone)]
pub(crate) struct Events {
    tx: broadcast::Sender<Event>,
}

impl Events {
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Self { tx }
    }

    pub(crate) fn emit(&self, sandbox: &SandboxId, kind: EventKind) {
        tracing::debug!(sandbox = %sandbox, event = kind.name(), "event");
        // No subscriber is not an error.
        let _ = self.tx.send(Event {
            sandbox: sandbox.clone(),
            at: SystemTime::now(),
            kind,
        });
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        self.tx.subscribe()
    }
}
