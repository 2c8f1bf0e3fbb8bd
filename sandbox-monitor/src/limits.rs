//! Vocabulary: usage samples, limits, alerts and enforcement actions.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const MIB: u64 = 1024 * 1024;

/// The default fraction of a limit at which a [`AlertLevel::Warning`] is raised.
pub const DEFAULT_WARNING_FRACTION: f64 = 0.8;

/// One sample of a process's resource usage.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Resident set size (physical memory in use), in bytes.
    pub memory_bytes: u64,
    /// Size of the virtual address space, in bytes.
    pub virtual_bytes: u64,
    /// CPU use since the previous sample of the same key, in percent of one
    /// core (a process busy on two cores reads 200). The first sample of a key
    /// reports the average since the process started.
    pub cpu_percent: f64,
    /// CPU time (user + system) consumed since the process started, in seconds.
    pub cpu_seconds: f64,
    /// Number of threads of the process.
    pub threads: u32,
    /// Number of live descendant processes (children, grandchildren, ...).
    pub child_processes: u32,
    /// Time since the process started.
    pub uptime: Duration,
    /// Number of open file descriptors (0 when the monitor may not read them).
    pub open_files: u32,
}

/// Limits for one sandbox process. `None` means unlimited.
///
/// [`Default`] gives limits suited to an untrusted plugin (each documented on
/// its field); [`ResourceLimits::unlimited`] gives no limit at all. Missing
/// fields in a serialized form take their default value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceLimits {
    /// Memory. Default 512 MiB. The monitor checks resident memory against
    /// it; an isolation backend that enforces it with `RLIMIT_AS` (a worker
    /// process) counts address space, reserved or used, so a host replaces
    /// a worker that nears it.
    pub memory_bytes: Option<u64>,
    /// Total CPU time. Default 60 s.
    pub cpu_seconds: Option<u64>,
    /// CPU use between two samples, in percent of one core. Default unlimited.
    pub cpu_percent: Option<f64>,
    /// Threads of the process. Default 64.
    pub threads: Option<u32>,
    /// Descendant processes besides the process itself. Default 0.
    pub processes: Option<u32>,
    /// Open file descriptors. Default 256.
    pub open_files: Option<u32>,
    /// Size of any one file written (enforced by an isolation backend). Default 64 MiB.
    pub file_size_bytes: Option<u64>,
    /// Total disk space written (enforced by an isolation backend). Default 256 MiB.
    pub disk_bytes: Option<u64>,
    /// Bytes written to stdout and stderr over the process's life (captured
    /// and enforced by an isolation backend). Default 16 MiB.
    pub output_bytes: Option<u64>,
    /// Wall time of one call into the sandbox (enforced by the caller). Default 30 s.
    pub call_timeout: Option<Duration>,
    /// Wall time of each lifecycle entry point of a module — creating an
    /// instance, `init`, `save_state`, a migration, `restore_state`, the
    /// health check — on its own (enforced by an isolation backend: one
    /// that overruns fails its create, swap or checkpoint with a timeout).
    /// Separate from `call_timeout` because a swap runs several of them
    /// while calls to the module wait. Default 10 s.
    pub lifecycle_timeout: Option<Duration>,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            memory_bytes: Some(512 * MIB),
            cpu_seconds: Some(60),
            cpu_percent: None,
            threads: Some(64),
            processes: Some(0),
            open_files: Some(256),
            file_size_bytes: Some(64 * MIB),
            disk_bytes: Some(256 * MIB),
            output_bytes: Some(16 * MIB),
            call_timeout: Some(Duration::from_secs(30)),
            lifecycle_timeout: Some(Duration::from_secs(10)),
        }
    }
}

impl ResourceLimits {
    /// No limit on anything.
    pub fn unlimited() -> Self {
        ResourceLimits {
            memory_bytes: None,
            cpu_seconds: None,
            cpu_percent: None,
            threads: None,
            processes: None,
            open_files: None,
            file_size_bytes: None,
            disk_bytes: None,
            output_bytes: None,
            call_timeout: None,
            lifecycle_timeout: None,
        }
    }

    /// Checks that every limit can be met: `cpu_percent` finite and not
    /// negative, `call_timeout` and `lifecycle_timeout` not zero.
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = self.cpu_percent {
            if !p.is_finite() || p < 0.0 {
                return Err(Error::InvalidLimits {
                    reason: format!("cpu_percent is {p}, it must be a finite number >= 0"),
                });
            }
        }
        if self.call_timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidLimits {
                reason: "call_timeout is zero, no call could ever finish".to_owned(),
            });
        }
        if self.lifecycle_timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidLimits {
                reason: "lifecycle_timeout is zero, no module could ever start".to_owned(),
            });
        }
        Ok(())
    }

    /// The alerts `usage` raises against these limits for `key`.
    ///
    /// A resource is [`AlertLevel::Exceeded`] when its value is above its
    /// limit, and [`AlertLevel::Warning`] when it is above
    /// `warning_fraction × limit` (a limit of 0 warns only once exceeded).
    /// Only measured resources are evaluated: memory, CPU time, CPU percent,
    /// threads, processes and open files.
    pub fn evaluate(&self, key: &str, usage: &Usage, warning_fraction: f64) -> Vec<Alert> {
        let checks = [
            (
                Resource::Memory,
                usage.memory_bytes as f64,
                self.memory_bytes.map(|v| v as f64),
            ),
            (
                Resource::Cpu,
                usage.cpu_seconds,
                self.cpu_seconds.map(|v| v as f64),
            ),
            (Resource::CpuPercent, usage.cpu_percent, self.cpu_percent),
            (
                Resource::Threads,
                f64::from(usage.threads),
                self.threads.map(f64::from),
            ),
            (
                Resource::Processes,
                f64::from(usage.child_processes),
                self.processes.map(f64::from),
            ),
            (
                Resource::OpenFiles,
                f64::from(usage.open_files),
                self.open_files.map(f64::from),
            ),
        ];
        checks
            .into_iter()
            .filter_map(|(resource, value, limit)| {
                let limit = limit?;
                let level = if value > limit {
                    AlertLevel::Exceeded
                } else if value > limit * warning_fraction {
                    AlertLevel::Warning
                } else {
                    return None;
                };
                Some(Alert {
                    key: key.to_owned(),
                    resource,
                    value,
                    limit,
                    level,
                })
            })
            .collect()
    }
}

/// A resource that can be limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Resource {
    /// Resident memory, in bytes.
    Memory,
    /// CPU time, in seconds.
    Cpu,
    /// CPU use between samples, in percent of one core.
    CpuPercent,
    /// Threads.
    Threads,
    /// Descendant processes.
    Processes,
    /// Open file descriptors.
    OpenFiles,
    /// Size of one file, in bytes (reported by isolation backends).
    FileSize,
    /// Disk space, in bytes (reported by isolation backends).
    Disk,
    /// Wall time of one call, in seconds (reported by callers).
    CallTime,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Memory => "memory",
            Resource::Cpu => "cpu time",
            Resource::CpuPercent => "cpu percent",
            Resource::Threads => "threads",
            Resource::Processes => "processes",
            Resource::OpenFiles => "open files",
            Resource::FileSize => "file size",
            Resource::Disk => "disk",
            Resource::CallTime => "call time",
        })
    }
}

/// How serious an [`Alert`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    /// Usage is above the warning fraction of the limit.
    Warning,
    /// Usage is above the limit.
    Exceeded,
}

/// A resource whose usage crossed a threshold in the latest sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The key of the monitored process.
    pub key: String,
    /// The resource.
    pub resource: Resource,
    /// Its measured value (in the unit of the matching [`ResourceLimits`] field).
    pub value: f64,
    /// The limit it was measured against.
    pub limit: f64,
    /// Warning or exceeded.
    pub level: AlertLevel,
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.level {
            AlertLevel::Warning => "is near its limit",
            AlertLevel::Exceeded => "exceeded its limit",
        };
        write!(
            f,
            "`{}`: {} {what} ({} of {})",
            self.key, self.resource, self.value, self.limit
        )
    }
}

/// The action a host should take about an alert, ordered by severity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Nothing (log it).
    #[default]
    None,
    /// Slow the process down (fewer calls, lower priority).
    Throttle,
    /// Restart the sandbox from its last saved state.
    Restart,
    /// Kill the process.
    Kill,
}

/// Maps alerts to [`Enforcement`] actions.
///
/// The default does nothing on warnings, throttles on CPU percent, restarts on
/// call time and kills on any other exceeded limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnforcementPolicy {
    /// The action for every [`AlertLevel::Warning`].
    pub on_warning: Enforcement,
    /// The action for an [`AlertLevel::Exceeded`] resource without an override.
    pub on_exceeded: Enforcement,
    /// Per-resource actions for [`AlertLevel::Exceeded`]; the last entry for a
    /// resource wins.
    pub overrides: Vec<(Resource, Enforcement)>,
}

impl Default for EnforcementPolicy {
    fn default() -> Self {
        EnforcementPolicy {
            on_warning: Enforcement::None,
            on_exceeded: Enforcement::Kill,
            overrides: vec![
                (Resource::CpuPercent, Enforcement::Throttle),
                (Resource::CallTime, Enforcement::Restart),
            ],
        }
    }
}

impl EnforcementPolicy {
    /// Sets the action for `resource` exceeding its limit.
    pub fn with_override(mut self, resource: Resource, action: Enforcement) -> Self {
        self.overrides.push((resource, action));
        self
    }

    /// The action to take for one alert.
    pub fn action_for(&self, alert: &Alert) -> Enforcement {
        match alert.level {
            AlertLevel::Warning => self.on_warning,
            AlertLevel::Exceeded => self
                .overrides
                .iter()
                .rev()
                .find(|(resource, _)| *resource == alert.resource)
                .map_or(self.on_exceeded, |(_, action)| *action),
        }
    }

    /// The most severe action over all `alerts` ([`Enforcement::None`] for none).
    pub fn action_for_all(&self, alerts: &[Alert]) -> Enforcement {
        alerts
            .iter()
            .map(|a| self.action_for(a))
            .max()
            .unwrap_or_default()
    }
}
