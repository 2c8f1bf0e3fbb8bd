//! Keeping process sandboxes alive: launch specs with a crash handler,
//! checkpoints of module state, restart after a crash (with backoff and a
//! budget), and recycling a worker after many swaps.
//!
//! In-process sandboxes need none of this: a crash there is the host's.
//!
//! # What is never lost, and what a crash may lose
//!
//! - **Replacing a worker loses nothing.** Recycling (after
//!   [`Config::recycle_after_swaps`](crate::Config::recycle_after_swaps)
//!   swaps) and [`Manager::restart`] go through [`Manager::relaunch`], which
//!   closes the sandbox's *fence* ([`Supervision`]): calls that arrive
//!   wait, calls in flight finish on the old worker, then the old worker's
//!   live state is taken, the new worker is started from it and switched in,
//!   and only then do the waiting calls go through — to the new worker. So
//!   no call is answered by the old worker after its state was taken, and
//!   every answered call is in the state the new worker starts from.
//! - **A crash loses what was not saved.** After a crash the new worker
//!   starts from the last saved state. When that is taken is the sandbox's
//!   [`Durability`]: on an interval (a crash loses the calls answered since
//!   the last save), or after every call, before its reply is handed back
//!   (a crash loses no answered call). State is also saved after every
//!   committed swap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sandbox_isolate::jail::Layers;
use sandbox_isolate::spawn::ChildLimits;
use sandbox_isolate::{Crash, LaunchSpec, Runtime, SavedState, SwapStep};

use crate::event::EventKind;
use crate::manager::{blocking, Sandbox};
use crate::{Durability, Error, Manager, Result, SandboxId, SandboxSpec, Status};

/// What a process sandbox's calls pass through, and the saves of its state.
///
/// - The **fence**: every call to a process sandbox holds it shared while
///   it runs; replacing the runtime ([`Manager::relaunch`]) holds it
///   exclusively, and so does a save under [`Durability::EveryCall`].
///   Waiting writers go first (tokio's lock is fair), so once a writer asks
///   for the fence new calls queue behind it and the calls in flight drain.
/// - **Numbered saves**: saves are taken one at a time (under `stored`,
///   which is always locked before the fence), numbered in the order they
///   start, so the saved state only ever moves forward. Under every-call
///   durability a call notes, before it lets go of the fence, the number of
///   the last save started: no save runs while it does, so exactly the
///   saves numbered higher cover it. A call waits for one of those, taking
///   it itself unless a concurrent caller's did (concurrent calls share
///   saves).
#[derive(Debug, Default)]
pub(crate) struct Supervision {
    fence: tokio::sync::RwLock<()>,
    /// The number of the last save started (saves are numbered from 1).
    started: AtomicU64,
    /// Held while a save runs; the number of the last one stored in
    /// `State::saved`.
    stored: tokio::sync::Mutex<u64>,
}

/// The fraction of its address-space limit past which a worker is recycled
/// (see [`Manager::near_address_space_limit`]).
const ADDRESS_SPACE_RECYCLE: f64 = 0.8;

/// The kernel limits of a worker, from a sandbox's resource limits.
pub(crate) fn child_limits(limits: &sandbox_monitor::ResourceLimits) -> ChildLimits {
    ChildLimits {
        address_space: limits.address_space_bytes,
        cpu_seconds: limits.cpu_seconds,
        file_size: limits.file_size_bytes,
        open_files: limits.open_files.map(u64::from),
        processes: limits.threads.map(u64::from),
        core_size: Some(0),
    }
}

impl Manager {
    /// What to launch a runtime of `spec` with; for process isolation the
    /// crash handler restarts the sandbox (only while `epoch` is current).
    pub(crate) fn launch_spec(
        &self,
        id: &SandboxId,
        spec: &SandboxSpec,
        generation: u64,
        epoch: u64,
    ) -> LaunchSpec {
        // One folder per launch: a replaced runtime removes its own when it drops.
        let work_dir = self.inner.config.work_dir.join(format!("{id}@{epoch}"));
        let mut launch = LaunchSpec::new(id.to_string(), work_dir);
        launch.limits = child_limits(&spec.limits);
        launch.disk_limit = spec.limits.disk_bytes;
        launch.output_limit = spec.limits.output_bytes;
        launch.lifecycle_timeout = spec.limits.lifecycle_timeout;
        let permissions = spec.profile.permissions();
        launch.network = permissions.network;
        // Code whose build is not trusted is not trusted to run either: its
        // worker gets every layer or does not start. Trusted code runs with
        // what the kernel has.
        launch.require = Some(if permissions.trusts_build {
            Layers::NONE
        } else {
            Layers::UNTRUSTED
        });
        if !spec.isolation.shares_host() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let weak = Arc::downgrade(&self.inner);
                let id = id.clone();
                launch.on_crash = Some(Arc::new(move |crash: Crash| {
                    let Some(inner) = weak.upgrade() else { return };
                    let manager = Manager { inner };
                    let id = id.clone();
                    handle
                        .spawn(async move { manager.recover(id, generation, epoch, crash).await });
                }));
            }
        }
        launch
    }

    /// Tracks the usage of the process hosting `sb`'s modules (again after
    /// each relaunch: the pid changes). A worker is held to the sandbox's
    /// limits; the host process (in-process sandboxes) is only measured.
    pub(crate) fn track_usage(&self, sb: &Sandbox) {
        let monitor = &self.inner.monitor;
        let _ = monitor.unregister(sb.id.as_str());
        let limits = if sb.spec.isolation.shares_host() {
            sandbox_monitor::ResourceLimits::unlimited()
        } else {
            sb.spec.limits.clone()
        };
        if let Err(e) = monitor.register(sb.id.as_str(), sb.runtime().info().pid, limits) {
            tracing::debug!(sandbox = %sb.id, error = %e, "usage is not tracked");
        }
    }

    /// Samples a process sandbox's worker and reports each limit it newly
    /// exceeds (the kernel enforces them; this tells the host beforehand or why).
    pub(crate) fn check_limits(&self, sb: &Sandbox, exceeded: &mut Vec<sandbox_monitor::Limit>) {
        let monitor = &self.inner.monitor;
        if monitor.sample(sb.id.as_str()).is_err() {
            return;
        }
        let alerts = monitor.alerts(sb.id.as_str()).unwrap_or_default();
        let now: Vec<_> = alerts
            .iter()
            .filter(|a| a.level == sandbox_monitor::AlertLevel::Exceeded)
            .collect();
        for alert in &now {
            if !exceeded.contains(&alert.resource) {
                self.inner.events.emit(
                    &sb.id,
                    EventKind::LimitExceeded {
                        resource: alert.resource,
                        value: alert.value,
                        limit: alert.limit,
                    },
                );
            }
        }
        *exceeded = now.iter().map(|a| a.resource).collect();
    }

    /// Whether `sb`'s worker holds more than [`ADDRESS_SPACE_RECYCLE`] of
    /// its address-space limit (`address_space_bytes`, enforced as `RLIMIT_AS`), in
    /// the monitor's latest sample, and grew by a tenth of the limit since
    /// it was fresh (`fresh`: its pid and address space then), so that a
    /// fresh worker would be lower. Address space counts from the moment it
    /// is reserved, used or not: near the limit a worker cannot map the
    /// next library version, so it is recycled before that happens.
    pub(crate) fn near_address_space_limit(&self, sb: &Sandbox, fresh: Option<(u32, u64)>) -> bool {
        let (Some(limit), Some((_, base))) = (sb.spec.limits.address_space_bytes, fresh) else {
            return false;
        };
        let Ok(history) = self.inner.monitor.history(sb.id.as_str()) else {
            return false;
        };
        history.last().is_some_and(|(_, usage)| {
            usage.virtual_bytes as f64 > limit as f64 * ADDRESS_SPACE_RECYCLE
                && usage.virtual_bytes > base.saturating_add(limit / 10)
        })
    }

    /// The pid and address space of `sb`'s worker when it was fresh: `known`
    /// while the worker is the same, else (a new worker) its latest sample.
    pub(crate) fn fresh_address_space(
        &self,
        sb: &Sandbox,
        known: Option<(u32, u64)>,
    ) -> Option<(u32, u64)> {
        let pid = sb.runtime().info().pid;
        match known {
            Some((known_pid, _)) if known_pid == pid => known,
            _ => {
                let history = self.inner.monitor.history(sb.id.as_str()).ok();
                let sampled = history.and_then(|h| h.last().map(|(_, u)| u.virtual_bytes));
                let used = sampled.or_else(|| {
                    self.inner
                        .monitor
                        .sample(sb.id.as_str())
                        .ok()
                        .map(|u| u.virtual_bytes)
                })?;
                Some((pid, used))
            }
        }
    }

    /// Reports a worker near its address-space limit (`limit_exceeded`,
    /// resource `address_space`) and replaces it with a fresh one started
    /// from the live state (`recycled`). The caller holds the `ops` lock.
    pub(crate) async fn recycle_near_limit(&self, sb: &Arc<Sandbox>) {
        let (Some(limit), Ok(history)) = (
            sb.spec.limits.address_space_bytes,
            self.inner.monitor.history(sb.id.as_str()),
        ) else {
            return;
        };
        let used = history.last().map_or(0, |(_, usage)| usage.virtual_bytes);
        self.inner.events.emit(
            &sb.id,
            EventKind::LimitExceeded {
                resource: sandbox_monitor::Limit::AddressSpace,
                value: used as f64,
                limit: limit as f64,
            },
        );
        self.recycle(sb, "near its address-space limit").await;
    }

    /// Replaces the worker by a fresh one started from the live state
    /// (`recycled` event), or logs why it could not (`why` says what the
    /// recycle was for); the old worker keeps serving then.
    pub(crate) async fn recycle(&self, sb: &Arc<Sandbox>, why: &str) {
        let swaps = sb.state.lock().swaps;
        match self.relaunch(sb, true).await {
            Ok(()) => self
                .inner
                .events
                .emit(&sb.id, EventKind::Recycled { swaps }),
            Err(e) => {
                tracing::warn!(sandbox = %sb.id, error = %e, why, "could not recycle the worker")
            }
        }
    }

    /// After a committed swap of `swapped` modules: checkpoint the new
    /// state, or recycle the worker when it has swapped enough.
    pub(crate) async fn after_swap(&self, sb: &Arc<Sandbox>, swapped: usize) {
        if !self.checkpointed(sb) {
            return;
        }
        if sb.spec.isolation.shares_host() {
            // No worker to recycle: only the durable checkpoint.
            self.checkpoint(sb).await;
            return;
        }
        let recycle = {
            let mut state = sb.state.lock();
            state.swaps = state.swaps.saturating_add(swapped as u32);
            let every = self.inner.config.recycle_after_swaps;
            every > 0 && state.swaps >= every
        };
        if recycle {
            self.recycle(sb, "it swapped enough").await;
            return;
        }
        self.checkpoint(sb).await;
    }

    /// Whether `sb`'s state is checkpointed: always in a worker (what a
    /// restarted worker starts from); in-process only when a
    /// [`CheckpointStore`](crate::CheckpointStore) keeps the checkpoints.
    pub(crate) fn checkpointed(&self, sb: &Sandbox) -> bool {
        !sb.spec.isolation.shares_host() || self.inner.config.checkpoint_store.is_some()
    }

    /// Takes a checkpoint of sandbox `id` now — after any operation in
    /// progress — and hands it to the
    /// [`CheckpointStore`](crate::CheckpointStore), if any (a host does this
    /// before it shuts down). Does nothing for a sandbox whose state is not
    /// checkpointed (in-process, without a store).
    pub async fn checkpoint_now(&self, id: &str) -> Result<()> {
        let sb = self.get(id)?;
        if !self.checkpointed(&sb) {
            return Ok(());
        }
        let _op = sb.ops.lock().await;
        let mut stored = sb.supervision.stored.lock().await;
        self.save_locked(&sb, &mut stored).await
    }

    /// Saves every module's state as the one a restarted worker starts from.
    pub(crate) async fn checkpoint(&self, sb: &Sandbox) {
        let mut stored = sb.supervision.stored.lock().await;
        if let Err(e) = self.save_locked(sb, &mut stored).await {
            tracing::debug!(sandbox = %sb.id, error = %e, "checkpoint failed");
        }
    }

    /// Returns once the state saved reflects a call that ran on runtime
    /// `epoch` while saves numbered up to `after` were done: a save numbered
    /// above `after` covers it (see [`Supervision`]), taken here unless a
    /// concurrent caller's save (or a relaunch from the live state) already
    /// did. Fails when that runtime is gone without such a save.
    async fn save_covering(&self, sb: &Sandbox, epoch: u64, after: u64) -> Result<()> {
        let mut stored = sb.supervision.stored.lock().await;
        if *stored > after {
            return Ok(());
        }
        if sb.epoch.load(Ordering::SeqCst) != epoch {
            return Err(Error::Isolate(sandbox_isolate::Error::WorkerDied {
                cause: "before the state this call changed was saved".into(),
            }));
        }
        self.save_locked(sb, &mut stored).await
    }

    /// Takes a checkpoint and stores it; `stored` is the held save lock.
    /// Under [`Durability::EveryCall`] no call runs while it is taken (it
    /// holds the fence), so it covers exactly the calls answered before it.
    async fn save_locked(&self, sb: &Sandbox, stored: &mut u64) -> Result<()> {
        let _fence = match sb.spec.durability {
            Durability::EveryCall => Some(sb.supervision.fence.write().await),
            _ => None,
        };
        let number = sb.supervision.started.fetch_add(1, Ordering::SeqCst) + 1;
        let rt = sb.runtime();
        let mut states = blocking(move || rt.checkpoint()).await??;
        if let Some(store) = self.inner.config.checkpoint_store.clone() {
            // Durable before it counts: under every-call durability the
            // replies waiting on this save wait for the store too.
            let id = sb.id.clone();
            states = blocking(move || store.store(&id, &states).map(|()| states))
                .await?
                .map_err(|source| {
                    Error::Isolate(sandbox_isolate::Error::Io {
                        action: "storing a checkpoint of sandbox",
                        path: sb.id.as_str().into(),
                        source,
                    })
                })?;
        }
        sb.state.lock().saved = states.into_iter().collect();
        *stored = number;
        Ok(())
    }

    /// Calls `module` on the sandbox's current runtime. A process sandbox's
    /// call passes its fence (so it never reaches a runtime being replaced)
    /// and, under [`Durability::EveryCall`], returns only once a save taken
    /// after it answered is stored. A call whose state cannot be saved (the
    /// worker died first) fails with
    /// [`WorkerDied`](sandbox_isolate::Error::WorkerDied), and its effect is
    /// not in the state the restarted worker starts from.
    pub(crate) async fn call_runtime(
        &self,
        sb: &Sandbox,
        module: &str,
        input: Vec<u8>,
    ) -> Result<Vec<u8>> {
        // The runtime enforces the timeout: in-process the call is abandoned
        // on a thread of its own (so a call that never returns cannot hold up
        // the async runtime's shutdown); a worker is killed.
        let timeout = sb.spec.limits.call_timeout;
        let m = module.to_owned();
        if !self.checkpointed(sb) {
            return Ok(run_call(sb.runtime(), m, input, timeout).await??);
        }
        let (out, epoch, after) = {
            let _pass = sb.supervision.fence.read().await;
            let out = run_call(sb.runtime(), m, input, timeout).await?;
            // Stable while the fence is held: saves and relaunches take it.
            let epoch = sb.epoch.load(Ordering::SeqCst);
            (out, epoch, sb.supervision.started.load(Ordering::SeqCst))
        };
        let ran = match &out {
            Ok(_) => true,
            // The plugin answered with an error: it may have changed state.
            Err(e) => matches!(e, sandbox_isolate::Error::Plugin { .. }),
        };
        if ran && sb.spec.durability == Durability::EveryCall {
            if let Err(e) = self.save_covering(sb, epoch, after).await {
                tracing::warn!(sandbox = %sb.id, module, error = %e, "the state of an answered call could not be saved; failing the call");
                return Err(match out {
                    Err(call) => call.into(),
                    Ok(_) => e,
                });
            }
        }
        Ok(out?)
    }

    /// Checkpoints a process sandbox on its durability's interval while it
    /// runs, and checks its usage against its limits on that interval (on
    /// `checkpoint_interval` when it saves after every call instead).
    pub(crate) fn spawn_checkpoints(&self, sb: &Arc<Sandbox>) {
        if !self.checkpointed(sb) {
            return;
        }
        // In-process (checkpointed for a store): the host's usage is not
        // the sandbox's, and there is no worker to recycle.
        let worker = !sb.spec.isolation.shares_host();
        let interval = self.inner.config.checkpoint_interval;
        let (save, every) = match sb.spec.durability {
            Durability::ConfigInterval => (true, interval),
            Durability::Interval(every) => (true, Some(every)),
            // Every call saves already.
            Durability::EveryCall => (false, interval),
        };
        let Some(every) = every else {
            return;
        };
        let (weak_sb, weak) = (Arc::downgrade(sb), Arc::downgrade(&self.inner));
        // The worker's address space before any call: it is recycled for
        // what it grew by, never for what a fresh one needs.
        let mut fresh = self.fresh_address_space(sb, None);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut exceeded = Vec::new();
            loop {
                tick.tick().await;
                let (Some(sb), Some(inner)) = (weak_sb.upgrade(), weak.upgrade()) else {
                    break;
                };
                if sb.state.lock().status != Status::Running {
                    continue;
                }
                let manager = Manager {
                    inner: Arc::clone(&inner),
                };
                let recycle = worker && {
                    manager.check_limits(&sb, &mut exceeded);
                    fresh = manager.fresh_address_space(&sb, fresh);
                    manager.near_address_space_limit(&sb, fresh)
                };
                if !save && !recycle {
                    continue;
                }
                // Never alongside a swap or a restart.
                let Ok(_op) = sb.ops.try_lock() else { continue };
                if recycle {
                    manager.recycle_near_limit(&sb).await;
                    continue;
                }
                Manager { inner }.checkpoint(&sb).await;
            }
        });
    }

    /// Replaces the sandbox's runtime with a fresh one running the current
    /// version of every module, restored from the live state (`from_live`,
    /// for restart and recycling) or from the last checkpoint (after a crash).
    /// The caller holds the sandbox's `ops` lock.
    ///
    /// Fenced: from the moment it asks for the fence until the new runtime
    /// is switched in, calls wait; the calls in flight finish first. So the
    /// live state it takes reflects every call the old runtime answered, and
    /// no call reaches the old runtime after that. A relaunch that fails
    /// leaves the old runtime serving (and still supervised).
    pub(crate) async fn relaunch(&self, sb: &Arc<Sandbox>, from_live: bool) -> Result<()> {
        // Saves first, then the fence (the order every holder of both keeps).
        let mut stored = sb.supervision.stored.lock().await;
        let _fence = sb.supervision.fence.write().await;
        let live = if from_live {
            let old = sb.runtime();
            match blocking(move || old.checkpoint()).await? {
                Ok(states) => Some(states.into_iter().collect()),
                // A dead worker (restart by hand after a crash): the checkpoint it is.
                Err(e) => {
                    tracing::info!(sandbox = %sb.id, error = %e, "no live state; restarting from the last checkpoint");
                    None
                }
            }
        } else {
            None
        };
        let from_live = live.is_some();
        let states: BTreeMap<String, SavedState> =
            live.unwrap_or_else(|| sb.state.lock().saved.clone());
        // The new runtime's epoch becomes current only when it is switched
        // in: until then a crash of the old one is still acted on.
        let epoch = sb.epoch.load(Ordering::SeqCst) + 1;
        let launch = self.launch_spec(&sb.id, &sb.spec, sb.generation, epoch);
        let isolator = self.isolator(&sb.spec.isolation)?;
        let (loads, steps) = {
            let state = sb.state.lock();
            let mut loads = Vec::new();
            let mut steps = Vec::new();
            for module in state.graph.topological_levels().into_iter().flatten() {
                let Some(rec) = state.modules.get(&module) else {
                    continue;
                };
                let number = rec.current();
                let artifact = rec.artifact(number).ok_or_else(|| {
                    Error::Internal(format!(
                        "no artifact recorded for {module} version {number}"
                    ))
                })?;
                loads.push((artifact, number));
                steps.push(SwapStep {
                    carry_state: false,
                    initial_state: states.get(&module).cloned(),
                    migration: state.migrations.get(&module).cloned(),
                    ..SwapStep::new(module, number)
                });
            }
            (loads, steps)
        };
        let runtime: Arc<dyn Runtime> = blocking(move || -> Result<Arc<dyn Runtime>> {
            let rt = isolator.launch(&launch)?;
            for ((path, sha256), number) in &loads {
                sandbox_compiler::verify_file(path, sha256)?;
                rt.load(path, *number)?;
            }
            rt.swap(&steps)?;
            Ok(Arc::from(rt))
        })
        .await??;
        // No call holds the old runtime (the fence): its worker goes now.
        {
            let mut current = sb.runtime.write();
            *current = runtime;
            sb.epoch.store(epoch, Ordering::SeqCst);
        }
        self.track_usage(sb);
        let mut state = sb.state.lock();
        state.swaps = 0;
        state.saved = states;
        if from_live {
            // The live state is a save taken with no call running: it covers
            // every call answered so far.
            *stored = sb.supervision.started.fetch_add(1, Ordering::SeqCst) + 1;
        }
        Ok(())
    }

    /// Handles the death of runtime `epoch` of sandbox `id`: reports it,
    /// then restarts the sandbox from its last checkpoint, after a backoff,
    /// unless it crashed more than `max_restarts` times within
    /// `restart_window` (then its status is `Error`).
    pub(crate) async fn recover(&self, id: SandboxId, generation: u64, epoch: u64, crash: Crash) {
        let Ok(sb) = self.get(id.as_str()) else {
            return;
        };
        // A runtime that was replaced is not acted on.
        if sb.generation != generation || sb.epoch.load(Ordering::SeqCst) > epoch {
            return;
        }
        // One that is not current yet is being started by a relaunch, which
        // holds `ops`: it counts only if that relaunch switched it in (a
        // relaunch that failed because it died left the old one serving).
        if sb.epoch.load(Ordering::SeqCst) < epoch {
            let _op = sb.ops.lock().await;
            if sb.epoch.load(Ordering::SeqCst) != epoch {
                return;
            }
        }
        tracing::warn!(sandbox = %sb.id, cause = %crash.cause, "worker crashed");
        self.inner.events.emit(
            &sb.id,
            EventKind::Crashed {
                cause: crash.cause.clone(),
                signal: crash.signal,
                exit_code: crash.exit_code,
                limit: crash.limit,
            },
        );
        self.set_status(&sb, Status::Starting);
        let _op = sb.ops.lock().await;
        if sb.epoch.load(Ordering::SeqCst) != epoch {
            return; // restarted meanwhile
        }
        let config = &self.inner.config;
        let crashes = {
            let mut state = sb.state.lock();
            state
                .recent_crashes
                .retain(|t| t.elapsed() < config.restart_window);
            state.recent_crashes.push(Instant::now());
            state.recent_crashes.len() as u32
        };
        if crashes > config.max_restarts {
            self.set_status(&sb, Status::Error);
            self.inner.events.emit(
                &sb.id,
                EventKind::Failed {
                    operation: "restart".into(),
                    kind: crate::ErrorKind::Crashed,
                    message: format!(
                        "the worker crashed {crashes} times within {:?} (last: {}); not restarting it again — fix the module and call restart",
                        config.restart_window, crash.cause
                    ),
                },
            );
            return;
        }
        let backoff = config
            .restart_backoff
            .saturating_mul(1 << (crashes - 1).min(6));
        tokio::time::sleep(backoff).await;
        match self.relaunch(&sb, false).await {
            Ok(()) => {
                self.set_status(&sb, Status::Running);
                self.count_restart(&sb);
            }
            Err(e) => {
                self.set_status(&sb, Status::Error);
                self.inner.events.emit(
                    &sb.id,
                    EventKind::Failed {
                        operation: "restart".into(),
                        kind: e.kind(),
                        message: e.to_string(),
                    },
                );
            }
        }
    }
}

/// Runs one call on `rt`: started on the backend's own thread and awaited
/// when it can ([`Runtime::start_call`] — two thread hops fewer than a
/// blocking thread that waits), else on a blocking thread. The outer error
/// is the host's (a task that failed), the inner one the call's.
async fn run_call(
    rt: Arc<dyn Runtime>,
    module: String,
    input: Vec<u8>,
    timeout: Option<std::time::Duration>,
) -> Result<sandbox_isolate::Result<Vec<u8>>> {
    let (tx, answer) = tokio::sync::oneshot::channel();
    let done: sandbox_isolate::CallDone = Box::new(move |result| {
        let _ = tx.send(result);
    });
    if rt.start_call(&module, &input, done).is_err() {
        return blocking(move || rt.call(&module, &input, timeout)).await;
    }
    let waited = match timeout {
        Some(limit) => match tokio::time::timeout(limit, answer).await {
            Ok(waited) => waited,
            Err(_) => return Ok(Err(sandbox_isolate::Error::abandoned(&module, limit))),
        },
        None => answer.await,
    };
    waited.map_err(|_| Error::Internal("a call thread ended without an answer".into()))
}

#[cfg(test)]
mod tests {
    use sandbox_isolate::jail::Layers;
    use sandbox_security::Profile;

    use sandbox_isolate::IsolationKind;

    use crate::{Config, Manager, SandboxId, SandboxSpec};

    #[test]
    fn a_launch_spec_carries_the_profile_s_layers_and_the_sandbox_s_caps() {
        let dir = tempfile::tempdir().unwrap();
        let manager = Manager::builder(Config::with_cache_root(dir.path()))
            .build()
            .unwrap();
        let id = SandboxId::new("spec").unwrap();
        let launch = |profile: Profile| {
            let spec = SandboxSpec::new(dir.path())
                .isolation(IsolationKind::PROCESS)
                .profile(profile);
            manager.launch_spec(&id, &spec, 1, 1)
        };
        let high = launch(Profile::High);
        assert_eq!(high.require, Some(Layers::UNTRUSTED));
        assert!(!high.network);
        let defaults = sandbox_monitor::ResourceLimits::default();
        assert_eq!(high.disk_limit, defaults.disk_bytes);
        assert!(
            high.disk_limit.is_some(),
            "the default disk cap is not passed on"
        );
        assert_eq!(launch(Profile::Medium).require, Some(Layers::UNTRUSTED));
        let low = launch(Profile::Trusted);
        assert_eq!(low.require, Some(Layers::NONE));
        assert!(low.network);
    }
}
