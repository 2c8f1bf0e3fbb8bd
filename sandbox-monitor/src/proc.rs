//! The `/proc`-backed default monitor (Linux).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};

use crate::{Alert, Error, Monitor, ResourceLimits, Result, Usage, DEFAULT_WARNING_FRACTION};

/// How many samples [`ProcMonitor`] keeps per key unless told otherwise.
pub const DEFAULT_HISTORY_LEN: usize = 120;

/// The default [`Monitor`]: samples processes from `/proc`.
///
/// Each sample reads `/proc/<pid>/stat` (CPU time, virtual size, start time),
/// `/proc/<pid>/status` (resident memory), counts `/proc/<pid>/task` (threads)
/// and `/proc/<pid>/fd` (open files), and counts descendants through
/// `/proc/<pid>/task/*/children`, or, on kernels built without that file, by
/// reading the parent pid of every process in `/proc`. CPU percent is the CPU
/// time delta over the wall time delta since the key's previous sample.
///
/// A process that exits, turns into a zombie, or whose pid is reused by a new
/// process (detected by its start time) is reported as
/// [`Error::ProcessExited`]. File descriptors of a process owned by another
/// user cannot be counted; `open_files` then reads 0.
///
/// ```
/// use sandbox_monitor::{Monitor, ProcMonitor, ResourceLimits};
///
/// let monitor = ProcMonitor::new().with_history_len(10);
/// monitor.register("self", std::process::id(), ResourceLimits::default())?;
/// let usage = monitor.sample("self")?;
/// assert!(usage.memory_bytes > 0);
/// assert_eq!(monitor.history("self")?.len(), 1);
/// # Ok::<(), sandbox_monitor::Error>(())
/// ```
#[derive(Debug)]
pub struct ProcMonitor {
    proc_root: PathBuf,
    history_len: usize,
    warning_fraction: f64,
    entries: RwLock<HashMap<String, Arc<Mutex<Entry>>>>,
}

#[derive(Debug)]
struct Entry {
    key: String,
    pid: u32,
    start_ticks: u64,
    limits: ResourceLimits,
    history: VecDeque<(SystemTime, Usage)>,
    alerts: Vec<Alert>,
    previous_cpu: Option<(Instant, f64)>,
}

impl Default for ProcMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcMonitor {
    /// A monitor keeping [`DEFAULT_HISTORY_LEN`] samples per key and warning
    /// at [`DEFAULT_WARNING_FRACTION`] of each limit.
    pub fn new() -> Self {
        ProcMonitor {
            proc_root: PathBuf::from("/proc"),
            history_len: DEFAULT_HISTORY_LEN,
            warning_fraction: DEFAULT_WARNING_FRACTION,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// Keeps at most `len` samples per key (at least one).
    pub fn with_history_len(mut self, len: usize) -> Self {
        self.history_len = len.max(1);
        self
    }

    /// Raises [`AlertLevel::Warning`](crate::AlertLevel::Warning) above
    /// `fraction` of a limit; `fraction` must be in `(0, 1]`.
    pub fn with_warning_fraction(mut self, fraction: f64) -> Result<Self> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::InvalidLimits {
                reason: format!("warning fraction is {fraction}, it must be in (0, 1]"),
            });
        }
        self.warning_fraction = fraction;
        Ok(self)
    }

    fn entry(&self, key: &str) -> Result<Arc<Mutex<Entry>>> {
        self.entries
            .read()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::UnknownKey {
                key: key.to_owned(),
            })
    }

    fn pid_dir(&self, pid: u32) -> PathBuf {
        self.proc_root.join(pid.to_string())
    }

    fn read_stat(&self, pid: u32) -> io::Result<(PathBuf, String)> {
        let path = self.pid_dir(pid).join("stat");
        let text = fs::read_to_string(&path)?;
        Ok((path, text))
    }

    fn take_sample(&self, entry: &mut Entry) -> Result<Usage> {
        let exited = || Error::ProcessExited {
            key: entry.key.clone(),
            pid: entry.pid,
        };
        let pid = entry.pid;
        let dir = self.pid_dir(pid);

        let (stat_path, text) = self.read_stat(pid).map_err(|e| classify(e, &dir, exited))?;
        let stat = Stat::parse(&text).map_err(|reason| Error::Parse {
            path: stat_path,
            reason,
        })?;
        if stat.is_dead() || stat.starttime != entry.start_ticks {
            return Err(exited());
        }

        let status_path = dir.join("status");
        let status =
            fs::read_to_string(&status_path).map_err(|e| classify(e, &status_path, exited))?;
        let memory_bytes = match vm_rss_bytes(&status) {
            Some(bytes) => bytes,
            None => u64::try_from(stat.rss).unwrap_or(0) * page_size(),
        };

        let threads = match count_dir(&dir.join("task")) {
            Ok(n) => n,
            Err(e) if is_gone(&e) => return Err(exited()),
            Err(_) => stat.num_threads,
        };
        let open_files = match count_dir(&dir.join("fd")) {
            Ok(n) => n,
            Err(e) if is_gone(&e) => return Err(exited()),
            Err(e) => {
                tracing::debug!(key = %entry.key, pid, error = %e, "cannot count open files");
                0
            }
        };
        let child_processes = self.descendants(pid)?;

        let ticks = clock_ticks() as f64;
        let cpu_seconds = (stat.utime + stat.stime) as f64 / ticks;
        let started = Duration::from_secs_f64(stat.starttime as f64 / ticks);
        let uptime = boot_time().saturating_sub(started);
        let now = Instant::now();
        let cpu_percent = match entry.previous_cpu {
            Some((at, cpu)) => {
                let wall = now.duration_since(at).as_secs_f64();
                if wall > 0.0 {
                    ((cpu_seconds - cpu).max(0.0) / wall) * 100.0
                } else {
                    entry.history.back().map_or(0.0, |(_, u)| u.cpu_percent)
                }
            }
            None if uptime > Duration::ZERO => cpu_seconds / uptime.as_secs_f64() * 100.0,
            None => 0.0,
        };
        entry.previous_cpu = Some((now, cpu_seconds));

        Ok(Usage {
            memory_bytes,
            virtual_bytes: stat.vsize,
            cpu_percent,
            cpu_seconds,
            threads,
            child_processes,
            uptime,
            open_files,
        })
    }

    /// Counts the live descendants of `pid`.
    fn descendants(&self, pid: u32) -> Result<u32> {
        let probe = self
            .pid_dir(pid)
            .join("task")
            .join(pid.to_string())
            .join("children");
        let children_of: Box<dyn Fn(u32) -> Vec<u32>> = if probe.exists() {
            Box::new(|p| self.children_from_task_files(p))
        } else {
            let map = self.parent_map()?;
            Box::new(move |p| map.get(&p).cloned().unwrap_or_default())
        };
        let mut seen = HashSet::new();
        let mut stack = children_of(pid);
        while let Some(child) = stack.pop() {
            if child != pid && seen.insert(child) {
                stack.extend(children_of(child));
            }
        }
        Ok(u32::try_from(seen.len()).unwrap_or(u32::MAX))
    }

    fn children_from_task_files(&self, pid: u32) -> Vec<u32> {
        let Ok(tasks) = fs::read_dir(self.pid_dir(pid).join("task")) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    /// Parent pid → child pids, for every process in `/proc`.
    fn parent_map(&self) -> Result<HashMap<u32, Vec<u32>>> {
        let dir = fs::read_dir(&self.proc_root).map_err(|source| Error::Proc {
            path: self.proc_root.clone(),
            source,
        })?;
        let mut map: HashMap<u32, Vec<u32>> = HashMap::new();
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // Processes come and go while we read: skip the ones that vanish.
            let Ok((_, text)) = self.read_stat(pid) else {
                continue;
            };
            if let Ok(stat) = Stat::parse(&text) {
                map.entry(stat.ppid).or_default().push(pid);
            }
        }
        Ok(map)
    }
}

impl Monitor for ProcMonitor {
    fn register(&self, key: &str, pid: u32, limits: ResourceLimits) -> Result<()> {
        limits.validate()?;
        let (path, text) = self.read_stat(pid).map_err(|e| {
            if is_gone(&e) {
                Error::NoSuchProcess { pid }
            } else {
                Error::Proc {
                    path: self.pid_dir(pid).join("stat"),
                    source: e,
                }
            }
        })?;
        let stat = Stat::parse(&text).map_err(|reason| Error::Parse { path, reason })?;
        if stat.is_dead() {
            return Err(Error::NoSuchProcess { pid });
        }
        let mut entries = self.entries.write();
        if let Some(existing) = entries.get(key) {
            return Err(Error::DuplicateKey {
                key: key.to_owned(),
                pid: existing.lock().pid,
            });
        }
        entries.insert(
            key.to_owned(),
            Arc::new(Mutex::new(Entry {
                key: key.to_owned(),
                pid,
                start_ticks: stat.starttime,
                limits,
                history: VecDeque::with_capacity(self.history_len.min(DEFAULT_HISTORY_LEN)),
                alerts: Vec::new(),
                previous_cpu: None,
            })),
        );
        tracing::debug!(key, pid, "monitoring process");
        Ok(())
    }

    fn unregister(&self, key: &str) -> Result<()> {
        match self.entries.write().remove(key) {
            Some(_) => {
                tracing::debug!(key, "stopped monitoring process");
                Ok(())
            }
            None => Err(Error::UnknownKey {
                key: key.to_owned(),
            }),
        }
    }

    fn sample(&self, key: &str) -> Result<Usage> {
        let entry = self.entry(key)?;
        let mut entry = entry.lock();
        let usage = self.take_sample(&mut entry)?;
        while entry.history.len() >= self.history_len {
            entry.history.pop_front();
        }
        entry.history.push_back((SystemTime::now(), usage));
        let alerts = entry.limits.evaluate(key, &usage, self.warning_fraction);
        for alert in &alerts {
            tracing::warn!(key, pid = entry.pid, resource = %alert.resource, level = ?alert.level,
                value = alert.value, limit = alert.limit, "resource alert");
        }
        entry.alerts = alerts;
        tracing::trace!(key, pid = entry.pid, ?usage, "sampled process");
        Ok(usage)
    }

    fn history(&self, key: &str) -> Result<Vec<(SystemTime, Usage)>> {
        Ok(self.entry(key)?.lock().history.iter().copied().collect())
    }

    fn alerts(&self, key: &str) -> Result<Vec<Alert>> {
        Ok(self.entry(key)?.lock().alerts.clone())
    }

    fn set_limits(&self, key: &str, limits: ResourceLimits) -> Result<()> {
        limits.validate()?;
        self.entry(key)?.lock().limits = limits;
        Ok(())
    }

    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.entries.read().keys().cloned().collect();
        keys.sort();
        keys
    }
}

/// The fields of `/proc/<pid>/stat` the monitor uses.
#[derive(Debug)]
struct Stat {
    state: char,
    ppid: u32,
    utime: u64,
    stime: u64,
    num_threads: u32,
    starttime: u64,
    vsize: u64,
    rss: i64,
}

impl Stat {
    fn parse(text: &str) -> Result<Stat, String> {
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let close = text.rfind(')').ok_or("no `)` closing the command name")?;
        let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
        // fields[0] is field 3 of proc(5).
        let field = |n: usize| -> Result<&str, String> {
            fields
                .get(n - 3)
                .copied()
                .ok_or_else(|| format!("field {n} is missing"))
        };
        fn num<T: std::str::FromStr>(s: &str, n: usize) -> Result<T, String> {
            s.parse()
                .map_err(|_| format!("field {n} is `{s}`, not a number"))
        }
        Ok(Stat {
            state: field(3)?.chars().next().unwrap_or('?'),
            ppid: num(field(4)?, 4)?,
            utime: num(field(14)?, 14)?,
            stime: num(field(15)?, 15)?,
            num_threads: num(field(20)?, 20)?,
            starttime: num(field(22)?, 22)?,
            vsize: num(field(23)?, 23)?,
            rss: num(field(24)?, 24)?,
        })
    }

    /// Zombie or dead: the process no longer runs.
    fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn count_dir(path: &Path) -> io::Result<u32> {
    let n = fs::read_dir(path)?.count();
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Whether a `/proc` read failed because the process is gone.
fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error())
}

fn classify(e: io::Error, path: &Path, exited: impl Fn() -> Error) -> Error {
    if is_gone(&e) {
        exited()
    } else {
        Error::Proc {
            path: path.to_owned(),
            source: e,
        }
    }
}

fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// Time since boot, on the clock `/proc/<pid>/stat`'s start time is measured on.
fn boot_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_name() {
        let text = "42 (a) b (c) S 7 42 42 0 -1 4194304 100 0 0 0 15 5 0 0 20 0 3 0 5574 3133440 359 18446744073709551615";
        let stat = Stat::parse(text).expect("valid stat line");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 7);
        assert_eq!((stat.utime, stat.stime), (15, 5));
        assert_eq!(stat.num_threads, 3);
        assert_eq!(stat.starttime, 5574);
        assert_eq!(stat.vsize, 3_133_440);
        assert_eq!(stat.rss, 359);
    }

    #[test]
    fn truncated_stat_names_the_missing_field() {
        let err = Stat::parse("1 (x) S 0 1").map(|_| ()).unwrap_err();
        assert_eq!(err, "field 14 is missing");
    }

    #[test]
    fn reads_vm_rss() {
        assert_eq!(
            vm_rss_bytes("Name:\tcat\nVmRSS:\t    2196 kB\n"),
            Some(2196 * 1024)
        );
        assert_eq!(vm_rss_bytes("Name:\tkthreadd\n"), None);
    }
}
