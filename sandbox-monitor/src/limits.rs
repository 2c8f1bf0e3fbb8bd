//! Vocabulary: usage samples, limits, alerts and enforcement actions.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const MIB: u64 = 1024 * 1024;

/// The defaults of [`ResourceLimits`], defined here once: every backend
/// that needs a default of its own takes it from here.
pub mod defaults {
    use std::time::Duration;

    use super::MIB;

    /// [`ResourceLimits::memory_bytes`](super::ResourceLimits::memory_bytes): 512 MiB resident.
    pub const MEMORY_BYTES: u64 = 512 * MIB;
    /// [`ResourceLimits::address_space_bytes`](super::ResourceLimits::address_space_bytes): 512 MiB.
    pub const ADDRESS_SPACE_BYTES: u64 = 512 * MIB;
    /// [`ResourceLimits::cpu_seconds`](super::ResourceLimits::cpu_seconds): 60 s.
    pub const CPU_SECONDS: u64 = 60;
    /// [`ResourceLimits::threads`](super::ResourceLimits::threads): 64.
    pub const THREADS: u32 = 64;
    /// [`ResourceLimits::processes`](super::ResourceLimits::processes): none besides the process.
    pub const PROCESSES: u32 = 0;
    /// [`ResourceLimits::open_files`](super::ResourceLimits::open_files): 256.
    pub const OPEN_FILES: u32 = 256;
    /// [`ResourceLimits::file_size_bytes`](super::ResourceLimits::file_size_bytes): 64 MiB.
    pub const FILE_SIZE_BYTES: u64 = 64 * MIB;
    /// [`ResourceLimits::disk_bytes`](super::ResourceLimits::disk_bytes): 256 MiB.
    pub const DISK_BYTES: u64 = 256 * MIB;
    /// [`ResourceLimits::output_bytes`](super::ResourceLimits::output_bytes): 16 MiB.
    pub const OUTPUT_BYTES: u64 = 16 * MIB;
    /// [`ResourceLimits::call_timeout`](super::ResourceLimits::call_timeout): 30 s.
    pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
    /// [`ResourceLimits::lifecycle_timeout`](super::ResourceLimits::lifecycle_timeout): 10 s.
    pub const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(10);
}

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
    /// Resident memory (what [`Usage::memory_bytes`] measures: pages in
    /// RAM). Default 512 MiB. The monitor checks it on every sample; the
    /// kernel has no limit for it that a worker could be given (cgroups
    /// aside), so it is measured, not enforced.
    pub memory_bytes: Option<u64>,
    /// Address space, reserved or used (what [`Usage::virtual_bytes`]
    /// measures). Default 512 MiB. A worker process gets it as `RLIMIT_AS`:
    /// an allocation or a load past it fails, so a host replaces a worker
    /// that nears it (see [`Limit::AddressSpace`]). Not checked by the
    /// monitor: a process reserves far more address space than it uses.
    pub address_space_bytes: Option<u64>,
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
            memory_bytes: Some(defaults::MEMORY_BYTES),
            address_space_bytes: Some(defaults::ADDRESS_SPACE_BYTES),
            cpu_seconds: Some(defaults::CPU_SECONDS),
            cpu_percent: None,
            threads: Some(defaults::THREADS),
            processes: Some(defaults::PROCESSES),
            open_files: Some(defaults::OPEN_FILES),
            file_size_bytes: Some(defaults::FILE_SIZE_BYTES),
            disk_bytes: Some(defaults::DISK_BYTES),
            output_bytes: Some(defaults::OUTPUT_BYTES),
            call_timeout: Some(defaults::CALL_TIMEOUT),
            lifecycle_timeout: Some(defaults::LIFECYCLE_TIMEOUT),
        }
    }
}

impl ResourceLimits {
    /// No limit on anything.
    pub fn unlimited() -> Self {
        ResourceLimits {
            memory_bytes: None,
            address_space_bytes: None,
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
                Limit::Memory,
                usage.memory_bytes as f64,
                self.memory_bytes.map(|v| v as f64),
            ),
            (
                Limit::Cpu,
                usage.cpu_seconds,
                self.cpu_seconds.map(|v| v as f64),
            ),
            (Limit::CpuPercent, usage.cpu_percent, self.cpu_percent),
            (
                Limit::Threads,
                f64::from(usage.threads),
                self.threads.map(f64::from),
            ),
            (
                Limit::Processes,
                f64::from(usage.child_processes),
                self.processes.map(f64::from),
            ),
            (
                Limit::OpenFiles,
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

/// A limit a sandbox can hit: the one vocabulary for alerts, `limit_exceeded`
/// events, crash reports and errors, from the measured limits of
/// [`ResourceLimits`] to the ones only an isolation backend enforces.
///
/// Serialized in `snake_case` (`"address_space"`, `"call_timeout"`), the
/// strings of the `sandbox run` protocol; [`Display`](fmt::Display) says it
/// for people (`address space`), and [`Limit::field`] names the
/// [`ResourceLimits`] field that sets it.
///
/// ```
/// use sandbox_monitor::Limit;
///
/// assert_eq!(serde_json::to_string(&Limit::AddressSpace).unwrap(), r#""address_space""#);
/// assert_eq!("open_files".parse::<Limit>(), Ok(Limit::OpenFiles));
/// assert_eq!(Limit::AddressSpace.to_string(), "address space");
/// assert_eq!(Limit::AddressSpace.field(), Some("address_space_bytes"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Limit {
    /// Resident memory, in bytes ([`ResourceLimits::memory_bytes`]; measured).
    Memory,
    /// Address space, reserved or used, in bytes
    /// ([`ResourceLimits::address_space_bytes`]; `RLIMIT_AS` in a worker).
    AddressSpace,
    /// CPU time, in seconds ([`ResourceLimits::cpu_seconds`]; `RLIMIT_CPU`).
    Cpu,
    /// CPU use between samples, in percent of one core
    /// ([`ResourceLimits::cpu_percent`]; measured).
    CpuPercent,
    /// Threads ([`ResourceLimits::threads`]; `RLIMIT_NPROC` in a worker).
    Threads,
    /// Descendant processes ([`ResourceLimits::processes`]; measured).
    Processes,
    /// Open file descriptors ([`ResourceLimits::open_files`]; `RLIMIT_NOFILE`).
    OpenFiles,
    /// Size of one file, in bytes ([`ResourceLimits::file_size_bytes`];
    /// `RLIMIT_FSIZE`).
    FileSize,
    /// Disk space, in bytes ([`ResourceLimits::disk_bytes`]; summed by the
    /// host).
    Disk,
    /// Bytes written to stdout and stderr ([`ResourceLimits::output_bytes`];
    /// counted by the host).
    Output,
    /// Wall time of one call, in seconds ([`ResourceLimits::call_timeout`]).
    #[serde(alias = "call_time")]
    CallTimeout,
    /// Wall time of one lifecycle entry point, in seconds
    /// ([`ResourceLimits::lifecycle_timeout`]).
    LifecycleTimeout,
    /// A thread's stack (no field: the size the worker gives its threads).
    Stack,
    /// The system calls a jailed worker may make (no field: its seccomp
    /// filter, which the profile decides).
    Seccomp,
}

impl Limit {
    /// Every limit, in declaration order.
    pub const ALL: [Limit; 14] = [
        Limit::Memory,
        Limit::AddressSpace,
        Limit::Cpu,
        Limit::CpuPercent,
        Limit::Threads,
        Limit::Processes,
        Limit::OpenFiles,
        Limit::FileSize,
        Limit::Disk,
        Limit::Output,
        Limit::CallTimeout,
        Limit::LifecycleTimeout,
        Limit::Stack,
        Limit::Seccomp,
    ];

    /// The name it is serialized as (`"address_space"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Memory => "memory",
            Limit::AddressSpace => "address_space",
            Limit::Cpu => "cpu",
            Limit::CpuPercent => "cpu_percent",
            Limit::Threads => "threads",
            Limit::Processes => "processes",
            Limit::OpenFiles => "open_files",
            Limit::FileSize => "file_size",
            Limit::Disk => "disk",
            Limit::Output => "output",
            Limit::CallTimeout => "call_timeout",
            Limit::LifecycleTimeout => "lifecycle_timeout",
            Limit::Stack => "stack",
            Limit::Seccomp => "seccomp",
        }
    }

    /// The [`ResourceLimits`] field that sets it, to name in advice ("raise
    /// the sandbox's `address_space_bytes` limit"); `None` for the limits no
    /// field sets.
    pub fn field(self) -> Option<&'static str> {
        Some(match self {
            Limit::Memory => "memory_bytes",
            Limit::AddressSpace => "address_space_bytes",
            Limit::Cpu => "cpu_seconds",
            Limit::CpuPercent => "cpu_percent",
            Limit::Threads => "threads",
            Limit::Processes => "processes",
            Limit::OpenFiles => "open_files",
            Limit::FileSize => "file_size_bytes",
            Limit::Disk => "disk_bytes",
            Limit::Output => "output_bytes",
            Limit::CallTimeout => "call_timeout",
            Limit::LifecycleTimeout => "lifecycle_timeout",
            Limit::Stack | Limit::Seccomp => return None,
        })
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Memory => "memory",
            Limit::AddressSpace => "address space",
            Limit::Cpu => "cpu time",
            Limit::CpuPercent => "cpu percent",
            Limit::Threads => "threads",
            Limit::Processes => "processes",
            Limit::OpenFiles => "file descriptors",
            Limit::FileSize => "file size",
            Limit::Disk => "disk",
            Limit::Output => "output",
            Limit::CallTimeout => "call time",
            Limit::LifecycleTimeout => "lifecycle time",
            Limit::Stack => "stack",
            Limit::Seccomp => "system calls",
        })
    }
}

impl std::str::FromStr for Limit {
    type Err = String;

    /// Parses the serialized name (`"address_space"`).
    fn from_str(name: &str) -> std::result::Result<Self, String> {
        Limit::ALL
            .into_iter()
            .find(|l| l.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Limit::ALL.iter().map(|l| l.as_str()).collect();
                format!("`{name}` is not a limit; use one of {}", names.join(", "))
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
    pub resource: Limit,
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
    pub overrides: Vec<(Limit, Enforcement)>,
}

impl Default for EnforcementPolicy {
    fn default() -> Self {
        EnforcementPolicy {
            on_warning: Enforcement::None,
            on_exceeded: Enforcement::Kill,
            overrides: vec![
                (Limit::CpuPercent, Enforcement::Throttle),
                (Limit::CallTimeout, Enforcement::Restart),
            ],
        }
    }
}

impl EnforcementPolicy {
    /// Sets the action for `resource` exceeding its limit.
    pub fn with_override(mut self, resource: Limit, action: Enforcement) -> Self {
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
