//! The `Manager`: the registry of sandboxes and every operation on them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::{Mutex, RwLock};
use sandbox_compiler::{BuildOutput, BuildRequest, Compiler};
use sandbox_isolate::{IsolationKind, Isolator, Migration, ModuleMeta, Runtime, SwapStep};
use sandbox_security::Policy;
use sandbox_versions::{DependencyGraph, NewVersion, VersionHistory};
use sandbox_watch::Watcher;
use tracing::Instrument;

use crate::autoreload::AutoReload;
use crate::cache::ResultCache;
use crate::event::{EventKind, EventStream, Events};
use crate::types::IntoSandboxId;
use crate::{
    CallRequest, Config, Error, ModuleStatus, Result, SandboxId, SandboxInfo, SandboxSpec, Status,
    VersionInfo,
};

/// Creates, runs, hot-swaps and destroys sandboxes.
///
/// Cheap to clone: clones share one registry. Every method is safe to call
/// from many tasks at once; operations that change a sandbox's code
/// (`hot_reload`, `rollback`, `restart`) are serialized per sandbox, calls
/// never wait for a build and wait only for the instant of a swap.
///
/// ```no_run
/// # async fn demo() -> sandbox_core::Result<()> {
/// use sandbox_core::{Config, Manager, SandboxSpec};
///
/// let manager = Manager::new(Config::default())?;
/// manager.create("counter", SandboxSpec::trusted("plugins/examples/counter")).await?;
/// let out = manager.call_json("counter", "counter", &serde_json::json!({"add": 5})).await?;
/// assert_eq!(out["value"], 5);
/// manager.destroy("counter").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Manager {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) compiler: Arc<dyn Compiler>,
    /// The backends, by the kind they serve.
    pub(crate) isolators: BTreeMap<IsolationKind, Arc<dyn Isolator>>,
    /// Built-in backends that could not be set up, and why.
    pub(crate) unavailable: BTreeMap<IsolationKind, String>,
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) events: Events,
    pub(crate) registry: RwLock<Registry>,
    pub(crate) results: ResultCache,
    pub(crate) auto: AutoReload,
    pub(crate) monitor: Arc<dyn sandbox_monitor::Monitor>,
    pub(crate) make_watcher: Mutex<Option<Arc<dyn Watcher>>>,
    /// The lock on `config.work_dir` (last: dropped after the runtimes).
    pub(crate) _work_dir: Option<Arc<crate::workdir::Claim>>,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) sandboxes: BTreeMap<SandboxId, Arc<Sandbox>>,
    /// Ids being created: reserved so a concurrent duplicate is refused.
    pub(crate) creating: std::collections::BTreeSet<SandboxId>,
    pub(crate) generation: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Runtimes remove their own folders as they drop; then the work dir
        // itself goes if it is empty (a runtime still held by a task keeps it).
        self.registry.get_mut().sandboxes.clear();
        let _ = std::fs::remove_dir(&self.config.work_dir);
    }
}

/// Builds a [`Manager`] with replaced components.
#[derive(Debug)]
pub struct ManagerBuilder {
    config: Config,
    compiler: Option<Arc<dyn Compiler>>,
    isolators: BTreeMap<IsolationKind, Arc<dyn Isolator>>,
    policy: Option<Arc<dyn Policy>>,
    watcher: Option<Arc<dyn Watcher>>,
    monitor: Option<Arc<dyn sandbox_monitor::Monitor>>,
}

impl ManagerBuilder {
    /// Uses `monitor` for usage and limit alerts instead of the /proc sampler.
    pub fn monitor(mut self, monitor: impl sandbox_monitor::Monitor + 'static) -> Self {
        self.monitor = Some(Arc::new(monitor));
        self
    }

    /// Uses `watcher` for auto-reload instead of the `notify`-backed default.
    pub fn watcher(mut self, watcher: impl Watcher + 'static) -> Self {
        self.watcher = Some(Arc::new(watcher));
        self
    }

    /// Uses `compiler` instead of the cargo-backed default.
    pub fn compiler(mut self, compiler: impl Compiler + 'static) -> Self {
        self.compiler = Some(Arc::new(compiler));
        self
    }

    /// Registers `isolator` for sandboxes of its [`kind`](Isolator::kind),
    /// replacing the backend registered for that kind before (the built-in
    /// in-process backend, or the default worker). A new backend is an
    /// [`Isolator`] with a kind of its own plus this one call.
    pub fn isolator(mut self, isolator: impl Isolator + 'static) -> Self {
        let isolator: Arc<dyn Isolator> = Arc::new(isolator);
        self.isolators.insert(isolator.kind(), isolator);
        self
    }

    /// Uses `policy` instead of the `syn`-based source scan.
    pub fn policy(mut self, policy: impl Policy + 'static) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// Builds the manager.
    pub fn build(self) -> Result<Manager> {
        let config = self.config;
        let compiler = match self.compiler {
            Some(c) => c,
            None => {
                let mut builder = sandbox_compiler::CargoCompiler::builder()
                    .target_dir(&config.target_dir)
                    .cache_dir(&config.cache_dir);
                for dir in &config.shared_crates {
                    builder = builder.shared_crate(dir);
                }
                Arc::new(builder.build().map_err(Error::Compile)?)
            }
        };
        let (isolators, unavailable) = with_defaults(self.isolators, &config);
        let results = ResultCache::new(config.result_cache_capacity, config.result_cache_ttl);
        let work_dir = crate::workdir::claim(&config.work_dir);
        Ok(Manager {
            inner: Arc::new(Inner {
                events: Events::from_config(&config)?,
                compiler,
                isolators,
                unavailable,
                policy: self
                    .policy
                    .unwrap_or_else(|| Arc::new(sandbox_security::SourcePolicy::new())),
                registry: RwLock::new(Registry::default()),
                results,
                config,
                auto: AutoReload::default(),
                monitor: self
                    .monitor
                    .unwrap_or_else(|| Arc::new(sandbox_monitor::ProcMonitor::new())),
                make_watcher: Mutex::new(self.watcher),
                _work_dir: work_dir,
            }),
        })
    }
}

/// `registered` plus the built-in backends for the kinds nobody registered:
/// in-process, and process with the default worker
/// ([`Config::worker`], else [`WorkerCommand::find_default`](sandbox_isolate::WorkerCommand::find_default)).
/// A built-in that cannot be set up is reported by kind, for the error a
/// sandbox asking for it gets.
fn with_defaults(
    mut registered: BTreeMap<IsolationKind, Arc<dyn Isolator>>,
    config: &Config,
) -> (
    BTreeMap<IsolationKind, Arc<dyn Isolator>>,
    BTreeMap<IsolationKind, String>,
) {
    let mut unavailable = BTreeMap::new();
    registered
        .entry(IsolationKind::IN_PROCESS)
        .or_insert_with(|| Arc::new(sandbox_isolate::InProcess::new()));
    if let std::collections::btree_map::Entry::Vacant(slot) =
        registered.entry(IsolationKind::PROCESS)
    {
        let worker = match &config.worker {
            Some(program) if program.is_file() => {
                Ok(sandbox_isolate::WorkerCommand::new(program))
            }
            Some(program) => Err(format!(
                "the worker program {} (`Config::worker`) does not exist; point it at the `sandbox-worker` program",
                program.display()
            )),
            None => sandbox_isolate::WorkerCommand::find_default(),
        };
        match worker {
            Ok(worker) => {
                slot.insert(Arc::new(sandbox_isolate::Process::new(worker)));
            }
            Err(reason) => {
                unavailable.insert(IsolationKind::PROCESS, reason);
            }
        }
    }
    (registered, unavailable)
}

/// One module's records.
#[derive(Debug)]
pub(crate) struct ModuleRecord {
    pub(crate) history: VersionHistory,
    /// Metadata of each retained version.
    pub(crate) metas: HashMap<u32, ModuleMeta>,
    /// The cargo library target it is built from.
    pub(crate) artifact: String,
    /// The artifact file of each retained version (to load it again into a
    /// new worker).
    pub(crate) paths: HashMap<u32, std::path::PathBuf>,
}

impl ModuleRecord {
    /// The records of a module built from library target `artifact`, with
    /// no version yet; `retention` versions are kept for rollback.
    pub(crate) fn new(module: &str, artifact: String, retention: usize) -> Result<Self> {
        Ok(Self {
            history: VersionHistory::new(module, retention).map_err(Error::Version)?,
            metas: HashMap::new(),
            artifact,
            paths: HashMap::new(),
        })
    }

    /// Records the loaded version `p` (its history entry, metadata and
    /// file) under the number it was loaded as; does not make it current.
    pub(crate) fn record(&mut self, p: Pending, now: SystemTime) {
        let recorded = self.history.record(new_version(&p), now);
        debug_assert_eq!(
            recorded.record().number,
            p.number,
            "loaded under the number the history assigns"
        );
        self.metas.insert(p.number, p.meta);
        self.paths.insert(p.number, p.artifact.path);
    }

    pub(crate) fn current(&self) -> u32 {
        self.history.current().map(|r| r.number).unwrap_or(0)
    }

    /// The artifact file of retained version `number` and the sha256 the
    /// compiler recorded for it (to check before loading it again).
    pub(crate) fn artifact(&self, number: u32) -> Option<(std::path::PathBuf, String)> {
        let path = self.paths.get(&number)?.clone();
        let sha256 = self.history.get(number)?.artifact_sha256.clone();
        Some((path, sha256))
    }

    pub(crate) fn current_meta(&self) -> Option<&ModuleMeta> {
        self.metas.get(&self.current())
    }
}

pub(crate) struct State {
    pub(crate) status: Status,
    pub(crate) updated_at: SystemTime,
    pub(crate) restart_count: u32,
    pub(crate) modules: BTreeMap<String, ModuleRecord>,
    pub(crate) graph: DependencyGraph,
    pub(crate) migrations: HashMap<String, Migration>,
    /// Requests sent to a module's new instance before a swap commits.
    pub(crate) health_checks: HashMap<String, Vec<u8>>,
    /// The last saved state of each module (process isolation: what a
    /// restarted worker starts from).
    pub(crate) saved: BTreeMap<String, sandbox_isolate::SavedState>,
    /// Modules swapped since the runtime was launched (for recycling).
    pub(crate) swaps: u32,
    /// When the recent crash restarts happened.
    pub(crate) recent_crashes: Vec<Instant>,
}

impl State {
    /// A starting sandbox's state: its modules and their graph, nothing
    /// registered, saved or counted yet.
    pub(crate) fn new(
        modules: BTreeMap<String, ModuleRecord>,
        graph: DependencyGraph,
        now: SystemTime,
    ) -> Self {
        Self {
            status: Status::Starting,
            updated_at: now,
            restart_count: 0,
            modules,
            graph,
            migrations: HashMap::new(),
            health_checks: HashMap::new(),
            saved: BTreeMap::new(),
            swaps: 0,
            recent_crashes: Vec::new(),
        }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("status", &self.status)
            .field("modules", &self.modules.keys().collect::<Vec<_>>())
            .field("migrations", &self.migrations.keys().collect::<Vec<_>>())
            .finish()
    }
}

pub(crate) struct Sandbox {
    pub(crate) id: SandboxId,
    pub(crate) spec: SandboxSpec,
    pub(crate) generation: u64,
    pub(crate) created_at: SystemTime,
    /// The runtime hosting the modules; replaced when a worker is restarted
    /// after a crash or recycled.
    pub(crate) runtime: RwLock<Arc<dyn Runtime>>,
    /// Counts runtime launches, so a crash report of a replaced runtime is ignored.
    pub(crate) epoch: std::sync::atomic::AtomicU64,
    pub(crate) state: Mutex<State>,
    /// Serializes the operations that change code: reload, rollback, restart.
    pub(crate) ops: tokio::sync::Mutex<()>,
    /// Process isolation: the fence calls pass and the saves they wait for.
    pub(crate) supervision: crate::supervise::Supervision,
}

impl Sandbox {
    /// The current runtime.
    pub(crate) fn runtime(&self) -> Arc<dyn Runtime> {
        Arc::clone(&self.runtime.read())
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .field("status", &self.state.lock().status)
            .finish()
    }
}

/// Runs an operation to completion on its own task, so dropping the caller's
/// future (a timeout, an aborted task) never stops it halfway through.
pub(crate) async fn detached<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(f)
        .await
        .map_err(|e| Error::Internal(format!("an operation task failed: {e}")))?
}

/// Runs blocking work (cargo, dlopen, plugin code) off the async executor.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))
}

pub(crate) fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// A module version loaded for a pending swap, not yet in the history.
pub(crate) struct Pending {
    pub(crate) module: String,
    pub(crate) number: u32,
    pub(crate) meta: ModuleMeta,
    pub(crate) artifact: sandbox_compiler::Artifact,
}

impl Manager {
    /// A manager with the default components: cargo compiler, in-process
    /// isolation, `syn` source policy.
    pub fn new(config: Config) -> Result<Self> {
        Self::builder(config).build()
    }

    /// A builder to replace components.
    pub fn builder(config: Config) -> ManagerBuilder {
        ManagerBuilder {
            config,
            compiler: None,
            isolators: BTreeMap::new(),
            policy: None,
            watcher: None,
            monitor: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Subscribes to every sandbox's events from now on.
    pub fn subscribe(&self) -> EventStream {
        self.inner.events.subscribe()
    }

    pub(crate) fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        let registry = self.inner.registry.read();
        registry
            .sandboxes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownSandbox {
                id: SandboxId::new(id).unwrap_or_else(|_| SandboxId(id.to_owned())),
                known: registry.sandboxes.keys().cloned().collect(),
            })
    }

    pub(crate) fn set_status(&self, sb: &Sandbox, to: Status) {
        let from = {
            let mut state = sb.state.lock();
            let from = std::mem::replace(&mut state.status, to);
            state.updated_at = SystemTime::now();
            from
        };
        if from != to {
            self.inner
                .events
                .emit(&sb.id, EventKind::Status { from, to });
        }
    }

    /// How `spec`'s source is built: in the jail, into a target dir of its
    /// own, unless its profile is `trusted` — the one rule, so no code of
    /// untrusted source (build scripts, proc macros, cargo configuration)
    /// ever runs outside a jail, whatever isolation its modules run in.
    fn build_request(&self, spec: &SandboxSpec) -> BuildRequest {
        let config = &self.inner.config;
        BuildRequest::new(&spec.source)
            .profile(config.build_profile)
            .offline(config.offline)
            .timeout(config.compile_timeout)
            .memory_limit(config.compile_memory)
            .debug_info(config.debug_info)
            .jailed(!spec.profile.permissions().trusts_build)
    }

    pub(crate) async fn compile(&self, id: &SandboxId, spec: &SandboxSpec) -> Result<BuildOutput> {
        let events = &self.inner.events;
        let compiler = Arc::clone(&self.inner.compiler);
        let request = self.build_request(spec);
        let (profile, jailed) = (spec.profile, request.jailed);
        events.emit(id, EventKind::CompileStarted { profile, jailed });
        let started = Instant::now();
        let result = blocking(move || compiler.build(&request)).await?;
        match result {
            Ok(out) => {
                events.emit(
                    id,
                    EventKind::CompileFinished {
                        ok: true,
                        cached: out.cached,
                        millis: millis(started.elapsed()),
                        diagnostics: out.warnings.clone(),
                    },
                );
                Ok(out)
            }
            Err(e) => {
                events.emit(
                    id,
                    EventKind::CompileFinished {
                        ok: false,
                        cached: false,
                        millis: millis(started.elapsed()),
                        diagnostics: e.diagnostics().to_vec(),
                    },
                );
                Err(e.into())
            }
        }
    }

    /// Checks the source against the sandbox's profile before anything of
    /// it runs. Source the scanner cannot parse is left to the compiler
    /// (whose diagnostics say more) unless the profile is `high`, which
    /// refuses what it cannot read; the answer is then `Ok(true)`: check
    /// again after the build.
    pub(crate) fn check_policy(&self, spec: &SandboxSpec) -> Result<bool> {
        match self.inner.policy.check(&spec.source, spec.profile) {
            Ok(_) => Ok(false),
            Err(sandbox_security::Error::Parse { .. })
                if spec.profile != sandbox_security::Profile::High =>
            {
                Ok(true)
            }
            Err(e) => Err(Error::Security(e)),
        }
    }

    pub(crate) fn recheck_policy(&self, spec: &SandboxSpec, deferred: bool) -> Result<()> {
        if deferred {
            self.inner
                .policy
                .check(&spec.source, spec.profile)
                .map_err(Error::Security)?;
        }
        Ok(())
    }

    pub(crate) fn isolator(&self, kind: &IsolationKind) -> Result<Arc<dyn Isolator>> {
        let isolators = &self.inner.isolators;
        isolators.get(kind).cloned().ok_or_else(|| {
            let reason = self.inner.unavailable.get(kind).cloned().unwrap_or_else(|| {
                let have: Vec<&str> = isolators.keys().map(IsolationKind::as_str).collect();
                format!(
                    "no backend of that kind is registered (this manager has: {}); register one with `ManagerBuilder::isolator`, or pick one of those",
                    have.join(", ")
                )
            });
            Error::NoIsolator {
                kind: kind.clone(),
                reason,
            }
        })
    }

    /// The isolation kinds this manager can run sandboxes in.
    pub fn isolation_kinds(&self) -> impl Iterator<Item = &IsolationKind> {
        self.inner.isolators.keys()
    }

    /// Creates sandbox `id` from `spec`: checks the source against the
    /// security profile, builds it, loads every module as version 1 and
    /// starts them in dependency order, and returns a handle to it. On any
    /// failure nothing is left behind: no registry entry, no runtime, no
    /// scratch folder.
    pub async fn create(
        &self,
        id: impl IntoSandboxId,
        spec: SandboxSpec,
    ) -> Result<crate::SandboxHandle> {
        let id = id.into_sandbox_id()?;
        let this = self.clone();
        let handle = crate::SandboxHandle::new(self.clone(), id.clone());
        detached(async move { this.create_detached(id, spec).await }).await?;
        Ok(handle)
    }

    async fn create_detached(&self, id: SandboxId, spec: SandboxSpec) -> Result<SandboxInfo> {
        let span = tracing::info_span!("create", sandbox = %id);
        async {
            let generation = self.reserve(&id)?;
            let result = self.create_reserved(&id, spec, generation).await;
            let mut registry = self.inner.registry.write();
            registry.creating.remove(&id);
            match result {
                Ok(sb) => {
                    registry.sandboxes.insert(id.clone(), Arc::clone(&sb));
                    drop(registry);
                    self.set_status(&sb, Status::Running);
                    Ok(self.snapshot(&sb))
                }
                Err(e) => {
                    drop(registry);
                    self.inner.events.emit(
                        &id,
                        EventKind::Failed {
                            operation: "create".into(),
                            kind: e.kind(),
                            message: e.to_string(),
                        },
                    );
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }

    fn reserve(&self, id: &SandboxId) -> Result<u64> {
        let mut registry = self.inner.registry.write();
        if registry.sandboxes.contains_key(id) || registry.creating.contains(id) {
            return Err(Error::DuplicateSandbox { id: id.clone() });
        }
        registry.creating.insert(id.clone());
        registry.generation += 1;
        Ok(registry.generation)
    }

    async fn create_reserved(
        &self,
        id: &SandboxId,
        mut spec: SandboxSpec,
        generation: u64,
    ) -> Result<Arc<Sandbox>> {
        let isolator = self.isolator(&spec.isolation)?;
        if !isolator.confines_untrusted() && spec.profile != sandbox_security::Profile::Trusted {
            return Err(Error::UntrustedInProcess {
                profile: spec.profile,
                kind: spec.isolation,
            });
        }
        if !spec.source.exists() {
            return Err(Error::SourceMissing { path: spec.source });
        }
        if !spec.source.join("Cargo.toml").is_file() {
            return Err(Error::NotCargoProject { path: spec.source });
        }
        spec.source = spec.source.canonicalize().map_err(|e| {
            Error::Internal(format!("cannot resolve {}: {e}", spec.source.display()))
        })?;
        let events = &self.inner.events;
        events.emit(
            id,
            EventKind::Created {
                source: spec.source.display().to_string(),
            },
        );
        let deferred = self.check_policy(&spec)?;
        events.emit(
            id,
            EventKind::Status {
                from: Status::Initializing,
                to: Status::Compiling,
            },
        );
        let build = self.compile(id, &spec).await?;
        self.recheck_policy(&spec, deferred)?;
        if build.artifacts.is_empty() {
            return Err(Error::NoModules { path: spec.source });
        }
        events.emit(
            id,
            EventKind::Status {
                from: Status::Compiling,
                to: Status::Starting,
            },
        );
        let launch = self.launch_spec(id, &spec, generation, 0);
        let runtime: Arc<dyn Runtime> =
            Arc::from(blocking(move || isolator.launch(&launch)).await??);

        // Load every artifact as version 1.
        let mut pending = Vec::new();
        for artifact in build.artifacts {
            let rt = Arc::clone(&runtime);
            let checked = artifact.clone();
            let meta = blocking(move || -> Result<ModuleMeta> {
                checked.verify()?;
                Ok(rt.load(&checked.path, 1)?)
            })
            .await??;
            if let Some(other) = pending.iter().find(|p: &&Pending| p.module == meta.name) {
                return Err(Error::DuplicateModule {
                    module: meta.name,
                    first: other.artifact.name.clone(),
                    second: artifact.name,
                });
            }
            pending.push(Pending {
                module: meta.name.clone(),
                number: 1,
                meta,
                artifact,
            });
        }
        let graph = DependencyGraph::from_modules(
            pending
                .iter()
                .map(|p| (p.module.clone(), p.meta.dependencies.clone())),
        )
        .map_err(Error::Dependencies)?;
        graph
            .check_dependencies_known()
            .map_err(Error::Dependencies)?;
        let mut restore = std::mem::take(&mut spec.restore);
        let steps: Vec<SwapStep> = graph
            .topological_levels()
            .into_iter()
            .flatten()
            .map(|module| SwapStep {
                carry_state: false,
                initial_state: restore.remove(&module),
                ..SwapStep::new(module, 1)
            })
            .collect();
        for module in restore.keys() {
            tracing::warn!(sandbox = %id, module, "a saved state names a module the source no longer has; dropped");
        }
        let rt = Arc::clone(&runtime);
        let outcomes = blocking(move || rt.swap(&steps)).await??;

        let now = SystemTime::now();
        let mut modules = BTreeMap::new();
        for p in pending {
            let mut record = ModuleRecord::new(
                &p.module,
                p.artifact.name.clone(),
                self.inner.config.history,
            )?;
            let (module, number) = (p.module.clone(), p.number);
            record.record(p, now);
            record.history.set_current(number).map_err(Error::Version)?;
            modules.insert(module, record);
        }
        let sb = Arc::new(Sandbox {
            id: id.clone(),
            spec,
            generation,
            created_at: now,
            runtime: RwLock::new(runtime),
            epoch: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new(State::new(modules, graph, now)),
            ops: tokio::sync::Mutex::new(()),
            supervision: Default::default(),
        });
        for o in outcomes {
            events.emit(
                id,
                EventKind::Swapped {
                    module: o.module,
                    from: o.from,
                    to: o.to,
                },
            );
        }
        self.track_usage(&sb);
        if self.checkpointed(&sb) {
            self.checkpoint(&sb).await;
            self.spawn_checkpoints(&sb);
        }
        Ok(sb)
    }

    /// Destroys sandbox `id`: it stops taking calls at once, an operation in
    /// progress finishes first, then its modules are dropped and its scratch
    /// folder removed.
    pub async fn destroy(&self, id: &str) -> Result<()> {
        let (this, id) = (self.clone(), id.to_owned());
        detached(async move { this.destroy_detached(&id).await }).await
    }

    async fn destroy_detached(&self, id: &str) -> Result<()> {
        let sb = {
            let mut registry = self.inner.registry.write();
            let known: Vec<SandboxId> = registry.sandboxes.keys().cloned().collect();
            registry
                .sandboxes
                .remove(id)
                .ok_or_else(|| Error::UnknownSandbox {
                    id: SandboxId(id.to_owned()),
                    known,
                })?
        };
        let span = tracing::info_span!("destroy", sandbox = %sb.id);
        async {
            self.set_status(&sb, Status::Stopping);
            self.stop_auto_reload(&sb.id);
            let _op = sb.ops.lock().await;
            self.inner.results.forget_generation(sb.generation);
            let _ = self.inner.monitor.unregister(sb.id.as_str());
            self.set_status(&sb, Status::Stopped);
            self.inner.events.emit(&sb.id, EventKind::Destroyed);
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Destroys every sandbox.
    pub async fn shutdown(&self) {
        let ids: Vec<SandboxId> = self
            .inner
            .registry
            .read()
            .sandboxes
            .keys()
            .cloned()
            .collect();
        for id in ids {
            let _ = self.destroy(id.as_str()).await;
        }
    }

    /// A snapshot of sandbox `id`.
    pub fn info(&self, id: &str) -> Result<SandboxInfo> {
        let sb = self.get(id)?;
        Ok(self.snapshot(&sb))
    }

    /// Snapshots of every sandbox, sorted by id.
    pub fn list(&self) -> Vec<SandboxInfo> {
        let sandboxes: Vec<Arc<Sandbox>> = self
            .inner
            .registry
            .read()
            .sandboxes
            .values()
            .cloned()
            .collect();
        sandboxes.iter().map(|sb| self.snapshot(sb)).collect()
    }

    pub(crate) fn snapshot(&self, sb: &Sandbox) -> SandboxInfo {
        let runtime = sb.runtime().info();
        let usage = self.inner.monitor.sample(sb.id.as_str()).ok();
        let state = sb.state.lock();
        let modules = state
            .modules
            .iter()
            .filter_map(|(name, rec)| {
                let meta = rec.current_meta()?;
                Some(ModuleStatus {
                    name: name.clone(),
                    version: rec.current(),
                    module_version: meta.version.clone(),
                    schema: meta.schema,
                    dependencies: meta.dependencies.clone(),
                    pure: meta.pure,
                    versions: rec.history.retained_numbers(),
                })
            })
            .collect();
        SandboxInfo {
            id: sb.id.clone(),
            status: state.status,
            source: sb.spec.source.clone(),
            isolation: sb.spec.isolation.clone(),
            pid: runtime.pid,
            jail: runtime.jail,
            profile: sb.spec.profile,
            build_jailed: self.build_request(&sb.spec).jailed,
            modules,
            created_at: sb.created_at,
            updated_at: state.updated_at,
            restart_count: state.restart_count,
            usage,
        }
    }

    /// Calls `module` of sandbox `id` with `input` and returns its response.
    ///
    /// A pure module's answers are cached (per version, with a TTL). The
    /// sandbox's call timeout applies: in-process the call is abandoned, not
    /// stopped.
    pub async fn call(&self, id: &str, module: &str, input: &[u8]) -> Result<Vec<u8>> {
        let sb = self.get(id)?;
        let span = tracing::debug_span!("call", sandbox = %sb.id, module);
        self.call_in(sb, module.to_owned(), input.to_vec())
            .instrument(span)
            .await
    }

    async fn call_in(&self, sb: Arc<Sandbox>, module: String, input: Vec<u8>) -> Result<Vec<u8>> {
        let (status, version, pure) = {
            let state = sb.state.lock();
            let rec = state.modules.get(&module);
            (
                state.status,
                rec.map(|r| r.current()),
                rec.and_then(|r| r.current_meta()).is_some_and(|m| m.pure),
            )
        };
        if !status.serves_calls() {
            return Err(Error::NotRunning {
                id: sb.id.clone(),
                status,
                hint: "wait for it to be running, or restart it",
            });
        }
        let key = match (pure, version) {
            (true, Some(v)) => {
                let key = ResultCache::key(sb.generation, &module, v, &input);
                if let Some(hit) = self.inner.results.get(&key) {
                    return Ok(hit);
                }
                Some(key)
            }
            _ => None,
        };
        let out = self.call_runtime(&sb, &module, input).await?;
        if let Some(key) = key {
            self.inner.results.put(key, out.clone());
        }
        Ok(out)
    }

    /// Calls `module` with a JSON value and decodes its JSON answer.
    pub async fn call_json(
        &self,
        id: &str,
        module: &str,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        let bytes = serde_json::to_vec(input)
            .map_err(|e| Error::Internal(format!("cannot encode the request: {e}")))?;
        let out = self.call(id, module, &bytes).await?;
        serde_json::from_slice(&out).map_err(|e| {
            Error::Isolate(sandbox_isolate::Error::Plugin {
                module: module.to_owned(),
                kind: sandbox_isolate::PluginErrorKind::Failed,
                message: format!("the module answered with something that is not JSON: {e}"),
            })
        })
    }

    /// Runs many calls of one sandbox concurrently; each gets its own
    /// result, in order, and one failing does not affect the others.
    pub async fn call_batch(
        &self,
        id: &str,
        calls: Vec<CallRequest>,
    ) -> Result<Vec<Result<Vec<u8>>>> {
        let sb = self.get(id)?;
        let mut set = tokio::task::JoinSet::new();
        let n = calls.len();
        for (i, call) in calls.into_iter().enumerate() {
            let this = self.clone();
            let sb = Arc::clone(&sb);
            let span = tracing::debug_span!("call", sandbox = %sb.id, module = %call.module);
            set.spawn(
                async move { (i, this.call_in(sb, call.module, call.input).await) }
                    .instrument(span),
            );
        }
        let mut results: Vec<Option<Result<Vec<u8>>>> = (0..n).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, r)) => results[i] = Some(r),
                Err(e) => return Err(Error::Internal(format!("a batch call task failed: {e}"))),
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(Error::Internal("a batch call produced no result".into())))
            })
            .collect())
    }

    /// Registers a host migration for `module` of sandbox `id`, used instead
    /// of the plugin's own when a swap changes the state schema.
    pub fn register_migration(&self, id: &str, module: &str, migration: Migration) -> Result<()> {
        let sb = self.get(id)?;
        sb.state
            .lock()
            .migrations
            .insert(module.to_owned(), migration);
        Ok(())
    }

    /// Registers a health check for `module` of sandbox `id`: `request` is
    /// sent to every new instance of the module before a swap commits, and an
    /// error answer rolls the whole batch back. Pick a request that does not
    /// change state (a read).
    pub fn register_health_check(&self, id: &str, module: &str, request: Vec<u8>) -> Result<()> {
        let sb = self.get(id)?;
        sb.state
            .lock()
            .health_checks
            .insert(module.to_owned(), request);
        Ok(())
    }

    /// The retained versions of `module`, oldest first.
    pub fn versions(&self, id: &str, module: &str) -> Result<Vec<VersionInfo>> {
        let sb = self.get(id)?;
        let state = sb.state.lock();
        let rec = state
            .modules
            .get(module)
            .ok_or_else(|| unknown_module(&state, module))?;
        let current = rec.current();
        Ok(rec
            .history
            .list()
            .iter()
            .map(|r| VersionInfo {
                number: r.number,
                checksum: r.artifact_sha256.clone(),
                source_hash: r.source_hash.clone(),
                module_version: r.module_version.clone(),
                schema: r.schema,
                dependencies: r.dependencies.clone(),
                loaded_at: r.loaded_at,
                current: r.number == current,
            })
            .collect())
    }
}

pub(crate) fn unknown_module(state: &State, module: &str) -> Error {
    Error::Isolate(sandbox_isolate::Error::UnknownModule {
        module: module.to_owned(),
        known: state.modules.keys().cloned().collect(),
    })
}

pub(crate) fn new_version(p: &Pending) -> NewVersion {
    NewVersion {
        artifact_sha256: p.artifact.sha256.clone(),
        source_hash: p.artifact.source_hash.clone(),
        dependencies: p.meta.dependencies.clone(),
        module_version: p.meta.version.clone(),
        schema: p.meta.schema,
    }
}
