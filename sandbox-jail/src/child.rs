//! The part of the jail that runs in the forked child, before `exec`.
//!
//! Everything here is computed in the host first ([`Prepared::new`]) so the
//! child only makes system calls: it is a fork of a multi-threaded process
//! and may not allocate or take locks.

#![allow(unsafe_code)] // Raw system calls between fork and exec.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::seccomp::BpfProgram;
use super::{probe, JailConfig, JailError, UidPolicy, INNER_ID};
use crate::spawn::ChildLimits;

/// The part of a jail every jailed process enters the same way: uid,
/// rlimits, namespaces, death with the host, the pid namespace's reaper and
/// init. Plain values, so it can also travel to a program that enters the
/// jail itself ([`Plan::to_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    unshare: libc::c_int,
    user_ns: bool,
    pid_ns: bool,
    switch_to: Option<u32>,
    outer_uid: u32,
    outer_gid: u32,
    limits: ChildLimits,
    host_pid: libc::pid_t,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
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
        let mut unshare = 0;
        if support.user_ns {
            unshare |= libc::CLONE_NEWUSER;
        }
        for (present, flag) in [
            (support.mount_ns, libc::CLONE_NEWNS),
            (support.ipc_ns, libc::CLONE_NEWIPC),
            (support.uts_ns, libc::CLONE_NEWUTS),
            (support.net_ns && !config.network, libc::CLONE_NEWNET),
            (support.pid_ns, libc::CLONE_NEWPID),
        ] {
            if present {
                unshare |= flag;
            }
        }
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
            plan: Plan {
                unshare,
                user_ns: support.user_ns,
                pid_ns: support.pid_ns,
                switch_to,
                outer_uid,
                outer_gid,
                limits: limits.clone(),
                host_pid: std::process::id() as libc::pid_t,
                uid_map: Vec::new(),
                gid_map: Vec::new(),
            }
            .mapped(),
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
    /// Fills in the id maps from the outer ids (they are written between
    /// `fork` and `exec`, where nothing may allocate).
    fn mapped(mut self) -> Self {
        self.uid_map = format!("{INNER_ID} {} 1\n", self.outer_uid).into_bytes();
        self.gid_map = format!("{INNER_ID} {} 1\n", self.outer_gid).into_bytes();
        self
    }

    /// The plan as one environment value (numbers separated by spaces; `-`
    /// for a limit or uid that is not set).
    pub(crate) fn to_env(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let l = &self.limits;
        [
            self.unshare.to_string(),
            u8::from(self.user_ns).to_string(),
            u8::from(self.pid_ns).to_string(),
            opt(self.switch_to.map(u64::from)),
            self.outer_uid.to_string(),
            self.outer_gid.to_string(),
            opt(l.address_space),
            opt(l.cpu_seconds),
            opt(l.file_size),
            opt(l.open_files),
            opt(l.processes),
            opt(l.core_size),
            self.host_pid.to_string(),
        ]
        .join(" ")
    }

    /// Reads [`Plan::to_env`]'s form back; `None` if it is not one.
    pub(crate) fn from_env(text: &str) -> Option<Self> {
        let f: Vec<&str> = text.split(' ').collect();
        if f.len() != 13 {
            return None;
        }
        let opt = |s: &str| -> Option<Option<u64>> {
            if s == "-" {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        let flag = |s: &str| match s {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        let switch_to = match opt(f[3])? {
            Some(v) => Some(u32::try_from(v).ok()?),
            None => None,
        };
        Some(
            Self {
                unshare: f[0].parse().ok()?,
                user_ns: flag(f[1])?,
                pid_ns: flag(f[2])?,
                switch_to,
                outer_uid: f[4].parse().ok()?,
                outer_gid: f[5].parse().ok()?,
                limits: ChildLimits {
                    address_space: opt(f[6])?,
                    cpu_seconds: opt(f[7])?,
                    file_size: opt(f[8])?,
                    open_files: opt(f[9])?,
                    processes: opt(f[10])?,
                    core_size: opt(f[11])?,
                },
                host_pid: f[12].parse().ok()?,
                uid_map: Vec::new(),
                gid_map: Vec::new(),
            }
            .mapped(),
        )
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
            if self.user_ns {
                write_file(c"/proc/self/setgroups".as_ptr(), b"deny")?;
                write_file(c"/proc/self/gid_map".as_ptr(), &self.gid_map)?;
                write_file(c"/proc/self/uid_map".as_ptr(), &self.uid_map)?;
            }
            // Credential changes clear the parent-death signal: set it last.
            die_with_parent()?;
            if libc::getppid() != self.host_pid {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }

            if self.pid_ns {
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
    let plan = text.to_str().and_then(Plan::from_env).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{PLAN_ENV} is not a jail plan"),
        )
    })?;
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

    #[test]
    fn a_plan_survives_its_trip_through_the_environment() {
        let full = Plan {
            unshare: libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNET,
            user_ns: true,
            pid_ns: true,
            switch_to: Some(1_251_600),
            outer_uid: 1_251_600,
            outer_gid: 1_251_601,
            limits: ChildLimits {
                address_space: Some(1 << 30),
                cpu_seconds: Some(60),
                file_size: Some(64 << 20),
                open_files: Some(256),
                processes: Some(64),
                core_size: Some(0),
            },
            host_pid: 4242,
            uid_map: Vec::new(),
            gid_map: Vec::new(),
        }
        .mapped();
        assert_eq!(Plan::from_env(&full.to_env()), Some(full));
        let bare = Plan {
            unshare: 0,
            user_ns: false,
            pid_ns: false,
            switch_to: None,
            outer_uid: 0,
            outer_gid: 0,
            limits: ChildLimits::default(),
            host_pid: 1,
            uid_map: Vec::new(),
            gid_map: Vec::new(),
        }
        .mapped();
        assert_eq!(Plan::from_env(&bare.to_env()), Some(bare));
        for garbage in [
            "",
            "1 2 3",
            "x 1 1 - 0 0 - - - - - - 1",
            "0 2 1 - 0 0 - - - - - - 1",
        ] {
            assert_eq!(Plan::from_env(garbage), None, "{garbage:?}");
        }
    }
}
