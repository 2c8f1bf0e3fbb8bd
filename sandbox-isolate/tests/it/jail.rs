//! The jail on its own: what the kernel offers, and children started with
//! `ChildSpec::jail` (as the compiler does for untrusted builds).

use std::io::Read;

use sandbox_isolate::jail::{self, FsRules, JailConfig, Layers, UidPolicy, UidSlot, INNER_ID};
use sandbox_isolate::spawn::{spawn, ChildSpec};

/// Runs `script` under `sh` in a jail and returns (exit status, stdout, stderr).
fn sh(config: JailConfig, script: &str) -> (std::process::ExitStatus, String, String) {
    let spec = ChildSpec::new("/bin/sh").args(["-c", script]).jail(config);
    let mut child = spawn(&spec).expect("spawn a jailed shell");
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), out, err)
}

#[test]
fn this_kernel_offers_every_layer_but_cgroups_are_only_reported() {
    let support = jail::probe();
    // The machine the suite runs on has them all (see the issue); a kernel
    // without one must say so here rather than run weaker silently.
    let missing = Layers::ALL.missing(support, false);
    assert!(
        missing.is_empty(),
        "missing jail layers: {missing:?} ({support})"
    );
    assert!(support.landlock_abi >= 6, "{support}");
    assert!(support.to_string().contains("landlock ABI"), "{support}");
}

#[test]
fn a_jailed_child_runs_in_its_own_pid_namespace_under_its_own_uid_and_its_escapees_die_with_it() {
    let slot = UidSlot::allocate().unwrap();
    let config = JailConfig::worker(UidPolicy::Fixed(slot.uid()), false, Layers::UNTRUSTED);
    let script = "id -u; cat /proc/self/uid_map; echo pid=$$; \
                  (setsid sh -c 'echo escaped=$$; exec sleep 1000' &); sleep 0.2; echo done";
    let (status, out, err) = sh(config, script);
    assert!(status.success(), "{status}: {err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(INNER_ID.to_string().as_str()), "{out}");
    let map: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let expected_outer = if jail::probe().root {
        slot.uid()
    } else {
        rustix::process::getuid().as_raw()
    };
    assert_eq!(
        map,
        [INNER_ID.to_string(), expected_outer.to_string(), "1".into()],
        "{out}"
    );
    // pid 1 is the namespace's init; the program comes right after it.
    assert!(out.contains("pid=2"), "{out}");
    assert!(out.contains("escaped="), "{out}");
    // The escapee's `sleep` held stdout open: reading to the end returned,
    // so it is gone with the namespace's init.
    let sleepers = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.contains(&expected_outer.to_string()))
        })
        .count();
    if jail::probe().root {
        assert_eq!(sleepers, 0, "a process of the jail's uid survived it");
    }
}

#[test]
fn a_build_jail_limits_the_file_system_and_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let writable = dir.path().join("out");
    std::fs::create_dir(&writable).unwrap();
    let rules = FsRules {
        read_only: vec!["/bin".into(), "/usr".into()],
        read_write: vec![writable.clone()],
    };
    let script = format!(
        "echo ok > {w}/file && echo wrote; cat /etc/hostname >/dev/null 2>&1 || echo no-etc; \
         echo x > {d}/outside 2>/dev/null || echo no-outside; \
         (echo > /dev/tcp/127.0.0.1/9) 2>/dev/null || echo no-net",
        w = writable.display(),
        d = dir.path().display()
    );
    let (status, out, err) = sh(JailConfig::build(rules), &script);
    assert!(status.success(), "{status}: {err}");
    for expected in ["wrote", "no-etc", "no-outside", "no-net"] {
        assert!(
            out.contains(expected),
            "{expected} missing from {out:?} ({err})"
        );
    }
    assert_eq!(
        std::fs::read_to_string(writable.join("file")).unwrap(),
        "ok\n"
    );
    assert!(!dir.path().join("outside").exists());
}

#[test]
fn a_jailed_child_ends_the_way_its_program_did() {
    let config = || JailConfig::worker(UidPolicy::Keep, false, Layers::NONE);
    let (status, _, _) = sh(config(), "exit 7");
    assert_eq!(status.code(), Some(7));
    // The program is not the namespace's init, so a signal it sends itself
    // kills it, and the host sees that signal.
    let (status, _, _) = sh(config(), "kill -SEGV $$; exit 3");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGSEGV)
    );
}

#[test]
fn cargo_builds_in_the_build_jail_and_its_build_script_is_confined() {
    let home = std::path::PathBuf::from(std::env::var_os("HOME").unwrap());
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(Into::into)
        .unwrap_or_else(|| home.join(".cargo"));
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(Into::into)
        .unwrap_or_else(|| home.join(".rustup"));
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("untrusted");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::create_dir_all(project.join("target")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        "[package]\nname = \"untrusted\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(project.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    std::fs::write(
        project.join("build.rs"),
        r#"fn main() {
            let shadow = std::fs::read("/etc/shadow").map(|_| ()).map_err(|e| e.to_string());
            let net = std::net::TcpStream::connect("127.0.0.1:9").map(|_| ()).map_err(|e| e.to_string());
            let spawn = std::process::Command::new("/bin/true").status().map(|s| s.success());
            println!("cargo:warning=shadow={shadow:?} net={net:?} spawn={spawn:?}");
        }"#,
    )
    .unwrap();
    let rules = FsRules {
        read_only: vec![
            cargo_home,
            rustup_home,
            "/usr".into(),
            "/bin".into(),
            "/proc".into(),
            project.clone(),
        ],
        read_write: vec![project.join("target"), std::env::temp_dir()],
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let spec = ChildSpec::new(cargo)
        .args(["build", "--offline"])
        .current_dir(&project)
        .jail(JailConfig::build(rules));
    let out = spawn(&spec).unwrap().wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("shadow=Err(\"Permission denied"), "{err}");
    assert!(err.contains("net=Err(\"Operation not permitted"), "{err}");
    // Builds may start processes (build scripts, rustc); only the network,
    // files and kernel surfaces are closed.
    assert!(err.contains("spawn=Ok(true)"), "{err}");
}

#[test]
fn only_a_jail_without_host_chosen_layers_can_be_entered_by_the_program() {
    let spec = ChildSpec::new("/bin/true")
        .jail(JailConfig::build(FsRules::default()))
        .jailed_by_program();
    let err = spawn(&spec).expect_err("a build jail needs its pre-exec layers");
    assert!(
        matches!(err, sandbox_isolate::spawn::SpawnError::Spec { .. }),
        "{err}"
    );
}

/// Killed init first, a jail unwinds in order: nothing of it is orphaned,
/// so nothing is left for this process — made a child subreaper here, as a
/// host running as a container's pid 1 is — to adopt as a zombie.
#[test]
fn a_killed_jail_leaves_no_orphan_to_adopt() {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    let config = JailConfig::worker(UidPolicy::Keep, false, Layers::NONE);
    let spec = ChildSpec::new("/bin/sleep").arg("1000").jail(config);
    let mut reaper = spawn(&spec).expect("spawn a jailed sleep");
    assert!(reaper.is_jailed(), "a jailed child is killed init first");
    let pid = reaper.id();
    let init: u32 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("the jail's init")
        .parse()
        .unwrap();
    reaper.kill().unwrap();
    let status = reaper.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    // The reaper exits only after reaping the init: it is gone, not a
    // zombie waiting for this process.
    assert!(
        !std::path::Path::new(&format!("/proc/{init}")).exists(),
        "the jail's init outlived its reaper"
    );
}
