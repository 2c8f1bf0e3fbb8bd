//! The part of the jail that runs in the forked child, before `exec`.
//!
//! Everything here is computed in the host first ([`Prepared::new`]) so the
//! child only makes system calls: it is a fork of a multi-threaded process
//! and may not allocate or take locks.

#![allow(unsafe_code)] // Raw system calls between fork and exec.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::seccomp::BpfProgram;
use super::{probe, JailConfig, JailError, UidPolicy, INNER_ID};
use crate::spawn::ChildLimits;

/// The version of the [`Plan`] format. A plan of another version is
/// refused (with [`PlanError::Version`]), never read as something else.
pub(crate) const PLAN_VERSION: u32 = 1;

/// The namespaces a jail unshares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Namespaces {
    pub(crate) user: bool,
    pub(crate) pid: bool,
    pub(crate) mount: bool,
    pub(crate) net: bool,
    pub(crate) ipc: bool,
    pub(crate) uts: bool,
}

impl Namespaces {
    /// The `unshare(2)` flags.
    fn flags(&self) -> libc::c_int {
        [
            (self.user, libc::CLONE_NEWUSER),
            (self.mount, libc::CLONE_NEWNS),
            (self.ipc, libc::CLONE_NEWIPC),
            (self.uts, libc::CLONE_NEWUTS),
            (self.net, libc::CLONE_NEWNET),
            (self.pid, libc::CLONE_NEWPID),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .fold(0, |flags, (_, flag)| flags | flag)
    }
}

/// The part of a jail every jailed process enters the same way: uid,
/// rlimits, namespaces, death with the host, the pid namespace's reaper and
/// init. Plain values, so it can also travel to a program that enters the
/// jail itself: as versioned JSON ([`Plan::to_env`]), read back strictly
/// ([`Plan::from_env`]: unknown fields, another version or inconsistent
/// values are refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Plan {
    version: u32,
    namespaces: Namespaces,
    switch_to: Option<u32>,
    outer_uid: u32,
    outer_gid: u32,
    limits: ChildLimits,
    host_pid: libc::pid_t,
    /// Derived from `namespaces` (not sent).
    #[serde(skip)]
    unshare: libc::c_int,
    /// Derived from the outer ids (not sent).
    #[serde(skip)]
    uid_map: Vec<u8>,
    #[serde(skip)]
    gid_map: Vec<u8>,
}

/// Why a program could not read the jail plan its host gave it (see
/// [`enter_planned_jail`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The plan is not JSON of the plan's shape (a missing, unknown or
    /// mistyped field).
    #[error("SANDBOX_JAIL_PLAN is not a jail plan ({reason}); start this program through `sandbox_jail::spawn::spawn`, which writes it")]
    Malformed {
        /// What the parser found wrong.
        reason: String,
    },
    /// The plan is of another version of the format.
    #[error("SANDBOX_JAIL_PLAN is a jail plan of version {found}, this program reads version {expected}; run a host and worker built from the same sandbox-jail")]
    Version {
        /// The plan's version.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The plan's values contradict each other.
    #[error("SANDBOX_JAIL_PLAN is inconsistent: {reason}; start this program through `sandbox_jail::spawn::spawn`, which writes it")]
    Invalid {
        /// Which values.
        reason: &'static str,
    },
}

/// A jail ready to be applied in a forked child.
#[derive(Debug)]
pub(crate) struct Prepared {
    plan: Plan,
    landlock: Option<OwnedFd>,
    seccomp: Option<BpfProgram>,
    pass_fd: Option<(Arc<OwnedFd>, RawFd)>,
}

fn os(action: &'static str) -> impl FnOnce(JailError) -> JailError {
    move |e| match e {
        JailError::Os { source, .. } => JailError::Os { action, source },
        other => other,
    }
}

impl Prepared {
    /// Checks `config` against what the kernel offers and prepares every
    /// piece the child needs.
    pub(crate) fn new(
        config: &JailConfig,
        limits: &ChildLimits,
        pass_fd: Option<(Arc<OwnedFd>, RawFd)>,
    ) -> Result<Self, JailError> {
        let support = probe();
        let missing = config.require.missing(support, config.network);
        if !missing.is_empty() {
            return Err(JailError::Missing { missing });
        }
        let namespaces = Namespaces {
            user: support.user_ns,
            pid: support.pid_ns,
            mount: support.mount_ns,
            net: support.net_ns && !config.network,
            ipc: support.ipc_ns,
            uts: support.uts_ns,
        };
        let switch_to = match config.uid {
            UidPolicy::Fixed(uid) if support.root => Some(uid),
            _ => None,
        };
        let outer_uid = switch_to.unwrap_or_else(|| rustix::process::getuid().as_raw());
        let outer_gid = switch_to.unwrap_or_else(|| rustix::process::getgid().as_raw());
        let landlock = match &config.landlock {
            Some(rules) if support.landlock_abi >= 1 => {
                rules.ruleset_fd(config.network).map_err(os("landlock"))?
            }
            _ => None,
        };
        let seccomp = match &config.seccomp {
            Some(profile) if support.seccomp => Some(profile.compile()?),
            _ => None,
        };
        Ok(Self {
            plan: Plan::new(
                namespaces,
                switch_to,
                (outer_uid, outer_gid),
                limits.clone(),
                std::process::id() as libc::pid_t,
            ),
            landlock,
            seccomp,
            pass_fd,
        })
    }

    /// The plan, for a program that enters the jail itself; `None` when
    /// the jail has layers only a pre-`exec` step can apply (landlock or
    /// seccomp chosen by the host).
    pub(crate) fn plan_for_program(&self) -> Option<&Plan> {
        (self.landlock.is_none() && self.seccomp.is_none()).then_some(&self.plan)
    }

    /// Runs in the forked child: switches uid, sets rlimits, enters the
    /// namespaces, forks the pid-namespace init (this process stays behind
    /// as its reaper and never returns), places the passed fd, and applies
    /// landlock and seccomp. Only async-signal-safe system calls.
    pub(crate) fn run_in_child(&self) -> io::Result<()> {
        // SAFETY: every call below is a plain system call on values that live
        // in this (forked, single-threaded) process; nothing allocates.
        unsafe {
            self.plan.enter()?;

            if self.landlock.is_some() || self.seccomp.is_some() {
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long)?;
            }
            if let Some(ruleset) = &self.landlock {
                check(libc::syscall(
                    libc::SYS_landlock_restrict_self,
                    ruleset.as_raw_fd(),
                    0usize,
                ))?;
            }

            let mut first_unused = 3;
            if let Some((fd, target)) = &self.pass_fd {
                let src = fd.as_raw_fd();
                if src == *target {
                    check(libc::fcntl(src, libc::F_SETFD, 0) as libc::c_long)?;
                } else {
                    check(libc::dup2(src, *target) as libc::c_long)?;
                }
                first_unused = first_unused.max(*target + 1);
            }
            // Nothing else crosses exec: not a descriptor some library of
            // the host forgot to mark close-on-exec.
            check(libc::syscall(
                libc::SYS_close_range,
                first_unused as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ))?;

            if let Some(program) = &self.seccomp {
                check(super::seccomp::load(program, 0))?;
            }
        }
        Ok(())
    }
}

impl Plan {
    fn new(
        namespaces: Namespaces,
        switch_to: Option<u32>,
        (outer_uid, outer_gid): (u32, u32),
        limits: ChildLimits,
        host_pid: libc::pid_t,
    ) -> Self {
        Self {
            version: PLAN_VERSION,
            namespaces,
            switch_to,
            outer_uid,
            outer_gid,
            limits,
            host_pid,
            unshare: 0,
            uid_map: Vec::new(),
            gid_map: Vec::new(),
        }
        .derived()
    }

    /// Fills in what is derived from the sent fields: the `unshare` flags
    /// and the id maps (they are written between `fork` and `exec`, where
    /// nothing may allocate).
    fn derived(mut self) -> Self {
        self.unshare = self.namespaces.flags();
        self.uid_map = format!("{INNER_ID} {} 1\n", self.outer_uid).into_bytes();
        self.gid_map = format!("{INNER_ID} {} 1\n", self.outer_gid).into_bytes();
        self
    }

    /// The plan as one environment value: versioned JSON.
    pub(crate) fn to_env(&self) -> Result<String, JailError> {
        serde_json::to_string(self).map_err(|e| JailError::Os {
            action: "writing the jail plan",
            source: e.into(),
        })
    }

    /// Reads [`Plan::to_env`]'s form back, strictly: another version, a
    /// missing, unknown or mistyped field, or values that contradict each
    /// other are refused.
    pub(crate) fn from_env(text: &str) -> Result<Self, PlanError> {
        /// Only the version, read leniently first so that a plan of another
        /// version is named as such rather than as malformed.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let malformed = |e: serde_json::Error| PlanError::Malformed {
            reason: e.to_string(),
        };
        let Versioned { version } = serde_json::from_str(text).map_err(malformed)?;
        if version != PLAN_VERSION {
            return Err(PlanError::Version {
                found: version,
                expected: PLAN_VERSION,
            });
        }
        let plan: Plan = serde_json::from_str(text).map_err(malformed)?;
        if plan.host_pid <= 0 {
            return Err(PlanError::Invalid {
                reason: "the host pid is not a process id",
            });
        }
        if plan
            .switch_to
            .is_some_and(|id| plan.outer_uid != id || plan.outer_gid != id)
        {
            return Err(PlanError::Invalid {
                reason: "the uid to switch to is not the outer uid and gid",
            });
        }
        Ok(plan.derived())
    }

    /// Switches uid, sets rlimits, enters the namespaces, has the process die
    /// with the host, and forks the pid-namespace init: this process stays
    /// behind as its reaper and the init as the namespace's reaper, neither
    /// returns; the program (pid 2) returns `Ok`. Only async-signal-safe
    /// system calls (it runs between `fork` and `exec` of a multi-threaded
    /// host, or first thing in a program's `main`).
    ///
    /// # Safety
    /// The calling process must be single-threaded.
    pub(crate) unsafe fn enter(&self) -> io::Result<()> {
        // SAFETY: plain system calls on values of this single-threaded
        // process; nothing allocates.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) as libc::c_long,
            )?;

            if let Some(id) = self.switch_to {
                check(libc::syscall(
                    libc::SYS_setgroups,
                    0usize,
                    std::ptr::null::<libc::gid_t>(),
                ))?;
                check(libc::syscall(libc::SYS_setresgid, id, id, id))?;
                check(libc::syscall(libc::SYS_setresuid, id, id, id))?;
                // A uid change makes the process non-dumpable, which would
                // make its /proc/self/uid_map unwritable to itself.
                check(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) as libc::c_long)?;
            }
            crate::spawn::set_rlimits(&self.limits)?;
            if self.unshare != 0 {
                check(libc::syscall(
                    libc::SYS_unshare,
                    self.unshare as libc::c_ulong,
                ))?;
            }
            if self.namespaces.user {
                write_file(c"/proc/self/setgroups".as_ptr(), b"deny")?;
                write_file(c"/proc/self/gid_map".as_ptr(), &self.gid_map)?;
                write_file(c"/proc/self/uid_map".as_ptr(), &self.uid_map)?;
            }
            // Credential changes clear the parent-death signal: set it last.
            die_with_parent()?;
            if libc::getppid() != self.host_pid {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }

            if self.namespaces.pid {
                // This process stays behind as the host-side reaper; its
                // child is the namespace's init (pid 1), which forks the
                // program (pid 2). The program is not the init so that its
                // signals behave normally (an init ignores signals it has no
                // handler for, even its own SIGABRT or SIGXCPU).
                let mut status_pipe = [0 as libc::c_int; 2];
                check(libc::pipe2(status_pipe.as_mut_ptr(), libc::O_CLOEXEC) as libc::c_long)?;
                let [read_end, write_end] = status_pipe;
                let reaper = pidfd_of_self()?;
                let init = raw_fork()?;
                if init > 0 {
                    reap_and_mirror(init, read_end);
                }
                // The init: dies with the reaper.
                libc::close(read_end);
                die_with(reaper)?;
                let init_fd = pidfd_of_self()?;
                let program = raw_fork()?;
                if program > 0 {
                    init_loop(program, write_end);
                }
                // The program (pid 2): dies with the init (and the whole
                // namespace does when the init goes).
                libc::close(write_end);
                die_with(init_fd)?;
            }
        }
        Ok(())
    }
}

/// Enters the jail the host planned for this program (see
/// [`ChildSpec::jailed_by_program`](crate::spawn::ChildSpec::jailed_by_program)),
/// if it planned one: call it first thing in `main`, while the process is
/// single-threaded. Returns in the jailed program only (the reaper and the
/// init it leaves behind never return); closes every descriptor but stdio
/// and `keep`.
pub fn enter_planned_jail(keep: RawFd) -> io::Result<()> {
    let Some(text) = std::env::var_os(PLAN_ENV) else {
        return Ok(());
    };
    let plan = text
        .to_str()
        .ok_or(PlanError::Malformed {
            reason: "it is not UTF-8".to_owned(),
        })
        .and_then(Plan::from_env)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: the caller runs this first thing in `main`: one thread.
    unsafe {
        plan.enter()?;
        // Nothing else the host left open stays open.
        close_all_but(3, keep);
    }
    Ok(())
}

/// The environment variable carrying a [`Plan`] to a program that enters
/// its jail itself.
pub(crate) const PLAN_ENV: &str = "SANDBOX_JAIL_PLAN";

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes `data` to the file at `path` (a NUL-terminated string).
///
/// # Safety
/// `path` must point to a NUL-terminated string.
unsafe fn write_file(path: *const libc::c_char, data: &[u8]) -> io::Result<()> {
    // SAFETY: the caller passes a valid C string; `data` is a live slice.
    unsafe {
        let fd = libc::open(path, libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd as libc::c_long)?;
        let written = libc::write(fd, data.as_ptr().cast(), data.len());
        let result = if written == data.len() as isize {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
        libc::close(fd);
        result
    }
}

/// A raw fork: `clone(SIGCHLD)` without `CLONE_VM` and without a stack of
/// its own, so none of the C library's `fork` handlers run. Returns the
/// child's pid in the parent and 0 in the child.
///
/// # Safety
/// The child is a copy of a possibly multi-threaded process: until it
/// `exec`s or exits it may only make async-signal-safe system calls (no
/// allocation, no locks).
pub(super) unsafe fn raw_fork() -> io::Result<libc::pid_t> {
    // SAFETY: like fork(2), the child gets a copy of the address space; the
    // caller keeps the child to what is safe there.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    check(pid)?;
    Ok(pid as libc::pid_t)
}

/// A pidfd of the calling process (for its children's [`die_with`]).
fn pidfd_of_self() -> io::Result<RawFd> {
    // SAFETY: two system calls that take no pointers; async-signal-safe.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_pidfd_open,
            libc::syscall(libc::SYS_getpid),
            0usize,
        )
    };
    check(fd)?;
    Ok(fd as RawFd)
}

/// Has the kernel send `SIGKILL` to the calling process when its parent
/// dies (cleared by credential changes and by `exec` of a set-id program).
fn die_with_parent() -> io::Result<()> {
    // SAFETY: a system call on this process's own state that takes no
    // pointers; async-signal-safe.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    check(rc as libc::c_long)
}

/// Sets the parent-death signal, then exits if the parent (whose pidfd is
/// `parent`) already died; closes `parent`.
///
/// # Safety
/// Only in a forked child; `parent` must be a pidfd.
unsafe fn die_with(parent: RawFd) -> io::Result<()> {
    die_with_parent()?;
    // SAFETY: async-signal-safe system calls on this process's own state.
    unsafe {
        let mut poll = libc::pollfd {
            fd: parent,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut poll, 1, 0) != 0 {
            libc::_exit(1);
        }
        libc::close(parent);
    }
    Ok(())
}

/// Closes every descriptor from `from` on but `keep`.
///
/// # Safety
/// Only in a process about to live on system calls alone, or on
/// descriptors nothing else in it owns.
unsafe fn close_all_but(from: RawFd, keep: RawFd) {
    // SAFETY: closing descriptors of this process.
    unsafe {
        if keep > from {
            libc::syscall(
                libc::SYS_close_range,
                from as libc::c_uint,
                (keep - 1) as libc::c_uint,
                0 as libc::c_uint,
            );
        }
        libc::syscall(
            libc::SYS_close_range,
            (keep.max(from - 1) + 1) as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
    }
}

/// The namespace's init: reaps every process that ends up its child
/// (orphans of the namespace included) until the program exits, then passes
/// the program's wait status to the reaper and exits.
///
/// # Safety
/// Only in the forked init, with `program` its child.
unsafe fn init_loop(program: libc::pid_t, status_out: RawFd) -> ! {
    // SAFETY: async-signal-safe system calls on this process's own children.
    unsafe {
        close_all_but(0, status_out);
        loop {
            let mut status = 0;
            let rc = libc::wait4(-1, &mut status, libc::__WALL, std::ptr::null_mut());
            if rc == program {
                libc::write(
                    status_out,
                    (&status as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>(),
                );
                libc::_exit(0);
            }
            if rc < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
    }
}

/// The reaper: waits for the namespace's init and ends the way the program
/// did (the init passes the program's wait status through `status_in`; if
/// the init itself was killed, its own status counts), so the host sees the
/// program's exit code or signal.
///
/// # Safety
/// Only in the forked reaper, with `init` its child.
unsafe fn reap_and_mirror(init: libc::pid_t, status_in: RawFd) -> ! {
    // SAFETY: async-signal-safe system calls on this process's own child.
    unsafe {
        close_all_but(0, status_in);
        let mut status = 0;
        loop {
            let rc = libc::wait4(init, &mut status, libc::__WALL, std::ptr::null_mut());
            if rc == init {
                break;
            }
            if rc < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        let mut program_status: libc::c_int = 0;
        let size = std::mem::size_of::<libc::c_int>();
        if libc::read(
            status_in,
            (&mut program_status as *mut libc::c_int).cast(),
            size,
        ) == size as isize
        {
            status = program_status;
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::syscall(libc::SYS_kill, libc::syscall(libc::SYS_getpid), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Plan {
        Plan::new(
            Namespaces {
                user: true,
                pid: true,
                mount: true,
                net: true,
                ipc: true,
                uts: true,
            },
            Some(1_251_600),
            (1_251_600, 1_251_600),
            ChildLimits {
                address_space: Some(1 << 30),
                cpu_seconds: Some(60),
                file_size: Some(64 << 20),
                open_files: Some(256),
                processes: Some(64),
                core_size: Some(0),
            },
            4242,
        )
    }

    #[test]
    fn a_plan_survives_its_trip_through_the_environment() {
        let full = full();
        assert_eq!(
            full.unshare,
            libc::CLONE_NEWUSER
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
        );
        assert_eq!(full.uid_map, b"1000 1251600 1\n");
        let text = full.to_env().unwrap();
        assert_eq!(Plan::from_env(&text).unwrap(), full);
        let bare = Plan::new(
            Namespaces::default(),
            None,
            (0, 0),
            ChildLimits::default(),
            1,
        );
        assert_eq!(bare.unshare, 0);
        assert_eq!(Plan::from_env(&bare.to_env().unwrap()).unwrap(), bare);
    }

    #[test]
    fn a_corrupted_plan_is_refused_with_a_reason() {
        let text = full().to_env().unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut value = json.clone();
            edit(&mut value);
            value.to_string()
        };
        // Not a plan at all, or cut short.
        for garbage in ["", "1 2 3", "{}", &text[..text.len() / 2]] {
            let err = Plan::from_env(garbage).unwrap_err();
            assert!(
                matches!(err, PlanError::Malformed { .. }),
                "{garbage:?}: {err}"
            );
            assert!(err.to_string().contains("SANDBOX_JAIL_PLAN"), "{err}");
        }
        // A field of a wrong type, an unknown field (also inside the
        // limits: a misspelt limit must not be silently unset), a missing
        // field.
        for bad in [
            edited(&|v| v["namespaces"]["pid"] = 2.into()),
            edited(&|v| v["outer_uid"] = (-1).into()),
            edited(&|v| v["limits"]["adress_space"] = 1.into()),
            edited(&|v| v["unshare"] = 0.into()),
            edited(&|v| {
                v.as_object_mut().unwrap().remove("host_pid");
            }),
        ] {
            let err = Plan::from_env(&bad).unwrap_err();
            assert!(matches!(err, PlanError::Malformed { .. }), "{bad}: {err}");
        }
        // Another version of the format is named as such.
        let err = Plan::from_env(&edited(&|v| v["version"] = 2.into())).unwrap_err();
        assert!(
            matches!(
                err,
                PlanError::Version {
                    found: 2,
                    expected: 1
                }
            ),
            "{err}"
        );
        // Values that contradict each other.
        for bad in [
            edited(&|v| v["host_pid"] = 0.into()),
            edited(&|v| v["outer_gid"] = 7.into()),
        ] {
            let err = Plan::from_env(&bad).unwrap_err();
            assert!(matches!(err, PlanError::Invalid { .. }), "{bad}: {err}");
        }
    }
}
