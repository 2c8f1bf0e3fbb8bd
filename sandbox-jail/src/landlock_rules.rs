//! Landlock rules — the two rule sets the workspace uses, a build's
//! ([`FsRules::for_build`]) and a worker's ([`apply_worker_layers`]) — and
//! the layers a worker applies to itself.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use serde::{Deserialize, Serialize};

use super::probe::{landlock_abi, seccomp_available};
use super::seccomp::{install_all_threads, SeccompProfile};
use super::{JailError, Layers};
use crate::spawn::ChildLimits;

/// Paths every jailed process may read (and execute): what the dynamic
/// loader needs to `dlopen` a plugin and its system libraries, and a few
/// harmless device files. Missing ones are skipped.
pub const SYSTEM_READ_ONLY: &[&str] = &[
    "/lib",
    "/lib64",
    "/lib32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];

/// Devices every jailed process may write.
const SYSTEM_READ_WRITE: &[&str] = &["/dev/null"];

/// The ABI whose access rights the rules are written for (newer kernels
/// keep them; older ones get the subset they know, and the report says so).
const TARGET_ABI: ABI = ABI::V6;

/// Landlock file-system rules: everything not listed (or below a listed
/// folder) is out of reach. [`SYSTEM_READ_ONLY`] is always added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsRules {
    /// Folders and files that may be read and executed.
    pub read_only: Vec<PathBuf>,
    /// Folders and files that may be read, written, created and removed.
    pub read_write: Vec<PathBuf>,
}

/// What the jail layers a worker applied to itself amount to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LayerReport {
    /// How landlock was enforced: `"full"`, `"partial"`, `"none"`.
    pub landlock: String,
    /// The landlock ABI of the kernel.
    pub landlock_abi: u32,
    /// Whether signals and abstract unix sockets are scoped (ABI 6).
    pub landlock_scopes: bool,
    /// Whether the seccomp filter is installed.
    pub seccomp: bool,
}

fn landlock_err(e: impl std::fmt::Display) -> JailError {
    JailError::Landlock(e.to_string())
}

fn existing(paths: &[&str]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}

/// Starts a ruleset handling every file-system right (and TCP, unless
/// `network`; and the ABI 6 scopes when the kernel has them), with the
/// system paths added.
fn base_ruleset(network: bool) -> Result<RulesetCreated, JailError> {
    let abi = landlock_abi();
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(landlock_err)?;
    if !network && abi >= 4 {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(TARGET_ABI))
            .map_err(landlock_err)?;
    }
    if abi >= 6 {
        ruleset = ruleset
            .scope(Scope::from_all(TARGET_ABI))
            .map_err(landlock_err)?;
    }
    ruleset
        .create()
        .map_err(landlock_err)?
        .add_rules(path_beneath_rules(
            existing(SYSTEM_READ_ONLY),
            AccessFs::from_read(TARGET_ABI),
        ))
        .map_err(landlock_err)?
        .add_rules(path_beneath_rules(
            existing(SYSTEM_READ_WRITE),
            AccessFs::from_all(TARGET_ABI),
        ))
        .map_err(landlock_err)
}

impl FsRules {
    /// Builds the ruleset and returns its fd, to be enforced in a child
    /// with `landlock_restrict_self` just before `exec`.
    pub(crate) fn ruleset_fd(&self, network: bool) -> Result<Option<OwnedFd>, JailError> {
        let ruleset = base_ruleset(network)?
            .add_rules(path_beneath_rules(
                &self.read_only,
                AccessFs::from_read(TARGET_ABI),
            ))
            .map_err(landlock_err)?
            .add_rules(path_beneath_rules(
                &self.read_write,
                AccessFs::from_all(TARGET_ABI),
            ))
            .map_err(landlock_err)?;
        Ok(ruleset.into())
    }
}

/// What a build of untrusted source (cargo, its build scripts and proc
/// macros, rustc) may reach; see [`FsRules::for_build`].
#[derive(Debug, Clone, Copy)]
pub struct BuildTree<'a> {
    /// The source tree (canonical).
    pub source: &'a Path,
    /// Further folders of the tree's crate graph outside `source` (its
    /// path dependencies), read-only.
    pub path_dependencies: &'a [PathBuf],
    /// Crates outside every tree that trees may depend on by path (the
    /// plugin API crate), read-only, with the manifests of the workspaces
    /// above them.
    pub shared_crates: &'a [PathBuf],
    /// The tree's own target directory: the only folder the build writes
    /// (its temp files included: point `TMPDIR` inside it).
    pub target_dir: &'a Path,
}

impl FsRules {
    /// The rules of a build of untrusted source: the system libraries and
    /// the toolchain (`CARGO_HOME`, `RUSTUP_HOME`) read-only, the tree and
    /// what it depends on by path read-only, writes only to its own target
    /// dir — never a shared target dir, a seed, another tree's or an
    /// artifact cache. Host secrets such as `/etc/shadow` stay unreadable.
    /// Paths that do not exist are left out.
    pub fn for_build(tree: &BuildTree<'_>) -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        let from_env = |key: &str, fallback: PathBuf| {
            std::env::var_os(key).map(PathBuf::from).unwrap_or(fallback)
        };
        let mut read_only: Vec<PathBuf> = vec![
            from_env("CARGO_HOME", home.join(".cargo")),
            from_env("RUSTUP_HOME", home.join(".rustup")),
            "/usr".into(),
            "/bin".into(),
            "/lib".into(),
            "/lib64".into(),
            "/proc".into(),
            "/dev/null".into(),
            "/dev/urandom".into(),
            "/etc/ld.so.cache".into(),
            "/etc/passwd".into(),
            "/etc/group".into(),
            "/etc/nsswitch.conf".into(),
            "/etc/localtime".into(),
            tree.source.to_owned(),
        ];
        read_only.extend(tree.path_dependencies.iter().cloned());
        read_only.extend(tree.shared_crates.iter().cloned());
        // A shared crate may inherit fields from its workspace's manifest.
        read_only.extend(
            tree.shared_crates
                .iter()
                .flat_map(|dir| dir.ancestors().skip(1))
                .map(|dir| dir.join("Cargo.toml")),
        );
        // Cargo reads `.cargo/config.toml` of every folder above the source.
        read_only.extend(tree.source.ancestors().map(|dir| dir.join(".cargo")));
        read_only.retain(|p| p.exists());
        Self {
            read_only,
            read_write: vec![tree.target_dir.to_owned()],
        }
    }
}

/// Layers a worker applies to itself on its first message, once it knows
/// which sandbox it serves.
#[derive(Debug)]
pub struct WorkerLayers<'a> {
    /// Limits to lower the process's rlimits to.
    pub limits: &'a ChildLimits,
    /// The sandbox's writable folder (opened by the host).
    pub work_dir: BorrowedFd<'a>,
    /// Folders the worker may read (opened by the host).
    pub read_only: Vec<BorrowedFd<'a>>,
    /// Whether the sandbox may use the network.
    pub network: bool,
    /// Layers that must be enforced; the call fails otherwise.
    pub require: Layers,
}

/// The parts of a worker's layers that do not depend on its sandbox: the
/// landlock ruleset with the system paths, and the compiled seccomp filter.
/// A worker builds them while it waits for its configuration (a pooled one
/// may wait long), so applying its jail then is quick.
#[derive(Debug)]
pub struct PreparedLayers {
    network: bool,
    ruleset: Option<RulesetCreated>,
    seccomp: Option<super::seccomp::BpfProgram>,
}

/// Builds [`PreparedLayers`] for a worker that will (`network`) or will
/// not use the network. Enforces nothing.
pub fn prepare_worker_layers(network: bool) -> Result<PreparedLayers, JailError> {
    let ruleset = if landlock_abi() >= 1 {
        Some(base_ruleset(network)?)
    } else {
        None
    };
    let seccomp = if seccomp_available() {
        let own_pid = Some(rustix::process::getpid().as_raw_nonzero().get());
        Some(SeccompProfile::Worker { network, own_pid }.compile()?)
    } else {
        None
    };
    Ok(PreparedLayers {
        network,
        ruleset,
        seccomp,
    })
}

/// Applies a worker's own layers to the calling process: lowers its rlimits,
/// restricts the calling thread (and every thread it starts later) with
/// landlock, sets `no_new_privs`, and installs the worker seccomp filter on
/// every thread. `prepared` is used when it was built for the same network
/// choice (else the layers are built here). Call it before any plugin code
/// runs and while the process has a single thread: landlock ABI < 8
/// restricts the calling thread only.
pub fn apply_worker_layers(
    layers: &WorkerLayers<'_>,
    prepared: Option<PreparedLayers>,
) -> Result<LayerReport, JailError> {
    crate::spawn::set_rlimits(layers.limits).map_err(|source| JailError::Os {
        action: "lowering the rlimits",
        source,
    })?;
    let prepared = match prepared {
        Some(p) if p.network == layers.network => p,
        _ => prepare_worker_layers(layers.network)?,
    };
    // Not `probe()`: it forks to try namespaces, which a worker need not know.
    let abi = landlock_abi();
    let mut report = LayerReport {
        landlock_abi: abi,
        ..LayerReport::default()
    };

    if let Some(ruleset) = prepared.ruleset {
        let mut ruleset = ruleset
            .add_rule(PathBeneath::new(
                layers.work_dir,
                AccessFs::from_all(TARGET_ABI),
            ))
            .map_err(landlock_err)?;
        for fd in &layers.read_only {
            ruleset = ruleset
                .add_rule(PathBeneath::new(*fd, AccessFs::from_read(TARGET_ABI)))
                .map_err(landlock_err)?;
        }
        let status = ruleset.restrict_self().map_err(landlock_err)?;
        report.landlock = match status.ruleset {
            RulesetStatus::FullyEnforced => "full",
            RulesetStatus::PartiallyEnforced => "partial",
            RulesetStatus::NotEnforced => "none",
        }
        .to_owned();
        report.landlock_scopes = abi >= 6 && status.ruleset != RulesetStatus::NotEnforced;
    } else {
        report.landlock = "none".to_owned();
    }
    if layers.require.landlock && report.landlock == "none" {
        return Err(JailError::Missing {
            missing: vec!["landlock"],
        });
    }
    if layers.require.landlock_scopes && !report.landlock_scopes {
        return Err(JailError::Missing {
            missing: vec!["landlock ABI 6 (signal and abstract-socket scoping)"],
        });
    }

    rustix::thread::set_no_new_privs(true).map_err(|e| JailError::Os {
        action: "setting no_new_privs",
        source: e.into(),
    })?;
    if let Some(program) = prepared.seccomp {
        install_all_threads(&program)?;
        report.seccomp = true;
    } else if layers.require.seccomp {
        return Err(JailError::Missing {
            missing: vec!["seccomp-bpf"],
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_writes_only_its_own_target_dir() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("tree");
        let dependency = dir.path().join("dep");
        let shared = dir.path().join("ws/api");
        let target = dir.path().join("state/trees/1/target");
        for d in [&source, &dependency, &shared, &target] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(dir.path().join("ws/Cargo.toml"), "[workspace]\n").unwrap();
        let rules = FsRules::for_build(&BuildTree {
            source: &source,
            path_dependencies: std::slice::from_ref(&dependency),
            shared_crates: std::slice::from_ref(&shared),
            target_dir: &target,
        });
        assert_eq!(rules.read_write, std::slice::from_ref(&target));
        for read in [
            &source,
            &dependency,
            &shared,
            &dir.path().join("ws/Cargo.toml"),
        ] {
            assert!(rules.read_only.contains(read), "{read:?} in {rules:?}");
        }
        // Nothing above the tree or the target dir is reachable whole.
        for parent in [dir.path(), &dir.path().join("state"), Path::new("/")] {
            assert!(
                !rules.read_only.iter().any(|p| p == parent),
                "{parent:?} in {rules:?}"
            );
        }
        assert!(!rules.read_only.iter().any(|p| p.starts_with(&target)));
        assert!(rules.read_only.iter().all(|p| p.exists()));
    }
}
