//! `sandbox demo`: a scripted, non-interactive tour on the counter example.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use sandbox_core::{Config, Manager, SandboxSpec};
use serde_json::json;

use crate::DemoArgs;

fn step(n: u32, text: &str) {
    println!("\n{n}. {text}");
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples/counter");
    let example = example
        .canonicalize()
        .context("the counter example is missing from this checkout")?;
    let scratch = tempfile::Builder::new().prefix("sandbox-demo-").tempdir()?;
    let source = scratch.path().join("counter");
    copy_example(&example, &source)?;

    println!("sandbox demo — a plugin compiled from Rust source, hot-swapped with its state kept");
    println!(
        "working on a copy of {} in {}",
        example.display(),
        source.display()
    );
    let manager = Manager::new(Config {
        work_dir: scratch.path().join("work"),
        ..Config::default()
    })?;

    step(
        1,
        "create a sandbox from the crate (the first run compiles the plugin's dependencies once)",
    );
    let t = Instant::now();
    let info = manager
        .create("demo", SandboxSpec::trusted(&source))
        .await?
        .info()?;
    for m in &info.modules {
        println!(
            "   module `{}` v{} (crate {}, state schema {}) ready in {:.2?}",
            m.name,
            m.version,
            m.module_version,
            m.schema,
            t.elapsed()
        );
    }

    step(2, "call it: the counter keeps a running total");
    for add in [5, 2] {
        let out = manager
            .call_json("demo", "counter", &json!({ "add": add }))
            .await?;
        println!("   {{\"add\": {add}}} -> {out}");
    }

    step(3, "edit the source: every add now counts double; reload");
    let lib = source.join("src/lib.rs");
    let original = std::fs::read_to_string(&lib)?;
    let doubled = original.replacen("checked_add(add)", "checked_add(add * 2)", 1);
    std::fs::write(&lib, &doubled)?;
    let report = manager.hot_reload("demo").await?;
    for s in &report.swapped {
        println!(
            "   swapped `{}` v{} -> v{} (build {} ms, swap {} ms)",
            s.module,
            s.from.unwrap_or(0),
            s.to,
            report.compile_millis,
            report.swap_millis
        );
    }
    let out = manager
        .call_json("demo", "counter", &json!({ "add": 3 }))
        .await?;
    println!("   {{\"add\": 3}} -> {out}   (7 + 2×3: the total survived the swap)");

    step(
        4,
        "a broken edit: the reload fails with diagnostics, the running version keeps serving",
    );
    std::fs::write(&lib, format!("{doubled}\nfn broken( {{\n"))?;
    match manager.hot_reload("demo").await {
        Ok(_) => println!("   unexpected: the broken source reloaded"),
        Err(e) => {
            println!(
                "   reload refused ({}): {}",
                e.kind(),
                first_line(&e.to_string())
            );
            for d in e.diagnostics().iter().take(2) {
                let file = d
                    .file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default();
                println!(
                    "     {file}:{}:{}: {}",
                    d.line.unwrap_or(0),
                    d.column.unwrap_or(0),
                    d.message
                );
            }
        }
    }
    let out = manager
        .call_json("demo", "counter", &json!({ "add": 1 }))
        .await?;
    println!("   {{\"add\": 1}} -> {out}   (still v2, still doubling)");
    std::fs::write(&lib, &doubled)?;

    step(5, "roll back to version 1, carrying the live state");
    for v in manager.versions("demo", "counter")? {
        println!(
            "   version {} sha256 {}…{}",
            v.number,
            &v.checksum[..12],
            if v.current { "  (current)" } else { "" }
        );
    }
    let back = manager.rollback("demo", "counter", 1).await?;
    println!(
        "   rolled `{}` back v{} -> v{}",
        back.module,
        back.from.unwrap_or(0),
        back.to
    );
    let out = manager
        .call_json("demo", "counter", &json!({ "add": 1 }))
        .await?;
    println!("   {{\"add\": 1}} -> {out}   (single adds again, total kept)");

    step(6, "destroy the sandbox");
    manager.destroy("demo").await?;
    println!(
        "   done. Next: `sandbox run plugins/examples/counter` speaks JSON lines; see README.md"
    );
    if args.keep {
        let kept = scratch.keep();
        println!("   kept the demo's files in {}", kept.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn copy_example(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to.join("src"))?;
    let api = from.join("../../sandbox-plugin").canonicalize()?;
    let manifest = std::fs::read_to_string(from.join("Cargo.toml"))?.replace(
        "path = \"../../sandbox-plugin\"",
        &format!("path = \"{}\"", api.display()),
    );
    std::fs::write(to.join("Cargo.toml"), manifest)?;
    std::fs::copy(from.join("src/lib.rs"), to.join("src/lib.rs"))?;
    if from.join("Cargo.lock").is_file() {
        std::fs::copy(from.join("Cargo.lock"), to.join("Cargo.lock"))?;
    }
    Ok(())
}
