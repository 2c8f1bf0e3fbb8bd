//! A worker stays inside its memory budget under many concurrent callers:
//! per-thread allocator arenas used to reserve 64 MiB of address space each,
//! so 10,000 calls from 20 threads left a worker at 510 of its 512 MiB
//! (`RLIMIT_AS`) and the next load failed.

use sandbox_isolate::spawn::ChildLimits;
use sandbox_isolate::{Error, Isolator, Limit, SwapStep};
use sandbox_testkit::fixtures;

use crate::support::{self, add, counter, start};

/// The kernel limits a sandbox gets from the default `ResourceLimits`.
fn default_limits() -> ChildLimits {
    ChildLimits {
        address_space: Some(512 << 20),
        cpu_seconds: Some(60),
        file_size: Some(64 << 20),
        open_files: Some(256),
        processes: Some(64),
        core_size: Some(0),
    }
}

/// `VmSize` of process `pid`, in MiB.
fn vm_size_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        >> 10
}

/// A worker under the default limits running module `name`, built from
/// `source` below `dir`.
fn worker_running(
    dir: &std::path::Path,
    name: &str,
    source: &str,
) -> Box<dyn sandbox_isolate::Runtime> {
    let src = dir.join(name);
    fixtures::write_plugin(&src, name, source).unwrap();
    let artifact = fixtures::build(&src).unwrap().remove(0).path;
    let (mut spec, _crashes) = support::spec(dir, name);
    spec.limits = default_limits();
    let rt = support::isolator().launch(&spec).expect("launch");
    start(&*rt, &artifact, name);
    rt
}

#[test]
fn ten_thousand_calls_from_twenty_threads_then_a_reload_fit_the_default_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spec, crashes) = support::spec(dir.path(), "memory");
    spec.limits = default_limits();
    let rt = support::isolator().launch(&spec).expect("launch");
    let artifact = counter();
    start(&*rt, &artifact, "counter");
    let fresh = vm_size_mib(rt.info().pid);
    std::thread::scope(|s| {
        for _ in 0..20 {
            s.spawn(|| {
                for _ in 0..500 {
                    add(&*rt, 1);
                }
            });
        }
    });
    let busy = vm_size_mib(rt.info().pid);
    eprintln!("worker VmSize: {fresh} MiB fresh, {busy} MiB after 10,000 calls from 20 threads");
    // Without a bound on the allocator's arenas this was 501 of 512 MiB.
    assert!(
        busy < 256,
        "the worker holds {busy} MiB of address space after the calls ({fresh} MiB fresh)"
    );
    // A reload maps the library again (a copy: this file is mapped already).
    rt.load(&artifact, 2).expect("a load after many callers");
    rt.swap(&[SwapStep::new("counter", 2)]).expect("swap");
    assert_eq!(add(&*rt, 1), 10_001);
    assert!(crashes.try_recv().is_err(), "the worker died");
}

/// A module `hog` that, asked `{"fill": true}`, reserves (without
/// touching) address space in 1 MiB pieces until there is none left, and
/// keeps it.
const HOG: &str = r#"
use sandbox_plugin::{export_plugin, json, Host, Plugin, Result};

#[derive(Default)]
pub struct Hog;

impl Plugin for Hog {
    const NAME: &'static str = "hog";

    fn handle(&mut self, _host: &Host<'_>, _request: &[u8]) -> Result<Vec<u8>> {
        let mut pieces = 0u64;
        loop {
            let mut piece = Vec::<u8>::new();
            if piece.try_reserve_exact(1 << 20).is_err() {
                break;
            }
            std::mem::forget(piece);
            pieces += 1;
        }
        json::encode(&serde_json::json!({ "reserved_mib": pieces }))
    }
}

export_plugin!(Hog);
"#;

#[test]
fn a_load_that_finds_no_address_space_left_is_a_resource_error() {
    let dir = tempfile::tempdir().unwrap();
    let rt = worker_running(dir.path(), "hog", HOG);
    let filled = support::call(&*rt, "hog", serde_json::json!({"fill": true})).unwrap();
    assert!(filled["reserved_mib"].as_u64().unwrap() > 100, "{filled}");
    let err = rt.load(&counter(), 1).unwrap_err();
    match &err {
        Error::Exhausted { limit, .. } => assert_eq!(*limit, Limit::AddressSpace),
        other => panic!("expected a resource error, got: {other}"),
    }
    assert!(
        err.to_string()
            .contains("raise the sandbox's address_space_bytes"),
        "{err}"
    );
}

/// A module `hog` that, asked `{"reserve": mib}`, reserves (without
/// touching) that much address space and keeps it; its state is how much
/// it reserved in all.
const RESERVE: &str = r#"
use sandbox_plugin::{export_plugin, json, state, Host, Plugin, Result};

#[derive(Default)]
pub struct Hog {
    reserved: u64,
}

impl Plugin for Hog {
    const NAME: &'static str = "hog";

    fn handle(&mut self, _host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let request: serde_json::Value = json::decode(request)?;
        let mib = request["reserve"].as_u64().unwrap_or(0);
        let mut piece = Vec::<u8>::new();
        if piece.try_reserve_exact((mib as usize) << 20).is_ok() {
            std::mem::forget(piece);
            self.reserved += mib;
        }
        json::encode(&serde_json::json!({ "reserved": self.reserved }))
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        state::save(&self.reserved)
    }

    fn restore_state(&mut self, _host: &Host<'_>, bytes: &[u8], from: u32) -> Result<()> {
        self.reserved = state::load(bytes, from, Self::SCHEMA)?;
        Ok(())
    }
}

export_plugin!(Hog);
"#;

/// Through the `Manager`: a worker past 80 % of its address-space limit is
/// reported (`limit_exceeded`, resource `address space`) and recycled
/// before it runs out, its live state carried to the new worker.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_near_its_address_space_limit_is_reported_and_recycled() {
    use sandbox_core::{Config, EventKind, Manager, SandboxSpec};
    use sandbox_testkit::{await_event, test_config, unique_id};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("hog");
    fixtures::write_plugin(&src, "hog", RESERVE).unwrap();
    let config = Config {
        checkpoint_interval: Some(Duration::from_millis(200)),
        ..test_config(dir.path())
    };
    let manager = Manager::builder(config)
        .isolator(sandbox_isolate::Process::new(support::worker()))
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    let id = unique_id("hog");
    // Trusted source, to build in the shared target dir; still a worker,
    // with the default 512 MiB limit.
    let spec = SandboxSpec::new(&src)
        .isolation(sandbox_core::isolate::IsolationKind::PROCESS)
        .profile(sandbox_core::security::Profile::Trusted);
    assert_eq!(spec.limits.address_space_bytes, Some(512 << 20));
    manager.create(id.clone(), spec).await.unwrap();
    let first = manager.info(id.as_str()).unwrap().pid;
    let reply = manager
        .call_json(id.as_str(), "hog", &serde_json::json!({"reserve": 400}))
        .await
        .unwrap();
    assert_eq!(reply["reserved"], 400);
    assert!(vm_size_mib(first) > 410, "{} MiB", vm_size_mib(first));
    let deadline = Duration::from_secs(60);
    let near = await_event(&mut events, "limit_exceeded", deadline, |e| {
        matches!(
            &e.kind,
            EventKind::LimitExceeded {
                resource: Limit::AddressSpace,
                ..
            }
        )
    })
    .await
    .unwrap();
    let EventKind::LimitExceeded { value, limit, .. } = near.kind else {
        unreachable!()
    };
    assert!(value > 0.8 * limit, "{value} of {limit}");
    await_event(&mut events, "recycled", deadline, |e| {
        matches!(e.kind, EventKind::Recycled { .. })
    })
    .await
    .unwrap();
    let second = manager.info(id.as_str()).unwrap().pid;
    assert_ne!(first, second);
    assert!(vm_size_mib(second) < 410, "{} MiB", vm_size_mib(second));
    // The live state came along.
    let reply = manager
        .call_json(id.as_str(), "hog", &serde_json::json!({"reserve": 0}))
        .await
        .unwrap();
    assert_eq!(reply["reserved"], 400);
    manager.shutdown().await;
}

/// A module `leak` that opens its work folder until it has no descriptor
/// left, and keeps them.
const LEAK: &str = r#"
use sandbox_plugin::{export_plugin, json, Host, Plugin, Result};

#[derive(Default)]
pub struct Leak {
    files: Vec<std::fs::File>,
}

impl Plugin for Leak {
    const NAME: &'static str = "leak";

    fn handle(&mut self, _host: &Host<'_>, _request: &[u8]) -> Result<Vec<u8>> {
        while let Ok(file) = std::fs::File::open(".") {
            self.files.push(file);
        }
        json::encode(&serde_json::json!({ "open": self.files.len() }))
    }
}

export_plugin!(Leak);
"#;

#[test]
fn a_load_that_finds_no_descriptor_left_is_a_resource_error_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = worker_running(dir.path(), "leak", LEAK);
    let opened = support::call(&*rt, "leak", serde_json::json!({})).unwrap();
    assert!(opened["open"].as_u64().unwrap() > 100, "{opened}");
    let err = rt.load(&counter(), 1).unwrap_err();
    match &err {
        Error::Exhausted { limit, .. } => assert_eq!(*limit, Limit::OpenFiles),
        other => panic!("expected a resource error, got: {other}"),
    }
    assert!(
        err.to_string().contains("out of file descriptors (")
            && err
                .to_string()
                .contains("raise the sandbox's open_files limit"),
        "{err}"
    );
    let text = err.to_string();
    assert_eq!(text.matches("raise the sandbox's").count(), 1, "{text}");
    assert!(!text.contains("worker command"), "{text}");
}

/// Through the `Manager`, on the default limits: 10,000 calls from 20
/// concurrent callers, then a hot reload of the counter succeeds and the
/// total is exact.
#[tokio::test(flavor = "multi_thread")]
async fn a_hot_reload_after_ten_thousand_concurrent_calls_succeeds_on_the_default_limits() {
    use sandbox_core::{Manager, SandboxSpec};
    use sandbox_testkit::{test_config, unique_id};

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("counter");
    fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src).unwrap();
    let manager = Manager::builder(test_config(dir.path()))
        .isolator(sandbox_isolate::Process::new(support::worker()))
        .build()
        .unwrap();
    let id = unique_id("busy");
    let spec = SandboxSpec::new(&src)
        .isolation(sandbox_core::isolate::IsolationKind::PROCESS)
        .profile(sandbox_core::security::Profile::Trusted);
    assert_eq!(
        spec.limits,
        sandbox_core::monitor::ResourceLimits::default()
    );
    manager.create(id.clone(), spec).await.unwrap();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (manager, id) = (manager.clone(), id.clone());
        callers.spawn(async move {
            for _ in 0..500 {
                manager
                    .call_json(id.as_str(), "counter", &serde_json::json!({"add": 1}))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done.unwrap();
    }
    let pid = manager.info(id.as_str()).unwrap().pid;
    let busy = vm_size_mib(pid);
    assert!(busy < 256, "the worker holds {busy} MiB of address space");
    let lib = std::fs::read_to_string(src.join("src/lib.rs")).unwrap();
    std::fs::write(
        src.join("src/lib.rs"),
        lib.replacen("checked_add(add)", "checked_add(add * 10)", 1),
    )
    .unwrap();
    let report = manager.hot_reload(id.as_str()).await.unwrap();
    assert_eq!(report.swapped.len(), 1);
    let out = manager
        .call_json(id.as_str(), "counter", &serde_json::json!({"add": 1}))
        .await
        .unwrap();
    assert_eq!(out["value"], 10_010);
    manager.shutdown().await;
}
