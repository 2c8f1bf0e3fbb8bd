//! A [`JailedChild`] kills and reaps its child when dropped, the way the
//! child must be killed, and spawn errors say what went wrong.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use sandbox_jail::spawn::{spawn, ChildSpec, SpawnError};
use sandbox_jail::{FsRules, JailConfig, Layers, UidPolicy};

use crate::support::{exits_within, first_child, gone, running, start_time};

/// Reads the first line the child writes on stdout.
fn first_line(child: &mut sandbox_jail::spawn::JailedChild) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("read the child's first line");
    line.trim().to_owned()
}

#[test]
fn a_dropped_child_is_killed_and_reaped_with_its_group() {
    let spec = ChildSpec::new("/bin/sh").args(["-c", "sleep 1000 & echo $!; wait"]);
    let mut child = spawn(&spec).expect("spawn a shell");
    assert!(!child.is_jailed());
    let pid = child.id();
    let grandchild: u32 = first_line(&mut child).parse().expect("a pid");
    let started = start_time(pid).expect("the child runs");
    assert!(running(pid) && running(grandchild));

    drop(child);

    // Reaped: no process, not even a zombie, is left with its pid.
    assert!(gone(pid, started), "the dropped child {pid} is still there");
    // Its group went with it.
    assert!(
        exits_within(grandchild, Duration::from_secs(10)),
        "the child's background process {grandchild} survived the drop"
    );
}

#[test]
fn a_dropped_jailed_child_is_killed_and_reaped_init_and_all() {
    let config = JailConfig::worker(UidPolicy::Keep, false, Layers::NONE);
    let spec = ChildSpec::new("/bin/sleep").arg("1000").jail(config);
    let child = spawn(&spec).expect("spawn a jailed sleep");
    assert!(child.is_jailed());
    let reaper = child.id();
    let reaper_started = start_time(reaper).expect("the reaper runs");
    let init = first_child(reaper).expect("the jail's init");
    let init_started = start_time(init).expect("the init runs");
    let program = first_child(init).expect("the jailed program");

    drop(child);

    assert!(gone(reaper, reaper_started), "the reaper {reaper} is left");
    // The reaper exits only after reaping the init.
    assert!(gone(init, init_started), "the jail's init {init} is left");
    assert!(
        exits_within(program, Duration::from_secs(10)),
        "the jailed program {program} survived"
    );
}

#[test]
fn a_waited_child_is_reaped_once_and_its_status_kept() {
    let spec = ChildSpec::new("/bin/sh").args(["-c", "exit 3"]);
    let mut child = spawn(&spec).expect("spawn a shell");
    let pid = child.id();
    let started = start_time(pid);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(3));
    assert_eq!(child.wait().expect("wait again").code(), Some(3));
    assert_eq!(child.try_wait().expect("try_wait"), Some(status));
    if let Some(started) = started {
        assert!(gone(pid, started));
    }
    // Killing a reaped child is a no-op, not a signal to whoever has the
    // pid now.
    child.kill().expect("kill after reaping");
    child
        .killer()
        .kill()
        .expect("kill from a killer after reaping");
}

#[test]
fn a_killer_on_another_thread_stops_a_waiting_child() {
    let spec = ChildSpec::new("/bin/sleep").arg("1000");
    let mut child = spawn(&spec).expect("spawn sleep");
    let killer = child.killer();
    assert_eq!(killer.id(), child.id());
    let waiter = std::thread::spawn(move || child.wait());
    killer.kill().expect("kill");
    let status = waiter.join().expect("the waiter").expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
}

#[test]
fn spawn_errors_say_what_went_wrong() {
    let err = spawn(&ChildSpec::new("/nonexistent/program")).expect_err("no such program");
    assert!(
        matches!(&err, SpawnError::Start { program, source }
            if program.ends_with("program") && source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(err.to_string().contains("/nonexistent/program"), "{err}");

    let spec = ChildSpec::new("/bin/true")
        .jail(JailConfig::build(FsRules::default()))
        .jailed_by_program();
    let err = spawn(&spec).expect_err("a build jail needs its pre-exec layers");
    assert!(matches!(err, SpawnError::Spec { .. }), "{err:?}");
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::InvalidInput
    );
}
