//! Operations that change a sandbox's code: hot reload, rollback, restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use sandbox_isolate::{ModuleMeta, SwapStep};
use sandbox_versions::VersionHistory;
use tracing::Instrument;

use crate::event::EventKind;
use crate::manager::{
    blocking, detached, millis, new_version, unknown_module, ModuleRecord, Pending, Sandbox,
};
use crate::{Error, Manager, ReloadReport, Result, SandboxInfo, Status, Swapped};

/// Refuses to hand `module`'s live state to `version`, whose state schema
/// `to` is lower than the live one: that version cannot know the state (a
/// plugin whose `restore_state` ignores unknown schemas would start from
/// nothing), unless the host registered a migration for the module.
fn refuse_downgrade(
    state: &crate::manager::State,
    id: &crate::SandboxId,
    module: &str,
    version: u32,
    to: u32,
) -> Result<()> {
    let Some(from) = state
        .modules
        .get(module)
        .and_then(|rec| rec.current_meta())
        .map(|meta| meta.schema)
    else {
        return Ok(());
    };
    if to < from && !state.migrations.contains_key(module) {
        return Err(Error::SchemaDowngrade {
            id: id.clone(),
            module: module.to_owned(),
            version,
            from,
            to,
        });
    }
    Ok(())
}

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
                    kind: e.kind().into(),
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
            let known = {
                let state = sb.state.lock();
                state
                    .modules
                    .iter()
                    .find(|(_, r)| r.artifact == artifact.name)
                    .map(|(name, rec)| {
                        let current_sha = rec.history.current().map(|c| c.artifact_sha256.clone());
                        let existing = rec
                            .history
                            .find_checksum(&artifact.sha256)
                            .map(|r| r.number);
                        (
                            name.clone(),
                            current_sha,
                            existing,
                            rec.history.next_number(),
                        )
                    })
            };
            match known {
                Some((_, Some(sha), _, _)) if sha == artifact.sha256 => {}
                Some((module, _, Some(existing), _)) => {
                    switch_to.insert(module, existing);
                }
                Some((module, _, None, number)) => {
                    let meta = self.load(sb, &artifact, number, &pending).await?;
                    if meta.name != module {
                        self.forget_pending(sb, &pending).await;
                        let _ = sb.runtime().forget(&meta.name, number);
                        return Err(Error::DuplicateModule {
                            module: meta.name,
                            first: module,
                            second: artifact.name,
                        });
                    }
                    switch_to.insert(module.clone(), number);
                    pending.push(Pending {
                        module,
                        number,
                        meta,
                        artifact,
                        new_module: false,
                    });
                }
                None => {
                    let meta = self.load(sb, &artifact, 1, &pending).await?;
                    let clash = sb.state.lock().modules.contains_key(&meta.name)
                        || pending.iter().any(|p| p.module == meta.name);
                    if clash {
                        self.forget_pending(sb, &pending).await;
                        let _ = sb.runtime().forget(&meta.name, 1);
                        return Err(Error::DuplicateModule {
                            module: meta.name,
                            first: "an existing library".into(),
                            second: artifact.name,
                        });
                    }
                    switch_to.insert(meta.name.clone(), 1);
                    pending.push(Pending {
                        module: meta.name.clone(),
                        number: 1,
                        meta,
                        artifact,
                        new_module: true,
                    });
                }
            }
        }
        // No live state goes to a version that cannot know its schema.
        let downgrade = {
            let state = sb.state.lock();
            switch_to.iter().find_map(|(module, number)| {
                let to = pending
                    .iter()
                    .find(|p| &p.module == module && p.number == *number)
                    .map(|p| &p.meta)
                    .or_else(|| state.modules.get(module)?.metas.get(number))?
                    .schema;
                refuse_downgrade(&state, &sb.id, module, *number, to).err()
            })
        };
        if let Some(e) = downgrade {
            self.forget_pending(sb, &pending).await;
            return Err(e);
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

        // The new dependency graph and the reload order.
        let plan = {
            let state = sb.state.lock();
            let mut graph = state.graph.clone();
            let deps_of = |module: &str, number: u32| -> Vec<String> {
                pending
                    .iter()
                    .find(|p| p.module == module && p.number == number)
                    .map(|p| p.meta.dependencies.clone())
                    .or_else(|| {
                        state
                            .modules
                            .get(module)
                            .and_then(|r| r.metas.get(&number))
                            .map(|m| m.dependencies.clone())
                    })
                    .unwrap_or_default()
            };
            let mut planned = Ok(());
            for (module, number) in &switch_to {
                if let Err(e) = graph.insert(module, &deps_of(module, *number)) {
                    planned = Err(e);
                    break;
                }
            }
            planned
                .and_then(|()| graph.check_dependencies_known())
                .and_then(|()| graph.reload_order(&switch_to.keys().cloned().collect::<Vec<_>>()))
                .map(|order| {
                    let steps: Vec<SwapStep> = order
                        .into_iter()
                        .flatten()
                        .map(|module| {
                            let version = switch_to.get(&module).copied().unwrap_or_else(|| {
                                state.modules.get(&module).map(|r| r.current()).unwrap_or(0)
                            });
                            let exists = state.modules.contains_key(&module);
                            SwapStep {
                                carry_state: exists,
                                migration: state.migrations.get(&module).cloned(),
                                health_check: state.health_checks.get(&module).cloned(),
                                ..SwapStep::new(module, version)
                            }
                        })
                        .collect();
                    (graph, steps)
                })
        };
        let (graph, steps) = match plan {
            Ok(plan) => plan,
            Err(e) => {
                self.forget_pending(sb, &pending).await;
                return Err(Error::Dependencies(e));
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
                let entry = state
                    .modules
                    .entry(p.module.clone())
                    .or_insert_with(|| ModuleRecord {
                        history: VersionHistory::with_default_retention(p.module.clone()),
                        metas: HashMap::new(),
                        artifact: p.artifact.name.clone(),
                        paths: HashMap::new(),
                    });
                if p.new_module {
                    let _ = entry.history.set_retention(self.inner.config.history);
                }
                let recorded = entry.history.record(new_version(&p), now);
                debug_assert_eq!(
                    recorded.record().number,
                    p.number,
                    "loaded under the number the history assigns"
                );
                entry.metas.insert(p.number, p.meta);
                entry.paths.insert(p.number, p.artifact.path);
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
        let result = if sb.spec.isolation == sandbox_isolate::IsolationKind::Process {
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
