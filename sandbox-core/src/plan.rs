//! The pure half of a hot reload: what each built artifact means for a
//! sandbox ([`classify`]) and, once the new versions are loaded, the
//! dependency graph and the ordered swap steps the runtime carries out
//! ([`plan_reload`]). No cargo, no loading, no runtime: the swap
//! transaction in `swap.rs` does the effects, these functions decide, and
//! their tests run on hand-made records.

use std::collections::BTreeMap;

use sandbox_isolate::{ModuleMeta, SwapStep};
use sandbox_versions::DependencyGraph;

use crate::manager::{ModuleRecord, State};
use crate::{Error, Result, SandboxId};

/// What one built artifact (a cargo library target and the sha256 of its
/// file) means for the sandbox's modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The module it builds is already running exactly this file.
    Current,
    /// A retained version of `module` is this file: switch back to it,
    /// nothing to load.
    Retained {
        /// The module.
        module: String,
        /// The retained version.
        number: u32,
    },
    /// A new version of `module`, to load as `number`.
    NewVersion {
        /// The module.
        module: String,
        /// The number its history gives it.
        number: u32,
    },
    /// A library target the sandbox has never built: a new module, whose
    /// name is known only once it is loaded (as version 1).
    NewModule,
}

/// Classifies the artifact of library target `target` with file hash
/// `sha256` against the sandbox's `modules`.
pub(crate) fn classify(
    modules: &BTreeMap<String, ModuleRecord>,
    target: &str,
    sha256: &str,
) -> Seen {
    let Some((module, rec)) = modules.iter().find(|(_, r)| r.artifact == target) else {
        return Seen::NewModule;
    };
    if rec.history.current().map(|c| c.artifact_sha256.as_str()) == Some(sha256) {
        return Seen::Current;
    }
    match rec.history.find_checksum(sha256) {
        Some(retained) => Seen::Retained {
            module: module.clone(),
            number: retained.number,
        },
        None => Seen::NewVersion {
            module: module.clone(),
            number: rec.history.next_number(),
        },
    }
}

/// A version loaded for this reload, not yet in any history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loaded<'a> {
    pub(crate) module: &'a str,
    pub(crate) number: u32,
    pub(crate) meta: &'a ModuleMeta,
}

/// What a reload will do, all or nothing.
#[derive(Debug)]
pub(crate) struct ReloadPlan {
    /// The dependency graph once the swap commits.
    pub(crate) graph: DependencyGraph,
    /// The swaps in reload order: dependencies first, then every module
    /// that depends on a changed one (re-instantiated on its current
    /// version, its state carried).
    pub(crate) steps: Vec<SwapStep>,
}

/// Plans switching the modules of `switch_to` to the versions it names
/// (`loaded` holds the metadata of the versions loaded for this reload;
/// the others are retained ones). Refused, with nothing to undo but the
/// loaded versions, when a version would get live state of a newer schema
/// than it reads and no migration is registered
/// ([`Error::SchemaDowngrade`]), or when the new graph has a cycle or an
/// unknown dependency ([`Error::Dependencies`]).
pub(crate) fn plan_reload(
    state: &State,
    id: &SandboxId,
    switch_to: &BTreeMap<String, u32>,
    loaded: &[Loaded<'_>],
) -> Result<ReloadPlan> {
    let meta_of = |module: &str, number: u32| -> Option<&ModuleMeta> {
        loaded
            .iter()
            .find(|l| l.module == module && l.number == number)
            .map(|l| l.meta)
            .or_else(|| state.modules.get(module)?.metas.get(&number))
    };
    for (module, &number) in switch_to {
        if let Some(meta) = meta_of(module, number) {
            refuse_downgrade(state, id, module, number, meta.schema)?;
        }
    }
    let mut graph = state.graph.clone();
    for (module, &number) in switch_to {
        let dependencies = meta_of(module, number)
            .map(|m| m.dependencies.clone())
            .unwrap_or_default();
        graph
            .insert(module, &dependencies)
            .map_err(Error::Dependencies)?;
    }
    graph
        .check_dependencies_known()
        .map_err(Error::Dependencies)?;
    let changed: Vec<String> = switch_to.keys().cloned().collect();
    let order = graph.reload_order(&changed).map_err(Error::Dependencies)?;
    let steps = order
        .into_iter()
        .flatten()
        .map(|module| {
            let record = state.modules.get(&module);
            let version = switch_to
                .get(&module)
                .copied()
                .unwrap_or_else(|| record.map_or(0, ModuleRecord::current));
            SwapStep {
                carry_state: record.is_some(),
                migration: state.migrations.get(&module).cloned(),
                health_check: state.health_checks.get(&module).cloned(),
                ..SwapStep::new(module, version)
            }
        })
        .collect();
    Ok(ReloadPlan { graph, steps })
}

/// Refuses to hand `module`'s live state to `version`, whose state schema
/// `to` is lower than the live one: that version cannot know the state (a
/// plugin whose `restore_state` ignores unknown schemas would start from
/// nothing), unless the host registered a migration for the module.
pub(crate) fn refuse_downgrade(
    state: &State,
    id: &SandboxId,
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::SystemTime;

    use sandbox_versions::NewVersion;

    use super::*;

    fn meta(name: &str, schema: u32, deps: &[&str]) -> ModuleMeta {
        ModuleMeta {
            name: name.into(),
            version: "0.1.0".into(),
            schema,
            dependencies: deps.iter().map(|d| (*d).to_owned()).collect(),
            pure: false,
        }
    }

    /// A record of `name` (built from target `lib_<name>`) whose versions
    /// have the given (sha256, schema); the last is current.
    fn record(name: &str, versions: &[(&str, u32)], deps: &[&str]) -> ModuleRecord {
        let mut rec = ModuleRecord::new(name, format!("lib_{name}"), 10).unwrap();
        for (sha, schema) in versions {
            let m = meta(name, *schema, deps);
            let number = rec
                .history
                .record(
                    NewVersion {
                        artifact_sha256: (*sha).into(),
                        source_hash: "src".into(),
                        dependencies: m.dependencies.clone(),
                        module_version: m.version.clone(),
                        schema: m.schema,
                    },
                    SystemTime::now(),
                )
                .record()
                .number;
            rec.metas.insert(number, m);
            rec.paths.insert(number, PathBuf::from(format!("/v/{sha}")));
            rec.history.set_current(number).unwrap();
        }
        rec
    }

    /// `store` (schema 1) ← `api` (depends on store) ← `web` (on api).
    fn state() -> State {
        let modules: BTreeMap<String, ModuleRecord> = [
            record("store", &[("s1", 1), ("s2", 1)], &[]),
            record("api", &[("a1", 1)], &["store"]),
            record("web", &[("w1", 1)], &["api"]),
        ]
        .into_iter()
        .map(|r| (r.history.module().to_owned(), r))
        .collect();
        let graph = DependencyGraph::from_modules(
            modules
                .iter()
                .map(|(name, r)| (name.clone(), r.current_meta().unwrap().dependencies.clone())),
        )
        .unwrap();
        State::new(modules, graph, SystemTime::now())
    }

    fn id() -> SandboxId {
        SandboxId::new("plan").unwrap()
    }

    #[test]
    fn an_artifact_is_current_retained_a_next_version_or_a_new_module() {
        let s = state();
        assert_eq!(classify(&s.modules, "lib_store", "s2"), Seen::Current);
        assert_eq!(
            classify(&s.modules, "lib_store", "s1"),
            Seen::Retained {
                module: "store".into(),
                number: 1
            }
        );
        assert_eq!(
            classify(&s.modules, "lib_store", "s3"),
            Seen::NewVersion {
                module: "store".into(),
                number: 3
            }
        );
        assert_eq!(classify(&s.modules, "lib_cache", "c1"), Seen::NewModule);
    }

    #[test]
    fn a_changed_dependency_reloads_its_dependents_after_it_on_their_current_versions() {
        let s = state();
        let new_store = meta("store", 1, &[]);
        let switch_to = BTreeMap::from([("store".to_owned(), 3)]);
        let loaded = [Loaded {
            module: "store",
            number: 3,
            meta: &new_store,
        }];
        let plan = plan_reload(&s, &id(), &switch_to, &loaded).unwrap();
        let steps: Vec<(&str, u32, bool)> = plan
            .steps
            .iter()
            .map(|st| (st.module.as_str(), st.version, st.carry_state))
            .collect();
        assert_eq!(
            steps,
            [("store", 3, true), ("api", 1, true), ("web", 1, true)]
        );
    }

    #[test]
    fn a_new_module_starts_empty_and_joins_the_graph() {
        let s = state();
        let cache = meta("cache", 1, &["store"]);
        let switch_to = BTreeMap::from([("cache".to_owned(), 1)]);
        let loaded = [Loaded {
            module: "cache",
            number: 1,
            meta: &cache,
        }];
        let plan = plan_reload(&s, &id(), &switch_to, &loaded).unwrap();
        assert_eq!(plan.steps.len(), 1);
        assert!(!plan.steps[0].carry_state);
        assert_eq!(plan.graph.dependencies_of("cache"), ["store"]);
    }

    #[test]
    fn a_cycle_or_an_unknown_dependency_is_refused() {
        let s = state();
        let cyclic = meta("store", 1, &["web"]);
        let switch_to = BTreeMap::from([("store".to_owned(), 3)]);
        let loaded = [Loaded {
            module: "store",
            number: 3,
            meta: &cyclic,
        }];
        let err = plan_reload(&s, &id(), &switch_to, &loaded).unwrap_err();
        assert!(matches!(err, Error::Dependencies(_)), "{err}");

        let unknown = meta("api", 1, &["ghost"]);
        let switch_to = BTreeMap::from([("api".to_owned(), 2)]);
        let loaded = [Loaded {
            module: "api",
            number: 2,
            meta: &unknown,
        }];
        let err = plan_reload(&s, &id(), &switch_to, &loaded).unwrap_err();
        assert!(matches!(err, Error::Dependencies(_)), "{err}");
    }

    #[test]
    fn an_older_schema_gets_no_live_state_unless_a_migration_is_registered() {
        let mut s = state();
        s.modules
            .get_mut("api")
            .unwrap()
            .metas
            .get_mut(&1)
            .unwrap()
            .schema = 2;
        let old = meta("api", 1, &["store"]);
        let switch_to = BTreeMap::from([("api".to_owned(), 2)]);
        let loaded = [Loaded {
            module: "api",
            number: 2,
            meta: &old,
        }];
        let err = plan_reload(&s, &id(), &switch_to, &loaded).unwrap_err();
        assert!(
            matches!(err, Error::SchemaDowngrade { from: 2, to: 1, .. }),
            "{err}"
        );

        s.migrations.insert(
            "api".into(),
            Arc::new(|state: &[u8], _: u32, _: u32| Ok(state.to_vec())),
        );
        let plan = plan_reload(&s, &id(), &switch_to, &loaded).unwrap();
        assert!(plan.steps[0].migration.is_some());
    }
}
