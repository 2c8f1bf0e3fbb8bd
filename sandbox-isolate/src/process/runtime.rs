//! The host side of a running worker: [`ProcessRuntime`], the [`Runtime`]
//! the process backend hands out — it starts the worker's reader and
//! output threads and turns each operation into a request.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use parking_lot::Mutex;

use super::conn::{self, Conn};
use super::handle::Worker;
use super::watchdog;
use super::wire::{Answer, Op, Step};
use crate::error::{Error, Result};
use crate::jail::{LayerReport, UidSlot};
use crate::runtime::{
    CrashHandler, IsolationKind, ModuleMeta, Runtime, RuntimeInfo, SavedState, SwapOutcome,
    SwapStep,
};

/// What the host knows the worker holds: modules' current versions and
/// every version loaded (for [`Runtime::info`]).
#[derive(Default)]
struct Mirror {
    modules: BTreeMap<String, u32>,
    loaded: BTreeSet<(String, u32)>,
}

/// The pieces [`ProcessRuntime::start`] needs.
pub(crate) struct Start {
    pub(crate) sandbox: String,
    pub(crate) work_dir: PathBuf,
    /// The worker's artifact folder (see `grants_dir`).
    pub(crate) grants: PathBuf,
    /// Whether the worker may use the network.
    pub(crate) network: bool,
    pub(crate) on_crash: Option<CrashHandler>,
    pub(crate) output_limit: Option<u64>,
    pub(crate) disk_limit: Option<u64>,
    pub(crate) report: LayerReport,
}

/// A sandbox runtime in a jailed worker process.
pub(crate) struct ProcessRuntime {
    conn: Arc<Conn>,
    reader: Option<JoinHandle<()>>,
    reader_id: Option<ThreadId>,
    output: Option<JoinHandle<()>>,
    work_dir: PathBuf,
    grants: PathBuf,
    network: bool,
    report: LayerReport,
    mirror: Mutex<Mirror>,
    _slot: Option<UidSlot>,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("sandbox", &self.conn.sandbox)
            .field("pid", &self.conn.pid)
            .field("layers", &self.report)
            .finish()
    }
}

impl ProcessRuntime {
    /// Takes over a configured worker: starts the reader and output threads.
    pub(crate) fn start(mut worker: Worker, start: Start) -> Result<Self> {
        let Some(mut child) = worker.child.take() else {
            return Err(Error::Worker {
                message: "the worker was already reaped".into(),
            });
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let stream = worker.stream.try_clone().map_err(|e| Error::Worker {
            message: format!("cannot share its socket: {e}"),
        })?;
        // A worker that stops reading its channel must not block callers forever.
        let _ = worker
            .stream
            .set_write_timeout(Some(Duration::from_secs(30)));
        let conn = Arc::new(Conn::new(
            start.sandbox.clone(),
            stream,
            worker.pid,
            worker.pidfd.take(),
            Some(child.killer()),
        ));
        let read_stream = worker.stream.try_clone().map_err(|e| Error::Worker {
            message: format!("cannot share its socket: {e}"),
        })?;
        let slot = worker.slot.take();
        drop(worker);

        let output = {
            let conn = Arc::clone(&conn);
            let (limit, disk) = (
                start.output_limit,
                start.disk_limit.map(|d| (start.work_dir.clone(), d)),
            );
            std::thread::Builder::new()
                .name("sandbox-output".into())
                .spawn(move || watchdog::drain(&conn, stdout, stderr, limit, disk))
                .map_err(|e| Error::Worker {
                    message: format!("cannot start its output thread: {e}"),
                })?
        };
        let reader = {
            let conn = Arc::clone(&conn);
            let on_crash = start.on_crash.clone();
            std::thread::Builder::new()
                .name("sandbox-reader".into())
                .spawn(move || conn::read_loop(&conn, read_stream, child, on_crash))
                .map_err(|e| Error::Worker {
                    message: format!("cannot start its reader thread: {e}"),
                })?
        };
        Ok(Self {
            conn,
            reader_id: Some(reader.thread().id()),
            reader: Some(reader),
            output: Some(output),
            work_dir: start.work_dir,
            grants: start.grants,
            network: start.network,
            report: start.report,
            mirror: Mutex::new(Mirror::default()),
            _slot: slot,
        })
    }
}

impl ProcessRuntime {
    /// Makes `artifact` readable by this worker: a hard link (a copy
    /// across file systems) in its own artifact folder, which its landlock
    /// rules allow and which nothing but this host writes. The worker maps
    /// the file through the descriptor the host opens on that name, so it
    /// never needs the build cache, which holds every sandbox's artifacts.
    fn grant(&self, artifact: &Path, version: u32) -> Result<PathBuf> {
        let name = artifact.file_name().unwrap_or_default().to_string_lossy();
        let granted = self.grants.join(format!("v{version}-{name}"));
        let _ = std::fs::remove_file(&granted);
        let io = |source| Error::Io {
            action: "making the artifact readable by the worker",
            path: granted.clone(),
            source,
        };
        if std::fs::hard_link(artifact, &granted).is_err() {
            std::fs::copy(artifact, &granted).map_err(io)?;
        }
        Ok(granted)
    }
}

impl Drop for ProcessRuntime {
    fn drop(&mut self) {
        self.conn.intentional.store(true, Ordering::Release);
        self.conn.kill();
        let on_reader = self.reader_id == Some(std::thread::current().id());
        if let Some(reader) = self.reader.take() {
            if !on_reader {
                let _ = reader.join();
            }
        }
        if let Some(output) = self.output.take() {
            if !on_reader {
                let _ = output.join();
            }
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
        let _ = std::fs::remove_dir_all(&self.grants);
    }
}

impl Runtime for ProcessRuntime {
    fn load(&self, artifact: &Path, version: u32) -> Result<ModuleMeta> {
        let _span = tracing::debug_span!("load", sandbox = %self.conn.sandbox, version, artifact = %artifact.display())
            .entered();
        let granted = self.grant(artifact, version)?;
        let file = std::fs::File::open(&granted).map_err(|source| Error::Io {
            action: "opening the artifact",
            path: granted.clone(),
            source,
        })?;
        let op = Op::Load {
            version,
            artifact: artifact.to_owned(),
        };
        match self.conn.request(op, Some(file.as_fd()), None, "")? {
            Answer::Meta(meta) => {
                self.mirror
                    .lock()
                    .loaded
                    .insert((meta.name.clone(), version));
                Ok(meta)
            }
            other => Err(unexpected(&other)),
        }
    }

    fn swap(&self, steps: &[SwapStep]) -> Result<Vec<SwapOutcome>> {
        let _span =
            tracing::debug_span!("swap", sandbox = %self.conn.sandbox, modules = steps.len())
                .entered();
        let swap = self.conn.migrations.begin(steps);
        let wire_steps = steps
            .iter()
            .map(|s| Step {
                module: s.module.clone(),
                version: s.version,
                carry_state: s.carry_state,
                initial_state: s.initial_state.clone(),
                migration: s.migration.is_some(),
                health_check: s.health_check.clone(),
            })
            .collect();
        let result = self.conn.request(
            Op::Swap {
                swap,
                steps: wire_steps,
            },
            None,
            None,
            "",
        );
        self.conn.migrations.end(swap);
        match result.map_err(|e| self.conn.stuck(e))? {
            Answer::Swapped(outcomes) => {
                let mut mirror = self.mirror.lock();
                for o in &outcomes {
                    mirror.modules.insert(o.module.clone(), o.to);
                }
                Ok(outcomes)
            }
            other => Err(unexpected(&other)),
        }
    }

    fn call(&self, module: &str, request: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>> {
        if let Some(reply) = self.conn.call_on_lane(module, request, timeout) {
            return match reply? {
                Answer::Bytes(bytes) => Ok(bytes),
                other => Err(unexpected(&other)),
            };
        }
        let op = Op::Call {
            module: module.to_owned(),
            request: request.to_vec(),
        };
        match self.conn.request(op, None, timeout, module)? {
            Answer::Bytes(bytes) => Ok(bytes),
            other => Err(unexpected(&other)),
        }
    }

    fn checkpoint(&self) -> Result<Vec<(String, SavedState)>> {
        match self
            .conn
            .request(Op::Checkpoint, None, None, "")
            .map_err(|e| self.conn.stuck(e))?
        {
            Answer::States(states) => Ok(states),
            other => Err(unexpected(&other)),
        }
    }

    fn remove(&self, module: &str) -> Result<()> {
        self.conn.request(
            Op::Remove {
                module: module.to_owned(),
            },
            None,
            None,
            module,
        )?;
        self.mirror.lock().modules.remove(module);
        Ok(())
    }

    fn forget(&self, module: &str, version: u32) -> Result<()> {
        self.conn.request(
            Op::Forget {
                module: module.to_owned(),
                version,
            },
            None,
            None,
            module,
        )?;
        self.mirror
            .lock()
            .loaded
            .remove(&(module.to_owned(), version));
        Ok(())
    }

    fn needs_replacing(&self) -> Option<String> {
        self.conn.abandoned.lock().clone()
    }

    fn info(&self) -> RuntimeInfo {
        let mirror = self.mirror.lock();
        RuntimeInfo {
            isolation: IsolationKind::PROCESS,
            pid: self.conn.pid,
            modules: mirror
                .modules
                .iter()
                .map(|(m, v)| (m.clone(), *v))
                .collect(),
            loaded_versions: mirror.loaded.len(),
            jail: Some(crate::jail::AppliedLayers::of_worker(
                crate::jail::probe(),
                self.network,
                self._slot.is_some(),
                &self.report,
            )),
        }
    }
}

fn unexpected(answer: &Answer) -> Error {
    let what = match answer {
        Answer::Meta(_) => "module metadata",
        Answer::Swapped(_) => "swap outcomes",
        Answer::Bytes(_) => "bytes",
        Answer::States(_) => "states",
        Answer::Done => "done",
    };
    Error::Worker {
        message: format!("it answered with {what} where something else was asked"),
    }
}
