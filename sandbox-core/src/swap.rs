//! Operations that change a sandbox's code: hot reload, rollback, restart.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use sandbox_isolate::{ModuleMeta, SwapStep};
use tracing::Instrument;

use crate::event::EventKind;
use crate::manager::{blocking, detached, millis, unknown_module, ModuleRecord, Pending, Sandbox};
use crate::plan::{self, refuse_downgrade, Loaded, ReloadPlan, Seen};
use crate::{Error, Manager, ReloadReport, Result, SandboxInfo, Status, Swapped};

impl Manager {
    /// Runs `op` on sandbox `id` holding its `ops` lock (so code-changing
    /// operations never interleave), on a task of its own (so dropping the
    /// caller's future never stops it halfway), in a span with the sandbox id.
    pub(crate) async fn exclusive<T, F, Fut>(
        &self,
        id: &str,
        operation: &'static str,
        op: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Manager, Arc<Sandbox>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send,
    {
        let sb = self.get(id)?;
        let span = tracing::info_span!("operation", operation, sandbox = %sb.id);
        let this = self.clone();
        detached(
            async move {
                let _op = sb.ops.lock().await;
                op(this, Arc::clone(&sb)).await
            }
            .instrument(span),
        )
        .await
    }

    /// Rebuilds sandbox `id` and swaps every module whose artifact changed,
    /// plus every module that depends on one, dependencies first, carrying
    /// state, all or nothing. A compile error or a failed swap leaves the
    /// current versions serving.
    pub async fn hot_reload(&self, id: &str) -> Result<ReloadReport> {
        self.exclusive(id, "hot_reload", |this, sb| async move {
            this.hot_reload_locked(&sb).await
        })
        .await
    }

    async fn hot_reload_locked(&self, sb: &Arc<Sandbox>) -> Result<ReloadReport> {
        self.ensure_running(sb)?;
        self.set_status(sb, Status::Reloading);
        let result = self.reload_locked(sb).await;
        self.set_status(sb, Status::Running);
        if let Err(e) = &result {
            self.inner.events.emit(
                &sb.id,
                EventKind::Failed {
                    operation: "reload".into(),
                    kind: e.kind(),
                    message: e.to_string(),
                },
            );
        }
        result
    }

    pub(crate) fn ensure_running(&self, sb: &Sandbox) -> Result<()> {
        let status = sb.state.lock().status;
        if status != Status::Running {
            return Err(Error::NotRunning {
                id: sb.id.clone(),
                status,
                hint: "wait until it is running",
            });
        }
        Ok(())
    }

    async fn reload_locked(&self, sb: &Arc<Sandbox>) -> Result<ReloadReport> {
        let deferred = self.check_policy(&sb.spec)?;
        let build = self.compile(&sb.id, &sb.spec).await?;
        self.recheck_policy(&sb.spec, deferred)?;
        let (cached, compile_millis) = (build.cached, millis(build.duration));
        let started = Instant::now();

        // Work out what changed, loading only artifacts never seen before.
        let mut pending: Vec<Pending> = Vec::new();
        let mut switch_to: BTreeMap<String, u32> = BTreeMap::new();
        for artifact in build.artifacts {
            let seen = plan::classify(&sb.state.lock().modules, &artifact.name, &artifact.sha256);
            let (expected, number) = match seen {
                Seen::Current => continue,
                Seen::Retained { module, number } => {
                    switch_to.insert(module, number);
                    continue;
                }
                Seen::NewVersion { module, number } => (Some(module), number),
                Seen::NewModule => (None, 1),
            };
            let meta = self.load(sb, &artifact, number, &pending).await?;
            let clash = match &expected {
                Some(module) => (meta.name != *module).then(|| module.clone()),
                None => (sb.state.lock().modules.contains_key(&meta.name)
                    || pending.iter().any(|p| p.module == meta.name))
                .then(|| "an existing library".to_owned()),
            };
            if let Some(first) = clash {
                self.forget_pending(sb, &pending).await;
                let _ = sb.runtime().forget(&meta.name, number);
                return Err(Error::DuplicateModule {
                    module: meta.name,
                    first,
                    second: artifact.name,
                });
            }
            switch_to.insert(meta.name.clone(), number);
            pending.push(Pending {
                module: meta.name.clone(),
                number,
                meta,
                artifact,
            });
        }
        if switch_to.is_empty() {
            self.inner.events.emit(&sb.id, EventKind::Unchanged);
            return Ok(ReloadReport {
                swapped: Vec::new(),
                changed: Vec::new(),
                cached,
                compile_millis,
                swap_millis: 0,
            });
        }

        // The new dependency graph and the reload order (or a refusal).
        let planned = {
            let loaded: Vec<Loaded<'_>> = pending
                .iter()
                .map(|p| Loaded {
                    module: &p.module,
                    number: p.number,
                    meta: &p.meta,
                })
                .collect();
            plan::plan_reload(&sb.state.lock(), &sb.id, &switch_to, &loaded)
        };
        let ReloadPlan { graph, steps } = match planned {
            Ok(plan) => plan,
            Err(e) => {
                self.forget_pending(sb, &pending).await;
                return Err(e);
            }
        };
        // Records of new modules are made before the swap, so nothing can
        // fail between a committed swap and its records.
        let fresh: Result<BTreeMap<String, ModuleRecord>> = {
            let state = sb.state.lock();
            pending
                .iter()
                .filter(|p| !state.modules.contains_key(&p.module))
                .map(|p| {
                    let record = ModuleRecord::new(
                        &p.module,
                        p.artifact.name.clone(),
                        self.inner.config.history,
                    )?;
                    Ok((p.module.clone(), record))
                })
                .collect()
        };
        let mut fresh = match fresh {
            Ok(fresh) => fresh,
            Err(e) => {
                self.forget_pending(sb, &pending).await;
                return Err(e);
            }
        };
        let modules: Vec<String> = steps.iter().map(|s| s.module.clone()).collect();
        let rt = sb.runtime();
        let swapped = blocking(move || rt.swap(&steps)).await?;
        let outcomes = match swapped {
            Ok(outcomes) => outcomes,
            Err(e) => {
                self.forget_pending(sb, &pending).await;
                self.inner.events.emit(
                    &sb.id,
                    EventKind::RolledBack {
                        modules,
                        reason: e.to_string(),
                    },
                );
                self.replace_if_abandoned(sb).await;
                return Err(e.into());
            }
        };

        // Commit the records.
        let now = SystemTime::now();
        let mut evicted = Vec::new();
        {
            let mut state = sb.state.lock();
            for p in pending {
                let record = match state.modules.entry(p.module.clone()) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => match fresh.remove(&p.module) {
                        Some(record) => e.insert(record),
                        None => unreachable!("a record was made for every new module"),
                    },
                };
                record.record(p, now);
            }
            for (module, number) in &switch_to {
                if let Some(rec) = state.modules.get_mut(module) {
                    rec.history.set_current(*number).map_err(Error::Version)?;
                    for old in rec.history.take_evicted() {
                        rec.metas.remove(&old.number);
                        rec.paths.remove(&old.number);
                        evicted.push((module.clone(), old.number));
                    }
                }
            }
            state.graph = graph;
            state.updated_at = now;
        }
        for (module, number) in evicted {
            if let Err(e) = sb.runtime().forget(&module, number) {
                tracing::warn!(sandbox = %sb.id, module, number, error = %e, "could not drop an evicted version");
            }
        }
        let swapped: Vec<Swapped> = outcomes
            .into_iter()
            .map(|o| Swapped {
                module: o.module,
                from: o.from,
                to: o.to,
            })
            .collect();
        for s in &swapped {
            self.inner.events.emit(
                &sb.id,
                EventKind::Swapped {
                    module: s.module.clone(),
                    from: s.from,
                    to: s.to,
                },
            );
        }
        self.after_swap(sb, swapped.len()).await;
        Ok(ReloadReport {
            swapped,
            changed: switch_to.into_keys().collect(),
            cached,
            compile_millis,
            swap_millis: millis(started.elapsed()),
        })
    }

    async fn load(
        &self,
        sb: &Sandbox,
        artifact: &sandbox_compiler::Artifact,
        number: u32,
        pending: &[Pending],
    ) -> Result<ModuleMeta> {
        let rt = sb.runtime();
        let checked = artifact.clone();
        let loaded = blocking(move || -> Result<ModuleMeta> {
            checked.verify()?;
            Ok(rt.load(&checked.path, number)?)
        });
        match loaded.await? {
            Ok(meta) => Ok(meta),
            Err(e) => {
                self.forget_pending(sb, pending).await;
                Err(e)
            }
        }
    }

    async fn forget_pending(&self, sb: &Sandbox, pending: &[Pending]) {
        for p in pending {
            if let Err(e) = sb.runtime().forget(&p.module, p.number) {
                tracing::debug!(sandbox = %sb.id, module = %p.module, error = %e, "forgetting an unused version");
            }
        }
    }

    /// After a failed swap: a worker left carrying plugin code that overran
    /// its lifecycle deadline (a thread that may run for good, see
    /// [`Runtime::needs_replacing`](sandbox_isolate::Runtime::needs_replacing))
    /// is replaced by a fresh one started from its live state, so that code
    /// is killed and no answered call is lost. The caller holds the `ops`
    /// lock.
    async fn replace_if_abandoned(&self, sb: &Arc<Sandbox>) {
        let Some(why) = sb.runtime().needs_replacing() else {
            return;
        };
        tracing::info!(sandbox = %sb.id, why, "replacing a worker that carries abandoned code");
        self.recycle(sb, "it carries abandoned code").await;
    }

    /// Swaps `module` of sandbox `id` back (or forward) to retained
    /// `version`, carrying its live state like any swap.
    pub async fn rollback(&self, id: &str, module: &str, version: u32) -> Result<Swapped> {
        let module = module.to_owned();
        self.exclusive(id, "rollback", move |this, sb| async move {
            this.rollback_locked(&sb, &module, version).await
        })
        .await
    }

    async fn rollback_locked(
        &self,
        sb: &Arc<Sandbox>,
        module: &str,
        version: u32,
    ) -> Result<Swapped> {
        self.ensure_running(sb)?;
        let (step, from, graph, path) = {
            let state = sb.state.lock();
            let rec = state
                .modules
                .get(module)
                .ok_or_else(|| unknown_module(&state, module))?;
            let target = rec
                .history
                .rollback_target(version)
                .map_err(Error::Version)?;
            if let Some(meta) = rec.metas.get(&version) {
                refuse_downgrade(&state, &sb.id, module, version, meta.schema)?;
            }
            let mut graph = state.graph.clone();
            graph
                .insert(module, &target.dependencies)
                .map_err(Error::Dependencies)?;
            graph
                .check_dependencies_known()
                .map_err(Error::Dependencies)?;
            let step = SwapStep {
                migration: state.migrations.get(module).cloned(),
                health_check: state.health_checks.get(module).cloned(),
                ..SwapStep::new(module, version)
            };
            (step, rec.current(), graph, rec.artifact(version))
        };
        let rt = sb.runtime();
        let swapped = blocking(move || -> Result<_> {
            // A restarted or recycled worker loads retained versions on demand.
            if let Some((path, sha256)) = path {
                sandbox_compiler::verify_file(&path, &sha256)?;
                match rt.load(&path, version) {
                    Ok(_) | Err(sandbox_isolate::Error::AlreadyLoaded { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(rt.swap(std::slice::from_ref(&step))?)
        })
        .await?;
        if let Err(e) = swapped {
            self.inner.events.emit(
                &sb.id,
                EventKind::RolledBack {
                    modules: vec![module.to_owned()],
                    reason: e.to_string(),
                },
            );
            self.replace_if_abandoned(sb).await;
            return Err(e);
        }
        {
            let mut state = sb.state.lock();
            if let Some(rec) = state.modules.get_mut(module) {
                rec.history.set_current(version).map_err(Error::Version)?;
            }
            state.graph = graph;
            state.updated_at = SystemTime::now();
        }
        let events = &self.inner.events;
        events.emit(
            &sb.id,
            EventKind::Rollback {
                module: module.to_owned(),
                from,
                to: version,
            },
        );
        events.emit(
            &sb.id,
            EventKind::Swapped {
                module: module.to_owned(),
                from: Some(from),
                to: version,
            },
        );
        self.after_swap(sb, 1).await;
        Ok(Swapped {
            module: module.to_owned(),
            from: Some(from),
            to: version,
        })
    }

    /// Rebuilds every module instance of sandbox `id` from its current
    /// version, carrying state, in dependency order (process isolation: in a
    /// fresh worker).
    ///
    /// Process isolation: calls that arrive meanwhile are refused (the
    /// sandbox is `starting`); calls in flight finish on the old worker
    /// first, and its live state — every answered call included — is what
    /// the fresh worker starts from. A worker that is already dead (a
    /// restart by hand from `error`) starts from the last saved state.
    pub async fn restart(&self, id: &str) -> Result<SandboxInfo> {
        self.exclusive(id, "restart", |this, sb| async move {
            this.restart_locked(&sb).await
        })
        .await
    }

    async fn restart_locked(&self, sb: &Arc<Sandbox>) -> Result<SandboxInfo> {
        // A sandbox left in `Error` (crash budget spent) may be restarted by hand.
        if sb.state.lock().status != Status::Error {
            self.ensure_running(sb)?;
        }
        self.set_status(sb, Status::Starting);
        let result = if !sb.spec.isolation.shares_host() {
            // A fresh worker, started from the live state.
            self.relaunch(sb, true).await
        } else {
            self.reinstantiate(sb).await
        };
        self.set_status(sb, Status::Running);
        result?;
        self.count_restart(sb);
        Ok(self.snapshot(sb))
    }

    /// Replaces every instance of the runtime by a fresh one of the same
    /// version, state carried, dependencies first.
    async fn reinstantiate(&self, sb: &Arc<Sandbox>) -> Result<()> {
        let steps: Vec<SwapStep> = {
            let state = sb.state.lock();
            state
                .graph
                .topological_levels()
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    let rec = state.modules.get(&m)?;
                    Some(SwapStep {
                        migration: state.migrations.get(&m).cloned(),
                        ..SwapStep::new(m, rec.current())
                    })
                })
                .collect()
        };
        let rt = sb.runtime();
        blocking(move || rt.swap(&steps)).await??;
        Ok(())
    }

    /// Counts a restart and reports it.
    pub(crate) fn count_restart(&self, sb: &Sandbox) {
        let restart_count = {
            let mut state = sb.state.lock();
            state.restart_count += 1;
            state.restart_count
        };
        self.inner
            .events
            .emit(&sb.id, EventKind::Restarted { restart_count });
    }
}
