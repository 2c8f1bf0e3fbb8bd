//! The host's work folder ([`Config::work_dir`](crate::Config::work_dir)):
//! claimed with a lock while a host runs, and folders of hosts that died
//! (killed, so they could not clean up) removed when the next host starts.
//!
//! A host claims its folder by holding an exclusive `flock` on
//! `<work_dir>/.lock` for as long as any of its [`Manager`](crate::Manager)s
//! lives (managers of one process that share a folder share the claim).
//! When a manager is built it looks at the folder's siblings named like it
//! — `<prefix>-<pid>`, the default being `sandbox-<pid>` in `$TMPDIR` — and
//! removes each one whose host is gone: its pid runs no process **and**
//! nobody holds its lock. Either sign of life keeps a folder: a live pid
//! (even one reused by an unrelated process, or a host still between
//! creating its folder and locking it), or a held lock (a host in another
//! pid namespace, whose pid means nothing here). A folder that is not named
//! after a pid is never touched.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use rustix::fs::{flock, FlockOperation};

/// The lock file inside a work folder.
pub(crate) const LOCK_FILE: &str = ".lock";

/// A work folder claimed by this process; dropping the last handle lets go
/// of the lock and removes the folder if nothing else is left in it.
#[derive(Debug)]
pub(crate) struct Claim {
    dir: PathBuf,
    /// Holds the lock while open.
    _lock: File,
}

/// Claims of this process, by folder: `flock`s of one process on two open
/// files conflict, so managers that share a folder share its claim.
fn claims() -> &'static Mutex<HashMap<PathBuf, Weak<Claim>>> {
    static CLAIMS: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Claim>>>> =
        std::sync::OnceLock::new();
    CLAIMS.get_or_init(Default::default)
}

/// Claims `dir` for this process (creating it), after removing the folders
/// of dead hosts next to it. Never fails a host start: a folder that cannot
/// be claimed or cleaned is logged and left as it is (`None`).
pub(crate) fn claim(dir: &Path) -> Option<Arc<Claim>> {
    remove_dead_siblings(dir);
    let mut claims = claims().lock();
    if let Some(claim) = claims.get(dir).and_then(Weak::upgrade) {
        return Some(claim);
    }
    match lock(dir) {
        Ok(file) => {
            let claim = Arc::new(Claim {
                dir: dir.to_path_buf(),
                _lock: file,
            });
            claims.insert(dir.to_path_buf(), Arc::downgrade(&claim));
            Some(claim)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot lock the work folder; a host starting later may not see this one is in use");
            None
        }
    }
}

/// Creates `dir` and takes the exclusive lock on its lock file.
fn lock(dir: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    flock(&file, FlockOperation::NonBlockingLockExclusive)?;
    Ok(file)
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claims = claims().lock();
        // A manager built since the last handle went shares a new claim of
        // the same folder: leave it be.
        if claims.get(&self.dir).and_then(Weak::upgrade).is_some() {
            return;
        }
        claims.remove(&self.dir);
        let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
        // Only if empty: a runtime still held by a task keeps its folder.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `name` split as `<prefix>-<pid>`.
fn pid_suffix(name: &str) -> Option<(&str, u32)> {
    let (prefix, pid) = name.rsplit_once('-')?;
    if prefix.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((prefix, pid.parse().ok()?))
}

/// Whether process `pid` exists (here: a process we may not signal exists).
fn pid_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Whether someone holds the lock of work folder `dir` (no lock file:
/// nobody, as with folders of hosts older than the lock).
fn lock_held(dir: &Path) -> bool {
    let file = match File::options().write(true).open(dir.join(LOCK_FILE)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        // Unreadable: not ours to judge.
        Err(_) => return true,
    };
    // Let go at once (closing the file unlocks it).
    flock(&file, FlockOperation::NonBlockingLockExclusive).is_err()
}

/// Whether `dir` holds only what a host puts in its work folder: the lock
/// file and runtime folders named `<sandbox>@<launch>`.
fn looks_like_a_work_dir(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).all(|e| {
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return false;
        };
        name == LOCK_FILE
            || name.rsplit_once('@').is_some_and(|(id, n)| {
                !id.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
            })
    })
}

/// Removes the work folders of dead hosts next to `dir` (see the module
/// docs); returns the folders removed.
pub(crate) fn remove_dead_siblings(dir: &Path) -> Vec<PathBuf> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str()))
    else {
        return Vec::new();
    };
    let Some((prefix, _)) = pid_suffix(name) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path == dir {
            continue;
        }
        let Some((their_prefix, pid)) = entry.file_name().to_str().and_then(|n| {
            let (p, pid) = pid_suffix(n)?;
            Some((p.to_owned(), pid))
        }) else {
            continue;
        };
        // Only real folders (never follow a link planted in a shared /tmp)
        // holding nothing but what a host puts there.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if their_prefix != prefix
            || !is_dir
            || pid_alive(pid)
            || lock_held(&path)
            || !looks_like_a_work_dir(&path)
        {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), pid, "removed the work folder of a host that is gone");
                removed.push(path);
            }
            // Another host starting at the same time got there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::debug!(dir = %path.display(), error = %e, "cannot remove the work folder of a host that is gone")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ending_in_a_pid_are_recognized() {
        assert_eq!(pid_suffix("sandbox-123"), Some(("sandbox", 123)));
        assert_eq!(pid_suffix("my-host-7"), Some(("my-host", 7)));
        assert_eq!(pid_suffix("sandbox-"), None);
        assert_eq!(pid_suffix("-12"), None);
        assert_eq!(pid_suffix("sandbox-12a"), None);
        assert_eq!(pid_suffix("sandbox"), None);
    }
}
