//! `cargo xtask <task>`: what maintainers repeat.
//!
//! - `ci`: fmt check, clippy `-D warnings`, the tests (nextest), docs `-D warnings`, the crate-layering rule.
//! - `demo`: the guided tour (`sandbox demo`).
//! - `bench`: every criterion bench, stored in `BENCHMARKS.json`, rendered to `BENCHMARKS.md` and the README's results block.
//! - `checks`: the acceptance checks in `../shared/checks` for landed behaviours.
//! - `deps`: checks that component crates are leaves (never depend on sandbox-core or on each other).
//! - `tidy`: every `.rs` file opens with `//!`, no switched-off test, benchmark documents match `BENCHMARKS.json`.

// A command's output is its job; libraries never print (workspace lint).
#![allow(clippy::print_stdout, clippy::print_stderr)]
// xtask runs cargo and python for the maintainer, in the foreground: not a
// sandbox's child, so not the spawning chokepoint's business.
#![allow(clippy::disallowed_methods)]

mod bench;
mod deps;
mod tidy;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("demo") => run(cargo().args(["run", "--quiet", "-p", "sandbox-cli", "--", "demo"])),
        Some("bench") => bench::bench(&args[1..]),
        Some("deps") => deps::check().map(|report| println!("{report}")),
        Some("checks") => checks(),
        Some("tidy") => tidy::check(),
        _ => {
            eprintln!("usage: cargo xtask <ci | demo | bench [FILTER | --report | --render] | deps | checks | tidy>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn ci() -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    tidy::check()?;
    deps::check().map(|report| eprintln!("{report}"))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]))?;
    run(cargo().args(["test", "--workspace", "--doc"]))?;
    run(cargo()
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    checks()?;
    Ok(())
}

/// The acceptance checks of the `sandbox` command (`../shared/checks`) for
/// the behaviours that have landed, when that folder is beside the checkout.
const CHECKS: &[&str] = &[
    "foundation-run-counter",
    "hotswap-state",
    "hotswap-compile-error",
    "watch-latency",
    "process-crash-recovery",
    "build-trust",
    "no-loss",
    "restructure",
    "serve",
];

fn checks() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("../shared/checks");
    if !dir.is_dir() {
        eprintln!(
            "no {} beside the checkout: acceptance checks skipped",
            dir.display()
        );
        return Ok(());
    }
    // The checks time what a user waits for (watch-latency's save to swap):
    // write back what the build and the tests left in the page cache first,
    // so a check does not time the kernel's writeback of gigabytes of
    // target files (a CI run measured 525 ms there, 381 ms right after).
    run(&mut Command::new("sync"))?;
    for check in CHECKS {
        run(Command::new("python3")
            .arg(dir.join(check))
            .current_dir(&root))?;
    }
    Ok(())
}
