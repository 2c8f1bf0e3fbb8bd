//! Running a child to a deadline: a child that overruns is killed with
//! its group (or its jail) and reaped; output is capped.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use sandbox_jail::spawn::{spawn, ChildSpec, RunError};
use sandbox_jail::{JailConfig, Layers, UidPolicy};

use crate::support::{exits_within, first_child, gone, start_time};

#[test]
fn a_child_that_overruns_its_deadline_is_killed_with_its_group() {
    let spec = ChildSpec::new("/bin/sh").args(["-c", "sleep 1000 & echo $!; wait"]);
    let child = spawn(&spec).expect("spawn a shell");
    let pid = child.id();
    let started = start_time(pid).expect("the child runs");
    let (tx, rx) = crossbeam_channel::bounded(1);
    let deadline = Instant::now() + Duration::from_millis(500);
    let begun = Instant::now();
    let result = child.run_to_deadline(deadline, 1024, move |stdout| {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line.trim().parse::<u32>().ok());
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    assert!(matches!(result, Err(RunError::TimedOut)), "{result:?}");
    assert!(begun.elapsed() >= Duration::from_millis(500));
    assert!(
        begun.elapsed() < Duration::from_secs(10),
        "{:?}",
        begun.elapsed()
    );
    assert!(
        gone(pid, started),
        "the timed-out child {pid} was not reaped"
    );
    let grandchild = rx
        .recv_timeout(Duration::from_secs(1))
        .expect("the reader saw the first line")
        .expect("a pid");
    assert!(
        exits_within(grandchild, Duration::from_secs(10)),
        "the background process {grandchild} outlived the deadline"
    );
}

#[test]
fn a_jailed_child_that_overruns_its_deadline_is_killed_init_first() {
    let config = JailConfig::worker(UidPolicy::Keep, false, Layers::NONE);
    let spec = ChildSpec::new("/bin/sleep").arg("1000").jail(config);
    let child = spawn(&spec).expect("spawn a jailed sleep");
    let reaper = child.id();
    let reaper_started = start_time(reaper).expect("the reaper runs");
    let init = first_child(reaper).expect("the jail's init");
    let init_started = start_time(init).expect("the init runs");
    let result = child.output_to_deadline(Instant::now() + Duration::from_millis(300), 1024);
    assert!(matches!(result, Err(RunError::TimedOut)), "{result:?}");
    assert!(gone(reaper, reaper_started), "the reaper {reaper} is left");
    assert!(gone(init, init_started), "the jail's init {init} is left");
}

#[test]
fn output_is_capped_to_its_tail() {
    let script = "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo out-end; \
                  head -c 1000000 /dev/zero | tr '\\0' y >&2; echo >&2; echo err-end >&2; exit 4";
    let spec = ChildSpec::new("/bin/sh").args(["-c", script]);
    let finished = spawn(&spec)
        .expect("spawn a shell")
        .output_to_deadline(Instant::now() + Duration::from_secs(60), 4096)
        .expect("it finishes");
    assert_eq!(finished.status.code(), Some(4));
    assert!(finished.stdout.len() <= 4096, "{}", finished.stdout.len());
    assert!(
        finished.stdout.ends_with("x\nout-end\n"),
        "{:?}",
        &finished.stdout[4000..]
    );
    assert!(finished.stderr.len() <= 4096, "{}", finished.stderr.len());
    assert!(finished.stderr.ends_with("y\nerr-end\n"));
}

#[test]
fn stdout_can_go_to_a_reader_of_the_callers_choice() {
    let spec = ChildSpec::new("/bin/sh").args(["-c", "echo one; echo two; echo oops >&2"]);
    let finished = spawn(&spec)
        .expect("spawn a shell")
        .run_to_deadline(Instant::now() + Duration::from_secs(60), 1024, |stdout| {
            let mut text = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut text);
            text.lines().count()
        })
        .expect("it finishes");
    assert!(finished.status.success());
    assert_eq!(finished.stdout, 2);
    assert_eq!(finished.stderr, "oops\n");
}
