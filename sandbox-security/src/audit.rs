//! A tamper-evident, append-only audit log.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The `prev_hash` of the first entry: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as given to [`AuditLog::append`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEvent {
    /// Who did it: a user, a service, `host`.
    pub actor: String,
    /// What was done: `create`, `reload`, `deny`, ...
    pub action: String,
    /// The sandbox it concerns, if any.
    pub sandbox: Option<String>,
    /// Free-form detail.
    pub detail: String,
}

impl AuditEvent {
    /// An event with no sandbox and no detail.
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> Self {
        AuditEvent {
            actor: actor.into(),
            action: action.into(),
            ..AuditEvent::default()
        }
    }

    /// Sets the sandbox.
    pub fn sandbox(mut self, sandbox: impl Into<String>) -> Self {
        self.sandbox = Some(sandbox.into());
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// One line of the log.
///
/// `hash` is the hex SHA-256 of `prev_hash` followed by the canonical JSON of
/// the entry without `hash` (the fields in the order declared here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub time: u64,
    /// See [`AuditEvent::actor`].
    pub actor: String,
    /// See [`AuditEvent::action`].
    pub action: String,
    /// See [`AuditEvent::sandbox`].
    pub sandbox: Option<String>,
    /// See [`AuditEvent::detail`].
    pub detail: String,
    /// The previous entry's `hash` ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// The hashed part of an entry: everything but `hash`, in a fixed order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: u64,
    actor: &'a str,
    action: &'a str,
    sandbox: Option<&'a str>,
    detail: &'a str,
    prev_hash: &'a str,
}

impl AuditEntry {
    /// The hash this entry should carry.
    pub fn compute_hash(&self) -> String {
        let canonical = Canonical {
            seq: self.seq,
            time: self.time,
            actor: &self.actor,
            action: &self.action,
            sandbox: self.sandbox.as_deref(),
            detail: &self.detail,
            prev_hash: &self.prev_hash,
        };
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        // Serializing a struct of strings and integers cannot fail.
        hasher.update(serde_json::to_vec(&canonical).unwrap_or_default());
        hex::encode(hasher.finalize())
    }
}

/// A tamper-evident append-only log of security-relevant events, one JSON
/// object per line, each entry chained to the previous one by its hash.
///
/// Editing, inserting, reordering or removing a line breaks the chain, and
/// [`AuditLog::verify`] names the first broken line. Truncating the tail, or
/// rewriting every hash after an edit, is only detectable against a copy of
/// [`AuditLog::head`] kept elsewhere.
///
/// Several writers may share one file — threads, several `AuditLog`s, several
/// processes (hosts sharing a cache folder): each append takes an exclusive
/// advisory lock (`flock`) on the file, reads and checks the entries other
/// writers added since its own last one, chains to the newest and writes its
/// line in one `write`.
///
/// ```
/// use sandbox_security::{AuditEvent, AuditLog};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("audit.jsonl");
/// let log = AuditLog::open(&path)?;
/// log.append(AuditEvent::new("alice", "create").sandbox("calc"))?;
/// drop(log);
/// assert_eq!(AuditLog::verify(&path)?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    /// The file's length after the last entry this log read or wrote.
    len: u64,
    next_seq: u64,
    last_hash: String,
    /// An append failed part way: the file may end in a partial line.
    failed: bool,
}

/// Holds the file's exclusive advisory lock until dropped (through a
/// duplicate of its descriptor: the lock belongs to the open file, which
/// both share).
struct FileLock(File);

impl FileLock {
    fn take(file: &File, path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let dup = file.try_clone().map_err(io)?;
        rustix::fs::flock(&dup, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(e.into()))?;
        Ok(FileLock(dup))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

impl AuditLog {
    /// Opens the log at `path`, creating it if missing. An existing file's
    /// chain is verified first; a broken one is refused with
    /// [`Error::AuditBroken`] naming the line.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let text = {
            let _lock = FileLock::take(&file, &path)?;
            let mut text = String::new();
            file.read_to_string(&mut text).map_err(io)?;
            text
        };
        let entries = parse_chain(&path, &text)?;
        let (next_seq, last_hash) = entries.last().map_or((0, GENESIS_HASH.to_owned()), |e| {
            (e.seq + 1, e.hash.clone())
        });
        tracing::debug!(path = %path.display(), entries = entries.len(), "opened audit log");
        Ok(AuditLog {
            path,
            state: Mutex::new(State {
                file,
                len: text.len() as u64,
                next_seq,
                last_hash,
                failed: false,
            }),
        })
    }

    /// Appends `event`, chained to the newest entry of the file (another
    /// writer's, if one appended since), and returns the entry written.
    /// Entries other writers added are checked first; a broken or truncated
    /// file is refused with [`Error::AuditBroken`]. After a failed write
    /// every later append is refused: reopen the log to find out whether the
    /// file is still whole.
    pub fn append(&self, event: AuditEvent) -> Result<AuditEntry> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if state.failed {
            return Err(Error::AuditBroken {
                path: self.path.clone(),
                line: usize::try_from(state.next_seq)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
                reason: "an earlier append failed part way".to_owned(),
            });
        }
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let _lock = FileLock::take(&state.file, &self.path)?;
        self.catch_up(state)?;
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut entry = AuditEntry {
            seq: state.next_seq,
            time,
            actor: event.actor,
            action: event.action,
            sandbox: event.sandbox,
            detail: event.detail,
            prev_hash: state.last_hash.clone(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        let mut line = serde_json::to_vec(&entry).map_err(|e| io(e.into()))?;
        line.push(b'\n');
        // One write per line, under the lock: entries never interleave.
        if let Err(e) = state.file.write_all(&line) {
            state.failed = true;
            return Err(io(e));
        }
        state.len += line.len() as u64;
        state.next_seq += 1;
        state.last_hash.clone_from(&entry.hash);
        tracing::debug!(seq = entry.seq, actor = %entry.actor, action = %entry.action,
            sandbox = ?entry.sandbox, "audit entry appended");
        Ok(entry)
    }

    /// Reads and checks what other writers appended since this log's last
    /// read or write (the file lock is held).
    fn catch_up(&self, state: &mut State) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let len = state.file.metadata().map_err(io)?.len();
        if len == state.len {
            return Ok(());
        }
        let line = usize::try_from(state.next_seq)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        if len < state.len {
            return Err(Error::AuditBroken {
                path: self.path.clone(),
                line,
                reason: format!(
                    "the file shrank from {} to {len} bytes while open",
                    state.len
                ),
            });
        }
        let mut tail = Vec::new();
        (&state.file).seek(SeekFrom::Start(state.len)).map_err(io)?;
        (&state.file).read_to_end(&mut tail).map_err(io)?;
        let tail = String::from_utf8(tail).map_err(|_| Error::AuditBroken {
            path: self.path.clone(),
            line,
            reason: "not UTF-8 text".to_owned(),
        })?;
        let entries = parse_chain_from(&self.path, &tail, state.next_seq, &state.last_hash)?;
        if let Some(last) = entries.last() {
            state.next_seq = last.seq + 1;
            state.last_hash.clone_from(&last.hash);
        }
        state.len += tail.len() as u64;
        Ok(())
    }

    /// Flushes appended entries to disk (`fsync`).
    pub fn sync(&self) -> Result<()> {
        let state = self.state.lock();
        state.file.sync_data().map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The number of entries and the hash of the last one ([`GENESIS_HASH`]
    /// for an empty log), as of this log's last read or write. Keep it
    /// elsewhere to detect truncation later.
    pub fn head(&self) -> (u64, String) {
        let state = self.state.lock();
        (state.next_seq, state.last_hash.clone())
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Verifies the chain of the log at `path` and returns its number of entries.
    pub fn verify(path: impl AsRef<Path>) -> Result<usize> {
        Ok(Self::entries(path)?.len())
    }

    /// Reads and verifies the log at `path`.
    pub fn entries(path: impl AsRef<Path>) -> Result<Vec<AuditEntry>> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        parse_chain(path, &text)
    }
}

fn parse_chain(path: &Path, text: &str) -> Result<Vec<AuditEntry>> {
    parse_chain_from(path, text, 0, GENESIS_HASH)
}

/// Parses `text`, whose first line must be entry `first_seq` chained to
/// `prev_hash`.
fn parse_chain_from(
    path: &Path,
    text: &str,
    first_seq: u64,
    prev_hash: &str,
) -> Result<Vec<AuditEntry>> {
    let offset = usize::try_from(first_seq).unwrap_or(usize::MAX);
    // `line` counts from 1 within `text`; reported within the file.
    let broken = |line: usize, reason: String| Error::AuditBroken {
        path: path.to_owned(),
        line: offset.saturating_add(line),
        reason,
    };
    let body = match text.strip_suffix('\n') {
        Some(body) => body,
        None if text.is_empty() => return Ok(Vec::new()),
        None => {
            let line = text.lines().count();
            return Err(broken(
                line,
                "the last line is incomplete (no newline)".to_owned(),
            ));
        }
    };
    if body.is_empty() {
        return Err(broken(1, "the line is empty".to_owned()));
    }
    let mut entries: Vec<AuditEntry> = Vec::new();
    for (index, line) in body.split('\n').enumerate() {
        let number = index + 1;
        let entry: AuditEntry = serde_json::from_str(line)
            .map_err(|e| broken(number, format!("not an audit entry ({e})")))?;
        let expected_prev = entries.last().map_or(prev_hash, |e| e.hash.as_str());
        let expected_seq = first_seq.saturating_add(index as u64);
        if entry.seq != expected_seq {
            return Err(broken(
                number,
                format!(
                    "sequence number {} where {expected_seq} was expected",
                    entry.seq
                ),
            ));
        }
        if entry.prev_hash != expected_prev {
            return Err(broken(
                number,
                "its prev_hash does not match the previous entry's hash".to_owned(),
            ));
        }
        if entry.compute_hash() != entry.hash {
            return Err(broken(
                number,
                "its hash does not match its content".to_owned(),
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}
