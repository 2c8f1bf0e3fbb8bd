//! Serializing builds into one shared target directory, and remembering who
//! built which output file.
//!
//! Cargo names a cdylib `lib<name>.so` without a hash suffix, and it derives
//! the hashes of a workspace member's other outputs and fingerprints from
//! the member's path *relative to its workspace*. So two sandbox trees with
//! same-named packages overwrite each other's outputs in a shared target
//! directory, and because freshness is judged by modification times, cargo
//! may then report the other tree's files as fresh. The compiler therefore
//! holds an exclusive `flock` on `<target>/sandbox-compiler/build.lock` for
//! a whole build, and records in `owners.json` which manifest last produced
//! each output file of a `path` package; a package whose fresh outputs were
//! last produced by another manifest is cleaned (`cargo clean -p`) and
//! rebuilt.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::{Error, Result};

/// An exclusive lock on a target directory; released on drop (closing the
/// file releases the `flock`).
#[derive(Debug)]
pub(crate) struct TargetLock {
    _file: File,
    state_dir: PathBuf,
}

impl TargetLock {
    /// Blocks until this thread holds the target directory whose compiler
    /// state lives in `state_dir`.
    pub fn acquire(state_dir: &Path) -> Result<Self> {
        let (path, file) = open(state_dir)?;
        loop {
            match flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::INTR => continue,
                Err(e) => return Err(Error::io(&path, e.into())),
            }
        }
        Ok(Self {
            _file: file,
            state_dir: state_dir.to_owned(),
        })
    }

    /// The lock if nobody holds it now; `None` when someone does.
    pub fn try_acquire(state_dir: &Path) -> Result<Option<Self>> {
        let (path, file) = open(state_dir)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Self {
                _file: file,
                state_dir: state_dir.to_owned(),
            })),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                Ok(None)
            }
            Err(e) => Err(Error::io(&path, e.into())),
        }
    }

    /// Which manifest produced each library file, by the file's path.
    pub fn owners(&self) -> Owners {
        let path = self.owners_path();
        let map = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Owners { map }
    }

    /// Persists `owners` (atomically: write a temp file, rename it).
    pub fn save_owners(&self, owners: &Owners) -> Result<()> {
        let path = self.owners_path();
        let json =
            serde_json::to_vec_pretty(&owners.map).map_err(|e| Error::io(&path, e.into()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.state_dir)
            .map_err(|e| Error::io(&self.state_dir, e))?;
        std::io::Write::write_all(&mut tmp, &json).map_err(|e| Error::io(tmp.path(), e))?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(())
    }

    fn owners_path(&self) -> PathBuf {
        self.state_dir.join("owners.json")
    }
}

/// The lock file of the target directory whose state is in `state_dir`.
fn open(state_dir: &Path) -> Result<(PathBuf, File)> {
    let path = state_dir.join("build.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    Ok((path, file))
}

/// Library file (in the target directory) → manifest that last produced it.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    map: BTreeMap<PathBuf, PathBuf>,
}

impl Owners {
    /// The manifest that last produced `file`, if known.
    pub fn get(&self, file: &Path) -> Option<&Path> {
        self.map.get(file).map(PathBuf::as_path)
    }

    /// Records that `manifest` produced `file`.
    pub fn set(&mut self, file: PathBuf, manifest: PathBuf) {
        self.map.insert(file, manifest);
    }
}
