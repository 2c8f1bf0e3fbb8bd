//! The seccomp-bpf filters of the jail, built with `seccompiler`.
//!
//! Denied system calls fail with `EPERM` (so plugin code gets an error it can
//! report, and the worker lives on) except `clone3`, which fails with
//! `ENOSYS`: its flags are behind a pointer a filter cannot read, and the C
//! library falls back to `clone`, whose flags the filter checks.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use super::JailError;

/// Which seccomp filter a jailed process gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompProfile {
    /// A sandbox worker: no new processes (only threads), no `exec`, no
    /// `ptrace`, no mounts or namespaces, no `memfd_create`, no `io_uring`,
    /// no `setsid`/`setpgid`, signals only to its own process (`own_pid`),
    /// and no `socket()` at all unless `network`.
    Worker {
        /// Whether sockets may be created.
        network: bool,
        /// The process's own pid as it sees it (1 in a pid namespace);
        /// `kill`/`tgkill` of any other pid is denied. `None`: not checked.
        own_pid: Option<i32>,
    },
    /// A build (cargo, rustc, build scripts): processes and `exec` allowed,
    /// but no new namespaces, no `ptrace`, no mounts, no `memfd_create`, no
    /// `io_uring`, and only `AF_UNIX` sockets unless `network`.
    Build {
        /// Whether network sockets may be created.
        network: bool,
    },
}

fn arch() -> Result<TargetArch, JailError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| JailError::Seccomp(format!("unsupported architecture: {e:?}")))
}

fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, JailError> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| JailError::Seccomp(e.to_string()))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, JailError> {
    SeccompRule::new(conditions).map_err(|e| JailError::Seccomp(e.to_string()))
}

/// System calls no jailed process may make.
const ALWAYS_DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_memfd_create,
    libc::SYS_memfd_secret,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_kcmp,
    libc::SYS_pidfd_getfd,
    libc::SYS_fanotify_init,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_syslog,
    libc::SYS_vhangup,
];

/// Namespace flags `clone` may not carry in a build.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

impl SeccompProfile {
    /// Compiles the profile into the BPF programs to install (each is one
    /// filter; all of them apply).
    pub fn compile(&self) -> Result<Vec<BpfProgram>, JailError> {
        let arch = arch()?;
        let mut deny: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for &nr in ALWAYS_DENIED {
            deny.insert(nr, Vec::new());
        }
        use SeccompCmpArgLen::{Dword, Qword};
        match *self {
            SeccompProfile::Worker { network, own_pid } => {
                #[cfg(target_arch = "x86_64")]
                for nr in [libc::SYS_fork, libc::SYS_vfork] {
                    deny.insert(nr, Vec::new());
                }
                for nr in [
                    libc::SYS_execve,
                    libc::SYS_execveat,
                    libc::SYS_setsid,
                    libc::SYS_setpgid,
                ] {
                    deny.insert(nr, Vec::new());
                }
                // clone without CLONE_THREAD creates a process.
                let thread = libc::CLONE_THREAD as u64;
                deny.insert(
                    libc::SYS_clone,
                    vec![rule(vec![cond(
                        0,
                        Qword,
                        SeccompCmpOp::MaskedEq(thread),
                        0,
                    )?])?],
                );
                if let Some(pid) = own_pid {
                    let other = |arg| -> Result<Vec<SeccompRule>, JailError> {
                        Ok(vec![rule(vec![cond(
                            arg,
                            Dword,
                            SeccompCmpOp::Ne,
                            pid as u32 as u64,
                        )?])?])
                    };
                    deny.insert(libc::SYS_kill, other(0)?);
                    deny.insert(libc::SYS_tgkill, other(0)?);
                    deny.insert(libc::SYS_rt_sigqueueinfo, other(0)?);
                    deny.insert(libc::SYS_rt_tgsigqueueinfo, other(0)?);
                    deny.insert(libc::SYS_tkill, Vec::new());
                }
                if !network {
                    deny.insert(libc::SYS_socket, Vec::new());
                }
            }
            SeccompProfile::Build { network } => {
                let mut rules = Vec::new();
                for &flag in NAMESPACE_FLAGS {
                    let flag = flag as u64;
                    rules.push(rule(vec![cond(
                        0,
                        Qword,
                        SeccompCmpOp::MaskedEq(flag),
                        flag,
                    )?])?);
                }
                deny.insert(libc::SYS_clone, rules);
                if !network {
                    deny.insert(
                        libc::SYS_socket,
                        vec![rule(vec![cond(
                            0,
                            Dword,
                            SeccompCmpOp::Ne,
                            libc::AF_UNIX as u64,
                        )?])?],
                    );
                }
            }
        }
        let mut clone3 = BTreeMap::new();
        clone3.insert(libc::SYS_clone3, Vec::new());
        let mut programs = Vec::with_capacity(3);
        programs.push(errno_program(deny, libc::EPERM, arch)?);
        programs.push(errno_program(clone3, libc::ENOSYS, arch)?);
        if let Some(x32) = x32_guard() {
            programs.push(x32);
        }
        Ok(programs)
    }
}

/// A program that fails the system calls `rules` match with `errno` and
/// allows everything else.
fn errno_program(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: libc::c_int,
    arch: TargetArch,
) -> Result<BpfProgram, JailError> {
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| JailError::Seccomp(e.to_string()))
}

/// On x86_64 the x32 ABI reaches the same system calls under numbers with
/// bit 30 set, which a filter keyed on numbers would miss: deny them all.
fn x32_guard() -> Option<BpfProgram> {
    #[cfg(target_arch = "x86_64")]
    {
        const BPF_LD_W_ABS: u16 = 0x20;
        const BPF_JMP_JEQ_K: u16 = 0x15;
        const BPF_JMP_JGE_K: u16 = 0x35;
        const BPF_RET_K: u16 = 0x06;
        const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
        const X32_BIT: u32 = 0x4000_0000;
        let stmt = |code, k| sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let jump = |code, k, jt, jf| sock_filter { code, jt, jf, k };
        Some(vec![
            stmt(BPF_LD_W_ABS, 4), // seccomp_data.arch
            jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
            stmt(BPF_LD_W_ABS, 0), // seccomp_data.nr
            jump(BPF_JMP_JGE_K, X32_BIT, 0, 1),
            stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
            stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
        ])
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Installs `programs` on every thread of the calling process
/// (`SECCOMP_FILTER_FLAG_TSYNC`), setting `no_new_privs` first.
pub(crate) fn install_all_threads(programs: &[BpfProgram]) -> Result<(), JailError> {
    for program in programs {
        seccompiler::apply_filter_all_threads(program)
            .map_err(|e| JailError::Seccomp(e.to_string()))?;
    }
    Ok(())
}
