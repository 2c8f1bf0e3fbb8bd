//! `cargo xtask bench`: runs the criterion benches, stores what they measured
//! in `BENCHMARKS.json`, and renders `BENCHMARKS.md` and the README's
//! results block from that file.
//!
//! Criterion's own estimates (`target/criterion/**/new/estimates.json`) give
//! the mean and median of each bench; benches that need per-operation
//! percentiles (swap p50/p99, cold start) write them themselves to
//! `target/sandbox-bench/*.json` as `{"name", "p50_ns", "p99_ns", "n", "note"}`.
//! Neither is committed (`target/`), so `BENCHMARKS.json` is the record: a
//! run merges what it measured into it (results it did not measure are
//! kept if they are from the same machine, dropped if not), and both
//! documents are pure functions of it. `cargo xtask tidy`
//! re-renders them and fails when either differs from what is committed.
//!
//! - `cargo xtask bench [FILTER]`: run, merge, render.
//! - `cargo xtask bench --report`: merge what the last run left in `target`, render.
//! - `cargo xtask bench --render`: render from `BENCHMARKS.json` alone (after
//!   editing [`README_ROWS`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::{cargo, run};

/// Where the README's generated block starts and ends.
pub const START: &str = "<!-- bench:start -->";
/// See [`START`].
pub const END: &str = "<!-- bench:end -->";

pub fn bench(args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let mode = args.first().map(String::as_str);
    let mut results = load(&root)?;
    if mode != Some("--render") {
        if mode != Some("--report") {
            let mut cmd = cargo();
            cmd.args(["bench", "--workspace"]).current_dir(&root);
            if let Some(filter) = args.first() {
                cmd.args(["--", filter.as_str()]);
            }
            run(&mut cmd)?;
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        results.merge(collect(&target));
    }
    write_all(&root, &results)
}

pub fn workspace_root() -> anyhow::Result<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    Ok(here
        .parent()
        .context("xtask has no parent folder")?
        .to_path_buf())
}

/// Stores `results` and writes both documents rendered from them.
fn write_all(root: &Path, results: &Results) -> anyhow::Result<()> {
    let write = |name: &str, text: &str| {
        let path = root.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
        anyhow::Ok(())
    };
    write("BENCHMARKS.json", &results.to_json())?;
    let report = render_report(results);
    write("BENCHMARKS.md", &report)?;
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .with_context(|| format!("reading {}", readme_path.display()))?;
    write(
        "README.md",
        &replace_block(&readme, &render_readme(results))?,
    )?;
    println!("{report}");
    Ok(())
}

/// One criterion bench: its estimates, in nanoseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub name: String,
    pub median_ns: f64,
    pub mean_ns: f64,
}

/// One measurement a bench wrote itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub name: String,
    pub p50_ns: Option<f64>,
    pub p90_ns: Option<f64>,
    pub p99_ns: Option<f64>,
    pub n: u64,
    pub note: String,
}

/// What `BENCHMARKS.json` holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Results {
    /// The machine of the last run.
    pub machine: String,
    /// Sorted by name.
    pub criterion: Vec<Estimate>,
    /// Sorted by name.
    pub measurements: Vec<Measurement>,
}

impl Results {
    /// Reads `BENCHMARKS.json` text.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let v: Value = serde_json::from_str(text).context("BENCHMARKS.json is not JSON")?;
        let f = |v: &Value, k: &str| v[k].as_f64();
        let mut results = Results {
            machine: v["machine"].as_str().unwrap_or_default().to_owned(),
            criterion: Vec::new(),
            measurements: Vec::new(),
        };
        for e in v["criterion"].as_array().into_iter().flatten() {
            let (Some(name), Some(median_ns), Some(mean_ns)) =
                (e["name"].as_str(), f(e, "median_ns"), f(e, "mean_ns"))
            else {
                bail!("a criterion entry of BENCHMARKS.json lacks name, median_ns or mean_ns: {e}");
            };
            results.criterion.push(Estimate {
                name: name.to_owned(),
                median_ns,
                mean_ns,
            });
        }
        for m in v["measurements"].as_array().into_iter().flatten() {
            let Some(name) = m["name"].as_str() else {
                bail!("a measurement of BENCHMARKS.json has no name: {m}");
            };
            results.measurements.push(Measurement {
                name: name.to_owned(),
                p50_ns: f(m, "p50_ns"),
                p90_ns: f(m, "p90_ns"),
                p99_ns: f(m, "p99_ns"),
                n: m["n"].as_u64().unwrap_or(0),
                note: m["note"].as_str().unwrap_or_default().to_owned(),
            });
        }
        results.sort();
        Ok(results)
    }

    /// `BENCHMARKS.json` text.
    pub fn to_json(&self) -> String {
        let criterion: Vec<Value> = self
            .criterion
            .iter()
            .map(|e| json!({"name": e.name, "median_ns": e.median_ns, "mean_ns": e.mean_ns}))
            .collect();
        let measurements: Vec<Value> = self
            .measurements
            .iter()
            .map(|m| {
                json!({"name": m.name, "p50_ns": m.p50_ns, "p90_ns": m.p90_ns,
                       "p99_ns": m.p99_ns, "n": m.n, "note": m.note})
            })
            .collect();
        let v =
            json!({"machine": self.machine, "criterion": criterion, "measurements": measurements});
        let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Takes every result of `newer`, keeping ours that it did not measure
    /// (a filtered run measures a few) when both are from the same machine.
    /// Results of one machine are never mixed with another's under one
    /// machine line: a run on another machine replaces them all.
    pub fn merge(&mut self, newer: Results) {
        if newer.criterion.is_empty() && newer.measurements.is_empty() {
            return;
        }
        if newer.machine != self.machine {
            self.criterion.clear();
            self.measurements.clear();
            self.machine = newer.machine;
        }
        for e in newer.criterion {
            self.criterion.retain(|o| o.name != e.name);
            self.criterion.push(e);
        }
        for m in newer.measurements {
            self.measurements.retain(|o| o.name != m.name);
            self.measurements.push(m);
        }
        self.sort();
    }

    fn sort(&mut self) {
        self.criterion.sort_by(|a, b| a.name.cmp(&b.name));
        self.measurements.sort_by(|a, b| a.name.cmp(&b.name));
    }

    fn estimate(&self, name: &str) -> Option<&Estimate> {
        self.criterion.iter().find(|e| e.name == name)
    }

    fn measurement(&self, name: &str) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.name == name)
    }
}

/// The stored results (`BENCHMARKS.json` under `root`).
pub fn load(root: &Path) -> anyhow::Result<Results> {
    let path = root.join("BENCHMARKS.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Results::from_json(&text).with_context(|| format!("in {}", path.display()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem} RAM, Linux {}", kernel.trim())
}

fn human(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// `BENCHMARKS.md`: every stored result.
pub fn render_report(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench` from `BENCHMARKS.json`. Machine: {}.\n",
        results.machine
    );
    let _ = writeln!(out, "| bench | median | mean |");
    let _ = writeln!(out, "|---|---|---|");
    for e in &results.criterion {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            e.name,
            human(e.median_ns),
            human(e.mean_ns)
        );
    }
    if !results.measurements.is_empty() {
        let _ = writeln!(out, "\n| measurement | p50 | p90 | p99 | n | note |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for m in &results.measurements {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                m.name,
                m.p50_ns.map(human).unwrap_or_default(),
                m.p90_ns.map(human).unwrap_or_default(),
                m.p99_ns.map(human).unwrap_or_default(),
                m.n,
                m.note,
            );
        }
    }
    out
}

/// A statistic of a stored result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Criterion's median.
    Median,
    P50,
    P90,
    P99,
    /// A measurement's note, shown in parentheses.
    Note,
}

/// A target a README row is checked against: the ✓ or ✗ is computed.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// As the README shows it.
    pub text: &'static str,
    /// The statistic the limit applies to.
    pub stat: Stat,
    pub limit: Limit,
}

#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// The row's `stat` is under this many nanoseconds.
    Below(f64),
    /// `stat` of result `of` is at most `factor` times the row's `stat`.
    AtMostTimes { of: &'static str, factor: f64 },
}

/// One row of the README's table: what, from which stored result, which
/// statistics, and its target.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub what: &'static str,
    /// A criterion bench or a measurement name in `BENCHMARKS.json`.
    pub source: &'static str,
    pub show: &'static [Stat],
    pub target: Option<Target>,
}

const fn row(what: &'static str, source: &'static str, show: &'static [Stat]) -> Row {
    Row {
        what,
        source,
        show,
        target: None,
    }
}

const fn below(text: &'static str, stat: Stat, ns: f64) -> Option<Target> {
    Some(Target {
        text,
        stat,
        limit: Limit::Below(ns),
    })
}

const MS: f64 = 1e6;
const US: f64 = 1e3;
use Stat::{Median, Note, P50, P90, P99};

/// The README's headline results, in its order.
pub const README_ROWS: &[Row] = &[
    row(
        "call, direct function (baseline)",
        "call/direct function call",
        &[Median],
    ),
    row(
        "call through the plugin boundary (in-process runtime)",
        "call/in-process plugin call",
        &[Median],
    ),
    row(
        "call through `Manager::call` (async, with the timeout guard)",
        "call/Manager__call (async, timeout guard)",
        &[Median],
    ),
    Row {
        target: below("< 20 ms", Median, 20.0 * MS),
        ..row(
            "`create` on a build-cache hit (+ destroy)",
            "lifecycle/create on a cache hit (+ destroy)",
            &[Median],
        )
    },
    row(
        "build, cache hit (no cargo started)",
        "cache hit",
        &[Median],
    ),
    row(
        "build, cold compile of `counter` (its crate; deps already built)",
        "cold/cold compile",
        &[Median],
    ),
    row(
        "build trust: create from a new tree, trusted (admission, cargo)",
        "build trust/create, new tree (trusted)",
        &[Median],
    ),
    row(
        "build trust: create from a new tree, jailed (+ seed copy, fetch, jailed cargo)",
        "build trust/create, new tree (jailed)",
        &[Median],
    ),
    row(
        "build trust: one-line edit rebuilt, trusted (rustc replayed)",
        "build trust/reload, one-line edit (trusted)",
        &[Median],
    ),
    row(
        "build trust: one-line edit rebuilt, jailed (rustc replayed in the jail)",
        "build trust/reload, one-line edit (jailed)",
        &[Median],
    ),
    Row {
        target: below("p99 < 5 ms", P99, 5.0 * MS),
        ..row(
            "swap, small state (load + save + restore + commit)",
            "swap latency, small state (load + save + restore + commit)",
            &[P50, P99],
        )
    },
    row(
        "swap, 10 MB state",
        "swap latency, 10 MB state",
        &[P50, P99],
    ),
    Row {
        target: below("p99 < 1 ms", P99, MS),
        ..row(
            "rollback to a retained version",
            "rollback latency (switch to a retained version)",
            &[P50, P99],
        )
    },
    row(
        "memory kept per retained version",
        "memory kept per retained version (RSS)",
        &[Note],
    ),
    Row {
        target: below("median < 500 ms", P50, 500.0 * MS),
        ..row(
            "save → swapped, one-line edit, auto-reload",
            "auto-reload: save to swapped (one-line edit of counter)",
            &[P50, P90, Note],
        )
    },
    row(
        "file watcher: write → change set (closed file: 8 ms settle)",
        "watch/write_to_change_set_default",
        &[Median],
    ),
    row(
        "file watcher: setup of 100 sandboxes × 50 files",
        "watch/setup_100_roots_x_50_files",
        &[Median],
    ),
    Row {
        target: below("p50 < 10 ms", P50, 10.0 * MS),
        ..row(
            "process sandbox, cold start to first call (cached release artifact)",
            "process/cold_start_to_first_call_release",
            &[P50, P99],
        )
    },
    Row {
        target: below("p50 < 10 ms", P50, 10.0 * MS),
        ..row(
            "process sandbox, cold start to first call (cached debug artifact)",
            "process/cold_start_to_first_call_debug",
            &[P50, P99],
        )
    },
    Row {
        target: Some(Target {
            text: "release cold start ≤ 1.5× it",
            stat: P50,
            limit: Limit::AtMostTimes {
                of: "process/cold_start_to_first_call_release",
                factor: 1.5,
            },
        }),
        ..row(
            "`bwrap --unshare-all --ro-bind / / true`, interleaved with the release cold start",
            "bwrap/unshare_all_true",
            &[P50, P99],
        )
    },
    Row {
        target: below("p50 < 1 ms", P50, MS),
        ..row(
            "process sandbox from the warm pool: launch",
            "process/pool_launch",
            &[P50, P99],
        )
    },
    row(
        "process sandbox from the warm pool: to first call",
        "process/pool_start_to_first_call",
        &[P50, P99],
    ),
    Row {
        target: below("p50 < 25 µs", P50, 25.0 * US),
        ..row(
            "call round trip to a worker, small request",
            "process/call_round_trip",
            &[P50, P99],
        )
    },
    row(
        "`ProcMonitor` sample",
        "proc_monitor_sample_self",
        &[Median],
    ),
];

fn value(results: &Results, source: &str, stat: Stat) -> Option<f64> {
    if let Some(e) = results.estimate(source) {
        return (stat == Median).then_some(e.median_ns);
    }
    let m = results.measurement(source)?;
    match stat {
        P50 => m.p50_ns,
        P90 => m.p90_ns,
        P99 => m.p99_ns,
        Median | Note => None,
    }
}

fn render_row(results: &Results, row: &Row) -> String {
    let mut parts = Vec::new();
    let mut note = None;
    for &stat in row.show {
        match stat {
            Note => note = results.measurement(row.source).map(|m| m.note.clone()),
            Median => parts.extend(value(results, row.source, stat).map(human)),
            P50 | P90 | P99 => {
                let label = format!("{stat:?}").to_lowercase();
                parts.extend(
                    value(results, row.source, stat).map(|v| format!("{label} {}", human(v))),
                );
            }
        }
    }
    let mut result = parts.join(", ");
    match (note, result.is_empty()) {
        (Some(note), true) => result = note,
        (Some(note), false) => write!(result, " ({note})").unwrap_or_default(),
        (None, true) => result = "not measured".to_owned(),
        (None, false) => {}
    }
    let target = row.target.map(|t| {
        let met = value(results, row.source, t.stat).and_then(|v| match t.limit {
            Limit::Below(ns) => Some(v < ns),
            Limit::AtMostTimes { of, factor } => {
                value(results, of, t.stat).map(|other| other <= factor * v)
            }
        });
        match met {
            Some(true) => format!("{} ✓", t.text),
            Some(false) => format!("{} ✗", t.text),
            None => t.text.to_owned(),
        }
    });
    format!(
        "| {} | {result} | {} |",
        row.what,
        target.unwrap_or_default()
    )
}

/// The README's block, markers included.
pub fn render_readme(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{START}");
    let _ = writeln!(
        out,
        "<!-- Generated by `cargo xtask bench` from BENCHMARKS.json: edit README_ROWS in xtask/src/bench.rs, then run `cargo xtask bench --render`. -->"
    );
    let _ = writeln!(
        out,
        "One `cargo xtask bench` run, on {} (every result: [BENCHMARKS.md](BENCHMARKS.md)). A target's ✓ or ✗ is computed from the stored result.\n",
        results.machine
    );
    let _ = writeln!(out, "| what | result | target |");
    let _ = writeln!(out, "|---|---|---|");
    for row in README_ROWS {
        let _ = writeln!(out, "{}", render_row(results, row));
    }
    let _ = write!(out, "{END}");
    out
}

/// The byte range of the README's block, markers included; an error unless
/// each marker is there once, on a line of its own, start before end.
pub fn block(readme: &str) -> anyhow::Result<std::ops::Range<usize>> {
    let find = |marker: &str| -> anyhow::Result<usize> {
        let hits: Vec<usize> = readme.match_indices(marker).map(|(i, _)| i).collect();
        let [at] = hits[..] else {
            bail!(
                "README.md has the marker `{marker}` {} times; it needs it once, on a line of its own (`cargo xtask bench --render` rewrites what is between the markers)",
                hits.len()
            );
        };
        let line_start = at == 0 || readme[..at].ends_with('\n');
        let line_end =
            readme[at + marker.len()..].starts_with('\n') || at + marker.len() == readme.len();
        if !(line_start && line_end) {
            bail!("README.md's `{marker}` is not on a line of its own");
        }
        Ok(at)
    };
    let (start, end) = (find(START)?, find(END)?);
    if end < start {
        bail!("README.md's `{END}` comes before its `{START}`");
    }
    Ok(start..end + END.len())
}

/// `readme` with its block replaced by `rendered`.
pub fn replace_block(readme: &str, rendered: &str) -> anyhow::Result<String> {
    let range = block(readme)?;
    Ok(format!(
        "{}{rendered}{}",
        &readme[..range.start],
        &readme[range.end..]
    ))
}

/// What the benches left in `target`.
fn collect(target: &Path) -> Results {
    let mut results = Results {
        machine: machine(),
        ..Results::default()
    };
    let criterion = target.join("criterion");
    collect_criterion(&criterion, &criterion, &mut results.criterion);
    if let Ok(entries) = std::fs::read_dir(target.join("sandbox-bench")) {
        for v in entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            let Some(name) = v["name"].as_str() else {
                continue;
            };
            results.measurements.push(Measurement {
                name: name.to_owned(),
                p50_ns: v["p50_ns"].as_f64(),
                p90_ns: v["p90_ns"].as_f64(),
                p99_ns: v["p99_ns"].as_f64(),
                n: v["n"].as_u64().unwrap_or(0),
                note: v["note"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    results.sort();
    results
}

fn collect_criterion(root: &Path, dir: &Path, rows: &mut Vec<Estimate>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "new") {
                let estimates = path.join("estimates.json");
                if let Some(v) = std::fs::read(&estimates)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                {
                    let name = path
                        .parent()
                        .and_then(|p| p.strip_prefix(root).ok())
                        .map(|p| p.display().to_string());
                    if let (Some(name), Some(median_ns), Some(mean_ns)) = (
                        name,
                        v["median"]["point_estimate"].as_f64(),
                        v["mean"]["point_estimate"].as_f64(),
                    ) {
                        rows.push(Estimate {
                            name,
                            median_ns,
                            mean_ns,
                        });
                    }
                }
            } else if path.file_name().is_some_and(|n| n != "report") {
                collect_criterion(root, &path, rows);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Results {
        Results::from_json(
            r#"{"machine": "m", "criterion": [{"name": "cache hit", "median_ns": 431100.0, "mean_ns": 433900.0}],
                "measurements": [{"name": "process/call_round_trip", "p50_ns": 30000.0, "p90_ns": null, "p99_ns": 31500.0, "n": 20, "note": "x"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn rows_show_their_statistics_and_compute_their_targets() {
        let results = sample();
        let text = render_readme(&results);
        assert!(
            text.contains("| build, cache hit (no cargo started) | 431.1 µs |  |"),
            "{text}"
        );
        // 30 µs misses the 25 µs target: the cross is computed, not claimed.
        assert!(
            text.contains("| call round trip to a worker, small request | p50 30.0 µs, p99 31.5 µs | p50 < 25 µs ✗ |"),
            "{text}"
        );
        assert!(
            text.contains("| `ProcMonitor` sample | not measured |  |"),
            "{text}"
        );
    }

    #[test]
    fn stored_results_survive_a_round_trip_and_a_partial_run_keeps_the_rest() {
        let mut results = sample();
        assert_eq!(Results::from_json(&results.to_json()).unwrap(), results);
        let run = |machine: &str| Results {
            machine: machine.into(),
            criterion: vec![Estimate {
                name: "cold/cold compile".into(),
                median_ns: 1.0,
                mean_ns: 1.0,
            }],
            measurements: Vec::new(),
        };
        results.merge(run("m"));
        let names: Vec<&str> = results.criterion.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["cache hit", "cold/cold compile"]);
        assert_eq!(results.measurements.len(), 1);
        // Another machine's run: nothing of the first machine stays under its name.
        results.merge(run("n"));
        assert_eq!(results, run("n"));
        // A run that measured nothing changes nothing.
        results.merge(Results::default());
        assert_eq!(results, run("n"));
    }

    #[test]
    fn the_block_needs_each_marker_once_on_its_own_line_in_order() {
        let ok = format!("# x\n{START}\nold\n{END}\nafter\n");
        assert_eq!(
            replace_block(&ok, &format!("{START}\nnew\n{END}")).unwrap(),
            format!("# x\n{START}\nnew\n{END}\nafter\n")
        );
        for bad in [
            format!("{START}\n"),
            format!("{END}\n{START}\n"),
            format!("{START}\n{START}\n{END}\n"),
            format!("text {START}\n{END}\n"),
        ] {
            assert!(block(&bad).is_err(), "accepted {bad:?}");
        }
    }
}
