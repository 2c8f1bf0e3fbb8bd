//! The in-process backend: modules are libraries loaded into the host.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::sabi_types::RRef;
use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use parking_lot::{Mutex, MutexGuard, RwLock};
use sandbox_plugin::ffi::{
    ErrorKind, FfiError, HostApi, HostApi_TO, HostRef, InstanceBox, LogLevel, ModuleInfo,
    PluginModuleRef,
};

use crate::error::{Error, Result, SwapStage};
use crate::runtime::{
    CallDone, IsolationKind, Isolator, LaunchSpec, ModuleMeta, PluginErrorKind, Runtime,
    RuntimeInfo, SavedState, SwapOutcome, SwapStep,
};

/// Runs modules inside the host process.
///
/// A call costs a function-pointer call plus a mutex; a panic in a plugin
/// becomes an error; an abort or a segfault takes the host down, and limits
/// are measured, not enforced. Use [`IsolationKind::PROCESS`] for code you do
/// not trust.
#[derive(Debug, Default, Clone)]
pub struct InProcess {
    _private: (),
}

impl InProcess {
    /// The in-process isolator.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Isolator for InProcess {
    fn kind(&self) -> IsolationKind {
        IsolationKind::IN_PROCESS
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Runtime>> {
        create_work_dir(&spec.work_dir)?;
        Ok(Box::new(self.launch_here(spec)))
    }
}

fn create_work_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "creating the runtime folder",
        path: dir.to_owned(),
        source,
    })
}

impl InProcess {
    /// [`Isolator::launch`], with the concrete runtime, and the work folder
    /// left to the first load that copies (the worker's loads seldom do).
    pub(crate) fn launch_here(&self, spec: &LaunchSpec) -> InProcessRuntime {
        InProcessRuntime {
            inner: Arc::new(Inner {
                sandbox: spec.sandbox.as_str().into(),
                work_dir: spec.work_dir.clone(),
                lifecycle: spec.lifecycle_timeout,
                libraries: Mutex::new(HashMap::new()),
                modules: RwLock::new(BTreeMap::new()),
            }),
        }
    }
}

/// The threads that run in-process calls with a timeout, so the caller can
/// stop waiting (and a call that never returns cannot hold up the caller's
/// async runtime at shutdown). Threads are reused: a call that never returns
/// keeps its thread, the others go back to wait for the next call, and a
/// thread idle for [`IDLE_EXIT`](call_threads::IDLE_EXIT) exits.
mod call_threads {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

    pub(super) const IDLE_EXIT: Duration = Duration::from_secs(10);

    pub(super) type Job = Box<dyn FnOnce() + Send>;

    /// Invariant: threads waiting for a job = `idle` + jobs queued; a
    /// caller either claims an idle thread or starts one, and a thread only
    /// exits by un-counting itself from `idle`. So no job is ever left
    /// without a thread to run it.
    struct Pool {
        jobs: Sender<Job>,
        queue: Receiver<Job>,
        idle: AtomicUsize,
    }

    fn pool() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let (jobs, queue) = crossbeam_channel::unbounded();
            Pool {
                jobs,
                queue,
                idle: AtomicUsize::new(0),
            }
        })
    }

    fn claim(idle: &AtomicUsize) -> bool {
        idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Runs `job` on a pool thread; without a thread to be had, hands the
    /// job back with the error.
    pub(super) fn run(job: Job) -> Result<(), (Job, std::io::Error)> {
        let pool = pool();
        if !claim(&pool.idle) {
            if let Err(e) = std::thread::Builder::new()
                .name("sandbox-call".into())
                .spawn(|| serve(pool))
            {
                return Err((job, e));
            }
        }
        // The queue lives as long as the process: sending cannot fail.
        let _ = pool.jobs.send(job);
        Ok(())
    }

    fn serve(pool: &'static Pool) {
        loop {
            match pool.queue.recv_timeout(IDLE_EXIT) {
                Ok(job) => {
                    job();
                    pool.idle.fetch_add(1, Ordering::AcqRel);
                }
                // Claimed by a caller whose job is on its way: wait for it.
                Err(RecvTimeoutError::Timeout) if !claim(&pool.idle) => {}
                Err(_) => return,
            }
        }
    }
}

/// Counts loads in this process; names each load's copy of its artifact.
static LOADS: AtomicU64 = AtomicU64::new(0);

/// One loaded version of a module. Never unloaded: see ARCHITECTURE.md.
struct Loaded {
    meta: ModuleMeta,
    dependencies: Arc<[String]>,
    root: PluginModuleRef,
}

struct Active {
    lib: Arc<Loaded>,
    instance: InstanceBox,
}

/// Why a module has no instance: a lifecycle entry point of its instance
/// never returned, and the instance went with the abandoned thread.
#[derive(Clone, Copy)]
struct Gone {
    stage: SwapStage,
    after: Duration,
}

impl Gone {
    fn error(self, module: &str) -> Error {
        Error::Abandoned {
            module: module.to_owned(),
            stage: self.stage,
            after: self.after,
        }
    }
}

/// What a slot holds: its instance, or why it has none.
type Held = std::result::Result<Active, Gone>;

struct Slot {
    name: String,
    /// The active version, readable without waiting for a call in flight.
    version: AtomicU32,
    active: Mutex<Held>,
}

struct Inner {
    sandbox: Arc<str>,
    work_dir: PathBuf,
    /// The deadline of each lifecycle entry point (see
    /// [`LaunchSpec::lifecycle_timeout`]).
    lifecycle: Option<Duration>,
    libraries: Mutex<HashMap<(String, u32), Arc<Loaded>>>,
    modules: RwLock<BTreeMap<String, Arc<Slot>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Only per-version copies live here, and each is unlinked right after
        // it is opened; remove the folder itself.
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

/// A sandbox runtime inside the host process.
pub(crate) struct InProcessRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for InProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessRuntime")
            .field("sandbox", &self.inner.sandbox)
            .field(
                "modules",
                &self.inner.modules.read().keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn meta_from(info: ModuleInfo) -> ModuleMeta {
    ModuleMeta {
        name: info.name.into_string(),
        version: info.version.into_string(),
        schema: info.schema,
        dependencies: info
            .dependencies
            .into_iter()
            .map(RString::into_string)
            .collect(),
        pure: info.pure,
    }
}

fn library_error(path: &Path, e: LibraryError) -> Error {
    match e {
        LibraryError::OpenError { err, .. } => Error::Load {
            path: path.to_owned(),
            message: err.to_string(),
        },
        LibraryError::GetSymbolError { .. } => Error::NotAPlugin {
            path: path.to_owned(),
            reason: "it does not export the plugin root module".to_owned(),
        },
        LibraryError::RootModule { err, .. } => Error::NotAPlugin {
            path: path.to_owned(),
            reason: format!("its root module failed to initialize: {err}"),
        },
        other => Error::Incompatible {
            path: path.to_owned(),
            details: other.to_string(),
        },
    }
}

fn plugin_error(module: &str, e: FfiError) -> Error {
    let kind = match e.kind {
        ErrorKind::BadRequest => PluginErrorKind::BadRequest,
        ErrorKind::Failed => PluginErrorKind::Failed,
        ErrorKind::State => PluginErrorKind::State,
        ErrorKind::Dependency => PluginErrorKind::Dependency,
        ErrorKind::Panic => PluginErrorKind::Panic,
    };
    Error::Plugin {
        module: module.to_owned(),
        kind,
        message: e.message.into_string(),
    }
}

fn panicked(module: &str) -> Error {
    Error::Plugin {
        module: module.to_owned(),
        kind: PluginErrorKind::Panic,
        message: "the call panicked in the host's glue".to_owned(),
    }
}

/// Runs a call into plugin code: under `catch_unwind`, with the plugin's error mapped.
fn guarded<T>(module: &str, f: impl FnOnce() -> RResult<T, FfiError>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(RResult::ROk(v)) => Ok(v),
        Ok(RResult::RErr(e)) => Err(plugin_error(module, e)),
        Err(_) => Err(panicked(module)),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `init` / `restore_state` / health check during a swap: other modules
    /// may be locked by the swap, so calls out are refused.
    Setup,
    /// A normal request.
    Handle,
}

/// The host context handed to plugin code for one call.
struct Ctx<'a> {
    /// The runtime, for calls to other modules (`None` in [`Phase::Setup`],
    /// where they are refused: lifecycle code runs on a thread of its own
    /// that must not keep the runtime alive if it never returns).
    inner: Option<&'a Inner>,
    sandbox: &'a str,
    caller: &'a str,
    dependencies: &'a [String],
    phase: Phase,
}

impl HostApi for Ctx<'_> {
    fn call(&self, module: RStr<'_>, request: RSlice<'_, u8>) -> RResult<RVec<u8>, FfiError> {
        let module = module.as_str();
        let refuse = |message: String| {
            RResult::RErr(FfiError {
                kind: ErrorKind::Dependency,
                message: message.into(),
            })
        };
        if self.phase == Phase::Setup {
            return refuse(format!(
                "module `{}` called `{module}` from init or restore_state; calls to other modules are only allowed in handle",
                self.caller
            ));
        }
        let Some(inner) = self.inner else {
            return refuse(format!(
                "module `{}` called `{module}` outside handle; calls to other modules are only allowed in handle",
                self.caller
            ));
        };
        if !self.dependencies.iter().any(|d| d == module) || module == self.caller {
            return refuse(
                Error::UndeclaredDependency {
                    caller: self.caller.to_owned(),
                    callee: module.to_owned(),
                }
                .to_string(),
            );
        }
        let result = catch_unwind(AssertUnwindSafe(|| inner.call(module, request.as_slice())));
        match result {
            Ok(Ok(bytes)) => RResult::ROk(bytes.into()),
            Ok(Err(e)) => refuse(e.to_string()),
            Err(_) => refuse(format!("call to `{module}` panicked in the host")),
        }
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        let (sandbox, module, message) = (self.sandbox, self.caller, message.as_str());
        match level {
            LogLevel::Error => {
                tracing::error!(target: "sandbox::plugin", sandbox, module, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "sandbox::plugin", sandbox, module, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "sandbox::plugin", sandbox, module, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "sandbox::plugin", sandbox, module, "{message}")
            }
            LogLevel::Trace => {
                tracing::trace!(target: "sandbox::plugin", sandbox, module, "{message}")
            }
        }
    }
}

impl Inner {
    fn host_ref<'a>(ctx: &'a Ctx<'a>) -> HostRef<'a> {
        HostApi_TO::from_ptr(RRef::new(ctx), TD_Opaque)
    }

    fn slot(&self, module: &str) -> Result<Arc<Slot>> {
        let modules = self.modules.read();
        modules
            .get(module)
            .cloned()
            .ok_or_else(|| Error::UnknownModule {
                module: module.to_owned(),
                known: modules.keys().cloned().collect(),
            })
    }

    fn call(&self, module: &str, request: &[u8]) -> Result<Vec<u8>> {
        let slot = self.slot(module)?;
        self.call_slot(&slot, request)
    }

    fn call_slot(&self, slot: &Slot, request: &[u8]) -> Result<Vec<u8>> {
        let mut held = slot.active.lock();
        let active = held.as_mut().map_err(|gone| gone.error(&slot.name))?;
        let dependencies = Arc::clone(&active.lib.dependencies);
        let ctx = Ctx {
            inner: Some(self),
            sandbox: &self.sandbox,
            caller: &slot.name,
            dependencies: &dependencies,
            phase: Phase::Handle,
        };
        let out = guarded(&slot.name, || {
            active
                .instance
                .handle(Self::host_ref(&ctx), RSlice::from_slice(request))
        })?;
        Ok(out.into_vec())
    }

    fn loaded(&self, module: &str, version: u32) -> Result<Arc<Loaded>> {
        self.libraries
            .lock()
            .get(&(module.to_owned(), version))
            .cloned()
            .ok_or_else(|| Error::UnknownVersion {
                module: module.to_owned(),
                version,
            })
    }

    /// Builds, initializes and restores a new instance for one step, each
    /// entry point of the plugin within the lifecycle deadline.
    fn stage(
        &self,
        step: &SwapStep,
        lib: &Arc<Loaded>,
        carried: Option<&SavedState>,
    ) -> Result<Active> {
        let name = &lib.meta.name;
        let fail = |stage, e: Error| Error::Swap {
            module: name.clone(),
            version: step.version,
            stage,
            source: Box::new(e),
        };
        let limit = self.lifecycle;
        let setup = Setup {
            sandbox: Arc::clone(&self.sandbox),
            module: name.as_str().into(),
            dependencies: Arc::clone(&lib.dependencies),
            limit,
        };
        let root = lib.root;
        let module = Arc::clone(&setup.module);
        let instance = within(limit, name, move || {
            guarded(&module, || (root.new_instance())())
        })
        .and_then(|created| created)
        .map_err(|e| fail(SwapStage::Create, e))?;
        let (mut instance, ()) = setup
            .run(instance, |instance, host| instance.init(host))
            .map_err(|e| fail(SwapStage::Init, e))?;
        if let Some(state) = carried {
            let (bytes, schema) = match &step.migration {
                Some(migrate) if state.schema != lib.meta.schema => {
                    let (migrate, bytes) = (Arc::clone(migrate), state.bytes.clone());
                    let (from, to) = (state.schema, lib.meta.schema);
                    let migrated = within(limit, name, move || {
                        catch_unwind(AssertUnwindSafe(|| migrate(&bytes, from, to)))
                            .unwrap_or_else(|_| Err("the migration panicked".to_owned()))
                    })
                    .map_err(|e| fail(SwapStage::Restore, e))?
                    .map_err(|message| {
                        fail(
                            SwapStage::Restore,
                            Error::Migration {
                                module: name.clone(),
                                from,
                                to,
                                message,
                            },
                        )
                    })?;
                    (migrated, to)
                }
                _ => (state.bytes.clone(), state.schema),
            };
            (instance, ()) = setup
                .run(instance, move |instance, host| {
                    instance.restore_state(host, RSlice::from_slice(&bytes), schema)
                })
                .map_err(|e| fail(SwapStage::Restore, e))?;
        }
        if let Some(request) = step.health_check.clone() {
            (instance, _) = setup
                .run(instance, move |instance, host| {
                    instance.handle(host, RSlice::from_slice(&request))
                })
                .map_err(|e| fail(SwapStage::Health, e))?;
        }
        Ok(Active {
            lib: Arc::clone(lib),
            instance,
        })
    }
}

/// What lifecycle code of a new instance runs with: a context that refuses
/// calls to other modules and does not hold the runtime (so an instance
/// that never returns keeps nothing of the runtime alive), and the deadline.
struct Setup {
    sandbox: Arc<str>,
    module: Arc<str>,
    dependencies: Arc<[String]>,
    limit: Option<Duration>,
}

impl Setup {
    /// Runs `f` on `instance` (moved to the job's thread and back) under
    /// `catch_unwind`, within the deadline.
    fn run<T: Send + 'static>(
        &self,
        mut instance: InstanceBox,
        f: impl FnOnce(&mut InstanceBox, HostRef<'_>) -> RResult<T, FfiError> + Send + 'static,
    ) -> Result<(InstanceBox, T)> {
        let (sandbox, module, dependencies) = (
            Arc::clone(&self.sandbox),
            Arc::clone(&self.module),
            Arc::clone(&self.dependencies),
        );
        let (instance, result) = within(self.limit, &self.module, move || {
            let ctx = Ctx {
                inner: None,
                sandbox: &sandbox,
                caller: &module,
                dependencies: &dependencies,
                phase: Phase::Setup,
            };
            let result = guarded(&module, || f(&mut instance, Inner::host_ref(&ctx)));
            (instance, result)
        })?;
        Ok((instance, result?))
    }
}

/// Runs lifecycle code of `module` with a deadline: on a call thread, the
/// caller waiting at most `limit` (without a limit, right here). Code that
/// overruns is abandoned, still running, with whatever it owns.
fn within<T: Send + 'static>(
    limit: Option<Duration>,
    module: &str,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let Some(limit) = limit else {
        return Ok(job());
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    if let Err((job, e)) = call_threads::run(Box::new(move || {
        let _ = tx.send(job());
    })) {
        // No thread to be had: run it here, without a deadline, rather
        // than not at all (the job owns the instance).
        tracing::warn!(module, error = %e, "no thread for a lifecycle deadline; running without one");
        job();
    }
    match rx.recv_timeout(limit) {
        Ok(out) => Ok(out),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::abandoned(module, limit)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(panicked(module)),
    }
}

/// Saves the state of the instance `held` holds, within `limit`. When
/// `save_state` never returns, the instance stays with the abandoned thread
/// and `held` records why the module has none.
fn save(held: &mut Held, module: &str, limit: Option<Duration>) -> Result<SavedState> {
    let Some(after) = limit else {
        return save_now(held.as_mut().map_err(|gone| gone.error(module))?);
    };
    let gone = Gone {
        stage: SwapStage::Save,
        after,
    };
    let mut active = match std::mem::replace(held, Err(gone)) {
        Ok(active) => active,
        Err(was) => {
            *held = Err(was);
            return Err(was.error(module));
        }
    };
    let (active, saved) = within(limit, module, move || {
        let saved = save_now(&mut active);
        (active, saved)
    })?;
    *held = Ok(active);
    saved
}

fn save_now(active: &mut Active) -> Result<SavedState> {
    let name = &active.lib.meta.name;
    let bytes = guarded(name, || active.instance.save_state())?;
    Ok(SavedState {
        schema: active.lib.meta.schema,
        bytes: bytes.into_vec(),
    })
}

impl InProcessRuntime {
    /// Loads `file` where it is, without the per-load copy [`Runtime::load`]
    /// makes. Errors name `artifact`.
    ///
    /// Only for a caller that guarantees what the copy otherwise does: no
    /// other load in this process ever used the path `file` or its inode, and
    /// nobody rewrites the file in place while it is mapped. The worker
    /// process does, for the first load of each artifact: one sandbox per
    /// process, a `/proc/self/fd/N` path whose descriptor it keeps open for
    /// good, and artifacts from the content-addressed build cache, which
    /// are never rewritten.
    pub(crate) fn load_in_place(
        &self,
        file: &Path,
        artifact: &Path,
        version: u32,
    ) -> Result<ModuleMeta> {
        let _span = tracing::debug_span!("load", sandbox = %self.inner.sandbox, version, artifact = %artifact.display(), in_place = true)
            .entered();
        self.open_image(file, artifact, version)
    }

    /// Maps `file`, checks its layout against the host's and records it as
    /// `version` of its module.
    fn open_image(&self, file: &Path, artifact: &Path, version: u32) -> Result<ModuleMeta> {
        let inner = &self.inner;
        let header = lib_header_from_path(file).map_err(|e| library_error(artifact, e))?;
        let root = header
            .init_root_module::<PluginModuleRef>()
            .map_err(|e| library_error(artifact, e))?;
        let info =
            catch_unwind(AssertUnwindSafe(|| (root.info())())).map_err(|_| Error::NotAPlugin {
                path: artifact.to_owned(),
                reason: "reading its module info panicked".to_owned(),
            })?;
        let meta = meta_from(info);
        let mut libraries = inner.libraries.lock();
        let key = (meta.name.clone(), version);
        if libraries.contains_key(&key) {
            return Err(Error::AlreadyLoaded {
                module: meta.name,
                version,
            });
        }
        let dependencies: Arc<[String]> = meta.dependencies.clone().into();
        libraries.insert(
            key,
            Arc::new(Loaded {
                meta: meta.clone(),
                dependencies,
                root,
            }),
        );
        tracing::debug!(module = %meta.name, "loaded");
        Ok(meta)
    }
}

impl Runtime for InProcessRuntime {
    fn load(&self, artifact: &Path, version: u32) -> Result<ModuleMeta> {
        let inner = &self.inner;
        let _span = tracing::debug_span!("load", sandbox = %inner.sandbox, version, artifact = %artifact.display())
            .entered();
        // A fresh file per load: the dynamic loader returns the image it
        // already has for a path (or inode) it has seen.
        // Unique for the life of the process: the dynamic loader matches an
        // already-loaded library by path name even after its file is gone, so
        // no two loads (of any runtime, any sandbox) may ever share a path.
        let seq = LOADS.fetch_add(1, Ordering::Relaxed);
        create_work_dir(&inner.work_dir)?;
        let copy = inner.work_dir.join(format!("v{version}-{seq}.so"));
        std::fs::copy(artifact, &copy).map_err(|source| Error::Io {
            action: "copying the artifact",
            path: artifact.to_owned(),
            source,
        })?;
        let loaded = self.open_image(&copy, artifact, version);
        // The mapping outlives the file; never leave copies behind.
        let _ = std::fs::remove_file(&copy);
        loaded
    }

    fn swap(&self, steps: &[SwapStep]) -> Result<Vec<SwapOutcome>> {
        let inner = &self.inner;
        let _span =
            tracing::debug_span!("swap", sandbox = %inner.sandbox, modules = steps.len()).entered();
        let libs = steps
            .iter()
            .map(|s| inner.loaded(&s.module, s.version))
            .collect::<Result<Vec<_>>>()?;
        // Lock every existing module of the batch, dependents first: the same
        // order in which a call chain takes them, so swaps and calls never
        // deadlock. Calls arriving now wait for the commit.
        let slots: Vec<Option<Arc<Slot>>> = steps
            .iter()
            .map(|s| inner.modules.read().get(&s.module).cloned())
            .collect();
        let mut guards: Vec<Option<MutexGuard<'_, Held>>> =
            (0..steps.len()).map(|_| None).collect();
        for i in (0..steps.len()).rev() {
            if let Some(slot) = &slots[i] {
                guards[i] = Some(slot.active.lock());
            }
        }
        let mut staged = Vec::with_capacity(steps.len());
        for (i, (step, lib)) in steps.iter().zip(&libs).enumerate() {
            let from = slots[i]
                .as_ref()
                .map(|slot| slot.version.load(Ordering::Acquire));
            let carried = match guards[i].as_mut() {
                // A module whose instance was abandoned has no state to
                // carry: it starts like a new one.
                Some(old) if step.carry_state && old.is_ok() => Some(
                    save(old, &step.module, inner.lifecycle).map_err(|e| Error::Swap {
                        module: step.module.clone(),
                        version: step.version,
                        stage: SwapStage::Save,
                        source: Box::new(e),
                    })?,
                ),
                _ => step.initial_state.clone(),
            };
            let active = inner.stage(step, lib, carried.as_ref())?;
            staged.push((
                active,
                SwapOutcome {
                    module: step.module.clone(),
                    from,
                    to: step.version,
                    carried,
                },
            ));
        }
        // Commit: every step succeeded; switch them all.
        let mut outcomes = Vec::with_capacity(staged.len());
        let mut retired = Vec::new();
        for (i, (active, outcome)) in staged.into_iter().enumerate() {
            match guards[i].as_mut() {
                Some(guard) => {
                    retired.push(std::mem::replace(&mut **guard, Ok(active)));
                    if let Some(slot) = &slots[i] {
                        slot.version.store(outcome.to, Ordering::Release);
                    }
                }
                None => {
                    let slot = Arc::new(Slot {
                        name: outcome.module.clone(),
                        version: AtomicU32::new(outcome.to),
                        active: Mutex::new(Ok(active)),
                    });
                    inner.modules.write().insert(outcome.module.clone(), slot);
                }
            }
            outcomes.push(outcome);
        }
        drop(guards);
        drop(retired);
        Ok(outcomes)
    }

    fn call(&self, module: &str, request: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>> {
        let inner = &self.inner;
        let slot = inner.slot(module)?;
        let Some(limit) = timeout else {
            return inner.call_slot(&slot, request);
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let done: CallDone = Box::new(move |result| {
            let _ = tx.send(result);
        });
        if self.start_call(module, request, done).is_err() {
            unreachable!("the in-process backend starts every call");
        }
        rx.recv_timeout(limit)
            .unwrap_or_else(|_| Err(Error::abandoned(module, limit)))
    }

    fn start_call(
        &self,
        module: &str,
        request: &[u8],
        done: CallDone,
    ) -> std::result::Result<(), CallDone> {
        let slot = match self.inner.slot(module) {
            Ok(slot) => slot,
            Err(e) => {
                done(Err(e));
                return Ok(());
            }
        };
        // Shared with the job, so a pool that cannot start a thread can
        // still hand the error over.
        let done = Arc::new(Mutex::new(Some(done)));
        let answer = Arc::clone(&done);
        let (inner, request) = (Arc::clone(&self.inner), request.to_vec());
        let job = Box::new(move || {
            let result = inner.call_slot(&slot, &request);
            // Let go of the runtime before the caller hears back: it may
            // drop the runtime next, and the last reference removes its
            // folder.
            drop((slot, inner));
            if let Some(done) = answer.lock().take() {
                done(result);
            }
        });
        if let Err((_, source)) = call_threads::run(job) {
            if let Some(done) = done.lock().take() {
                done(Err(Error::Io {
                    action: "starting a call thread for",
                    path: module.into(),
                    source,
                }));
            }
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<Vec<(String, SavedState)>> {
        let slots: Vec<Arc<Slot>> = self.inner.modules.read().values().cloned().collect();
        slots
            .iter()
            .map(|slot| {
                let saved = save(&mut slot.active.lock(), &slot.name, self.inner.lifecycle)?;
                Ok((slot.name.clone(), saved))
            })
            .collect()
    }

    fn remove(&self, module: &str) -> Result<()> {
        let mut modules = self.inner.modules.write();
        match modules.remove(module) {
            Some(_) => Ok(()),
            None => Err(Error::UnknownModule {
                module: module.to_owned(),
                known: modules.keys().cloned().collect(),
            }),
        }
    }

    fn forget(&self, module: &str, version: u32) -> Result<()> {
        if let Ok(slot) = self.inner.slot(module) {
            if slot.version.load(Ordering::Acquire) == version {
                return Err(Error::VersionInUse {
                    module: module.to_owned(),
                    version,
                });
            }
        }
        match self
            .inner
            .libraries
            .lock()
            .remove(&(module.to_owned(), version))
        {
            Some(_) => Ok(()),
            None => Err(Error::UnknownVersion {
                module: module.to_owned(),
                version,
            }),
        }
    }

    fn info(&self) -> RuntimeInfo {
        let modules = self
            .inner
            .modules
            .read()
            .iter()
            .map(|(name, slot)| (name.clone(), slot.version.load(Ordering::Acquire)))
            .collect();
        RuntimeInfo {
            isolation: IsolationKind::IN_PROCESS,
            pid: std::process::id(),
            modules,
            loaded_versions: self.inner.libraries.lock().len(),
            jail: None,
        }
    }
}
