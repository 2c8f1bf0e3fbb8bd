//! Security profiles and the permissions they grant.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Capability, CapabilityKind, Error, Finding, Result, ScanReport};

/// Package names a sandbox may depend on under every profile: the plugin API
/// crate and well-known crates that do no I/O of their own.
pub const DEFAULT_ALLOWED_DEPENDENCIES: &[&str] = &[
    "sandbox-plugin",
    "serde",
    "serde_derive",
    "serde_json",
    "thiserror",
    "anyhow",
    "itertools",
    "once_cell",
    "regex",
    "smallvec",
    "indexmap",
    "hex",
    "base64",
];

/// How much a sandbox's source is trusted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Untrusted: the scan refuses every [`Capability`] (dependencies on the
    /// allow-list excepted); built and run only inside the jail, without
    /// network.
    High,
    /// Untrusted, but its source may name the file system and the
    /// environment (the scan allows `std::fs`, `std::env` and their macros);
    /// built and run only inside the jail, without network, where files are
    /// limited to what the jail grants every worker (its own work folder).
    #[default]
    Medium,
    /// Trusted: the only profile whose source is built and run outside a
    /// jail (its build scripts, proc macros and plugin code run with the
    /// host's rights), and the only one in-process isolation accepts. Trust
    /// is declared, never inferred: choose it only for your own code.
    Trusted,
}

impl Profile {
    /// Every profile, strictest first.
    pub const ALL: [Profile; 3] = [Profile::High, Profile::Medium, Profile::Trusted];

    /// The lowercase name: `high`, `medium` or `trusted`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::High => "high",
            Profile::Medium => "medium",
            Profile::Trusted => "trusted",
        }
    }

    /// What this profile allows.
    pub fn permissions(&self) -> Permissions {
        let allowed_dependencies = DEFAULT_ALLOWED_DEPENDENCIES
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        match self {
            Profile::High => Permissions {
                allowed: BTreeSet::new(),
                allowed_dependencies,
                network: false,
                filesystem: FsAccess::None,
                trusts_build: false,
            },
            Profile::Medium => Permissions {
                allowed: [CapabilityKind::FileSystem, CapabilityKind::Environment].into(),
                allowed_dependencies,
                network: false,
                filesystem: FsAccess::Sandbox,
                trusts_build: false,
            },
            Profile::Trusted => Permissions {
                allowed: CapabilityKind::ALL.into(),
                allowed_dependencies,
                network: true,
                filesystem: FsAccess::Full,
                trusts_build: true,
            },
        }
    }

    /// Refuses `report` with [`Error::Denied`] listing every finding this
    /// profile does not allow; otherwise hands it back.
    pub fn enforce(self, report: ScanReport) -> Result<ScanReport> {
        let violations: Vec<Finding> = self
            .permissions()
            .violations(&report)
            .into_iter()
            .cloned()
            .collect();
        if violations.is_empty() {
            Ok(report)
        } else {
            tracing::info!(profile = %self, violations = violations.len(), "source refused");
            Err(Error::Denied {
                profile: self,
                findings: violations,
            })
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = Error;

    /// Parses `high`, `medium` or `trusted` (any case). The old name `low`
    /// is refused with a hint: trust must be spelled out.
    fn from_str(s: &str) -> Result<Self> {
        if s.trim().eq_ignore_ascii_case("low") {
            return Err(Error::RenamedProfile {
                old: "low",
                new: "trusted",
            });
        }
        Profile::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::UnknownProfile { name: s.to_owned() })
    }
}

/// File system access a profile declares for run time.
///
/// Informational today: no backend applies it separately. The process
/// backend's landlock rules are the same under `high` and `medium` (the
/// worker's own work folder read-write; the build cache and system
/// libraries read-only), and `trusted` source may run in-process, with the
/// host's rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsAccess {
    /// No file system access.
    None,
    /// Read-only access to the sandbox's own directory.
    ReadOnly,
    /// Read-write access to the sandbox's own directory.
    Sandbox,
    /// Whatever the host process may access.
    Full,
}

/// What a sandbox may do: the capabilities its source may use, and the run
/// time access its isolation backend grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Capability kinds the source may use.
    pub allowed: BTreeSet<CapabilityKind>,
    /// Package names the source may depend on even when
    /// [`CapabilityKind::Dependency`] is not allowed. Defaults to
    /// [`DEFAULT_ALLOWED_DEPENDENCIES`].
    pub allowed_dependencies: BTreeSet<String>,
    /// Whether the sandbox may open network connections.
    pub network: bool,
    /// File system access (informational, see [`FsAccess`]).
    pub filesystem: FsAccess,
    /// Whether the source may be compiled outside a jail (its build scripts
    /// and proc macros run with the host's rights).
    pub trusts_build: bool,
}

impl Permissions {
    /// Whether `capability` is allowed.
    pub fn permits(&self, capability: &Capability) -> bool {
        self.allowed.contains(&capability.kind())
            || matches!(capability, Capability::Dependency(name) if self.allowed_dependencies.contains(name))
    }

    /// The findings of `report` these permissions do not allow.
    pub fn violations<'a>(&self, report: &'a ScanReport) -> Vec<&'a Finding> {
        report
            .findings
            .iter()
            .filter(|f| !self.permits(&f.capability))
            .collect()
    }
}
