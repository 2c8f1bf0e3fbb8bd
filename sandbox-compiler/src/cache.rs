//! The persistent content-hash cache.
//!
//! Layout of the cache directory:
//!
//! ```text
//! <cache_dir>/<key>/manifest.json          what the build produced (see `Manifest`)
//! <cache_dir>/<key>/<sha256[..16]>-lib<name>.so   the artifact copies
//! <cache_dir>/<key>/users/<id>             one file per source directory using the entry
//! <cache_dir>/.tmp-*                        entries being written (renamed into place)
//! ```
//!
//! An entry is written to a temp directory and renamed into place, so a
//! reader never sees half an entry. `forget(source)` removes the source's
//! user file from every entry and deletes entries nobody uses any more.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Artifact, Diagnostic, Error, Profile, Result};

const MANIFEST: &str = "manifest.json";
const USERS: &str = "users";
const FORMAT: u32 = 1;

/// Left-over temp entries older than this are swept when a compiler starts.
const STALE_TEMP: Duration = Duration::from_secs(3600);

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    key: String,
    source_hash: String,
    profile: Profile,
    artifacts: Vec<StoredArtifact>,
    /// File names are relative to the source root when inside it, so the
    /// entry can serve any copy of the tree.
    warnings: Vec<Diagnostic>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredArtifact {
    package: String,
    name: String,
    file: String,
    sha256: String,
    size: u64,
}

/// A built library ready to be stored: contents already read and validated.
#[derive(Debug)]
pub(crate) struct NewArtifact {
    pub package: String,
    pub name: String,
    pub file_name: String,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// What a cache hit returns.
#[derive(Debug)]
pub(crate) struct Hit {
    pub artifacts: Vec<Artifact>,
    pub warnings: Vec<Diagnostic>,
    pub source_hash: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Removes temp entries a crashed process left behind.
    pub fn sweep_stale_temps(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with(".tmp-") || name.starts_with(".trash-")) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TEMP);
            if old {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Looks `key` up; a hit also records `source` as a user of the entry.
    /// A damaged entry is a miss.
    pub fn lookup(&self, key: &str, source: &Path) -> Option<Hit> {
        let entry = self.dir.join(key);
        let bytes = std::fs::read(entry.join(MANIFEST)).ok()?;
        let manifest: Manifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(entry = %entry.display(), %error, "ignoring unreadable cache manifest");
                return None;
            }
        };
        if manifest.format != FORMAT || manifest.key != key {
            return None;
        }
        let mut artifacts = Vec::with_capacity(manifest.artifacts.len());
        for stored in &manifest.artifacts {
            let path = entry.join(&stored.file);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.len() == stored.size => {}
                _ => {
                    tracing::warn!(entry = %entry.display(), file = %stored.file, "cache entry lost an artifact; rebuilding");
                    return None;
                }
            }
            let artifact = Artifact {
                package: stored.package.clone(),
                name: stored.name.clone(),
                path,
                sha256: stored.sha256.clone(),
                source_hash: manifest.source_hash.clone(),
            };
            // Only the host writes the cache: a changed file means
            // something else did. Never hand it out; rebuild instead.
            if let Err(error) = artifact.verify() {
                tracing::warn!(entry = %entry.display(), %error, "cache entry was tampered with; removing it and rebuilding");
                self.remove_entry(&entry);
                return None;
            }
            artifacts.push(artifact);
        }
        if let Err(error) = add_user(&entry, source) {
            tracing::debug!(entry = %entry.display(), %error, "could not record cache user");
        }
        let warnings = manifest
            .warnings
            .into_iter()
            .map(|d| absolutize(d, source))
            .collect();
        Some(Hit {
            artifacts,
            warnings,
            source_hash: manifest.source_hash,
        })
    }

    /// Stores a build's results under `key` and returns the artifacts as
    /// stored. When the key is already stored, the existing entry wins.
    pub fn store(
        &self,
        key: &str,
        source: &Path,
        source_hash: &str,
        profile: Profile,
        artifacts: &[NewArtifact],
        warnings: &[Diagnostic],
    ) -> Result<Vec<Artifact>> {
        let entry = self.dir.join(key);
        if let Some(hit) = self.lookup(key, source) {
            return Ok(hit.artifacts);
        }
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        let mut manifest = Manifest {
            format: FORMAT,
            key: key.to_owned(),
            source_hash: source_hash.to_owned(),
            profile,
            artifacts: Vec::new(),
            warnings: warnings
                .iter()
                .cloned()
                .map(|d| relativize(d, source))
                .collect(),
        };
        for artifact in artifacts {
            let file = format!("{}-{}", &artifact.sha256[..16], artifact.file_name);
            let path = tmp.path().join(&file);
            std::fs::write(&path, &artifact.bytes).map_err(|e| Error::io(&path, e))?;
            manifest.artifacts.push(StoredArtifact {
                package: artifact.package.clone(),
                name: artifact.name.clone(),
                file,
                sha256: artifact.sha256.clone(),
                size: artifact.bytes.len() as u64,
            });
        }
        add_user(tmp.path(), source).map_err(|e| Error::io(tmp.path().join(USERS), e))?;
        let manifest_path = tmp.path().join(MANIFEST);
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::io(&manifest_path, e.into()))?;
        std::fs::write(&manifest_path, json).map_err(|e| Error::io(&manifest_path, e))?;
        match std::fs::rename(tmp.path(), &entry) {
            Ok(()) => {
                let _ = tmp.keep();
            }
            Err(error) => {
                // Someone stored the same key meanwhile, or a damaged entry
                // is in the way: replace a damaged one, keep a good one.
                if self.lookup(key, source).is_none() {
                    self.remove_entry(&entry);
                    std::fs::rename(tmp.path(), &entry).map_err(|_| Error::io(&entry, error))?;
                    let _ = tmp.keep();
                }
            }
        }
        self.lookup(key, source)
            .map(|hit| hit.artifacts)
            .ok_or_else(|| {
                Error::io(
                    &entry,
                    std::io::Error::other("the cache entry vanished right after it was written"),
                )
            })
    }

    /// Removes `source` from every entry's users and deletes entries left
    /// without users.
    pub fn forget(&self, source: &Path) -> Result<()> {
        let id = user_id(source);
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let users = path.join(USERS);
            let user = users.join(&id);
            match std::fs::remove_file(&user) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&user, e)),
            }
            let unused = std::fs::read_dir(&users)
                .map(|mut d| d.next().is_none())
                .unwrap_or(true);
            if unused {
                tracing::debug!(entry = %path.display(), "removing unused cache entry");
                self.remove_entry(&path);
            }
        }
        Ok(())
    }

    /// Moves an entry out of the way (so readers never see half of it) and
    /// deletes it.
    fn remove_entry(&self, entry: &Path) {
        match tempfile::Builder::new()
            .prefix(".trash-")
            .tempdir_in(&self.dir)
        {
            Ok(trash) => {
                if std::fs::rename(entry, trash.path().join("entry")).is_err() {
                    let _ = std::fs::remove_dir_all(entry);
                }
                // `trash` is deleted with everything in it when dropped.
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(entry);
            }
        }
    }
}

/// A file name standing for a source directory.
fn user_id(source: &Path) -> String {
    hex::encode(Sha256::digest(source.as_os_str().as_encoded_bytes()))
}

fn add_user(entry: &Path, source: &Path) -> std::io::Result<()> {
    let users = entry.join(USERS);
    let user = users.join(user_id(source));
    if user.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&users)?;
    std::fs::write(user, source.as_os_str().as_encoded_bytes())
}

fn relativize(mut d: Diagnostic, source: &Path) -> Diagnostic {
    if let Some(file) = &d.file {
        if let Ok(rel) = file.strip_prefix(source) {
            d.file = Some(rel.to_owned());
        }
    }
    d
}

fn absolutize(mut d: Diagnostic, source: &Path) -> Diagnostic {
    if let Some(file) = &d.file {
        if file.is_relative() {
            d.file = Some(source.join(file));
        }
    }
    d
}
