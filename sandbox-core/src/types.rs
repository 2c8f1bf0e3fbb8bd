//! The vocabulary of the `Manager`: ids, specs, statuses, reports.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sandbox_isolate::IsolationKind;
use sandbox_monitor::ResourceLimits;
use sandbox_security::Profile;
use serde::{Deserialize, Serialize, Serializer};

use crate::{Error, Result};

/// The name of a sandbox: 1–64 characters of `A-Z a-z 0-9 - _ .`, not
/// starting with `.` (it is used in folder names and log fields).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SandboxId(pub(crate) String);

impl SandboxId {
    /// Checks and wraps `id`.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some("it is empty")
        } else if id.len() > 64 {
            Some("it is longer than 64 characters")
        } else if id.starts_with('.') {
            Some("it starts with `.`")
        } else if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            Some("use only letters, digits, `-`, `_` and `.`")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidId { id, reason }),
            None => Ok(Self(id)),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for SandboxId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Anything that names a sandbox: `&str`, `String` (checked) or a [`SandboxId`].
pub trait IntoSandboxId {
    /// Checks and converts.
    fn into_sandbox_id(self) -> Result<SandboxId>;
}

impl IntoSandboxId for SandboxId {
    fn into_sandbox_id(self) -> Result<SandboxId> {
        Ok(self)
    }
}

impl IntoSandboxId for &SandboxId {
    fn into_sandbox_id(self) -> Result<SandboxId> {
        Ok(self.clone())
    }
}

impl IntoSandboxId for &str {
    fn into_sandbox_id(self) -> Result<SandboxId> {
        SandboxId::new(self)
    }
}

impl IntoSandboxId for String {
    fn into_sandbox_id(self) -> Result<SandboxId> {
        SandboxId::new(self)
    }
}

/// Where a sandbox is in its life.
///
/// `Initializing → Compiling → Starting → Running ⇄ Reloading → Stopping →
/// Stopped`, and any state `→ Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Registered, nothing done yet.
    Initializing,
    /// Its source is being built.
    Compiling,
    /// Modules are being loaded and instantiated.
    Starting,
    /// Serving calls.
    Running,
    /// Serving calls while a new version is built and swapped in.
    Reloading,
    /// Being destroyed.
    Stopping,
    /// Destroyed.
    Stopped,
    /// Failed and not serving; see the events for why.
    Error,
}

impl Status {
    /// Calls are answered in this status.
    pub fn serves_calls(self) -> bool {
        matches!(self, Self::Running | Self::Reloading)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Initializing => "initializing",
            Self::Compiling => "compiling",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Reloading => "reloading",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Error => "error",
        })
    }
}

/// How to build and run a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The Cargo package or workspace holding the modules.
    pub source: PathBuf,
    /// Where the modules run.
    pub isolation: IsolationKind,
    /// The security profile the source is checked against.
    pub profile: Profile,
    /// Resource limits (the call timeout applies in every isolation; the
    /// rest are enforced by the process backend).
    pub limits: ResourceLimits,
    /// Process isolation: when module state is saved, and so what a crash
    /// of the worker may lose. Default [`Durability::ConfigInterval`].
    pub durability: Durability,
    /// The state each module starts from, by module name (empty: every
    /// module starts empty). Set by [`restore_from`](Self::restore_from).
    pub restore: std::collections::BTreeMap<String, sandbox_isolate::SavedState>,
}

impl SandboxSpec {
    /// A spec for source you do not control: process isolation (a jailed
    /// worker), the default profile (`medium`: built and run only inside a
    /// jail) and default limits. Safe for someone else's crate.
    pub fn new(source: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            isolation: IsolationKind::PROCESS,
            profile: Profile::default(),
            limits: ResourceLimits::default(),
            durability: Durability::default(),
            restore: std::collections::BTreeMap::new(),
        }
    }

    /// A spec for source you trust (your own): in-process isolation (a call
    /// costs a function call) and the `trusted` profile, so it is built and
    /// run with the host's rights, outside any jail. Trust is declared
    /// here, never inferred.
    pub fn trusted(source: impl Into<PathBuf>) -> Self {
        Self {
            isolation: IsolationKind::IN_PROCESS,
            profile: Profile::Trusted,
            ..Self::new(source)
        }
    }

    /// Sets the isolation backend.
    pub fn isolation(mut self, isolation: IsolationKind) -> Self {
        self.isolation = isolation;
        self
    }

    /// Sets the security profile.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Sets the resource limits.
    pub fn limits(mut self, limits: ResourceLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets when module state is saved (process isolation).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Starts the modules from saved states (module name → state with the
    /// schema it was written under), e.g. the last checkpoint a
    /// [`CheckpointStore`](crate::CheckpointStore) kept before the host
    /// died. Each state goes through the new instance's `restore_state`
    /// like on a swap: a newer version migrates it, one whose schema is
    /// older refuses it and the create fails (nothing is left behind).
    /// States of modules the source no longer has are dropped (logged);
    /// modules without a state start empty.
    pub fn restore_from(
        mut self,
        states: impl IntoIterator<Item = (String, sandbox_isolate::SavedState)>,
    ) -> Self {
        self.restore = states.into_iter().collect();
        self
    }
}

/// When a process sandbox's module state is saved to the host — what a
/// restarted worker starts from after a crash, and so what a crash loses.
///
/// State is always saved after every committed swap (reload, rollback),
/// and recycling or restarting a worker by hand carries the live state
/// over with nothing lost, whatever the durability. The durability decides
/// only what a *crash* of the worker (a kill, a limit, an `abort`) loses:
///
/// | durability | saved | a crash loses |
/// |---|---|---|
/// | [`ConfigInterval`](Self::ConfigInterval) (default), [`Interval`](Self::Interval) | every interval | the effect of the calls answered since the last save (up to one interval of them) |
/// | [`EveryCall`](Self::EveryCall) | after each call, before its reply | no answered call; a call that failed because the worker died may or may not have taken effect |
///
/// `EveryCall` costs a save per call: the worker sends the state of every
/// module to the host before the reply goes out (concurrent calls share
/// saves). Cheap for a few bytes of state, expensive for megabytes.
///
/// In-process sandboxes keep no saved state (a crash there is the host's),
/// so this setting does nothing for them — unless the host keeps
/// checkpoints durably ([`Config::checkpoint_store`](crate::Config::checkpoint_store)):
/// then it decides what a kill of the host loses, for every sandbox.
///
/// Parsed from `call`, `every-call`, `interval` or `interval=MS`:
///
/// ```
/// use std::time::Duration;
/// use sandbox_core::{Durability, SandboxSpec};
///
/// assert_eq!("call".parse(), Ok(Durability::EveryCall));
/// assert_eq!("interval".parse(), Ok(Durability::ConfigInterval));
/// assert_eq!(
///     "interval=500".parse(),
///     Ok(Durability::Interval(Duration::from_millis(500)))
/// );
/// assert!("interval=0".parse::<Durability>().is_err());
/// let spec = SandboxSpec::new("plugins/examples/counter").durability(Durability::EveryCall);
/// # let _ = spec;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Save every [`Config::checkpoint_interval`](crate::Config::checkpoint_interval)
    /// (2 s by default; `None` there saves only after swaps).
    #[default]
    ConfigInterval,
    /// Save at this interval.
    Interval(Duration),
    /// Save after every call, before its reply is handed back: an answered
    /// call is never lost to a crash.
    EveryCall,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfigInterval => f.write_str("interval"),
            Self::Interval(d) => write!(f, "interval={}", d.as_millis()),
            Self::EveryCall => f.write_str("call"),
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || {
            format!("unknown durability `{s}`; use `call` (save after every call) or `interval` / `interval=MS` (save every MS milliseconds)")
        };
        match s {
            "call" | "every-call" => Ok(Self::EveryCall),
            "interval" => Ok(Self::ConfigInterval),
            other => {
                let ms = other.strip_prefix("interval=").ok_or_else(bad)?;
                match ms.parse::<u64>() {
                    Ok(0) => Err(format!(
                        "durability `{s}`: the interval must be at least 1 ms; use `call` to save after every call"
                    )),
                    Ok(ms) => Ok(Self::Interval(Duration::from_millis(ms))),
                    Err(_) => Err(bad()),
                }
            }
        }
    }
}

/// One module of a sandbox, as reported by `info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleStatus {
    /// Module name.
    pub name: String,
    /// The version number running now.
    pub version: u32,
    /// The crate version of that build.
    pub module_version: String,
    /// Its state schema.
    pub schema: u32,
    /// Declared dependencies.
    pub dependencies: Vec<String>,
    /// Deterministic module (results cached).
    pub pure: bool,
    /// Versions retained for rollback.
    pub versions: Vec<u32>,
}

/// A snapshot of a sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxInfo {
    /// Its id.
    pub id: SandboxId,
    /// Its status.
    pub status: Status,
    /// Its source folder.
    pub source: PathBuf,
    /// Where its modules run.
    pub isolation: IsolationKind,
    /// The process hosting its modules.
    pub pid: u32,
    /// Process isolation: the jail layers applied to this sandbox's worker
    /// (namespaces, own uid, landlock, seccomp, `no_new_privs`, network);
    /// they differ by profile (`trusted` runs with what the kernel has).
    /// `None` in-process, where nothing is enforced.
    pub jail: Option<sandbox_isolate::jail::AppliedLayers>,
    /// Its security profile.
    pub profile: Profile,
    /// Whether its source is built inside the jail (every profile but
    /// `trusted`): its build scripts, proc macros and cargo configuration
    /// ran with no network, no host secrets and writes only to its own
    /// target dir.
    pub build_jailed: bool,
    /// Its modules, sorted by name.
    pub modules: Vec<ModuleStatus>,
    /// Creation time (Unix milliseconds in JSON).
    #[serde(serialize_with = "unix_millis")]
    pub created_at: SystemTime,
    /// Last change (Unix milliseconds in JSON).
    #[serde(serialize_with = "unix_millis")]
    pub updated_at: SystemTime,
    /// How many times it was restarted.
    pub restart_count: u32,
    /// What the process hosting its modules uses now (memory, CPU, threads,
    /// children, open files). In-process that is the host process, shared by
    /// every in-process sandbox.
    pub usage: Option<sandbox_monitor::Usage>,
}

/// One retained version of a module, as listed by `versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// Version number.
    pub number: u32,
    /// sha256 of the artifact.
    pub checksum: String,
    /// Hash of the source tree it was built from.
    pub source_hash: String,
    /// The crate version of that build.
    pub module_version: String,
    /// State schema.
    pub schema: u32,
    /// Declared dependencies.
    pub dependencies: Vec<String>,
    /// When it was loaded (Unix milliseconds in JSON).
    #[serde(serialize_with = "unix_millis")]
    pub loaded_at: SystemTime,
    /// It is the version running now.
    pub current: bool,
}

/// One module switched by a swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Swapped {
    /// The module.
    pub module: String,
    /// The version before (`None` for a new module).
    pub from: Option<u32>,
    /// The version now.
    pub to: u32,
}

/// What `hot_reload` did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Modules swapped, in the order they were swapped (dependencies first).
    pub swapped: Vec<Swapped>,
    /// Modules whose artifact changed (the rest of `swapped` are their dependents).
    pub changed: Vec<String>,
    /// The build was answered from the cache.
    pub cached: bool,
    /// Time spent building, in milliseconds.
    pub compile_millis: u64,
    /// Time spent swapping (save, load, restore, commit), in milliseconds.
    pub swap_millis: u64,
}

impl ReloadReport {
    /// Nothing was swapped.
    pub fn is_unchanged(&self) -> bool {
        self.swapped.is_empty()
    }
}

/// One call of a batch.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// The module to call.
    pub module: String,
    /// The request bytes.
    pub input: Vec<u8>,
}

pub(crate) fn unix_millis<S: Serializer>(
    t: &SystemTime,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(
        t.duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64,
    )
}
