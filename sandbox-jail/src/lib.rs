//! Spawning and jailing child processes: the workspace's one way to start a
//! child ([`spawn`]), and the kernel layers that confine it.
//!
//! Who uses it: `sandbox-compiler` runs cargo through it (jailed for
//! untrusted source), `sandbox-isolate` starts and jails its worker
//! processes with it. It knows nothing of plugins, builds or sandboxes, so
//! it stands beside the component crates as their shared floor (see
//! ARCHITECTURE.md). Hosting sandboxes? You want `sandbox-core`.
//!
//! A jailed child — the worker process of a sandbox, or `cargo` building a
//! tree whose source is not trusted — is started by [`spawn`](crate::spawn::spawn)
//! from a [`ChildSpec`](crate::spawn::ChildSpec) carrying a [`JailConfig`].
//! The layers, in the order they are set up in the forked child:
//!
//! 1. **A non-root uid** ([`UidPolicy::Fixed`], from a [`UidSlot`]): when the
//!    host runs as root the child switches to a dedicated uid before anything
//!    else, so `RLIMIT_NPROC` binds (the kernel exempts uid 0) and the host's
//!    root-owned files are out of reach by plain permissions.
//! 2. **rlimits** from [`ChildLimits`](crate::spawn::ChildLimits), set before
//!    the namespaces so the user namespace records the same process cap.
//! 3. **Namespaces**: user (the child is uid/gid 1000 inside, mapped to the
//!    one outer id, with no capabilities after `exec`), pid, mount, ipc, uts
//!    and — unless [`JailConfig::network`] — net (a namespace with nothing
//!    but a down loopback).
//! 4. **A pid namespace with an init of its own**: `unshare(CLONE_NEWPID)`
//!    only moves the caller's children, so the forked child forks twice
//!    more: an init (pid 1), which reaps whatever ends up its child, and the
//!    program (pid 2) — not the init itself, because an init ignores every
//!    signal it has no handler for, its own `SIGABRT` and the kernel's
//!    `SIGXCPU` included. The process the host holds as its
//!    [`JailedChild`](crate::spawn::JailedChild) is a tiny reaper outside
//!    the namespace that exits the way the program did (same exit code, or
//!    killed by the same signal). When the program exits the init does, and the kernel
//!    kills every process left in the namespace — a grandchild that escaped
//!    with `setsid` included; the reaper and the init are killed with their
//!    parents (parent-death signals), so the host's death takes everything
//!    down too.
//! 5. **File descriptors**: the one fd passed on purpose (the worker's
//!    channel) is placed at its number; every other fd above stdio is
//!    marked close-on-exec.
//! 6. **`no_new_privs`**, **landlock** ([`FsRules`]) and **seccomp**
//!    ([`SeccompProfile`]), when the config asks for them at spawn. The
//!    worker process applies its own landlock and seccomp layers instead, on
//!    its first message (see [`apply_worker_layers`]), so a pre-started
//!    worker of the warm pool can be given any sandbox's folders.
//!
//! 7. **Plans for programs that jail themselves**: a worker started with
//!    [`ChildSpec::jailed_by_program`](crate::spawn::ChildSpec::jailed_by_program)
//!    gets the uid, rlimit and namespace part of its jail as versioned JSON
//!    in its environment and enters it with [`enter_planned_jail`]; a plan
//!    of another version, with an unknown or missing field, or with values
//!    that contradict each other is refused ([`PlanError`]).
//!
//! Every child is held as a [`JailedChild`](crate::spawn::JailedChild):
//! it knows how it must be killed (a jail init first, so nothing of it is
//! orphaned; any other child with its process group), is killed and reaped
//! when dropped, and runs to a deadline with capped output.
//!
//! The two landlock rule sets live here too: a build's
//! ([`FsRules::for_build`]: the toolchain and the tree read-only, its own
//! target dir the only folder it writes) and a worker's
//! ([`apply_worker_layers`]).
//!
//! What the kernel offers is detected once by [`probe`]; a layer named in
//! [`JailConfig::require`] that the kernel lacks makes the spawn fail with
//! [`JailError::Missing`] instead of running weaker. Layers that are not
//! required and missing are skipped with a warning. cgroups are detected
//! and reported, never created or changed.

mod child;
mod jailed;
mod landlock_rules;
mod probe;
mod seccomp;
pub mod spawn;
mod uid;

use std::fmt;
use std::path::PathBuf;

pub use child::{enter_planned_jail, PlanError};
pub(crate) use child::{Prepared, PLAN_ENV};
pub use landlock_rules::{
    apply_worker_layers, prepare_worker_layers, BuildTree, FsRules, LayerReport, PreparedLayers,
    WorkerLayers, SYSTEM_READ_ONLY,
};
pub use probe::{probe, AppliedLayers, JailSupport};
pub use seccomp::SeccompProfile;
pub use uid::{UidSlot, UID_SLOT_BASE, UID_SLOT_COUNT};

/// The uid and gid a jailed child has inside its user namespace.
pub const INNER_ID: u32 = 1000;

/// What went wrong while setting up a jail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JailError {
    /// A required layer is not available on this kernel.
    #[error("this kernel lacks jail layers the sandbox requires: {}; run on a kernel that has them or relax `JailConfig::require`", missing.join(", "))]
    Missing {
        /// The missing layers, by name.
        missing: Vec<&'static str>,
    },
    /// Building the seccomp filter failed.
    #[error("cannot build the seccomp filter: {0}; this is a bug in sandbox-isolate")]
    Seccomp(String),
    /// Building or applying the landlock ruleset failed.
    #[error("cannot set up landlock: {0}")]
    Landlock(String),
    /// A system call of the set-up failed.
    #[error("{action}: {source}")]
    Os {
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<JailError> for std::io::Error {
    fn from(e: JailError) -> Self {
        match e {
            JailError::Os { source, .. } => source,
            other => std::io::Error::new(std::io::ErrorKind::Unsupported, other),
        }
    }
}

/// Which user a jailed child runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UidPolicy {
    /// The host's own uid (mapped to [`INNER_ID`] inside). Under a root host
    /// `RLIMIT_NPROC` does not bind then.
    #[default]
    Keep,
    /// This outer uid and gid (usually a [`UidSlot`]'s); honoured when the
    /// host is root, [`UidPolicy::Keep`] otherwise.
    Fixed(u32),
}

/// The jail layers a config requires; each `true` one must be available or
/// the spawn fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layers {
    /// A user namespace.
    pub user_ns: bool,
    /// A pid namespace (and the init that goes with it).
    pub pid_ns: bool,
    /// A mount namespace.
    pub mount_ns: bool,
    /// A network namespace (only checked when the config denies the network).
    pub net_ns: bool,
    /// An ipc namespace.
    pub ipc_ns: bool,
    /// A uts namespace.
    pub uts_ns: bool,
    /// seccomp-bpf filters.
    pub seccomp: bool,
    /// landlock file-system rules (any ABI).
    pub landlock: bool,
    /// Landlock ABI 6 scoping of signals and abstract unix sockets.
    pub landlock_scopes: bool,
    /// A uid other than 0 outside the user namespace (so `RLIMIT_NPROC` binds).
    pub non_root_uid: bool,
}

impl Layers {
    /// Every layer.
    pub const ALL: Layers = Layers {
        user_ns: true,
        pid_ns: true,
        mount_ns: true,
        net_ns: true,
        ipc_ns: true,
        uts_ns: true,
        seccomp: true,
        landlock: true,
        landlock_scopes: true,
        non_root_uid: true,
    };

    /// No layer.
    pub const NONE: Layers = Layers {
        user_ns: false,
        pid_ns: false,
        mount_ns: false,
        net_ns: false,
        ipc_ns: false,
        uts_ns: false,
        seccomp: false,
        landlock: false,
        landlock_scopes: false,
        non_root_uid: false,
    };

    /// What a sandbox for untrusted code needs: every namespace, seccomp,
    /// landlock (any ABI) and a non-root uid. Landlock scopes (ABI 6) are
    /// used when present but not required.
    pub const UNTRUSTED: Layers = Layers {
        landlock_scopes: false,
        ..Layers::ALL
    };

    /// The names of the required layers `support` lacks (`network` tells
    /// whether the net namespace is in use).
    pub fn missing(&self, support: &JailSupport, network: bool) -> Vec<&'static str> {
        let mut missing = Vec::new();
        let mut check = |required: bool, present: bool, name: &'static str| {
            if required && !present {
                missing.push(name);
            }
        };
        check(self.user_ns, support.user_ns, "user namespace");
        check(self.pid_ns, support.pid_ns, "pid namespace");
        check(self.mount_ns, support.mount_ns, "mount namespace");
        check(self.net_ns && !network, support.net_ns, "network namespace");
        check(self.ipc_ns, support.ipc_ns, "ipc namespace");
        check(self.uts_ns, support.uts_ns, "uts namespace");
        check(self.seccomp, support.seccomp, "seccomp-bpf");
        check(self.landlock, support.landlock_abi >= 1, "landlock");
        check(
            self.landlock_scopes,
            support.landlock_abi >= 6,
            "landlock ABI 6 (signal and abstract-socket scoping)",
        );
        check(
            self.non_root_uid,
            support.root || support.uid != 0,
            "a non-root uid (run as root so each sandbox gets its own uid)",
        );
        missing
    }
}

impl Default for Layers {
    fn default() -> Self {
        Self::UNTRUSTED
    }
}

/// How to jail a child (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// Share the host's network (`true`) or get an empty network namespace
    /// and, under seccomp, no `socket()` (`false`).
    pub network: bool,
    /// The user the child runs as.
    pub uid: UidPolicy,
    /// Landlock rules applied before `exec` (`None`: the program applies its
    /// own, as the worker does).
    pub landlock: Option<FsRules>,
    /// The seccomp filter applied before `exec` (`None`: the program applies
    /// its own, as the worker does).
    pub seccomp: Option<SeccompProfile>,
    /// Layers that must be available; the spawn fails otherwise.
    pub require: Layers,
}

impl JailConfig {
    /// For running a build (cargo, build scripts, proc macros) of untrusted
    /// source: no network, process creation and `exec` allowed (cargo
    /// needs them), landlock limiting the file system to `rules` (usually
    /// [`FsRules::for_build`]).
    pub fn build(rules: FsRules) -> Self {
        Self {
            network: false,
            uid: UidPolicy::Keep,
            landlock: Some(rules),
            seccomp: Some(SeccompProfile::Build { network: false }),
            require: Layers {
                non_root_uid: false,
                ..Layers::UNTRUSTED
            },
        }
    }

    /// For a worker process that applies its own landlock and seccomp layers
    /// (see [`apply_worker_layers`]).
    pub fn worker(uid: UidPolicy, network: bool, require: Layers) -> Self {
        Self {
            network,
            uid,
            landlock: None,
            seccomp: None,
            require,
        }
    }

    /// Sets the layers that must be available.
    pub fn require(mut self, layers: Layers) -> Self {
        self.require = layers;
        self
    }
}

/// The total size in bytes of the files below `dir` (allocated blocks, not
/// following symbolic links); entries past `max_entries` are not counted.
/// Used to cap a sandbox's disk use, since `RLIMIT_FSIZE` caps each file
/// only.
pub fn disk_usage(dir: &std::path::Path, max_entries: usize) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            seen += 1;
            if seen > max_entries {
                return Ok(total);
            }
            let Ok(meta) = entry.metadata() else { continue };
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

impl fmt::Display for JailSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "user ns {}, pid ns {}, mount ns {}, net ns {}, ipc ns {}, uts ns {}, seccomp {}, landlock ABI {}, root {}, cgroup v2 controllers [{}]",
            yes(self.user_ns),
            yes(self.pid_ns),
            yes(self.mount_ns),
            yes(self.net_ns),
            yes(self.ipc_ns),
            yes(self.uts_ns),
            yes(self.seccomp),
            self.landlock_abi,
            yes(self.root),
            self.cgroup_v2_controllers.join(" "),
        )
    }
}
