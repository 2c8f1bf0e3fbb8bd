//! `sandbox check` and `sandbox audit verify`, end to end: the scan's
//! findings printed like cargo diagnostics with the profile's verdict, and
//! the audit log of a real `sandbox run` checked, then tampered with.

use std::process::Output;

use serde_json::{json, Value};

use crate::host::{example, sandbox, Host};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    sandbox().args(args).output().expect("run sandbox")
}

#[test]
fn check_prints_a_refused_finding_with_file_and_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spawner");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        "[package]\nname = \"spawner\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(root.join("src/lib.rs"), "mod util;\npub use util::run;\n").unwrap();
    std::fs::write(
        root.join("src/util.rs"),
        "/// Runs a shell.\npub fn run() {\n    let _ = std::process::Command::new(\"sh\").status();\n}\n",
    )
    .unwrap();

    let high = run(&[
        "check".as_ref(),
        root.as_os_str(),
        "--profile".as_ref(),
        "high".as_ref(),
    ]);
    let out = text(&high.stdout);
    assert_eq!(high.status.code(), Some(1), "{out}{}", text(&high.stderr));
    assert!(
        out.contains(
            "warning: `std::process` (process creation)\n --> src/util.rs:3:13\n  |\n\
             3 |     let _ = std::process::Command::new(\"sh\").status();\n  |             ^\n\
             \x20 = note: not allowed under profile high\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("error: source refused under profile high: 1 of 1 finding not allowed"),
        "{out}"
    );

    let trusted = run(&[
        "check".as_ref(),
        root.as_os_str(),
        "--profile".as_ref(),
        "trusted".as_ref(),
    ]);
    let out = text(&trusted.stdout);
    assert_eq!(
        trusted.status.code(),
        Some(0),
        "{out}{}",
        text(&trusted.stderr)
    );
    assert!(out.contains(" --> src/util.rs:3:13\n"), "{out}");
    assert!(
        out.contains("= note: allowed under profile trusted"),
        "{out}"
    );
}

#[test]
fn audit_verify_passes_on_the_log_of_a_real_run_and_names_a_tampered_line() {
    let (dir, src) = example("counter");
    let log = dir.path().join("audit.log");
    let mut h = Host::run(&src, &["--audit-log", log.to_str().unwrap()]);
    let r = h.call(5);
    assert_eq!(r["output"]["value"], 5, "{r}");
    assert_eq!(h.quit(), 0);

    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let entries: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    let position = |action: &str| {
        actions
            .iter()
            .position(|a| *a == action)
            .unwrap_or_else(|| panic!("no `{action}` entry in {actions:?}"))
    };
    assert!(
        position("create") < position("build") && position("build") < position("destroy"),
        "{actions:?}"
    );
    let build = &entries[position("build")];
    assert_eq!(build["detail"], "profile medium, jailed", "{build}");
    for entry in &entries {
        assert_eq!(entry["sandbox"], json!("counter"), "{entry}");
        assert!(
            !entry["actor"].as_str().unwrap_or_default().is_empty(),
            "{entry}"
        );
    }

    let verified = run(&["audit".as_ref(), "verify".as_ref(), log.as_os_str()]);
    let out = text(&verified.stdout);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{out}{}",
        text(&verified.stderr)
    );
    assert!(
        out.starts_with(&format!(
            "ok: {}: {} entries, chain intact",
            log.display(),
            lines.len()
        )),
        "{out}"
    );

    // Rewrite history: the build was "trusted".
    let line = position("build");
    let mut tampered = lines.clone();
    tampered[line] =
        tampered[line].replace("profile medium, jailed", "profile trusted, not jailed");
    assert_ne!(tampered[line], lines[line]);
    std::fs::write(&log, tampered.join("\n") + "\n").unwrap();
    let refused = run(&["audit".as_ref(), "verify".as_ref(), log.as_os_str()]);
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "is broken at line {}: its hash does not match its content",
            line + 1
        )),
        "{err}"
    );
}
