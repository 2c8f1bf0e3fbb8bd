//! Crash classification: why a worker died, told from its exit status, the
//! host's own kill reason and the end of its stderr — with the limit it hit
//! when the host can tell.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::runtime::Crash;
use crate::Limit;

/// Tells why a worker died from its exit status, the host's own kill
/// reason and the end of its stderr.
pub(super) fn classify(
    status: Option<ExitStatus>,
    reason: Option<(String, Option<Limit>)>,
    stderr: &str,
) -> Crash {
    let signal = status.and_then(|s| s.signal());
    let exit_code = status.and_then(|s| s.code());
    let how = match (signal, exit_code) {
        (Some(sig), _) => format!("killed by signal {sig} ({})", signal_name(sig)),
        (None, Some(code)) => format!("exited with code {code}"),
        (None, None) => "ended".to_owned(),
    };
    let (cause, limit) = if let Some((cause, limit)) = reason {
        (format!("{cause} ({how})"), limit)
    } else if signal == Some(libc::SIGXCPU) {
        (
            format!("CPU time limit (RLIMIT_CPU) exceeded ({how})"),
            Some(Limit::Cpu),
        )
    } else if signal == Some(libc::SIGXFSZ) {
        (
            format!("file size limit (RLIMIT_FSIZE) exceeded ({how})"),
            Some(Limit::FileSize),
        )
    } else if stderr.contains("memory allocation of") || stderr.contains("out of memory") {
        (
            format!("address space limit (RLIMIT_AS) exhausted ({how})"),
            Some(Limit::AddressSpace),
        )
    } else if stderr.contains("has overflowed its stack") {
        (format!("stack overflow ({how})"), Some(Limit::Stack))
    } else if signal == Some(libc::SIGSYS) {
        (
            format!("a forbidden system call ({how})"),
            Some(Limit::Seccomp),
        )
    } else {
        (how, None)
    };
    Crash {
        cause,
        signal,
        exit_code,
        limit,
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTRAP => "SIGTRAP",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::classify;
    use crate::Limit;

    /// A status of a process killed by `signal`.
    fn killed(signal: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(signal))
    }

    #[test]
    fn an_allocation_refused_under_rlimit_as_is_the_address_space_limit() {
        let crash = classify(
            killed(libc::SIGABRT),
            None,
            "memory allocation of 1048576 bytes failed\n",
        );
        assert_eq!(crash.limit, Some(Limit::AddressSpace), "{crash:?}");
        assert!(crash.cause.contains("address space"), "{crash:?}");
        assert_eq!(crash.signal, Some(libc::SIGABRT));
    }

    #[test]
    fn kernel_signals_name_their_limits_and_the_host_reason_wins() {
        let cpu = classify(killed(libc::SIGXCPU), None, "");
        assert_eq!(cpu.limit, Some(Limit::Cpu));
        let file = classify(killed(libc::SIGXFSZ), None, "");
        assert_eq!(file.limit, Some(Limit::FileSize));
        let syscall = classify(killed(libc::SIGSYS), None, "");
        assert_eq!(syscall.limit, Some(Limit::Seccomp));
        let output = classify(
            killed(libc::SIGKILL),
            Some(("it wrote too much".into(), Some(Limit::Output))),
            "out of memory",
        );
        assert_eq!(output.limit, Some(Limit::Output));
        assert!(
            output.cause.starts_with("it wrote too much ("),
            "{output:?}"
        );
        // A worker killed for breaking the protocol hit no limit.
        let protocol = classify(
            killed(libc::SIGKILL),
            Some(("it sent a malformed frame".into(), None)),
            "",
        );
        assert_eq!(protocol.limit, None);
        let plain = classify(Some(ExitStatus::from_raw(3 << 8)), None, "");
        assert_eq!((plain.limit, plain.exit_code), (None, Some(3)));
    }
}
