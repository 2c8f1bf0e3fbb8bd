//! The service's durable store: one redb file, `serve.redb`, in the data
//! dir.
//!
//! Tables:
//!
//! - `specs`: sandbox id → the create request that made it (JSON, its
//!   source made absolute) — what is created again at start;
//! - `checkpoints`: (sandbox, module) → (schema, sequence, state bytes) —
//!   the last checkpoint of each module, all modules of a sandbox replaced
//!   in one transaction, `sequence` counting checkpoints per sandbox;
//! - `history`: (sandbox, module) → the module's version list (JSON, as
//!   `GET …/versions` answers) when it last changed: a record of what ran,
//!   kept across restarts (the versions themselves start again at 1);
//! - `meta`: `format` (the layout's version) and `audit_head` (the last
//!   sequence number and hash of the audit log seen, JSON).
//!
//! Every write commits with redb's default durability (synced before the
//! commit returns), so what [`Store::store`] returned for survives a kill.
//! A checkpoint equal to the last one this store wrote for the sandbox is
//! not written again (idle sandboxes cost no disk writes); the store keeps
//! a copy of each sandbox's last written states to tell.
//! A file that is not a redb database, or one of another layout, is
//! refused when opened and never written.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use sandbox_core::isolate::SavedState;
use sandbox_core::{CheckpointStore, SandboxId};

use crate::Error;

const SPECS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("specs");
const CHECKPOINTS: TableDefinition<'_, (&str, &str), (u32, u64, &[u8])> =
    TableDefinition::new("checkpoints");
const HISTORY: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("history");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

/// The layout version written in `meta.format`.
const FORMAT: &[u8] = b"1";

/// The name of the store's file in the data dir.
pub const FILE_NAME: &str = "serve.redb";

/// The last checkpoint of one sandbox.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Module name → its state.
    pub states: BTreeMap<String, SavedState>,
    /// How many checkpoints the sandbox had stored (0: none).
    pub sequence: u64,
}

/// The redb file of a data dir.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    /// The states last written for each sandbox (by this process).
    written: Mutex<HashMap<String, Vec<(String, SavedState)>>>,
}

impl Store {
    /// Opens (or creates) `<data_dir>/serve.redb`. A file that exists but
    /// cannot be read as this service's store is an error naming it, and
    /// is left as it is.
    pub fn open(data_dir: &Path) -> Result<Self, Error> {
        let path = data_dir.join(FILE_NAME);
        let corrupt = |e: &dyn std::fmt::Display| Error::Store {
            path: path.clone(),
            message: e.to_string(),
        };
        let exists = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => true,
            Ok(_) => return Err(corrupt(&"it is not a regular file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(corrupt(&e)),
        };
        let opened = if exists {
            // `open` never initializes a file: one that is not a database
            // (or is damaged past repair) is an error, untouched.
            Database::open(&path)
        } else {
            Database::create(&path)
        };
        let db = match opened {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::InUse { path: path.clone() })
            }
            Err(e) => return Err(corrupt(&e)),
        };
        let store = Self {
            db,
            path,
            written: Mutex::new(HashMap::new()),
        };
        store.check_format(exists)?;
        Ok(store)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Store {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Creates the tables of a new file; checks an existing file's layout.
    fn check_format(&self, existed: bool) -> Result<(), Error> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let format = meta
                .get("format")
                .map_err(|e| self.err(e))?
                .map(|v| v.value().to_vec());
            match format {
                Some(f) if f == FORMAT => {}
                Some(f) => {
                    return Err(self.err(format_args!(
                        "it holds layout version {}, this service reads version {}; use the service that wrote it",
                        String::from_utf8_lossy(&f),
                        String::from_utf8_lossy(FORMAT)
                    )))
                }
                None if existed && meta.len().map_err(|e| self.err(e))? > 0 => {
                    return Err(self.err("it has no layout version; it was not written by `sandbox serve`"))
                }
                None => {
                    meta.insert("format", FORMAT).map_err(|e| self.err(e))?;
                }
            }
            tx.open_table(SPECS).map_err(|e| self.err(e))?;
            tx.open_table(CHECKPOINTS).map_err(|e| self.err(e))?;
            tx.open_table(HISTORY).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every stored spec: id → create request (JSON).
    pub fn specs(&self) -> Result<BTreeMap<String, Vec<u8>>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(SPECS).map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.insert(k.value().to_owned(), v.value().to_vec());
        }
        Ok(out)
    }

    /// Keeps `spec` (JSON) for sandbox `id`.
    pub fn put_spec(&self, id: &str, spec: &[u8]) -> Result<(), Error> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.open_table(SPECS)
            .map_err(|e| self.err(e))?
            .insert(id, spec)
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Forgets everything of sandbox `id` (spec, checkpoints, history).
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        self.written.lock().remove(id);
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            tx.open_table(SPECS)
                .map_err(|e| self.err(e))?
                .remove(id)
                .map_err(|e| self.err(e))?;
            tx.open_table(CHECKPOINTS)
                .map_err(|e| self.err(e))?
                .retain(|(sandbox, _), _| sandbox != id)
                .map_err(|e| self.err(e))?;
            tx.open_table(HISTORY)
                .map_err(|e| self.err(e))?
                .retain(|(sandbox, _), _| sandbox != id)
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The last checkpoint of sandbox `id`.
    pub fn checkpoint(&self, id: &str) -> Result<Checkpoint, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(CHECKPOINTS).map_err(|e| self.err(e))?;
        let mut out = Checkpoint::default();
        for row in table.range((id, "")..).map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (sandbox, module) = k.value();
            if sandbox != id {
                break;
            }
            let (schema, sequence, bytes) = v.value();
            out.sequence = out.sequence.max(sequence);
            out.states.insert(
                module.to_owned(),
                SavedState {
                    schema,
                    bytes: bytes.to_vec(),
                },
            );
        }
        Ok(out)
    }

    /// Keeps the version list (JSON) of `module` of sandbox `id`, if the
    /// sandbox is still stored.
    pub fn put_history(&self, id: &str, module: &str, versions: &[u8]) -> Result<(), Error> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let specs = tx.open_table(SPECS).map_err(|e| self.err(e))?;
            if specs.get(id).map_err(|e| self.err(e))?.is_none() {
                return Ok(());
            }
            tx.open_table(HISTORY)
                .map_err(|e| self.err(e))?
                .insert((id, module), versions)
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The stored version lists of sandbox `id`: module → JSON.
    pub fn history(&self, id: &str) -> Result<BTreeMap<String, Vec<u8>>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(HISTORY).map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for row in table.range((id, "")..).map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (sandbox, module) = k.value();
            if sandbox != id {
                break;
            }
            out.insert(module.to_owned(), v.value().to_vec());
        }
        Ok(out)
    }

    /// A value of the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(META).map_err(|e| self.err(e))?;
        let value = table.get(key).map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Sets a value of the `meta` table.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.open_table(META)
            .map_err(|e| self.err(e))?
            .insert(key, value)
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn store_checkpoint(&self, id: &str, states: &[(String, SavedState)]) -> Result<(), Error> {
        // Calls for one sandbox come one at a time (the manager's save
        // lock), so nothing is written for it between this read and the
        // commit below.
        if self
            .written
            .lock()
            .get(id)
            .is_some_and(|w| w.as_slice() == states)
        {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            // A sandbox deleted meanwhile (a checkpoint racing its
            // removal) is not brought back.
            let specs = tx.open_table(SPECS).map_err(|e| self.err(e))?;
            if specs.get(id).map_err(|e| self.err(e))?.is_none() {
                return Ok(());
            }
            let mut table = tx.open_table(CHECKPOINTS).map_err(|e| self.err(e))?;
            let mut sequence = 0;
            for row in table.range((id, "")..).map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                if k.value().0 != id {
                    break;
                }
                sequence = sequence.max(v.value().1);
            }
            table
                .retain(|(sandbox, _), _| sandbox != id)
                .map_err(|e| self.err(e))?;
            for (module, state) in states {
                table
                    .insert(
                        (id, module.as_str()),
                        (state.schema, sequence + 1, state.bytes.as_slice()),
                    )
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.written.lock().insert(id.to_owned(), states.to_vec());
        Ok(())
    }
}

impl CheckpointStore for Store {
    fn store(&self, sandbox: &SandboxId, states: &[(String, SavedState)]) -> std::io::Result<()> {
        self.store_checkpoint(sandbox.as_str(), states)
            .map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(schema: u32, bytes: &[u8]) -> SavedState {
        SavedState {
            schema,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn checkpoints_replace_the_last_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = SandboxId::new("a").unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_spec("a", b"{}").unwrap();
            store.put_spec("ab", b"{}").unwrap();
            store
                .store(
                    &id,
                    &[("m".into(), state(1, b"x")), ("n".into(), state(2, b"y"))],
                )
                .unwrap();
            store.store(&id, &[("m".into(), state(2, b"z"))]).unwrap();
            store.store(&id, &[("m".into(), state(2, b"z"))]).unwrap();
            store
                .store(
                    &SandboxId::new("ab").unwrap(),
                    &[("m".into(), state(1, b"q"))],
                )
                .unwrap();
            // Not stored: a sandbox that is gone is not brought back.
            store
                .store(
                    &SandboxId::new("gone").unwrap(),
                    &[("m".into(), state(1, b"q"))],
                )
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let c = store.checkpoint("a").unwrap();
        assert_eq!(c.sequence, 2);
        // (The same states again were not written: the sequence says so.)
        assert_eq!(c.states.len(), 1, "{c:?}");
        assert_eq!(c.states["m"], state(2, b"z"));
        assert_eq!(store.checkpoint("ab").unwrap().states["m"], state(1, b"q"));
        assert!(store.checkpoint("gone").unwrap().states.is_empty());
        store.remove("a").unwrap();
        assert!(store.checkpoint("a").unwrap().states.is_empty());
        assert_eq!(store.specs().unwrap().keys().collect::<Vec<_>>(), ["ab"]);
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let junk = b"this is not a database, and it must stay as it is".repeat(100);
        std::fs::write(&path, &junk).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains(FILE_NAME), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), junk);
    }
}
