//! The hostile suite: one attack per test, each in its own jailed worker.
//! Contained means: this (host) process stays up, the call gets a typed
//! error or the runtime reports a crash naming what stopped it, and no
//! process of the sandbox survives its runtime.

use std::time::Duration;

use crossbeam_channel::Receiver;
use sandbox_isolate::spawn::ChildLimits;
use sandbox_isolate::{
    Crash, Error, Isolator, LaunchSpec, Limit, PluginErrorKind, Process, Runtime,
};

use crate::support;

struct Target {
    rt: Option<Box<dyn Runtime>>,
    crashes: Receiver<Crash>,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl Target {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut ChildLimits)) -> Self {
        Self::launched(&support::isolator(), |spec| tweak(&mut spec.limits))
    }

    fn launched(isolator: &dyn Isolator, tweak: impl FnOnce(&mut LaunchSpec)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (mut spec, crashes) = support::spec(dir.path(), "hostile");
        tweak(&mut spec);
        let rt = isolator.launch(&spec).expect("launch");
        support::start(&*rt, &support::hostile(), "hostile");
        let pid = rt.info().pid;
        Self {
            rt: Some(rt),
            crashes,
            pid,
            _dir: dir,
        }
    }

    fn attack(
        &self,
        attack: &str,
        arg: serde_json::Value,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, Error> {
        let request = serde_json::json!({ "attack": attack, "arg": arg }).to_string();
        self.rt
            .as_ref()
            .unwrap()
            .call("hostile", request.as_bytes(), timeout)
    }

    /// The attack must fail with a plugin error whose message has `needle`.
    fn refused(&self, attack: &str, arg: serde_json::Value, needle: &str) -> String {
        let err = self
            .attack(attack, arg, Some(Duration::from_secs(30)))
            .expect_err("the attack succeeded");
        assert_eq!(
            support::plugin_error_kind(&err),
            Some(PluginErrorKind::Failed),
            "{attack}: {err}"
        );
        let text = err.to_string();
        assert!(text.contains(needle), "{attack}: `{needle}` not in: {text}");
        // The worker is still serving.
        let err = self
            .attack(
                "none",
                serde_json::Value::Null,
                Some(Duration::from_secs(30)),
            )
            .unwrap_err();
        assert_eq!(
            support::plugin_error_kind(&err),
            Some(PluginErrorKind::BadRequest),
            "{err}"
        );
        text
    }

    /// The attack must kill the worker; returns the crash report.
    fn crashed(&self, attack: &str, timeout: Option<Duration>) -> Crash {
        let err = self
            .attack(attack, serde_json::Value::Null, timeout)
            .expect_err("the attack came back");
        assert!(
            matches!(err, Error::WorkerDied { .. } | Error::Timeout { .. }),
            "{attack}: {err}"
        );
        let crash = self
            .crashes
            .recv_timeout(Duration::from_secs(30))
            .expect("a crash report");
        assert!(
            support::gone(self.pid),
            "{attack}: the worker is still there after its crash"
        );
        crash
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        drop(self.rt.take());
        if !std::thread::panicking() {
            assert!(support::gone(self.pid), "the worker outlived its runtime");
        }
    }
}

#[test]
fn an_infinite_loop_is_killed_at_the_call_timeout() {
    let t = Target::new();
    let crash = t.crashed("loop", Some(Duration::from_millis(500)));
    assert_eq!(crash.limit, Some(Limit::CallTimeout), "{crash:?}");
    assert_eq!(crash.signal, Some(libc::SIGKILL), "{crash:?}");
}

#[test]
fn an_infinite_loop_without_timeout_hits_the_cpu_limit() {
    let t = Target::with(|l| l.cpu_seconds = Some(1));
    let crash = t.crashed("loop", None);
    assert_eq!(crash.limit, Some(Limit::Cpu), "{crash:?}");
    assert_eq!(crash.signal, Some(libc::SIGXCPU), "{crash:?}");
}

#[test]
fn a_memory_bomb_hits_the_address_space_limit() {
    let t = Target::with(|l| l.address_space = Some(768 << 20));
    let crash = t.crashed("memory", Some(Duration::from_secs(60)));
    assert_eq!(crash.limit, Some(Limit::AddressSpace), "{crash:?}");
    assert!(crash.cause.contains("address space"), "{crash:?}");
}

#[test]
fn a_thread_bomb_hits_the_process_limit() {
    let t = Target::new();
    let text = t.refused("threads", serde_json::Value::Null, "started");
    let started: u64 = text
        .split("started ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(started < support::limits().processes.unwrap(), "{text}");
}

#[test]
fn fork_is_denied() {
    Target::new().refused("fork", serde_json::Value::Null, "Operation not permitted");
}

#[test]
fn spawning_a_program_is_denied() {
    Target::new().refused("spawn", serde_json::Value::Null, "spawn:");
}

#[test]
fn a_child_escaping_with_setsid_cannot_even_be_started() {
    Target::new().refused("setsid", serde_json::Value::Null, "Operation not permitted");
}

#[test]
fn a_huge_file_stops_at_the_file_size_limit() {
    Target::new().refused("file", serde_json::Value::Null, "File too large");
}

#[test]
fn filling_the_disk_with_many_files_hits_the_disk_limit() {
    let t = Target::new();
    let crash = t.crashed("disk", Some(Duration::from_secs(60)));
    assert_eq!(crash.limit, Some(Limit::Disk), "{crash:?}");
}

#[test]
fn a_sandbox_s_own_disk_cap_holds_without_one_on_the_isolator() {
    let uncapped = Process::new(support::worker()).output_limit(Some(1 << 20));
    let t = Target::launched(&uncapped, |spec| spec.disk_limit = Some(8 << 20));
    let crash = t.crashed("disk", Some(Duration::from_secs(60)));
    assert_eq!(crash.limit, Some(Limit::Disk), "{crash:?}");
    assert!(crash.cause.contains("disk limit of 8388608"), "{crash:?}");
}

#[test]
fn unbounded_stdout_hits_the_output_limit() {
    let t = Target::new();
    let crash = t.crashed("stdout", Some(Duration::from_secs(60)));
    assert_eq!(crash.limit, Some(Limit::Output), "{crash:?}");
}

#[test]
fn a_sandbox_s_own_output_cap_holds_without_one_on_the_isolator() {
    let uncapped = Process::new(support::worker()).disk_limit(Some(256 << 20));
    let t = Target::launched(&uncapped.output_limit(None), |spec| {
        spec.output_limit = Some(64 << 10)
    });
    let crash = t.crashed("stdout", Some(Duration::from_secs(60)));
    assert_eq!(crash.limit, Some(Limit::Output), "{crash:?}");
}

#[test]
fn host_files_outside_the_sandbox_folders_cannot_be_read() {
    let t = Target::new();
    t.refused("read", "/etc/shadow".into(), "Permission denied");
    t.refused("read", "/etc/passwd".into(), "Permission denied");
    // World-readable, in a world-readable folder: only landlock stops it.
    let outside = std::env::temp_dir().join(format!("sandbox-secret-{}", std::process::id()));
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::set_permissions(
        &outside,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let secret = outside.join("secret");
    std::fs::write(&secret, "host secret").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    t.refused("read", secret.to_str().unwrap().into(), "Permission denied");
    t.refused(
        "symlink",
        secret.to_str().unwrap().into(),
        "Permission denied",
    );
    t.refused("symlink", "/etc/shadow".into(), "Permission denied");
    std::fs::remove_dir_all(&outside).unwrap();
}

#[test]
fn memory_outside_the_address_space_is_denied() {
    let t = Target::new();
    t.refused("memfd", serde_json::Value::Null, "Operation not permitted");
    t.refused("shm", serde_json::Value::Null, "/dev/shm");
}

#[test]
fn no_network_connection_can_be_opened() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    Target::new().refused("tcp", port.into(), "Operation not permitted");
}

#[test]
fn the_host_cannot_be_traced_or_signalled() {
    let t = Target::new();
    let host = std::process::id();
    t.refused("ptrace", host.into(), "Operation not permitted");
    t.refused("ptrace", 1.into(), "Operation not permitted");
    t.refused("kill", host.into(), "Operation not permitted");
    t.refused(
        "kill-group",
        serde_json::Value::Null,
        "Operation not permitted",
    );
}

#[test]
fn abort_is_a_crash_with_sigabrt() {
    let crash = Target::new().crashed("abort", None);
    assert_eq!(crash.signal, Some(libc::SIGABRT), "{crash:?}");
}

#[test]
fn a_null_pointer_write_is_a_crash_with_sigsegv() {
    let crash = Target::new().crashed("null", None);
    assert_eq!(crash.signal, Some(libc::SIGSEGV), "{crash:?}");
}

#[test]
fn a_stack_overflow_is_a_crash_naming_the_stack() {
    let crash = Target::new().crashed("stack", None);
    assert_eq!(crash.limit, Some(Limit::Stack), "{crash:?}");
}

#[test]
fn process_exit_is_a_crash_with_its_exit_code() {
    let crash = Target::new().crashed("exit", None);
    assert_eq!(crash.exit_code, Some(3), "{crash:?}");
    assert!(crash.cause.contains("exited with code 3"), "{crash:?}");
}
