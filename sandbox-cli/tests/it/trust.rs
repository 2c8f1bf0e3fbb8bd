//! Build trust through the `sandbox` command: with its default flags, the
//! code of someone else's crate never runs outside the jail — not its cargo
//! configuration, not a build script hidden in a dot folder — and asking for
//! in-process isolation of untrusted source is refused.

use std::path::Path;

use serde_json::{json, Value};

use crate::host::{example, hostile, Host, BUILD};

/// The first error line of a `sandbox run` that refuses to create.
fn refusal(h: &mut Host) -> Value {
    h.wait_for("the create error", BUILD, |v| {
        v["type"] == "error" && v["id"].is_null()
    })
}

fn plant_wrapper(src: &Path, marker: &Path) {
    let wrapper = src.join(".wrap.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"uid=$(id -u)\" >> {}\nexec \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(src.join(".cargo")).unwrap();
    std::fs::write(
        src.join(".cargo/config.toml"),
        format!("[build]\nrustc-wrapper = \"{}\"\n", wrapper.display()),
    )
    .unwrap();
}

#[test]
fn a_tree_s_cargo_configuration_never_runs_with_the_default_flags_or_high() {
    let (dir, src) = example("counter");
    let marker = dir.path().join("wrapper-ran");
    plant_wrapper(&src, &marker);
    for flags in [
        &[][..],
        &["--isolation", "process", "--profile", "high"][..],
    ] {
        let mut h = Host::run(&src, flags);
        let e = refusal(&mut h);
        assert_eq!(e["error"]["kind"], "security", "{e}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(".cargo") && message.contains("trusted"),
            "{message}"
        );
        assert_eq!(h.close(), 2);
        assert!(
            !marker.exists(),
            "the tree's rustc wrapper ran with {flags:?}"
        );
    }
}

#[test]
fn the_default_flags_build_a_hidden_dependency_inside_the_jail() {
    let (dir, src) = example("counter");
    let marker = dir.path().join("build-script-ran");
    let dep = src.join(".vendor/hex");
    std::fs::create_dir_all(dep.join("src")).unwrap();
    std::fs::write(
        dep.join("Cargo.toml"),
        "[package]\nname = \"hex\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n",
    )
    .unwrap();
    std::fs::write(dep.join("src/lib.rs"), "pub fn id() -> u32 { 7 }\n").unwrap();
    std::fs::write(
        dep.join("build.rs"),
        format!(
            "fn main() {{ let _ = std::fs::write({:?}, \"escaped\"); }}\n",
            marker.display().to_string()
        ),
    )
    .unwrap();
    let manifest = src.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replacen(
            "[dependencies]\n",
            "[dependencies]\nhex = { path = \".vendor/hex\" }\n",
            1,
        ),
    )
    .unwrap();

    // The scan may refuse it (it reads hidden folders and build scripts)
    // or miss it (a scanner can always be fooled): either way the build
    // script must not run outside the jail.
    let mut h = Host::run(&src, &[]);
    let first = h.wait_for("running, or the create error", BUILD, |v| {
        (v["type"] == "error" && v["id"].is_null())
            || (v["event"] == "status" && v["to"] == "running")
    });
    if first["type"] == "error" {
        assert_eq!(first["error"]["kind"], "security", "{first}");
        assert_eq!(h.close(), 2);
    } else {
        let r = h.call(5);
        assert_eq!(r["output"]["value"], 5, "{r}");
        let info = h.request(json!({"op": "info"}), BUILD);
        assert_eq!(info["output"]["isolation"], "process", "{info}");
        assert_eq!(info["output"]["profile"], "medium", "{info}");
        assert_eq!(info["output"]["build_jailed"], true, "{info}");
        assert_eq!(h.quit(), 0);
    }
    assert!(!marker.exists(), "a build script wrote outside the jail");
}

#[test]
fn in_process_isolation_of_untrusted_source_is_refused() {
    let (_dir, src) = example("counter");
    let mut h = Host::run(&src, &["--isolation", "in-process"]);
    let e = refusal(&mut h);
    assert_eq!(e["error"]["kind"], "security", "{e}");
    assert_eq!(e["error"]["recovery"], "fix_request", "{e}");
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("--profile trusted") && message.contains("--isolation process"),
        "{message}"
    );
    assert_eq!(h.close(), 2);
}

#[test]
fn a_worker_reads_no_artifact_but_its_own_and_info_reports_its_applied_layers() {
    let (_dir, src) = hostile();
    let mut h = Host::run(&src, &["--isolation", "process", "--profile", "trusted"]);
    let attack = |h: &mut Host, path: &str| {
        h.request(
            json!({"op": "call", "module": "hostile", "input": {"attack": "read", "arg": path}}),
            BUILD,
        )
    };
    // Warm: the sandbox is up (its own artifact is in the build cache now).
    let info = h.request(json!({"op": "info"}), BUILD);
    let jail = &info["output"]["jail"];
    assert!(
        jail["namespaces"].as_array().is_some_and(|n| !n.is_empty()),
        "{info}"
    );
    assert_eq!(jail["no_new_privs"], true, "{info}");
    assert_eq!(info["output"]["build_jailed"], false, "{info}");
    // Every library in the shared build cache, its own included: none is
    // readable by the worker (before, the whole cache was).
    let cache = sandbox_testkit::shared_cache_root().join("builds");
    let libraries: Vec<_> = walkdir::WalkDir::new(&cache)
        .max_depth(3)
        .into_iter()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "so"))
        .map(|e| e.path().display().to_string())
        .take(5)
        .collect();
    assert!(!libraries.is_empty(), "no library in {cache:?}");
    for library in &libraries {
        let r = attack(&mut h, library);
        assert_eq!(r["type"], "error", "the worker read {library}: {r}");
    }
    assert_eq!(h.quit(), 0);
}

#[test]
fn a_restart_refuses_an_artifact_changed_in_the_build_cache() {
    let (_dir, src) = example("counter");
    // A build of its own in the shared cache (the key is the content).
    let lib = src.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    let nonce = format!("{:?}", std::time::SystemTime::now());
    // An exported static, so the library's bytes (not only the source)
    // are this test's own.
    std::fs::write(
        &lib,
        format!("{text}\n#[no_mangle]\npub static TRUST_TEST_NONCE: &str = {nonce:?};\n"),
    )
    .unwrap();
    let mut h = Host::run(&src, &["--isolation", "process", "--profile", "trusted"]);
    assert_eq!(h.call(3)["output"]["value"], 3);
    let versions = h.request(json!({"op": "versions", "module": "counter"}), BUILD);
    let checksum = versions["output"][0]["checksum"]
        .as_str()
        .unwrap()
        .to_owned();
    let cache = sandbox_testkit::shared_cache_root().join("builds");
    let cached = walkdir::WalkDir::new(&cache)
        .max_depth(3)
        .into_iter()
        .flatten()
        .map(|e| e.path().to_owned())
        .find(|p| {
            p.extension().is_some_and(|x| x == "so")
                && std::fs::read(p).is_ok_and(|b| {
                    use sha2::Digest as _;
                    hex::encode(sha2::Sha256::digest(&b)) == checksum
                })
        })
        .expect("the sandbox's artifact in the build cache");
    let mut bytes = std::fs::read(&cached).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&cached, bytes).unwrap();

    let r = h.request(json!({"op": "restart"}), BUILD);
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["error"]["kind"], "security", "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("modified after it was built"), "{message}");
    h.quit();
}
