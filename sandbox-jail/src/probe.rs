//! Detecting which jail layers this kernel offers.

#![allow(unsafe_code)] // A raw fork to try `unshare` in a throw-away child; seccomp and landlock queries.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The jail layers this kernel (and this host's privileges) offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailSupport {
    /// New user namespaces can be created.
    pub user_ns: bool,
    /// New pid namespaces can be created.
    pub pid_ns: bool,
    /// New mount namespaces can be created.
    pub mount_ns: bool,
    /// New network namespaces can be created.
    pub net_ns: bool,
    /// New ipc namespaces can be created.
    pub ipc_ns: bool,
    /// New uts namespaces can be created.
    pub uts_ns: bool,
    /// seccomp-bpf filters with `SECCOMP_RET_ERRNO` are available.
    pub seccomp: bool,
    /// The landlock ABI version (0: no landlock).
    pub landlock_abi: u32,
    /// The host runs as root, so jailed children can get uids of their own.
    pub root: bool,
    /// The host's uid.
    pub uid: u32,
    /// Controllers of a cgroup v2 hierarchy mounted at `/sys/fs/cgroup`
    /// (reported only: the jail never creates or changes cgroups).
    pub cgroup_v2_controllers: Vec<String>,
}

/// What the kernel offers, detected once per process (the first call forks
/// a short-lived child to try each namespace). Logs a warning naming the
/// layers that are missing.
pub fn probe() -> &'static JailSupport {
    static SUPPORT: OnceLock<JailSupport> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let support = detect();
        let missing = super::Layers::ALL.missing(&support, false);
        if missing.is_empty() {
            tracing::debug!(%support, "jail layers detected");
        } else {
            tracing::warn!(%support, missing = %missing.join(", "), "this kernel lacks some jail layers; sandboxes that require them will not start");
        }
        support
    })
}

fn detect() -> JailSupport {
    let uid = rustix::process::getuid().as_raw();
    let user = try_unshare(libc::CLONE_NEWUSER);
    // Without privileges the other namespaces need a user namespace too.
    let base = if user { libc::CLONE_NEWUSER } else { 0 };
    let all = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    let (pid, mount, net, ipc, uts) = if try_unshare(base | all) {
        (true, true, true, true, true)
    } else {
        (
            try_unshare(base | libc::CLONE_NEWPID),
            try_unshare(base | libc::CLONE_NEWNS),
            try_unshare(base | libc::CLONE_NEWNET),
            try_unshare(base | libc::CLONE_NEWIPC),
            try_unshare(base | libc::CLONE_NEWUTS),
        )
    };
    JailSupport {
        user_ns: user,
        pid_ns: pid,
        mount_ns: mount,
        net_ns: net,
        ipc_ns: ipc,
        uts_ns: uts,
        seccomp: seccomp_available(),
        landlock_abi: landlock_abi(),
        root: uid == 0,
        uid,
        cgroup_v2_controllers: std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    }
}

/// Forks a child that tries `unshare(flags)` and reports whether it worked.
fn try_unshare(flags: libc::c_int) -> bool {
    // SAFETY: the child only makes the `unshare` and `exit_group` system
    // calls, which are async-signal-safe, and never returns into Rust code.
    let Ok(pid) = (unsafe { super::child::raw_fork() }) else {
        return false;
    };
    if pid == 0 {
        // SAFETY: see above; in the child.
        unsafe {
            let rc = libc::syscall(libc::SYS_unshare, flags as libc::c_ulong);
            libc::_exit(if rc == 0 { 0 } else { 1 });
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for the child forked above; `status` is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc >= 0 {
            break;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Whether seccomp-bpf filters are available (one system call, no fork).
pub(crate) fn seccomp_available() -> bool {
    let action: u32 = libc::SECCOMP_RET_ERRNO;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL only reads the u32 the pointer names.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL as libc::c_ulong,
            0usize,
            &action as *const u32,
        )
    };
    rc == 0
}

/// The landlock ABI version, 0 without landlock (one system call, no fork).
pub(crate) fn landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_ulong = 1;
    // SAFETY: with a null attribute pointer and size 0 the call only returns
    // the ABI version.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if rc > 0 {
        rc as u32
    } else {
        0
    }
}

/// The jail layers applied to one worker — what `info` reports — as
/// opposed to what the kernel offers ([`JailSupport`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedLayers {
    /// The namespaces the worker runs in: `user`, `pid`, `mount`, `ipc`,
    /// `uts` and, unless it may use the network, `net`.
    pub namespaces: Vec<String>,
    /// Whether it runs under a uid of its own (the host is root), so
    /// `RLIMIT_NPROC` binds and it owns nothing of the host's.
    pub own_uid: bool,
    /// How landlock was enforced: `"full"`, `"partial"` or `"none"`.
    pub landlock: String,
    /// Whether signals and abstract unix sockets are scoped (landlock ABI 6).
    pub landlock_scopes: bool,
    /// Whether the seccomp filter is installed.
    pub seccomp: bool,
    /// `no_new_privs` is set on every worker.
    pub no_new_privs: bool,
    /// Whether it may use the network.
    pub network: bool,
}

impl AppliedLayers {
    /// The layers of a worker started with `support` from the kernel,
    /// `network` or not, with a uid of its own or not, that reported
    /// `report` after jailing itself.
    pub fn of_worker(
        support: &JailSupport,
        network: bool,
        own_uid: bool,
        report: &super::LayerReport,
    ) -> Self {
        let namespaces = [
            ("user", support.user_ns),
            ("pid", support.pid_ns),
            ("mount", support.mount_ns),
            ("ipc", support.ipc_ns),
            ("uts", support.uts_ns),
            ("net", support.net_ns && !network),
        ]
        .into_iter()
        .filter(|(_, applied)| *applied)
        .map(|(name, _)| name.to_owned())
        .collect();
        Self {
            namespaces,
            own_uid: own_uid && support.root,
            landlock: report.landlock.clone(),
            landlock_scopes: report.landlock_scopes,
            seccomp: report.seccomp,
            no_new_privs: true,
            network,
        }
    }
}
