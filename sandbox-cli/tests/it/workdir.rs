//! `sandbox run` removes the work folders that killed hosts left in
//! `$TMPDIR`, and keeps those of live hosts.

use std::process::Stdio;

use crate::host::{example, sandbox};

/// A pid no process can have (above the kernel's `pid_max`).
fn dead_pid(offset: u32) -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("read pid_max")
        .trim()
        .parse()
        .expect("a number");
    max + offset
}

#[test]
fn a_host_start_removes_the_work_folders_of_killed_hosts_only() {
    let (_src_tmp, src) = example("counter");
    let tmp = tempfile::tempdir().unwrap();
    // Left by a killed host: its runtime folder and its (unheld) lock.
    let dead = tmp.path().join(format!("sandbox-{}", dead_pid(1)));
    std::fs::create_dir_all(dead.join("counter@2")).unwrap();
    std::fs::write(dead.join("counter@2").join("libcounter.so"), b"copy").unwrap();
    std::fs::write(dead.join(".lock"), b"").unwrap();
    // A live host whose pid means nothing here (another pid namespace):
    // it holds its lock (this test does, for it).
    let live = tmp.path().join(format!("sandbox-{}", dead_pid(2)));
    std::fs::create_dir_all(live.join("counter@0")).unwrap();
    let lock = std::fs::File::create(live.join(".lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();

    // A host that starts and ends at once (end of input).
    let out = sandbox()
        .env("TMPDIR", tmp.path())
        .args(["run", "--profile", "trusted"])
        .arg(&src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run sandbox");
    assert!(out.status.success(), "{out:?}");
    assert!(!dead.exists(), "the killed host's folder is removed");
    assert!(
        live.join("counter@0").exists(),
        "the live host's folder is kept"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left.len(),
        1,
        "the host removed its own folder too: {left:?}"
    );
}
