//! Untrusted builds: cargo runs inside the process jail.

use anyhow::Result;
use sandbox_compiler::Compiler as _;

use crate::support::{compiler, copy_counter, request, write_files};

/// A build script that tries to leave the build: write next to the source,
/// read a host secret, reach the network. It fails the build if any works.
const ESCAPING_BUILD_RS: &str = r#"
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let outside = std::path::Path::new(&dir).join("..").join("escaped.txt");
    let wrote = std::fs::write(&outside, b"out").is_ok();
    let read = std::fs::read("/etc/shadow").is_ok();
    let connected = std::net::TcpStream::connect("127.0.0.1:9").is_ok()
        || std::net::UdpSocket::bind("127.0.0.1:0").is_ok();
    if wrote || read || connected {
        panic!("escaped the build: wrote={wrote} read={read} network={connected}");
    }
}
"#;

#[test]
fn a_jailed_build_produces_the_same_plugin() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let source = copy_counter(dir.path(), "counter")?;
    let cache = tempfile::tempdir()?;
    let out = compiler(cache.path())?.build(&request(&source).jailed(true))?;
    assert_eq!(out.artifacts.len(), 1);
    assert_eq!(out.artifacts[0].name, "counter");
    Ok(())
}

#[test]
fn a_build_script_cannot_write_outside_read_secrets_or_use_the_network() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let source = copy_counter(dir.path(), "counter")?;
    write_files(&source, &[("build.rs", ESCAPING_BUILD_RS)])?;
    let escaped = dir.path().join("escaped.txt");

    let cache = tempfile::tempdir()?;
    let jailed = compiler(cache.path())?.build(&request(&source).jailed(true));
    assert!(jailed.is_ok(), "the jailed build failed: {jailed:?}");
    assert!(
        !escaped.exists(),
        "a jailed build script wrote outside the build"
    );

    // The same build script without the jail escapes: the test can tell the
    // difference. (Edited so cargo runs it again rather than finding it fresh.)
    write_files(
        &source,
        &[("build.rs", &format!("{ESCAPING_BUILD_RS}\n// unjailed\n"))],
    )?;
    let cache = tempfile::tempdir()?;
    let free = compiler(cache.path())?.build(&request(&source));
    let text = format!("{free:?}");
    assert!(
        free.is_err() && text.contains("escaped the build"),
        "{text}"
    );
    assert!(escaped.exists());
    Ok(())
}
