//! The dependency graph: reload orders in levels, affected sets, cycles named.

use std::collections::BTreeSet;

use insta::assert_snapshot;
use sandbox_versions::{DependencyGraph, Error};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|&name| name.to_owned()).collect()
}

fn graph(modules: &[(&str, &[&str])]) -> DependencyGraph {
    DependencyGraph::from_modules(modules.iter().map(|&(m, deps)| (m, deps.to_vec())))
        .expect("the test graph is acyclic")
}

/// report depends on score, which depends on tokenize.
fn chain() -> DependencyGraph {
    graph(&[
        ("tokenize", &[]),
        ("score", &["tokenize"]),
        ("report", &["score"]),
    ])
}

/// b and c depend on a; d depends on b and c.
fn diamond() -> DependencyGraph {
    graph(&[("d", &["b", "c"]), ("c", &["a"]), ("b", &["a"]), ("a", &[])])
}

/// The reload order of `changed`, one level per `|`.
fn order(graph: &DependencyGraph, changed: &[&str]) -> String {
    match graph.reload_order(&strings(changed)) {
        Ok(levels) => levels
            .iter()
            .map(|level| level.join(" "))
            .collect::<Vec<_>>()
            .join(" | "),
        Err(error) => format!("error: {error}"),
    }
}

#[test]
fn chain_reload_orders() {
    let chain = chain();
    assert_eq!(order(&chain, &["tokenize"]), "tokenize | score | report");
    assert_eq!(order(&chain, &["score"]), "score | report");
    assert_eq!(order(&chain, &["report"]), "report");
    assert_eq!(
        order(&chain, &["report", "tokenize"]),
        "tokenize | score | report"
    );
    assert_eq!(order(&chain, &[]), "");
    let levels = chain.reload_order(&strings(&["tokenize"]));
    assert_eq!(
        levels,
        Ok(vec![
            strings(&["tokenize"]),
            strings(&["score"]),
            strings(&["report"])
        ])
    );
}

#[test]
fn diamond_reload_orders() {
    let diamond = diamond();
    assert_eq!(order(&diamond, &["a"]), "a | b c | d");
    assert_eq!(order(&diamond, &["b"]), "b | d");
    assert_eq!(order(&diamond, &["b", "c"]), "b c | d");
    assert_eq!(
        diamond.topological_levels(),
        [strings(&["a"]), strings(&["b", "c"]), strings(&["d"])]
    );
}

#[test]
fn affected_is_changed_plus_transitive_dependents() -> TestResult {
    let diamond = diamond();
    let affected = diamond.affected(&strings(&["c"]))?;
    assert_eq!(affected, BTreeSet::from(["c".to_owned(), "d".to_owned()]));
    assert_eq!(diamond.affected(&strings(&["a"]))?.len(), 4);
    assert!(chain().affected(&[])?.is_empty());
    Ok(())
}

#[test]
fn levels_only_wait_for_affected_dependencies() {
    // x depends on an unchanged module and a changed one: it waits for the
    // changed one only.
    let g = graph(&[
        ("base", &[]),
        ("other", &[]),
        ("mid", &["base"]),
        ("x", &["mid", "other"]),
    ]);
    assert_eq!(order(&g, &["base"]), "base | mid | x");
    assert_eq!(order(&g, &["other"]), "other | x");
    assert_eq!(order(&g, &["other", "base"]), "base other | mid | x");
}

#[test]
fn unknown_module_is_refused() {
    let chain = chain();
    let error = chain.affected(&strings(&["parse"])).unwrap_err();
    assert_eq!(
        error,
        Error::UnknownModule {
            module: "parse".into()
        }
    );
    assert_snapshot!(error, @"unknown module `parse`; insert it into the dependency graph first");
    assert_eq!(
        order(&chain, &["tokenize", "parse"]),
        "error: unknown module `parse`; insert it into the dependency graph first"
    );
    // A declared dependency that is not a module is not a module either.
    let g = graph(&[("report", &["score"])]);
    assert!(matches!(
        g.reload_order(&strings(&["score"])),
        Err(Error::UnknownModule { .. })
    ));
}

#[test]
fn cycle_is_refused_and_named() {
    let mut g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &[])]);
    let error = g.insert("c", &strings(&["a"])).unwrap_err();
    assert_eq!(
        error,
        Error::Cycle {
            cycle: strings(&["c", "a", "b", "c"])
        }
    );
    assert_snapshot!(error, @"dependency cycle: c -> a -> b -> c; remove one of these declared dependencies");
    // The graph is left as it was: c still depends on nothing.
    assert_eq!(g.dependencies_of("c"), Vec::<String>::new());
    assert_eq!(g.dependents_of("a"), Vec::<String>::new());
    assert_eq!(order(&g, &["c"]), "c | b | a");
}

#[test]
fn cycle_named_is_a_shortest_one() {
    // d depends on a both directly and through b and c.
    let mut g = graph(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &["a", "c"])]);
    let error = g.insert("a", &strings(&["d"])).unwrap_err();
    assert_snapshot!(error, @"dependency cycle: a -> d -> a; remove one of these declared dependencies");
}

#[test]
fn self_dependency_is_a_cycle() {
    let mut g = chain();
    let error = g
        .insert("score", &strings(&["tokenize", "score"]))
        .unwrap_err();
    assert_eq!(
        error,
        Error::Cycle {
            cycle: strings(&["score", "score"])
        }
    );
    assert_snapshot!(error, @"dependency cycle: score -> score; remove one of these declared dependencies");
    assert_eq!(g.dependencies_of("score"), ["tokenize"]);
    // A new module depending on itself is refused too, and not added.
    assert!(g.insert("lonely", &strings(&["lonely"])).is_err());
    assert!(!g.contains("lonely"));
}

#[test]
fn refused_replacement_keeps_the_old_edges() {
    let mut g = chain();
    let before = (g.modules(), g.topological_levels());
    let error = g.insert("tokenize", &strings(&["report"])).unwrap_err();
    assert_snapshot!(error, @"dependency cycle: tokenize -> report -> score -> tokenize; remove one of these declared dependencies");
    assert_eq!((g.modules(), g.topological_levels()), before);
    assert_eq!(g.dependents_of("tokenize"), ["score"]);
}

#[test]
fn from_modules_refuses_cycles() {
    let error = DependencyGraph::from_modules([("a", vec!["b"]), ("b", vec!["a"])]).unwrap_err();
    assert_snapshot!(error, @"dependency cycle: b -> a -> b; remove one of these declared dependencies");
}

#[test]
fn insert_replaces_dependencies() -> TestResult {
    let mut g = chain();
    g.insert("report", &strings(&["tokenize", "tokenize"]))?;
    assert_eq!(g.dependencies_of("report"), ["tokenize"]);
    assert_eq!(g.dependents_of("tokenize"), ["report", "score"]);
    assert_eq!(g.dependents_of("score"), Vec::<String>::new());
    assert_eq!(order(&g, &["tokenize"]), "tokenize | report score");
    // Replacing the edges is what makes a former cycle legal.
    g.insert("score", &[])?;
    g.insert("tokenize", &strings(&["score"]))?;
    assert_eq!(order(&g, &["score"]), "score | tokenize | report");
    Ok(())
}

#[test]
fn dependencies_may_be_declared_before_they_are_modules() -> TestResult {
    let mut g = DependencyGraph::new();
    g.insert("report", &strings(&["score"]))?;
    assert_eq!(g.modules(), ["report"]);
    let error = g.check_dependencies_known().unwrap_err();
    assert_eq!(
        error,
        Error::UnknownDependency {
            module: "report".into(),
            dependency: "score".into()
        }
    );
    assert_snapshot!(error, @"module `report` depends on `score`, which is not a module; add `score` or remove it from the dependencies of `report`");
    g.insert("score", &[])?;
    g.check_dependencies_known()?;
    assert_eq!(order(&g, &["score"]), "score | report");
    Ok(())
}

#[test]
fn remove_forgets_a_module() -> TestResult {
    let mut g = chain();
    assert!(g.remove("score"));
    assert!(!g.remove("score"));
    assert!(!g.remove("parse"));
    assert_eq!(g.modules(), ["report", "tokenize"]);
    assert_eq!(g.dependents_of("tokenize"), Vec::<String>::new());
    // report still declares score.
    assert_eq!(g.dependencies_of("report"), ["score"]);
    assert!(g.check_dependencies_known().is_err());
    assert_eq!(order(&g, &["tokenize"]), "tokenize");
    // Putting it back restores the chain.
    g.insert("score", &strings(&["tokenize"]))?;
    assert_eq!(order(&g, &["tokenize"]), "tokenize | score | report");
    assert!(g.remove("report") && g.remove("score") && g.remove("tokenize"));
    assert!(g.is_empty());
    assert_eq!(g.topological_levels(), Vec::<Vec<String>>::new());
    Ok(())
}

#[test]
fn queries_on_names_that_are_not_modules_are_empty() {
    let g = chain();
    assert!(g.dependencies_of("parse").is_empty());
    assert!(g.dependents_of("parse").is_empty());
    assert_eq!(g.len(), 3);
}

/// xorshift64*: deterministic, good enough to shuffle small graphs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn name(i: usize) -> String {
    format!("m{i:02}")
}

/// A random DAG: module `i` may depend on any module `j < i`. Returns the
/// declared dependencies of each module.
fn random_dag(rng: &mut Rng) -> Vec<Vec<usize>> {
    let size = 1 + rng.below(24);
    let density = 5 + rng.next() % 40;
    (0..size)
        .map(|i| (0..i).filter(|_| rng.chance(density)).collect())
        .collect()
}

fn build(rng: &mut Rng, dag: &[Vec<usize>]) -> DependencyGraph {
    // Insert in a random order so dependencies are often declared before
    // they are modules.
    let mut order: Vec<usize> = (0..dag.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut graph = DependencyGraph::new();
    for i in order {
        let deps: Vec<String> = dag[i].iter().map(|&d| name(d)).collect();
        graph
            .insert(&name(i), &deps)
            .expect("a random DAG is acyclic");
    }
    graph
}

#[test]
fn property_reload_order_puts_dependencies_first() -> TestResult {
    let mut rng = Rng(0x5eed_cafe_f00d_beef);
    for _ in 0..300 {
        let dag = random_dag(&mut rng);
        let graph = build(&mut rng, &dag);
        graph.check_dependencies_known()?;
        let changed: Vec<String> = (0..dag.len())
            .filter(|_| rng.chance(20))
            .map(name)
            .collect();

        // The affected set is the changed modules plus everything that
        // reaches one of them through dependencies.
        let mut expected: BTreeSet<usize> = (0..dag.len())
            .filter(|&i| changed.contains(&name(i)))
            .collect();
        for (i, deps) in dag.iter().enumerate() {
            // Dependencies have smaller indices: one ascending pass suffices.
            if deps.iter().any(|d| expected.contains(d)) {
                expected.insert(i);
            }
        }
        let expected: BTreeSet<String> = expected.into_iter().map(name).collect();
        assert_eq!(graph.affected(&changed)?, expected);

        let levels = graph.reload_order(&changed)?;
        let mut level_of = std::collections::BTreeMap::new();
        for (depth, level) in levels.iter().enumerate() {
            assert!(!level.is_empty(), "no empty level");
            assert!(
                level.windows(2).all(|w| w[0] < w[1]),
                "level sorted: {level:?}"
            );
            for module in level {
                assert!(
                    level_of.insert(module.clone(), depth).is_none(),
                    "{module} listed twice"
                );
            }
        }
        assert_eq!(level_of.keys().cloned().collect::<BTreeSet<_>>(), expected);
        for (module, &depth) in &level_of {
            for dependency in graph.dependencies_of(module) {
                if let Some(&dep_depth) = level_of.get(&dependency) {
                    assert!(dep_depth < depth, "{module} (level {depth}) before its dependency {dependency} (level {dep_depth})");
                }
            }
        }

        let all: usize = graph.topological_levels().iter().map(Vec::len).sum();
        assert_eq!(all, dag.len());
    }
    Ok(())
}

#[test]
fn property_refused_back_edges_name_a_real_cycle() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut refused = 0;
    for _ in 0..300 {
        let dag = random_dag(&mut rng);
        let mut graph = build(&mut rng, &dag);
        let before = graph.topological_levels();
        // Make a low module depend on a high one: a cycle iff the high one
        // already depends on the low one.
        let low = rng.below(dag.len());
        let high = low + rng.below(dag.len() - low);
        let mut deps = graph.dependencies_of(&name(low));
        deps.push(name(high));
        match graph.insert(&name(low), &deps) {
            Ok(()) => continue,
            Err(Error::Cycle { cycle }) => {
                refused += 1;
                assert_eq!(cycle.first(), Some(&name(low)));
                assert_eq!(cycle.last(), Some(&name(low)));
                for pair in cycle.windows(2) {
                    let declared = graph.dependencies_of(&pair[0]).contains(&pair[1])
                        || (pair[0] == name(low) && pair[1] == name(high));
                    assert!(
                        declared,
                        "{} does not depend on {} in {cycle:?}",
                        pair[0], pair[1]
                    );
                }
                let inner: BTreeSet<_> = cycle[1..].iter().collect();
                assert_eq!(inner.len(), cycle.len() - 1, "a simple cycle: {cycle:?}");
                assert_eq!(graph.topological_levels(), before, "graph unchanged");
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(
        refused > 50,
        "the generator makes cycles often enough ({refused})"
    );
}
