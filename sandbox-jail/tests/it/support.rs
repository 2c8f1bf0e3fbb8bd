//! Watching processes from the outside: by pidfd, with deadlines, never
//! with sleeps.

use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

/// The process's start time (field 22 of `/proc/<pid>/stat`), which tells
/// it apart from a later process that got the same pid; `None` once it is
/// gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is running: it exists and is not a zombie.
pub fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// Whether the process that had `pid` and started at `started` is gone
/// entirely: no process, not even a zombie, has that pid and start time.
pub fn gone(pid: u32, started: u64) -> bool {
    start_time(pid) != Some(started)
}

/// Waits until `pid` has exited (a zombie counts), up to `within`;
/// returns whether it did. Event-driven: polls a pidfd.
pub fn exits_within(pid: u32, within: Duration) -> bool {
    let Some(raw) = Pid::from_raw(pid as i32) else {
        return true;
    };
    let Ok(fd) = pidfd_open(raw, PidfdFlags::empty()) else {
        // No such process any more.
        return true;
    };
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(e) if e == rustix::io::Errno::INTR => continue,
            Err(_) => return !running(pid),
        }
    }
}

/// The first child of `pid` (for a jail's reaper: the namespace's init).
pub fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
