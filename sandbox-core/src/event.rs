//! Typed events: every operation of the `Manager` reports what happened on a
//! stream any number of subscribers can read, and — when the configuration
//! names an audit log — the security-relevant ones are appended to it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sandbox_security::{AuditEvent, AuditLog};

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
    CompileStarted {
        /// The sandbox's security profile.
        profile: sandbox_security::Profile,
        /// Whether the build runs inside the jail (every profile but
        /// `trusted`): its build scripts, proc macros and cargo
        /// configuration then never run with the host's rights.
        jailed: bool,
    },
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
        /// Which limit (serialized as its protocol name, e.g.
        /// `"address_space"`).
        resource: sandbox_monitor::Limit,
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
        limit: Option<sandbox_monitor::Limit>,
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
        /// What kind of failure (as in the protocol's error objects).
        kind: crate::ErrorKind,
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
            Self::CompileStarted { .. } => "compile_started",
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
    audit: Option<Arc<Audit>>,
}

/// The audit sink: where [`Events::emit`] appends what it records.
#[derive(Debug)]
struct Audit {
    log: AuditLog,
    actor: String,
}

impl Audit {
    /// Appends `kind` if it is one the audit log records (see
    /// [`audit_record`]). An append that fails is logged: an event is never
    /// refused for it.
    fn record(&self, sandbox: &SandboxId, kind: &EventKind) {
        let Some((action, detail)) = audit_record(kind) else {
            return;
        };
        let event = AuditEvent::new(self.actor.clone(), action)
            .sandbox(sandbox.to_string())
            .detail(detail);
        if let Err(e) = self.log.append(event) {
            tracing::error!(sandbox = %sandbox, action, error = %e, "could not append to the audit log");
        }
    }
}

/// What the audit log records of an event: its action and detail, or `None`
/// for events it does not record (status changes, build results, usage).
///
/// | event | action | detail |
/// |---|---|---|
/// | `created` | `create` | the source folder |
/// | `compile_started` | `build` | the profile, and whether jailed |
/// | `swapped` (a new version) | `reload` | module, versions |
/// | `swapped` (a module's first) | `load` | module, version |
/// | `rolled_back` | `reload_rolled_back` | modules, why |
/// | `rollback` | `rollback` | module, versions (a `reload` to the older version follows) |
/// | `restarted` | `restart` | the restart count |
/// | `crashed` | `crash` | cause, signal, exit code, limit |
/// | `limit_exceeded` | `limit_exceeded` | resource, value, limit |
/// | `failed` | `failed` | operation, kind, message (a refused source among them) |
/// | `destroyed` | `destroy` | |
pub(crate) fn audit_record(kind: &EventKind) -> Option<(&'static str, String)> {
    Some(match kind {
        EventKind::Created { source } => ("create", format!("source {source}")),
        EventKind::CompileStarted { profile, jailed } => (
            "build",
            format!(
                "profile {profile}, {}",
                if *jailed { "jailed" } else { "not jailed" }
            ),
        ),
        EventKind::Swapped {
            module,
            from: Some(from),
            to,
        } => ("reload", format!("module {module}: version {from} -> {to}")),
        EventKind::Swapped {
            module,
            from: None,
            to,
        } => ("load", format!("module {module}: version {to}")),
        EventKind::RolledBack { modules, reason } => (
            "reload_rolled_back",
            format!("modules {}: {reason}", modules.join(", ")),
        ),
        EventKind::Rollback { module, from, to } => (
            "rollback",
            format!("module {module}: version {from} -> {to}"),
        ),
        EventKind::Restarted { restart_count } => ("restart", format!("restart {restart_count}")),
        EventKind::Crashed {
            cause,
            signal,
            exit_code,
            limit,
        } => {
            let mut detail = cause.clone();
            if let Some(signal) = signal {
                detail.push_str(&format!(", signal {signal}"));
            }
            if let Some(code) = exit_code {
                detail.push_str(&format!(", exit code {code}"));
            }
            if let Some(limit) = limit {
                detail.push_str(&format!(", limit {}", limit.as_str()));
            }
            ("crash", detail)
        }
        EventKind::LimitExceeded {
            resource,
            value,
            limit,
        } => (
            "limit_exceeded",
            format!("{resource} {value} over limit {limit}"),
        ),
        EventKind::Failed {
            operation,
            kind,
            message,
        } => ("failed", format!("{operation} ({kind}): {message}")),
        EventKind::Destroyed => ("destroy", String::new()),
        EventKind::Status { .. }
        | EventKind::CompileFinished { .. }
        | EventKind::Unchanged
        | EventKind::Recycled { .. } => return None,
    })
}

impl Events {
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Self { tx, audit: None }
    }

    /// The event stream of a manager with `config`: with an audit sink when
    /// [`Config::audit_log`](crate::Config::audit_log) names a file (opened,
    /// and created with its folder if missing; an existing log's chain must
    /// verify).
    pub(crate) fn from_config(config: &crate::Config) -> crate::Result<Self> {
        let mut events = Self::new(config.event_capacity);
        if let Some(path) = &config.audit_log {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| {
                    crate::Error::Security(sandbox_security::Error::Io {
                        path: dir.to_owned(),
                        source,
                    })
                })?;
            }
            let log = AuditLog::open(path).map_err(crate::Error::Security)?;
            events.audit = Some(Arc::new(Audit {
                log,
                actor: config.audit_actor.clone(),
            }));
        }
        Ok(events)
    }

    /// Reports `kind`: appended to the audit log first (synchronously, so
    /// the record never lags or drops like a slow subscriber's stream),
    /// then sent to every subscriber.
    pub(crate) fn emit(&self, sandbox: &SandboxId, kind: EventKind) {
        tracing::debug!(sandbox = %sandbox, event = kind.name(), "event");
        if let Some(audit) = &self.audit {
            audit.record(sandbox, &kind);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_log_records_the_lifecycle_and_skips_the_rest() {
        let record = |kind: EventKind| audit_record(&kind).map(|(a, d)| format!("{a}: {d}"));
        assert_eq!(
            record(EventKind::CompileStarted {
                profile: sandbox_security::Profile::High,
                jailed: true
            })
            .as_deref(),
            Some("build: profile high, jailed")
        );
        assert_eq!(
            record(EventKind::Swapped {
                module: "counter".into(),
                from: Some(1),
                to: 2
            })
            .as_deref(),
            Some("reload: module counter: version 1 -> 2")
        );
        assert_eq!(record(EventKind::Destroyed).as_deref(), Some("destroy: "));
        assert_eq!(record(EventKind::Unchanged), None);
        assert_eq!(
            record(EventKind::Status {
                from: Status::Compiling,
                to: Status::Running
            }),
            None
        );
    }
}
