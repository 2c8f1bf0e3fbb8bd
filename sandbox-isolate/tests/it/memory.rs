//! A worker stays inside its memory budget under many concurrent callers:
//! per-thread allocator arenas used to reserve 64 MiB of address space each,
//! so 10,000 calls from 20 threads left a worker at 510 of its 512 MiB
//! (`RLIMIT_AS`) and the next load failed.

use sandbox_isolate::spawn::ChildLimits;
use sandbox_isolate::{Error, Isolator, SwapStep};
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
    let src = dir.path().join("hog");
    fixtures::write_plugin(&src, "hog", HOG).unwrap();
    let hog = fixtures::build(&src).unwrap().remove(0).path;
    let (mut spec, _crashes) = support::spec(dir.path(), "hog");
    spec.limits = default_limits();
    let rt = support::isolator().launch(&spec).expect("launch");
    start(&*rt, &hog, "hog");
    let filled = support::call(&*rt, "hog", serde_json::json!({"fill": true})).unwrap();
    assert!(filled["reserved_mib"].as_u64().unwrap() > 100, "{filled}");
    let err = rt.load(&counter(), 1).unwrap_err();
    match &err {
        Error::Exhausted {
            resource, limit, ..
        } => assert_eq!(
            (resource.as_str(), limit.as_str()),
            ("address space", "memory_bytes")
        ),
        other => panic!("expected a resource error, got: {other}"),
    }
    assert!(
        err.to_string().contains("raise the sandbox's memory_bytes"),
        "{err}"
    );
}
