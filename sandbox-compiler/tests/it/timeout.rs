//! A build that never finishes is killed, with everything it started.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sandbox_compiler::{Compiler, Error};

use crate::support;

/// Whether a process is still running (a zombie waiting to be reaped by
/// init is dead).
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

#[test]
fn endless_build_script_times_out_and_its_group_dies() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("endless");
    let pids = dir.path().join("pids");
    let build_rs = format!(
        r#"fn main() {{
    let child = std::process::Command::new("sleep")
        .arg("3600")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sleep");
    let tmp = {tmp:?};
    std::fs::write(tmp, format!("{{}} {{}}", std::process::id(), child.id())).expect("write pids");
    std::fs::rename(tmp, {pids:?}).expect("publish pids");
    loop {{
        std::thread::park();
    }}
}}
"#,
        tmp = dir.path().join("pids.tmp").display().to_string(),
        pids = pids.display().to_string(),
    );
    support::write_files(
        &root,
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"endless\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n[workspace]\n",
            ),
            ("build.rs", &build_rs),
            ("src/lib.rs", ""),
        ],
    )?;
    let cache = tempfile::tempdir()?;
    let compiler = support::compiler(cache.path())?;
    let timeout = Duration::from_secs(5);
    let started = Instant::now();
    let err = compiler
        .build(&support::request(&root).timeout(timeout))
        .expect_err("the build never ends");
    assert!(
        matches!(err, Error::Timeout { after } if after == timeout),
        "{err:?}"
    );
    assert!(err.to_string().contains("was killed"), "{err}");

    let pids = std::fs::read_to_string(&pids)
        .context("the build script never ran; is the machine overloaded?")?;
    let pids: Vec<u32> = pids
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    assert_eq!(pids.len(), 2);
    // SIGKILL went to the whole group before `build` returned; give the
    // kernel a bounded moment to finish tearing the processes down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&pid| running(pid)) && Instant::now() < deadline {
        std::thread::yield_now();
    }
    for pid in pids {
        assert!(
            !running(pid),
            "process {pid} of the timed-out build is still running"
        );
    }
    // Waiting for the shared target dir is not part of the timeout, so only
    // a lower bound holds.
    assert!(started.elapsed() >= timeout);
    Ok(())
}

#[test]
fn no_process_left_after_a_finished_build() -> Result<()> {
    // A build script that leaves a daemon behind: the daemon dies with the
    // build's process group.
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("daemon");
    let pid_file = dir.path().join("pid");
    let build_rs = format!(
        r#"fn main() {{
    let child = std::process::Command::new("sleep")
        .arg("3600")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sleep");
    std::fs::write({pid_file:?}, child.id().to_string()).expect("write pid");
}}
"#,
        pid_file = pid_file.display().to_string(),
    );
    support::write_files(
        &root,
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"daemon\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n[workspace]\n",
            ),
            ("build.rs", &build_rs),
            ("src/lib.rs", ""),
        ],
    )?;
    let cache = tempfile::tempdir()?;
    let compiler = support::compiler(cache.path())?;
    let err = compiler
        .build(&support::request(&root))
        .expect_err("not a plugin");
    assert!(matches!(err, Error::NotAPlugin { .. }), "{err:?}");
    let pid: u32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(
        !running(pid),
        "the build script's daemon {pid} survived the build"
    );
    Ok(())
}
