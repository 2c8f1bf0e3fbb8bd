//! Crash classification: why a worker died, told from its exit status, the
//! host's own kill reason and the end of its stderr — with the limit it hit
//! when the host can tell.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::runtime::Crash;

/// Tells why a worker died from its exit status, the host's own kill
/// reason and the end of its stderr.
pub(super) fn classify(
    status: Option<ExitStatus>,
    reason: Option<(String, &'static str)>,
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
        (format!("{cause} ({how})"), Some(limit))
    } else if signal == Some(libc::SIGXCPU) {
        (
            format!("CPU time limit (RLIMIT_CPU) exceeded ({how})"),
            Some("cpu"),
        )
    } else if signal == Some(libc::SIGXFSZ) {
        (
            format!("file size limit (RLIMIT_FSIZE) exceeded ({how})"),
            Some("file_size"),
        )
    } else if stderr.contains("memory allocation of") || stderr.contains("out of memory") {
        (
            format!("memory limit (RLIMIT_AS) exhausted ({how})"),
            Some("memory"),
        )
    } else if stderr.contains("has overflowed its stack") {
        (format!("stack overflow ({how})"), Some("stack"))
    } else if signal == Some(libc::SIGSYS) {
        (format!("a forbidden system call ({how})"), Some("seccomp"))
    } else {
        (how, None)
    };
    Crash {
        cause,
        signal,
        exit_code,
        limit: limit.map(str::to_owned),
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
