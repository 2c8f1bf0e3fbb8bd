//! `cargo xtask bench`: runs the criterion benches and writes `BENCHMARKS.md`.
//!
//! Criterion's own estimates (`target/criterion/**/new/estimates.json`) give
//! the mean and median of each bench; benches that need per-operation
//! percentiles (swap p50/p99, cold start) write them themselves to
//! `target/sandbox-bench/*.json` as `{"name", "p50_ns", "p99_ns", "n", "note"}`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{cargo, run};

pub fn bench(args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root()?;
    // `cargo xtask bench --report` rewrites BENCHMARKS.md from the last run.
    if args.first().map(String::as_str) != Some("--report") {
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
    let report = report(&target)?;
    let out = root.join("BENCHMARKS.md");
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    println!("{report}");
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    Ok(here
        .parent()
        .context("xtask has no parent folder")?
        .to_path_buf())
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

/// The markdown report from what the benches left in `target`.
pub fn report(target: &Path) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(out, "# Benchmarks\n")?;
    writeln!(
        out,
        "Written by `cargo xtask bench`. Machine: {}.\n",
        machine()
    )?;
    writeln!(out, "| bench | median | mean |")?;
    writeln!(out, "|---|---|---|")?;
    let mut rows = Vec::new();
    collect(
        &target.join("criterion"),
        &target.join("criterion"),
        &mut rows,
    );
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, median, mean) in &rows {
        writeln!(out, "| {name} | {} | {} |", human(*median), human(*mean))?;
    }
    let extra = target.join("sandbox-bench");
    if let Ok(entries) = std::fs::read_dir(&extra) {
        let mut extras: Vec<serde_json::Value> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        extras.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        if !extras.is_empty() {
            writeln!(out, "\n| measurement | p50 | p90 | p99 | n | note |")?;
            writeln!(out, "|---|---|---|---|---|---|")?;
            for e in extras {
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    e["name"].as_str().unwrap_or("?"),
                    e["p50_ns"].as_f64().map(human).unwrap_or_default(),
                    e["p90_ns"].as_f64().map(human).unwrap_or_default(),
                    e["p99_ns"].as_f64().map(human).unwrap_or_default(),
                    e["n"].as_u64().unwrap_or(0),
                    e["note"].as_str().unwrap_or(""),
                )?;
            }
        }
    }
    Ok(out)
}

fn collect(root: &Path, dir: &Path, rows: &mut Vec<(String, f64, f64)>) {
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
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                {
                    let name = path
                        .parent()
                        .and_then(|p| p.strip_prefix(root).ok())
                        .map(|p| p.display().to_string());
                    if let (Some(name), Some(median), Some(mean)) = (
                        name,
                        v["median"]["point_estimate"].as_f64(),
                        v["mean"]["point_estimate"].as_f64(),
                    ) {
                        rows.push((name, median, mean));
                    }
                }
            } else if path.file_name().is_some_and(|n| n != "report") {
                collect(root, &path, rows);
            }
        }
    }
}
