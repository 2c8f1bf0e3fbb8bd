//! The output watchdog: a thread per worker that drains its stdout and
//! stderr into `tracing` ([`super::log::Lines`]), keeps the end of stderr
//! to tell why it died, and kills it past its caps — bytes written to
//! stdout + stderr, and bytes its files take in its work folder.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{ChildStderr, ChildStdout};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::conn::Conn;
use super::log::Lines;
use crate::jail::disk_usage;
use crate::Limit;

/// How often the host checks a worker's disk use.
const DISK_CHECK_EVERY: Duration = Duration::from_millis(100);
/// How much of a dead worker's stderr is kept to tell why it died.
const STDERR_TAIL: usize = 8 << 10;
/// Most directory entries one disk check walks.
const DISK_CHECK_ENTRIES: usize = 100_000;

/// What the watchdog keeps for the reader thread.
#[derive(Default)]
pub(super) struct Output {
    /// The last [`STDERR_TAIL`] bytes of stderr.
    stderr_tail: Mutex<VecDeque<u8>>,
    /// Set once both streams closed.
    drained: (Mutex<bool>, Condvar),
}

impl Output {
    /// Waits until both streams closed, at most `wait`.
    pub(super) fn wait_drained(&self, wait: Duration) {
        let (done, cv) = &self.drained;
        let mut done = done.lock();
        let deadline = Instant::now() + wait;
        while !*done {
            if cv.wait_until(&mut done, deadline).timed_out() {
                break;
            }
        }
    }

    /// The end of stderr, as text.
    pub(super) fn stderr_tail(&self) -> String {
        String::from_utf8_lossy(self.stderr_tail.lock().make_contiguous()).into_owned()
    }

    fn keep_stderr(&self, chunk: &[u8]) {
        let mut tail = self.stderr_tail.lock();
        tail.extend(chunk);
        let excess = tail.len().saturating_sub(STDERR_TAIL);
        tail.drain(..excess);
    }

    fn set_drained(&self) {
        let (done, cv) = &self.drained;
        *done.lock() = true;
        cv.notify_all();
    }
}

/// Drains the worker's stdout and stderr into `tracing` (lines, capped in
/// total), keeps the end of stderr, and checks the disk use of the work
/// folder every [`DISK_CHECK_EVERY`]. Ends when both pipes close — which
/// happens when the worker's pid namespace is gone, whatever it started.
pub(super) fn drain(
    conn: &Conn,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    limit: Option<u64>,
    disk: Option<(PathBuf, u64)>,
) {
    let mut streams: Vec<(std::fs::File, bool, Lines)> = Vec::new();
    if let Some(out) = stdout {
        streams.push((
            std::fs::File::from(OwnedFd::from(out)),
            false,
            Lines::new(false),
        ));
    }
    if let Some(err) = stderr {
        streams.push((
            std::fs::File::from(OwnedFd::from(err)),
            true,
            Lines::new(true),
        ));
    }
    let mut total = 0u64;
    let mut over = false;
    let mut last_check = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    while !streams.is_empty() {
        let mut ready = vec![false; streams.len()];
        {
            let mut polls: Vec<rustix::event::PollFd<'_>> = streams
                .iter()
                .map(|(fd, _, _)| rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN))
                .collect();
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: DISK_CHECK_EVERY.as_nanos() as _,
            };
            match rustix::event::poll(&mut polls, Some(&timeout)) {
                Ok(_) => {
                    for (i, p) in polls.iter().enumerate() {
                        ready[i] = !p.revents().is_empty();
                    }
                }
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(_) => break,
            }
        }
        let mut closed = Vec::new();
        for (i, (fd, is_err, lines)) in streams.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            let n = match fd.read(&mut buf) {
                Ok(0) | Err(_) => {
                    closed.push(i);
                    continue;
                }
                Ok(n) => n,
            };
            total += n as u64;
            let chunk = &buf[..n];
            if *is_err {
                conn.output.keep_stderr(chunk);
            }
            if let Some(cap) = limit {
                if total > cap && !over {
                    over = true;
                    tracing::warn!(sandbox = %conn.sandbox, limit = cap, "worker output over its limit; killing the worker");
                    conn.kill_for(
                        format!("it wrote more than {cap} bytes to stdout/stderr"),
                        Some(Limit::Output),
                    );
                }
            }
            if over {
                continue;
            }
            lines.push(&conn.sandbox, chunk);
        }
        for i in closed.into_iter().rev() {
            let (_, _, lines) = streams.remove(i);
            if !over {
                lines.finish(&conn.sandbox);
            }
        }
        if let Some((dir, cap)) = &disk {
            if last_check.elapsed() >= DISK_CHECK_EVERY {
                last_check = Instant::now();
                if let Ok(used) = disk_usage(dir, DISK_CHECK_ENTRIES) {
                    if used > *cap {
                        conn.kill_for(
                            format!("its files take {used} bytes, over the disk limit of {cap}"),
                            Some(Limit::Disk),
                        );
                    }
                }
            }
        }
    }
    conn.output.set_drained();
}
