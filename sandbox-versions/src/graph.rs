//! The dependency graph between the modules of a sandbox.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{Dfs, EdgeRef};
use petgraph::Direction::{Incoming, Outgoing};

use crate::{Error, Result};

/// Which modules depend on which, always acyclic.
///
/// Every module declares the modules it depends on. A declared dependency
/// does not have to be a module yet (modules may be inserted in any order);
/// [`check_dependencies_known`](Self::check_dependencies_known) says whether
/// every one is. An insert that would close a cycle is refused with the
/// cycle named, and leaves the graph unchanged.
///
/// Module lists that this type returns are sorted by name, so that the
/// answers do not depend on insertion order.
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    /// One node per name: modules and declared dependencies that are not
    /// modules. An edge runs from a dependency to the module that depends
    /// on it, so topological order is reload order.
    graph: StableDiGraph<String, ()>,
    nodes: HashMap<String, NodeIndex>,
    /// The modules and their declared dependencies.
    modules: BTreeMap<String, BTreeSet<String>>,
}

impl DependencyGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// A graph of `(module, declared dependencies)` pairs, inserted in order
    /// (a module listed twice keeps its last dependencies).
    ///
    /// # Errors
    ///
    /// [`Error::Cycle`] if the dependencies form a cycle. Dependencies that
    /// are not modules are allowed here; see
    /// [`check_dependencies_known`](Self::check_dependencies_known).
    pub fn from_modules<I, S, D>(modules: I) -> Result<Self>
    where
        I: IntoIterator<Item = (S, D)>,
        D: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut graph = Self::new();
        for (module, dependencies) in modules {
            let dependencies: Vec<String> = dependencies
                .into_iter()
                .map(|dependency| dependency.as_ref().to_owned())
                .collect();
            graph.insert(module.as_ref(), &dependencies)?;
        }
        Ok(graph)
    }

    /// Adds `module` with its declared dependencies, or replaces the
    /// dependencies of a module already in the graph. Duplicate dependencies
    /// count once.
    ///
    /// # Errors
    ///
    /// [`Error::Cycle`] if the new dependencies would close a cycle; the
    /// cycle starts and ends at `module`. The graph is left unchanged.
    pub fn insert(&mut self, module: &str, dependencies: &[String]) -> Result<()> {
        let dependencies: BTreeSet<String> = dependencies.iter().cloned().collect();
        if let Some(cycle) = self.cycle_through(module, &dependencies) {
            tracing::debug!(module, ?cycle, "dependency cycle refused");
            return Err(Error::Cycle { cycle });
        }
        let node = self.node(module);
        let old = self.remove_dependency_edges(node);
        for dependency in &dependencies {
            let dependency = self.node(dependency);
            self.graph.add_edge(dependency, node, ());
        }
        self.modules.insert(module.to_owned(), dependencies);
        for source in old {
            self.drop_if_unused(source);
        }
        tracing::debug!(module, "module inserted into the dependency graph");
        Ok(())
    }

    /// Removes `module` and its declared dependencies; returns whether it
    /// was a module. Modules that depend on it keep declaring it, which
    /// [`check_dependencies_known`](Self::check_dependencies_known) reports.
    pub fn remove(&mut self, module: &str) -> bool {
        if self.modules.remove(module).is_none() {
            return false;
        }
        if let Some(&node) = self.nodes.get(module) {
            let sources = self.remove_dependency_edges(node);
            self.drop_if_unused(node);
            for source in sources {
                self.drop_if_unused(source);
            }
        }
        tracing::debug!(module, "module removed from the dependency graph");
        true
    }

    /// Whether `module` is a module of the graph.
    pub fn contains(&self, module: &str) -> bool {
        self.modules.contains_key(module)
    }

    /// How many modules the graph holds.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Whether the graph holds no module.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// The modules, sorted.
    pub fn modules(&self) -> Vec<String> {
        self.modules.keys().cloned().collect()
    }

    /// The declared dependencies of `module`, sorted; empty for a name that
    /// is not a module.
    pub fn dependencies_of(&self, module: &str) -> Vec<String> {
        self.modules
            .get(module)
            .map(|dependencies| dependencies.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The modules that declare a direct dependency on `module`, sorted.
    pub fn dependents_of(&self, module: &str) -> Vec<String> {
        let mut dependents: Vec<String> = self.dependents(module).map(ToOwned::to_owned).collect();
        dependents.sort_unstable();
        dependents
    }

    /// Checks that every declared dependency is a module.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDependency`] for the first one (by module, then
    /// dependency name) that is not.
    pub fn check_dependencies_known(&self) -> Result<()> {
        for (module, dependencies) in &self.modules {
            if let Some(dependency) = dependencies.iter().find(|d| !self.contains(d)) {
                return Err(Error::UnknownDependency {
                    module: module.clone(),
                    dependency: dependency.clone(),
                });
            }
        }
        Ok(())
    }

    /// The modules a change to `changed` affects: `changed` itself and every
    /// module that depends on one of them, directly or not.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownModule`] if a name in `changed` is not a module.
    pub fn affected(&self, changed: &[String]) -> Result<BTreeSet<String>> {
        let affected = self.affected_nodes(changed)?;
        Ok(affected
            .into_iter()
            .map(|node| self.graph[node].clone())
            .collect())
    }

    /// The order in which to reload the modules a change to `changed`
    /// affects (see [`affected`](Self::affected)), in levels: every module
    /// comes after all the affected modules it depends on, and the modules
    /// of one level do not depend on each other, so they may be reloaded in
    /// parallel. Each level is sorted by name.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownModule`] if a name in `changed` is not a module.
    pub fn reload_order(&self, changed: &[String]) -> Result<Vec<Vec<String>>> {
        let affected = self.affected_nodes(changed)?;
        Ok(self.levels(&affected))
    }

    /// All modules in levels, dependencies first, as
    /// [`reload_order`](Self::reload_order) would order them if every module
    /// changed.
    pub fn topological_levels(&self) -> Vec<Vec<String>> {
        let all: HashSet<NodeIndex> = self
            .modules
            .keys()
            .filter_map(|module| self.nodes.get(module).copied())
            .collect();
        self.levels(&all)
    }

    fn affected_nodes(&self, changed: &[String]) -> Result<HashSet<NodeIndex>> {
        let starts = changed
            .iter()
            .map(|module| match self.nodes.get(module) {
                Some(&node) if self.contains(module) => Ok(node),
                _ => Err(Error::UnknownModule {
                    module: module.clone(),
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut affected = HashSet::new();
        // One walk for all starts: nodes seen from an earlier start are not
        // walked again.
        let mut dfs = Dfs::empty(&self.graph);
        for start in starts {
            dfs.move_to(start);
            while let Some(reached) = dfs.next(&self.graph) {
                affected.insert(reached);
            }
        }
        Ok(affected)
    }

    /// Kahn's algorithm restricted to `set` (modules only), one level per
    /// round.
    fn levels(&self, set: &HashSet<NodeIndex>) -> Vec<Vec<String>> {
        let mut pending: HashMap<NodeIndex, usize> = set
            .iter()
            .map(|&node| {
                let dependencies = self
                    .graph
                    .neighbors_directed(node, Incoming)
                    .filter(|dependency| set.contains(dependency))
                    .count();
                (node, dependencies)
            })
            .collect();
        let mut ready: Vec<NodeIndex> = pending
            .iter()
            .filter(|&(_, &count)| count == 0)
            .map(|(&node, _)| node)
            .collect();
        let mut levels = Vec::new();
        while !ready.is_empty() {
            let mut next = Vec::new();
            for &node in &ready {
                pending.remove(&node);
                for dependent in self.graph.neighbors_directed(node, Outgoing) {
                    if let Some(count) = pending.get_mut(&dependent) {
                        *count = count.saturating_sub(1);
                        if *count == 0 {
                            next.push(dependent);
                        }
                    }
                }
            }
            let mut level: Vec<String> =
                ready.iter().map(|&node| self.graph[node].clone()).collect();
            level.sort_unstable();
            levels.push(level);
            ready = next;
        }
        debug_assert!(pending.is_empty(), "the graph is kept acyclic");
        levels
    }

    /// The cycle that giving `module` these dependencies would close, from
    /// `module` back to itself in dependency order, shortest first.
    fn cycle_through(&self, module: &str, dependencies: &BTreeSet<String>) -> Option<Vec<String>> {
        if dependencies.contains(module) {
            return Some(vec![module.to_owned(), module.to_owned()]);
        }
        // A new edge `dependency -> module` closes a cycle iff `dependency`
        // already (transitively) depends on `module`: search the dependents
        // of `module`, breadth first so the named cycle is a shortest one.
        let start = *self.nodes.get(module)?;
        let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            let mut next: Vec<NodeIndex> = self.graph.neighbors_directed(node, Outgoing).collect();
            next.sort_unstable_by(|a, b| self.graph[*a].cmp(&self.graph[*b]));
            for dependent in next {
                if dependent == start || parent.contains_key(&dependent) {
                    continue;
                }
                parent.insert(dependent, node);
                if dependencies.contains(&self.graph[dependent]) {
                    // Walk back: `dependent` depends on its parent, which
                    // depends on its parent, ... down to `module`.
                    let mut cycle = vec![module.to_owned()];
                    let mut at = dependent;
                    while at != start {
                        cycle.push(self.graph[at].clone());
                        at = parent.get(&at).copied().unwrap_or(start);
                    }
                    cycle.push(module.to_owned());
                    return Some(cycle);
                }
                queue.push_back(dependent);
            }
        }
        None
    }

    fn dependents<'a>(&'a self, module: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.nodes
            .get(module)
            .into_iter()
            .flat_map(|&node| self.graph.neighbors_directed(node, Outgoing))
            .map(|node| self.graph[node].as_str())
    }

    fn node(&mut self, name: &str) -> NodeIndex {
        if let Some(&node) = self.nodes.get(name) {
            return node;
        }
        let node = self.graph.add_node(name.to_owned());
        self.nodes.insert(name.to_owned(), node);
        node
    }

    /// Removes the edges from `node`'s dependencies; returns those
    /// dependencies.
    fn remove_dependency_edges(&mut self, node: NodeIndex) -> Vec<NodeIndex> {
        let edges: Vec<_> = self
            .graph
            .edges_directed(node, Incoming)
            .map(|edge| (edge.id(), edge.source()))
            .collect();
        edges
            .into_iter()
            .map(|(edge, source)| {
                self.graph.remove_edge(edge);
                source
            })
            .collect()
    }

    /// Forgets a name that is neither a module nor declared as a dependency.
    fn drop_if_unused(&mut self, node: NodeIndex) {
        let Some(name) = self.graph.node_weight(node) else {
            return;
        };
        if self.modules.contains_key(name) || self.graph.neighbors_undirected(node).next().is_some()
        {
            return;
        }
        if let Some(name) = self.graph.remove_node(node) {
            self.nodes.remove(&name);
        }
    }
}
