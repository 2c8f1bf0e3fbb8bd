//! The seccomp-bpf filter of the jail.
//!
//! Denied system calls fail with `EPERM` (so plugin code gets an error it can
//! report, and the worker lives on) except `clone3`, which fails with
//! `ENOSYS`: its flags are behind a pointer a filter cannot read, and the C
//! library falls back to `clone`, whose flags the filter checks.
//!
//! The filter is one classic-BPF program laid out as a binary search tree
//! over system-call numbers (as minijail and Android's bionic lay theirs
//! out), compiled here rather than with `seccompiler`, whose programs are a
//! linear chain: when a filter is installed the kernel runs it once for every
//! system-call number to cache the ones it always allows, so a chain of ~60
//! checks cost 370 µs per install — half of a worker's jail set-up — where
//! the tree costs a few tens of µs. Every path through the tree is
//! `O(log n)` long; [`tests`] check the program against a plain statement of
//! the rules for every system-call number.

use std::collections::BTreeMap;

use super::JailError;

/// One compiled classic-BPF program, ready for `seccomp(2)`.
pub type BpfProgram = Vec<libc::sock_filter>;

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
const NAMESPACE_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// A test on the low 32 bits of one system-call argument (every argument
/// checked here is an `int` or flags that fit in one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgTest {
    /// Any bit of the mask is set.
    AnyBits(u32),
    /// No bit of the mask is set.
    NoBits(u32),
    /// The value is not this one.
    Ne(u32),
}

/// What the filter does with one system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Always fails with this errno.
    Deny(u32),
    /// Fails with `EPERM` when the test on argument `arg` holds.
    DenyIf { arg: u8, test: ArgTest },
}

impl SeccompProfile {
    /// The rules, by system-call number; every other call is allowed.
    fn rules(&self) -> BTreeMap<u32, Rule> {
        let eperm = Rule::Deny(libc::EPERM as u32);
        let nr = |n: libc::c_long| n as u32;
        let mut rules: BTreeMap<u32, Rule> =
            ALWAYS_DENIED.iter().map(|&n| (nr(n), eperm)).collect();
        rules.insert(nr(libc::SYS_clone3), Rule::Deny(libc::ENOSYS as u32));
        match *self {
            SeccompProfile::Worker { network, own_pid } => {
                #[cfg(target_arch = "x86_64")]
                for n in [libc::SYS_fork, libc::SYS_vfork] {
                    rules.insert(nr(n), eperm);
                }
                for n in [
                    libc::SYS_execve,
                    libc::SYS_execveat,
                    libc::SYS_setsid,
                    libc::SYS_setpgid,
                ] {
                    rules.insert(nr(n), eperm);
                }
                // clone without CLONE_THREAD creates a process.
                rules.insert(
                    nr(libc::SYS_clone),
                    Rule::DenyIf {
                        arg: 0,
                        test: ArgTest::NoBits(libc::CLONE_THREAD as u32),
                    },
                );
                if let Some(pid) = own_pid {
                    let other = Rule::DenyIf {
                        arg: 0,
                        test: ArgTest::Ne(pid as u32),
                    };
                    for n in [
                        libc::SYS_kill,
                        libc::SYS_tgkill,
                        libc::SYS_rt_sigqueueinfo,
                        libc::SYS_rt_tgsigqueueinfo,
                    ] {
                        rules.insert(nr(n), other);
                    }
                    rules.insert(nr(libc::SYS_tkill), eperm);
                }
                if !network {
                    rules.insert(nr(libc::SYS_socket), eperm);
                }
            }
            SeccompProfile::Build { network } => {
                rules.insert(
                    nr(libc::SYS_clone),
                    Rule::DenyIf {
                        arg: 0,
                        test: ArgTest::AnyBits(NAMESPACE_FLAGS as u32),
                    },
                );
                if !network {
                    rules.insert(
                        nr(libc::SYS_socket),
                        Rule::DenyIf {
                            arg: 0,
                            test: ArgTest::Ne(libc::AF_UNIX as u32),
                        },
                    );
                }
            }
        }
        rules
    }

    /// Compiles the profile into the one BPF program to install.
    pub fn compile(&self) -> Result<BpfProgram, JailError> {
        let arch = audit_arch().ok_or_else(|| {
            JailError::Seccomp(format!(
                "unsupported architecture: {}",
                std::env::consts::ARCH
            ))
        })?;
        let rules: Vec<(u32, Rule)> = self.rules().into_iter().collect();
        let mut program = vec![
            stmt(BPF_LD_W_ABS, OFFSET_ARCH),
            jump(BPF_JEQ, arch, 1, 0),
            stmt(BPF_RET, libc::SECCOMP_RET_KILL_PROCESS),
            stmt(BPF_LD_W_ABS, OFFSET_NR),
        ];
        // On x86_64 the x32 ABI reaches the same system calls under numbers
        // with bit 30 set, which a filter keyed on numbers would miss.
        #[cfg(target_arch = "x86_64")]
        program.extend([
            jump(BPF_JGE, X32_SYSCALL_BIT, 0, 1),
            stmt(BPF_RET, errno(libc::EPERM as u32)),
        ]);
        program.extend(tree(&rules)?);
        if program.len() > BPF_MAXINSNS {
            return Err(JailError::Seccomp(format!(
                "the filter has {} instructions, more than the kernel's {BPF_MAXINSNS}",
                program.len()
            )));
        }
        Ok(program)
    }
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const BPF_RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const BPF_MAXINSNS: usize = 4096;
/// Offsets into `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Rules checked one after the other at the leaves of the tree.
const LEAF: usize = 3;

fn audit_arch() -> Option<u32> {
    if cfg!(target_arch = "x86_64") {
        Some(0xC000_003E) // AUDIT_ARCH_X86_64
    } else if cfg!(target_arch = "aarch64") {
        Some(0xC000_00B7) // AUDIT_ARCH_AARCH64
    } else if cfg!(target_arch = "riscv64") {
        Some(0xC000_00F3) // AUDIT_ARCH_RISCV64
    } else {
        None
    }
}

fn errno(e: u32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e & libc::SECCOMP_RET_DATA)
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn offset(len: usize) -> Result<u8, JailError> {
    u8::try_from(len)
        .map_err(|_| JailError::Seccomp("a rule compiled to over 255 instructions".into()))
}

/// The instructions deciding one call whose number matched `rule`; every
/// path ends in a return.
fn verdict(rule: Rule) -> Vec<libc::sock_filter> {
    let allow = stmt(BPF_RET, libc::SECCOMP_RET_ALLOW);
    let deny = |e: u32| stmt(BPF_RET, errno(e));
    match rule {
        Rule::Deny(e) => vec![deny(e)],
        Rule::DenyIf { arg, test } => {
            // The low word of the argument (little-endian on every
            // architecture `audit_arch` knows).
            let load = stmt(BPF_LD_W_ABS, OFFSET_ARGS + 8 * u32::from(arg));
            let check = match test {
                ArgTest::AnyBits(mask) => jump(BPF_JSET, mask, 0, 1),
                ArgTest::NoBits(mask) => jump(BPF_JSET, mask, 1, 0),
                ArgTest::Ne(value) => jump(BPF_JEQ, value, 1, 0),
            };
            vec![load, check, deny(libc::EPERM as u32), allow]
        }
    }
}

/// A search tree over `rules` (sorted by number), entered with the number in
/// the accumulator: all jumps are forward and relative, so sub-trees are
/// compiled on their own and laid out one after the other.
fn tree(rules: &[(u32, Rule)]) -> Result<Vec<libc::sock_filter>, JailError> {
    if rules.len() <= LEAF {
        let mut out = Vec::new();
        for &(nr, rule) in rules {
            let decide = verdict(rule);
            out.push(jump(BPF_JEQ, nr, 0, offset(decide.len())?));
            out.extend(decide);
        }
        out.push(stmt(BPF_RET, libc::SECCOMP_RET_ALLOW));
        return Ok(out);
    }
    let mid = rules.len() / 2;
    let (low, high) = (tree(&rules[..mid])?, tree(&rules[mid..])?);
    let mut out = Vec::with_capacity(low.len() + high.len() + 2);
    // Numbers from the pivot up go on to `high`, the rest jump over it.
    match u8::try_from(high.len()) {
        Ok(skip) => out.push(jump(BPF_JGE, rules[mid].0, 0, skip)),
        Err(_) => {
            let skip = u32::try_from(high.len())
                .map_err(|_| JailError::Seccomp("the filter is too large".into()))?;
            out.push(jump(BPF_JGE, rules[mid].0, 1, 0));
            out.push(stmt(BPF_JA, skip));
        }
    }
    out.extend(high);
    out.extend(low);
    Ok(out)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, program)`: the raw return value
/// (with `TSYNC`, a positive one names a thread that could not take it).
/// Allocation-free, so it may run between `fork` and `exec`.
pub(super) fn load(program: &BpfProgram, flags: libc::c_ulong) -> libc::c_long {
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points to `program`, which outlives the call; the
    // kernel copies the program.
    #[allow(unsafe_code)]
    unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    }
}

/// Installs `program` on every thread of the calling process
/// (`SECCOMP_FILTER_FLAG_TSYNC`), setting `no_new_privs` first.
pub(crate) fn install_all_threads(program: &BpfProgram) -> Result<(), JailError> {
    rustix::thread::set_no_new_privs(true)
        .map_err(|e| JailError::Seccomp(format!("cannot set no_new_privs: {e}")))?;
    let rc = load(program, libc::SECCOMP_FILTER_FLAG_TSYNC);
    match rc {
        0 => Ok(()),
        rc if rc > 0 => Err(JailError::Seccomp(format!(
            "thread {rc} could not take the filter"
        ))),
        _ => Err(JailError::Seccomp(format!(
            "the kernel refused the filter: {}",
            std::io::Error::last_os_error()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions [`tree`] emits, over
    /// one `seccomp_data`; also returns how many instructions ran.
    fn run(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> (u32, usize) {
        let word = |offset: u32| -> u32 {
            match offset {
                OFFSET_NR => nr,
                OFFSET_ARCH => arch,
                o if o >= OFFSET_ARGS && (o - OFFSET_ARGS) % 4 == 0 => {
                    let i = ((o - OFFSET_ARGS) / 8) as usize;
                    let high = (o - OFFSET_ARGS) % 8 == 4;
                    (if high { args[i] >> 32 } else { args[i] }) as u32
                }
                o => panic!("load from offset {o}"),
            }
        };
        let (mut pc, mut acc, mut steps) = (0usize, 0u32, 0usize);
        loop {
            let ins = program[pc];
            steps += 1;
            let branch = |taken: bool| pc + 1 + usize::from(if taken { ins.jt } else { ins.jf });
            pc = match ins.code {
                BPF_LD_W_ABS => {
                    acc = word(ins.k);
                    pc + 1
                }
                BPF_JEQ => branch(acc == ins.k),
                BPF_JGE => branch(acc >= ins.k),
                BPF_JSET => branch(acc & ins.k != 0),
                BPF_JA => pc + 1 + ins.k as usize,
                BPF_RET => return (ins.k, steps),
                code => panic!("unexpected opcode {code:#x}"),
            };
        }
    }

    /// The rules stated plainly: the answer the kernel must get.
    fn expected(profile: SeccompProfile, nr: u32, args: [u64; 6]) -> u32 {
        let nr_is = |n: libc::c_long| nr == n as u32;
        let deny = errno(libc::EPERM as u32);
        let allow = libc::SECCOMP_RET_ALLOW;
        if cfg!(target_arch = "x86_64") && nr >= 0x4000_0000 {
            return deny;
        }
        if ALWAYS_DENIED.iter().any(|&n| nr_is(n)) {
            return deny;
        }
        if nr_is(libc::SYS_clone3) {
            return errno(libc::ENOSYS as u32);
        }
        let arg0 = args[0] as u32;
        match profile {
            SeccompProfile::Worker { network, own_pid } => {
                #[cfg(target_arch = "x86_64")]
                if nr_is(libc::SYS_fork) || nr_is(libc::SYS_vfork) {
                    return deny;
                }
                let banned = [
                    libc::SYS_execve,
                    libc::SYS_execveat,
                    libc::SYS_setsid,
                    libc::SYS_setpgid,
                ];
                if banned.iter().any(|&n| nr_is(n))
                    || (nr_is(libc::SYS_clone) && arg0 & libc::CLONE_THREAD as u32 == 0)
                    || (!network && nr_is(libc::SYS_socket))
                {
                    return deny;
                }
                if let Some(pid) = own_pid {
                    let signals = [
                        libc::SYS_kill,
                        libc::SYS_tgkill,
                        libc::SYS_rt_sigqueueinfo,
                        libc::SYS_rt_tgsigqueueinfo,
                    ];
                    if nr_is(libc::SYS_tkill)
                        || (signals.iter().any(|&n| nr_is(n)) && arg0 != pid as u32)
                    {
                        return deny;
                    }
                }
                allow
            }
            SeccompProfile::Build { network } => {
                if (nr_is(libc::SYS_clone) && arg0 & NAMESPACE_FLAGS as u32 != 0)
                    || (!network && nr_is(libc::SYS_socket) && arg0 != libc::AF_UNIX as u32)
                {
                    return deny;
                }
                allow
            }
        }
    }

    fn profiles() -> Vec<SeccompProfile> {
        vec![
            SeccompProfile::Worker {
                network: false,
                own_pid: Some(2),
            },
            SeccompProfile::Worker {
                network: true,
                own_pid: Some(1),
            },
            SeccompProfile::Worker {
                network: false,
                own_pid: None,
            },
            SeccompProfile::Build { network: false },
            SeccompProfile::Build { network: true },
        ]
    }

    /// First arguments that exercise every argument test, with junk in the
    /// high word (the kernel reads these arguments as 32-bit values).
    fn first_args() -> Vec<u64> {
        let mut values = vec![
            0,
            1,
            2,
            3,
            libc::CLONE_THREAD as u64,
            (libc::CLONE_THREAD | libc::CLONE_VM) as u64,
            libc::SIGCHLD as u64,
            libc::AF_UNIX as u64,
            libc::AF_INET as u64,
            libc::AF_INET6 as u64,
            u32::MAX as u64,
        ];
        for flag in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
        ] {
            values.push(flag as u64);
            values.push((flag | libc::CLONE_THREAD) as u64);
        }
        let high: Vec<u64> = values.iter().map(|v| v | (0xdead_beef << 32)).collect();
        values.extend(high);
        values
    }

    #[test]
    fn every_system_call_gets_the_stated_answer() {
        let arch = audit_arch().expect("a supported architecture");
        for profile in profiles() {
            let program = profile.compile().expect("compile");
            for nr in (0..1024).chain([0x4000_0000, 0x4000_0001, 0x4000_0000 + 59, u32::MAX]) {
                for arg0 in first_args() {
                    let args = [arg0, 7, 7, 7, 7, 7];
                    let (got, _) = run(&program, arch, nr, args);
                    assert_eq!(
                        got,
                        expected(profile, nr, args),
                        "{profile:?}: system call {nr} with first argument {arg0:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn another_architecture_is_killed() {
        let arch = audit_arch().expect("a supported architecture");
        for profile in profiles() {
            let program = profile.compile().expect("compile");
            for nr in [0, libc::SYS_getpid as u32, libc::SYS_execve as u32] {
                let (got, _) = run(&program, 0x4000_0003 /* AUDIT_ARCH_I386 */, nr, [0; 6]);
                assert_eq!(got, libc::SECCOMP_RET_KILL_PROCESS, "{profile:?}");
                assert_ne!(arch, 0x4000_0003);
            }
        }
    }

    /// The point of the tree: the kernel runs the filter for every number
    /// when it installs it, and every system call pays its path.
    #[test]
    fn every_path_is_short() {
        let arch = audit_arch().expect("a supported architecture");
        for profile in profiles() {
            let program = profile.compile().expect("compile");
            let rules = profile.rules().len();
            let longest = (0..1024)
                .map(|nr| run(&program, arch, nr, [0; 6]).1)
                .max()
                .unwrap_or(0);
            // arch and x32 checks, ~log2(rules) pivots, a leaf, a verdict.
            assert!(
                longest <= 20,
                "{profile:?}: {longest} instructions on the longest path over {rules} rules"
            );
        }
    }

    #[test]
    fn long_subtrees_are_jumped_over() {
        // Enough rules that a right subtree is over 255 instructions long.
        let rules: Vec<(u32, Rule)> = (0..400u32)
            .map(|nr| (nr * 2, Rule::Deny(libc::EPERM as u32)))
            .collect();
        let mut program = vec![stmt(BPF_LD_W_ABS, OFFSET_NR)];
        program.extend(tree(&rules).expect("tree"));
        assert!(program.iter().any(|ins| ins.code == BPF_JA));
        for nr in 0..800 {
            let (got, _) = run(&program, 0, nr, [0; 6]);
            let want = if nr % 2 == 0 {
                errno(libc::EPERM as u32)
            } else {
                libc::SECCOMP_RET_ALLOW
            };
            assert_eq!(got, want, "system call {nr}");
        }
    }
}
