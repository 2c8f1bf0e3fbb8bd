//! Build trust: no code of an untrusted tree runs outside the jail, and no
//! tree's build can write what another tree links or loads. Each escape
//! found in review is a test here, with a trusted build beside it showing
//! the payload really would run (so the test can tell the difference).

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;

use anyhow::Result;
use sandbox_compiler::{Compiler as _, Error};

use crate::support::{
    compiler, copy_counter, request, sha256_file, shared_target_dir, write_files,
};

/// A rustc wrapper named by the tree's `.cargo/config.toml` writes a marker
/// outside the tree whenever cargo starts it.
fn plant_wrapper(source: &Path, marker: &Path) -> Result<()> {
    let wrapper = source.join(".wrap.sh");
    write_files(
        source,
        &[
            (
                ".wrap.sh",
                &format!(
                    "#!/bin/sh\necho \"uid=$(id -u)\" >> {}\nexec \"$@\"\n",
                    marker.display()
                ),
            ),
            (
                ".cargo/config.toml",
                &format!("[build]\nrustc-wrapper = \"{}\"\n", wrapper.display()),
            ),
        ],
    )?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[test]
fn cargo_configuration_in_an_untrusted_tree_is_refused_before_anything_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let source = copy_counter(dir.path(), "counter")?;
    let marker = dir.path().join("wrapper-ran");
    plant_wrapper(&source, &marker)?;

    let cache = tempfile::tempdir()?;
    let err = compiler(cache.path())?
        .build(&request(&source).jailed(true))
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(".cargo") && text.contains("trusted"),
        "{text}"
    );
    assert!(!marker.exists(), "the tree's rustc wrapper ran");

    // Declared trusted, the same tree's configuration is obeyed.
    let trusted = compiler(cache.path())?.build(&request(&source));
    assert!(trusted.is_ok(), "{trusted:?}");
    assert!(
        marker.exists(),
        "a trusted build did not run the wrapper: the test proves nothing"
    );
    Ok(())
}

#[test]
fn a_hidden_path_dependency_s_build_script_stays_in_the_jail() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let source = copy_counter(dir.path(), "counter")?;
    let marker = dir.path().join("build-script-ran");
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let build_rs = format!(
        "fn main() {{\n    let _ = std::fs::write({marker:?}, format!(\"pid {{}}\", std::process::id()));\n    \
         let _ = std::net::TcpStream::connect(\"127.0.0.1:{port}\");\n}}\n",
        marker = marker.display().to_string(),
    );
    write_files(
        &source,
        &[
            (
                ".vendor/hexish/Cargo.toml",
                "[package]\nname = \"hexish\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n",
            ),
            (".vendor/hexish/src/lib.rs", "pub fn id() -> u32 { 7 }\n"),
            (".vendor/hexish/build.rs", &build_rs),
        ],
    )?;
    let manifest = source.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    std::fs::write(
        &manifest,
        text.replacen(
            "[dependencies]\n",
            "[dependencies]\nhexish = { path = \".vendor/hexish\" }\n",
            1,
        ),
    )?;

    let cache = tempfile::tempdir()?;
    let jailed = compiler(cache.path())?.build(&request(&source).jailed(true));
    assert!(jailed.is_ok(), "the jailed build failed: {jailed:?}");
    assert!(!marker.exists(), "the build script wrote outside its jail");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the jailed build script reached the network: {other:?}"),
    }

    // Trusted, it writes and connects: the payload works.
    let trusted = compiler(cache.path())?.build(&request(&source));
    assert!(trusted.is_ok(), "{trusted:?}");
    assert!(marker.exists(), "the trusted build script did not run");
    Ok(())
}

/// The build script of the attacking tree: from its `OUT_DIR`, find the
/// compiler's folder and overwrite every library and rlib it can reach —
/// other trees' target dirs, the seed, the shared dir, the cache.
const POISON_BUILD_RS: &str = r#"
fn poison(dir: &std::path::Path, depth: u32, hits: &mut u32) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    // Its own target dir (OUT_DIR is <target>/debug/build/<pkg>/out) is
    // spared, so its own build goes on.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let own = out.ancestors().nth(4).unwrap().to_owned();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.starts_with(&own) {
            continue;
        }
        if path.is_dir() && depth > 0 {
            poison(&path, depth - 1, hits);
        } else if path.extension().is_some_and(|e| e == "so" || e == "rlib") {
            if std::fs::write(&path, b"poisoned").is_ok() {
                *hits += 1;
            }
        }
    }
}
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mut hits = 0;
    for dir in out.ancestors() {
        // The profile folder of whatever target dir this build writes.
        if dir.file_name().is_some_and(|n| n == "debug") {
            poison(dir, 2, &mut hits);
        }
        if dir.file_name().is_some_and(|n| n == "sandbox-compiler") {
            poison(dir, 7, &mut hits);
            if let Some(root) = dir.parent() {
                poison(&root.join("debug"), 2, &mut hits);
            }
        }
    }
    for dir in CACHES {
        poison(std::path::Path::new(dir), 3, &mut hits);
    }
    println!("cargo:warning=poisoned {hits} files");
}
"#;

#[test]
fn one_tree_s_build_cannot_overwrite_what_another_tree_loads() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let victim = copy_counter(dir.path(), "victim")?;
    let built = compiler(cache.path())?.build(&request(&victim).jailed(true))?;
    let artifact = built.artifacts[0].clone();

    // The libraries of the victim's own target dir, and its cached copy.
    use sha2::Digest as _;
    let key = hex::encode(sha2::Sha256::digest(
        victim.canonicalize()?.as_os_str().as_encoded_bytes(),
    ));
    let own = shared_target_dir()
        .join("sandbox-compiler/trees")
        .join(&key[..24])
        .join("target");
    let mut watched = vec![artifact.path.clone()];
    for entry in walkdir::WalkDir::new(&own).into_iter().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "so" || e == "rlib") {
            watched.push(path.to_owned());
        }
    }
    assert!(
        watched.len() > 2,
        "the victim's target dir is not where expected: {own:?}"
    );
    let before: Vec<String> = watched
        .iter()
        .map(|p| sha256_file(p))
        .collect::<Result<_>>()?;

    let attacker = copy_counter(dir.path(), "attacker")?;
    let caches = format!(
        "const CACHES: &[&str] = &[{:?}];\n",
        cache.path().display().to_string()
    );
    write_files(
        &attacker,
        &[("build.rs", &format!("{caches}{POISON_BUILD_RS}"))],
    )?;
    let attack = compiler(cache.path())?.build(&request(&attacker).jailed(true));
    assert!(attack.is_ok(), "{attack:?}");

    let after: Vec<String> = watched
        .iter()
        .map(|p| sha256_file(p))
        .collect::<Result<_>>()?;
    assert_eq!(
        before, after,
        "the attacking build changed files of another tree: {watched:?}"
    );
    artifact.verify()?;
    // The victim builds on from its own, intact outputs.
    let again = compiler(cache.path())?.build(&request(&victim).jailed(true))?;
    assert_eq!(again.artifacts[0].sha256, artifact.sha256);
    Ok(())
}

#[test]
fn a_changed_artifact_is_refused_by_verify_and_never_served_from_the_cache() -> Result<()> {
    let (_dir, source) = crate::support::counter()?;
    let cache = tempfile::tempdir()?;
    let built = compiler(cache.path())?.build(&request(&source))?;
    let artifact = &built.artifacts[0];
    artifact.verify()?;
    let mut bytes = std::fs::read(&artifact.path)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&artifact.path, bytes)?;
    let err = artifact.verify().unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
    assert!(
        err.to_string().contains("modified after it was built"),
        "{err}"
    );
    // The cache never hands the changed file out again: it rebuilds.
    let again = compiler(cache.path())?.build(&request(&source))?;
    assert!(
        !again.cached,
        "a tampered cache entry was answered from the cache"
    );
    again.artifacts[0].verify()?;
    Ok(())
}

#[test]
fn the_target_dir_of_a_tree_that_is_gone_is_dropped_by_the_next_compiler() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let (dir, source) = crate::support::counter()?;
    compiler(cache.path())?.build(&request(&source).jailed(true))?;
    use sha2::Digest as _;
    let key = hex::encode(sha2::Sha256::digest(
        source.canonicalize()?.as_os_str().as_encoded_bytes(),
    ));
    let own = shared_target_dir()
        .join("sandbox-compiler/trees")
        .join(&key[..24])
        .join("target");
    assert!(own.is_dir(), "no target dir of its own at {own:?}");
    drop(dir);
    compiler(cache.path())?;
    assert!(!own.exists(), "the target dir of a deleted tree was kept");
    Ok(())
}
