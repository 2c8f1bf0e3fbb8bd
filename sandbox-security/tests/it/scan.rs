//! The source scan: each capability with its position, dependencies, build scripts, modules, macros, cargo configuration.

use sandbox_security::{Capability, Error, Policy, SourcePolicy};

use crate::{counter_example, render, tree};

const UNSAFE: &str = r#"pub fn read(p: *const u8) -> u8 {
    unsafe { *p }
}
pub unsafe fn raw() {}
pub struct S;
unsafe impl Send for S {}
pub unsafe trait Marker {}
pub fn nop() {
    core::arch::global_asm!("nop");
}
"#;

const EXTERN_BLOCK: &str = r#"extern "C" {
    fn abs(x: i32) -> i32;
}
unsafe extern "system" {}
"#;

const LINKAGE: &str = r#"#[no_mangle]
pub extern "C" fn exported() {}
#[export_name = "other"]
pub fn renamed() {}
#[unsafe(no_mangle)]
pub fn edition_2024() {}
"#;

const PROCESS: &str = r#"use std::process::Command;
use std::os::unix::process::CommandExt;
pub fn quit() -> ! {
    ::std::process::exit(1)
}
"#;

const NETWORK: &str = r#"use std::{fs, net};
pub fn connect() -> std::io::Result<std::net::TcpStream> {
    todo()
}
pub fn addr() -> core::net::Ipv4Addr {
    todo()
}
use std::os::unix::net::UnixStream;
"#;

const FILE_SYSTEM: &str = r#"use std::fs as files;
pub const DATA: &str = include_str!("data.txt");
#[path = "../../../etc/evil.rs"]
mod evil;
#[path = "inner.rs"]
mod fine;
pub fn read() {
    let _ = std::fs::read("x");
}
"#;

const ENVIRONMENT: &str = r#"pub fn home() -> Option<String> {
    std::env::var("HOME").ok()
}
pub const PATH: &str = env!("PATH");
pub const X: Option<&str> = option_env!("X");
"#;

const EVASIONS: &str = r#"use std as s;
extern crate core as c;
use std::*;
pub fn f() {
    s::process::abort();
    let _ = c::net::Ipv4Addr::LOCALHOST;
    println!("{:?}", std::env::args());
    let _v = vec![unsafe { g() }];
}
macro_rules! wipe {
    () => { ::std::fs::remove_dir_all("/") };
}
"#;

const CLEAN: &str = r#"use std::collections::HashMap;
use std::io::Read;
mod process {
    pub fn run() {}
}
pub fn f(m: HashMap<String, u32>) -> usize {
    crate::process::run();
    self::process::run();
    let fs = 1;
    let env = "std::process";
    m.len() + fs + env.len()
}
"#;

const MANIFEST: &str = r#"[package]
name = "snippets"
version = "0.1.0"

[lib]
proc-macro = true

[dependencies]
serde = { version = "1", features = ["derive"] }
libc = "0.2"

[build-dependencies]
cc = "1"

[dev-dependencies]
tempfile = "3"
"#;

#[test]
fn every_capability_is_found_with_its_position() -> anyhow::Result<()> {
    let dir = tree(&[
        ("Cargo.toml", MANIFEST),
        ("build.rs", "fn main() {}\n"),
        ("src/lib.rs", "mod unsafe_code;\n"),
        ("src/unsafe_code.rs", UNSAFE),
        ("src/extern_block.rs", EXTERN_BLOCK),
        ("src/linkage.rs", LINKAGE),
        ("src/process.rs", PROCESS),
        ("src/network.rs", NETWORK),
        ("src/file_system.rs", FILE_SYSTEM),
        ("src/environment.rs", ENVIRONMENT),
        ("src/evasions.rs", EVASIONS),
        ("src/clean.rs", CLEAN),
    ])?;
    let report = SourcePolicy::new().scan(dir.path())?;
    assert_eq!(report.files_scanned, 12);
    insta::assert_snapshot!(render(&report));
    assert!(report
        .findings
        .iter()
        .all(|f| f.file.to_str() != Some("src/clean.rs")));
    Ok(())
}

#[test]
fn the_counter_example_is_clean() -> anyhow::Result<()> {
    let report = SourcePolicy::new().scan(counter_example())?;
    assert_eq!(render(&report), "");
    assert!(report.is_clean());
    assert_eq!(report.files_scanned, 2, "src/lib.rs and Cargo.toml");
    Ok(())
}

#[test]
fn a_dependency_off_the_allow_list_is_flagged() -> anyhow::Result<()> {
    let manifest =
        "[package]\nname = \"p\"\n\n[dependencies]\nserde_json = \"1\"\nlibc = \"0.2\"\n";
    let dir = tree(&[("Cargo.toml", manifest)])?;
    let report = SourcePolicy::new().scan(dir.path())?;
    assert_eq!(
        render(&report),
        "Cargo.toml:6:1: `libc` (a dependency not on the allow-list)\n"
    );
    assert_eq!(
        report.findings[0].capability,
        Capability::Dependency("libc".into())
    );
    let widened = SourcePolicy::new().with_allowed_dependencies(["libc"]);
    assert!(widened.allowed_dependencies().contains("libc"));
    assert!(widened.scan(dir.path())?.is_clean());
    Ok(())
}

#[test]
fn a_build_script_is_flagged() -> anyhow::Result<()> {
    let dir = tree(&[
        ("Cargo.toml", "[package]\nname = \"p\"\n"),
        ("build.rs", "fn main() {}\n"),
    ])?;
    let report = SourcePolicy::new().scan(dir.path())?;
    assert_eq!(
        render(&report),
        "build.rs:1:1: `build.rs` (a build script)\n"
    );

    let disabled = tree(&[
        ("Cargo.toml", "[package]\nname = \"p\"\nbuild = false\n"),
        ("build.rs", "fn main() {}\n"),
    ])?;
    assert!(SourcePolicy::new().scan(disabled.path())?.is_clean());
    Ok(())
}

#[test]
fn hidden_path_dependencies_their_build_scripts_and_members_are_scanned() -> anyhow::Result<()> {
    let dir = tree(&[
        (
            "Cargo.toml",
            "[package]\nname = \"app\"\n\n[dependencies]\nx = { path = \".vendor/x\" }\n\n\
             [workspace]\nmembers = [\".crates/*\"]\n",
        ),
        ("src/lib.rs", "pub fn f() -> u32 { x::id() }\n"),
        (
            ".vendor/x/Cargo.toml",
            "[package]\nname = \"x\"\nbuild = \"tools/gen.rs\"\n",
        ),
        (
            ".vendor/x/tools/gen.rs",
            "fn main() {\n    let _ = std::net::TcpStream::connect(\"127.0.0.1:9\");\n}\n",
        ),
        (
            ".vendor/x/src/lib.rs",
            "pub fn id() -> u32 {\n    unsafe { 7 }\n}\n",
        ),
        (".crates/m/Cargo.toml", "[package]\nname = \"m\"\n"),
        (
            ".crates/m/build.rs",
            "fn main() {\n    std::process::Command::new(\"sh\");\n}\n",
        ),
        // Not part of the crate graph: not what cargo reads.
        (".notes/draft.rs", "fn f() { unsafe {} }\n"),
    ])?;
    let report = SourcePolicy::new().scan(dir.path())?;
    assert_eq!(
        render(&report),
        "\
.crates/m/build.rs:1:1: `build.rs` (a build script)
.crates/m/build.rs:2:5: `std::process` (process creation)
.vendor/x/Cargo.toml:3:9: `build = \"tools/gen.rs\"` (a build script)
.vendor/x/src/lib.rs:2:5: `unsafe` block (unsafe code)
.vendor/x/tools/gen.rs:2:13: `std::net` (network access)
Cargo.toml:5:1: `x` (a dependency not on the allow-list)
"
    );
    assert_eq!(report.files_scanned, 7, "{report:?}");
    Ok(())
}

#[test]
fn path_modules_are_followed_from_the_right_directory() -> anyhow::Result<()> {
    let dir = tree(&[
        ("Cargo.toml", "[package]\nname = \"p\"\n"),
        (
            "src/lib.rs",
            "#[path = \".gen/imp.rs\"]\nmod imp;\nmod a;\n#[cfg_attr(unix, path = \".os/unix.rs\")]\nmod os;\n",
        ),
        // A `#[path]` file owns its folder: its `mod child;` is next to it.
        ("src/.gen/imp.rs", "mod child;\n"),
        ("src/.gen/child.rs", "pub fn f() {\n    unsafe {}\n}\n"),
        ("src/.os/unix.rs", "pub use std::env::var;\n"),
        // In a non-mod-rs file, a top-level `#[path]` is relative to its
        // folder, one inside an inline module to `a/<inline>/`.
        (
            "src/a.rs",
            "#[path = \".b.rs\"]\nmod b;\nmod inline {\n    #[path = \".deep.rs\"]\n    mod deep;\n}\n",
        ),
        ("src/.b.rs", "pub fn g() {\n    let _ = std::process::id();\n}\n"),
        ("src/a/inline/.deep.rs", "pub use std::net::TcpStream;\n"),
        ("src/a/.unused.rs", "pub use std::fs::File;\n"),
    ])?;
    let report = SourcePolicy::new().scan(dir.path())?;
    assert_eq!(
        render(&report),
        "\
src/.b.rs:2:13: `std::process` (process creation)
src/.gen/child.rs:2:5: `unsafe` block (unsafe code)
src/.os/unix.rs:1:9: `std::env` (environment access)
src/a/inline/.deep.rs:1:9: `std::net` (network access)
"
    );
    Ok(())
}

#[test]
fn macro_rules_bodies_and_paths_built_from_arguments_are_flagged() -> anyhow::Result<()> {
    let dir = tree(&[
        ("Cargo.toml", "[package]\nname = \"p\"\n"),
        ("src/lib.rs", "#[macro_use]\nmod macros;\nmod uses;\n"),
        (
            "src/macros.rs",
            r#"macro_rules! spawn {
    () => { ::std::process::Command::new("sh").spawn() };
}
macro_rules! build {
    ($m:ident) => { std::$m::Command::new("sh") };
}
macro_rules! via {
    ($root:ident) => { $root::net::TcpStream::connect("127.0.0.1:9") };
}
macro_rules! ffi {
    ($abi:literal) => { extern $abi { fn system(cmd: *const u8) -> i32; } };
}
"#,
        ),
        (
            "src/uses.rs",
            "pub fn f() {\n    let _ = build!(process);\n    let _ = via!(std);\n    let _ = vec![process];\n}\n",
        ),
    ])?;
    let report = SourcePolicy::new().scan(dir.path())?;
    assert_eq!(
        render(&report),
        "\
src/macros.rs:2:15: `std::process` (process creation)
src/macros.rs:8:24: `$root::net` in a macro body (network access)
src/macros.rs:11:25: `extern` block in a macro body (foreign function declarations)
src/uses.rs:2:20: `process` passed to `build!`, which builds `std::` paths from its arguments (process creation)
"
    );
    Ok(())
}

#[test]
fn cargo_configuration_in_the_root_is_flagged() -> anyhow::Result<()> {
    let dir = tree(&[
        ("Cargo.toml", "[package]\nname = \"p\"\n"),
        (
            ".cargo/config.toml",
            "[build]\nrustc-wrapper = \"./wrap.sh\"\n",
        ),
        (
            "rust-toolchain.toml",
            "[toolchain]\nchannel = \"nightly\"\n",
        ),
    ])?;
    let report = SourcePolicy::new().scan(dir.path())?;
    assert_eq!(
        render(&report),
        "\
.cargo/config.toml:1:1: `.cargo/config.toml` (cargo configuration) (build configuration that can run programs)
rust-toolchain.toml:1:1: `rust-toolchain.toml` (a toolchain override) (build configuration that can run programs)
"
    );
    Ok(())
}

#[test]
fn hidden_directories_outside_the_crate_graph_and_target_are_skipped() -> anyhow::Result<()> {
    let dir = tree(&[
        ("src/lib.rs", "pub fn f() {}\n"),
        ("target/debug/build/out.rs", "fn f() { unsafe {} }\n"),
        (".git/hook.rs", "fn f() { unsafe {} }\n"),
        ("notes.txt", "unsafe"),
    ])?;
    let report = SourcePolicy::new().scan(dir.path())?;
    assert!(report.is_clean(), "{}", render(&report));
    assert_eq!(report.files_scanned, 1);
    Ok(())
}

#[test]
fn unparsable_source_is_an_error_naming_the_position() -> anyhow::Result<()> {
    let dir = tree(&[("src/lib.rs", "pub fn f() {\n    let = ;\n}\n")])?;
    let err = SourcePolicy::new()
        .scan(dir.path())
        .map(|_| ())
        .expect_err("syntax error");
    assert!(matches!(&err, Error::Parse { line: 2, .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("cannot parse src/lib.rs:2:"),
        "{err}"
    );

    let bad_manifest = tree(&[("Cargo.toml", "[package\n")])?;
    let err = SourcePolicy::new()
        .scan(bad_manifest.path())
        .map(|_| ())
        .expect_err("bad toml");
    assert!(matches!(err, Error::Manifest { .. }), "{err:?}");
    Ok(())
}

#[test]
fn a_missing_source_is_an_error() {
    let err = SourcePolicy::new()
        .scan(std::path::Path::new("/nonexistent/source"))
        .map(|_| ())
        .expect_err("no such directory");
    assert_eq!(
        err.to_string(),
        "source path /nonexistent/source is not a directory; pass the root of a Cargo package or workspace"
    );
}
