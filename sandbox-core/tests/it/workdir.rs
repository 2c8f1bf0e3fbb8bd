//! Work folders left by hosts that were killed are removed when the next
//! manager starts; those of live hosts never are.

use std::fs::File;
use std::path::Path;

use sandbox_core::{Config, Manager};

/// A pid no process can have (above the kernel's `pid_max`).
fn dead_pid(offset: u32) -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("read pid_max")
        .trim()
        .parse()
        .expect("a number");
    max + offset
}

/// A work folder as a host leaves it: its lock file and a runtime folder.
fn host_folder(dir: &Path) {
    std::fs::create_dir_all(dir.join("counter@3")).unwrap();
    std::fs::write(dir.join("counter@3").join("libcounter.so"), b"copy").unwrap();
    File::create(dir.join(".lock")).unwrap();
}

fn manager(work_dir: &Path, scratch: &Path) -> Manager {
    Manager::new(Config {
        work_dir: work_dir.to_owned(),
        ..sandbox_testkit::test_config(scratch)
    })
    .expect("a manager")
}

#[test]
fn a_new_manager_removes_the_folders_of_dead_hosts_and_keeps_live_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("tmp");
    // Killed hosts: one with a lock file nobody holds, one from before
    // hosts took locks.
    let dead = parent.join(format!("sandbox-{}", dead_pid(1)));
    host_folder(&dead);
    let dead_unlocked = parent.join(format!("sandbox-{}", dead_pid(2)));
    host_folder(&dead_unlocked);
    std::fs::remove_file(dead_unlocked.join(".lock")).unwrap();
    // A host in another pid namespace (its pid means nothing here) that is
    // alive: it holds its lock. Here this process holds it.
    let locked = parent.join(format!("sandbox-{}", dead_pid(3)));
    host_folder(&locked);
    let held = File::options()
        .write(true)
        .open(locked.join(".lock"))
        .unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    // A live pid (init) and no lock: a host between creating its folder and
    // locking it.
    let starting = parent.join("sandbox-1");
    host_folder(&starting);
    std::fs::remove_file(starting.join(".lock")).unwrap();
    // Not ours: other names, or other contents.
    let other_name = parent.join(format!("other-{}", dead_pid(4)));
    host_folder(&other_name);
    let other_contents = parent.join(format!("sandbox-{}", dead_pid(5)));
    std::fs::create_dir_all(&other_contents).unwrap();
    std::fs::write(other_contents.join("notes.txt"), b"mine").unwrap();

    let own = parent.join(format!("sandbox-{}", std::process::id()));
    let m = manager(&own, tmp.path());
    assert!(!dead.exists(), "a dead host's folder is removed");
    assert!(
        !dead_unlocked.exists(),
        "an old dead host's folder is removed"
    );
    assert!(locked.exists(), "a folder whose lock is held is kept");
    assert!(starting.exists(), "a folder of a live pid is kept");
    assert!(
        other_name.exists() && other_contents.exists(),
        "others' folders are kept"
    );
    assert!(own.join(".lock").exists(), "the manager locks its folder");
    drop(held);
    drop(m);
    assert!(!own.exists(), "the last manager removes its folder");
}

#[test]
fn a_live_manager_s_folder_survives_another_manager_s_start() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("tmp");
    // Named after a pid that is not running: only its lock keeps it.
    let first = parent.join(format!("sandbox-{}", dead_pid(1)));
    let a = manager(&first, tmp.path());
    std::fs::create_dir_all(first.join("counter@0")).unwrap();
    let second = parent.join(format!("sandbox-{}", std::process::id()));
    let b = manager(&second, tmp.path());
    assert!(
        first.join("counter@0").exists(),
        "a live manager's folder is kept"
    );
    // Two managers of one folder share its lock.
    let c = manager(&second, tmp.path());
    drop(b);
    assert!(
        second.join(".lock").exists(),
        "still claimed by the other manager"
    );
    drop(c);
    assert!(!second.exists());
    drop(a);
    // Its runtime folder (left here by hand) keeps it; a later start cleans it.
    assert!(first.exists());
    let _d = manager(&second, tmp.path());
    assert!(!first.exists(), "removed once its manager is gone");
}
