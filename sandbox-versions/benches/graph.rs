//! `reload_order` on a 200-module graph.

// A bench reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sandbox_versions::DependencyGraph;

const MODULES: usize = 200;

fn name(i: usize) -> String {
    format!("m{i:03}")
}

/// Module `i` depends on up to three earlier modules, so the graph is deep
/// (a long chain through `i - 1`) and wide (fan-in from `i - 7`, `i - 31`).
fn graph() -> DependencyGraph {
    let mut graph = DependencyGraph::new();
    for i in 0..MODULES {
        let deps: Vec<String> = [1, 7, 31]
            .iter()
            .filter_map(|&back| i.checked_sub(back))
            .map(name)
            .collect();
        if let Err(error) = graph.insert(&name(i), &deps) {
            panic!("the bench graph is acyclic: {error}");
        }
    }
    graph
}

fn reload_order(c: &mut Criterion) {
    let graph = graph();
    let root = vec![name(0)];
    let middle = vec![name(MODULES / 2)];
    let leaf = vec![name(MODULES - 1)];
    c.bench_function("reload_order/200 modules/root changed", |b| {
        b.iter(|| graph.reload_order(black_box(&root)))
    });
    c.bench_function("reload_order/200 modules/middle changed", |b| {
        b.iter(|| graph.reload_order(black_box(&middle)))
    });
    c.bench_function("reload_order/200 modules/leaf changed", |b| {
        b.iter(|| graph.reload_order(black_box(&leaf)))
    });
    c.bench_function("topological_levels/200 modules", |b| {
        b.iter(|| black_box(&graph).topological_levels())
    });
}

criterion_group!(benches, reload_order);
criterion_main!(benches);
