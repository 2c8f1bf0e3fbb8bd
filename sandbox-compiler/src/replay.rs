//! The fast path of a rebuild: when only a single-package tree's own
//! sources changed since cargo last compiled it, run the rustc command cargo
//! ran then — in the same jail, for untrusted trees — and skip cargo's
//! start-up and bookkeeping (~50–60 ms of a ~350 ms incremental rebuild;
//! what a watched save waits for).
//!
//! How the command is learned: cargo builds run with a
//! `RUSTC_WORKSPACE_WRAPPER` — a shell script written into the target dir —
//! that records the working directory, rustc's arguments and the
//! environment of each of the tree's own crates cargo compiles, then execs
//! rustc. A capture is kept only when cargo compiled exactly one crate of
//! the tree and it has no build script (`OUT_DIR` unset).
//!
//! When it is used ([`Capture::covers`]): the tree has one manifest, and
//! nothing but the package's own files changed — no manifest, lockfile,
//! `build.rs`, path dependency or workspace file. Everything else goes
//! through cargo, and so does a replay that cannot finish cleanly (its
//! output truncated, no library produced); a replay that fails with compile
//! errors reports them as cargo would.
//!
//! Trust: for an untrusted tree the capture lives where its jailed build
//! can write, so it is untrusted input. It is read with size caps, only
//! `CARGO*` variables are taken from it, the program run is always the
//! toolchain's rustc (never the recorded one), it runs in the same jail as
//! the build, and the library it produces must lie in the tree's target dir
//! — a tampered capture can do nothing a build script of the tree cannot.
//! After a replay cargo's fingerprint of the package is stale, so cargo's
//! next build of the tree compiles it again; in the shared target dir of
//! trusted trees the replayed library is recorded as the tree's, like
//! cargo's outputs, so no other tree takes it for its own.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cargo_metadata::diagnostic::Diagnostic as RustcDiagnostic;
use sandbox_jail::spawn::{ChildLimits, ChildSpec};
use sandbox_jail::JailConfig;

use crate::child::{self, STDERR_CAP};
use crate::hash::TreeDigest;
use crate::messages::{self, BuiltArtifact};
use crate::{Diagnostic, Error, Result};

/// The wrapper cargo runs instead of rustc for the tree's own crates.
const WRAPPER: &str = "sandbox-rustc-wrapper";
/// Where the wrapper records (one `<pid>.{cwd,args,env}` triple per crate).
const CAPTURE_DIR: &str = "sandbox-rustc-capture";
/// Tells the wrapper where to record.
const CAPTURE_ENV: &str = "SANDBOX_RUSTC_CAPTURE";
/// The most records looked at; a folder with more yields no capture.
const MAX_RECORDS: usize = 64;
/// The most read of one recorded file.
const FILE_CAP: u64 = 1024 * 1024;

const WRAPPER_SCRIPT: &str = r#"#!/bin/sh
# Written by sandbox-compiler (replay.rs). Cargo runs it for the tree's own
# crates with rustc's path and arguments: it records the working directory,
# the arguments and the environment, then runs rustc unchanged.
if [ -n "$SANDBOX_RUSTC_CAPTURE" ]; then
  f="$SANDBOX_RUSTC_CAPTURE/$$"
  pwd -P > "$f.cwd"
  cat /proc/self/environ > "$f.env"
  printf '%s\0' "$@" > "$f.args"
fi
exec "$@"
"#;

/// Prepares `target_dir` for a recorded cargo build and returns the
/// environment to give cargo. The script and the folder are rewritten each
/// time: the jailed build can change both.
pub(crate) fn prepare(target_dir: &Path) -> Result<[(&'static str, PathBuf); 2]> {
    let wrapper = target_dir.join(WRAPPER);
    write_executable(&wrapper, WRAPPER_SCRIPT)?;
    let dir = target_dir.join(CAPTURE_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&dir, e)),
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok([("RUSTC_WORKSPACE_WRAPPER", wrapper), (CAPTURE_ENV, dir)])
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Replace, never write through: the jail may have left a symlink here.
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(path, e))
}

/// How cargo compiled a tree's one crate, and the tree it compiled.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    cwd: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    crate_name: String,
    /// The tree the last build (cargo's or a replay) compiled.
    pub digest: TreeDigest,
}

impl Capture {
    /// What the wrapper recorded in `target_dir` during the cargo build of
    /// tree `digest`; `None` unless it compiled exactly one crate (cargo's
    /// own queries of rustc, which it may run through the wrapper too, do
    /// not count), with no build script, and every record reads cleanly.
    pub fn read(target_dir: &Path, digest: TreeDigest) -> Option<Capture> {
        let dir = target_dir.join(CAPTURE_DIR);
        let mut crates = Vec::new();
        // Bounded: the folder is the jailed build's to fill.
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .ok()?
            .take(MAX_RECORDS + 1)
            .collect();
        if entries.len() > MAX_RECORDS {
            return None;
        }
        for entry in entries {
            let path = entry.ok()?.path();
            if path.extension() != Some(OsStr::new("args")) {
                continue;
            }
            match Record::read(&path.with_extension(""))? {
                Record::Query => {}
                Record::Crate(capture) => crates.push(capture),
            }
        }
        if crates.len() != 1 {
            tracing::debug!(
                crates = crates.len(),
                "no replay: cargo compiled other than one crate of the tree"
            );
            return None;
        }
        let (cwd, args, env, crate_name) = crates.pop()?;
        if env.iter().any(|(key, _)| key == "OUT_DIR") {
            tracing::debug!("no replay: the crate has a build script");
            return None;
        }
        let env = env
            .into_iter()
            .filter(|(key, _)| key.as_bytes().starts_with(b"CARGO") && key != "CARGO_MAKEFLAGS")
            .collect();
        Some(Capture {
            cwd,
            args,
            env,
            crate_name,
            digest,
        })
    }

    /// Whether a replay builds tree `now` as cargo would: see the module
    /// docs.
    pub fn covers(&self, now: &TreeDigest) -> bool {
        now != &self.digest && now.only_package_files_changed_since(&self.digest)
    }

    /// Runs the recorded rustc for `source` in `jail`. `Ok(None)`: the
    /// replay could not stand in for cargo (run cargo instead);
    /// `Err(Error::Compile)`: the sources do not compile.
    pub fn run(
        &self,
        rustc: &Path,
        source: &Path,
        target_dir: &Path,
        jail: Option<&JailConfig>,
        limits: ChildLimits,
        deadline: std::time::Instant,
    ) -> Result<Option<(BuiltArtifact, Vec<Diagnostic>)>> {
        let mut spec = ChildSpec::new(rustc)
            .args(&self.args)
            .current_dir(&self.cwd)
            .limits(limits);
        if let Some(jail) = jail {
            spec = spec
                .jail(jail.clone())
                .env("TMPDIR", target_dir.join("tmp"));
        }
        for (key, value) in &self.env {
            spec = spec.env(key, value);
        }
        let finished = match child::run(&spec, deadline, child::discard) {
            Ok(finished) => finished,
            Err(e) => {
                tracing::debug!(error = ?e, "replay did not run; building with cargo");
                return Ok(None);
            }
        };
        if finished.stderr.len() >= STDERR_CAP {
            tracing::debug!("replay output was truncated; building with cargo");
            return Ok(None);
        }
        let package_file = source.join("Cargo.toml");
        let mut diagnostics = Vec::new();
        let mut library = None;
        for line in finished.stderr.lines() {
            match serde_json::from_str::<Line>(line) {
                Ok(Line::Diagnostic(d))
                    if !messages::is_summary(&d)
                        && diagnostics.len() < messages::MAX_DIAGNOSTICS =>
                {
                    diagnostics.push(messages::to_diagnostic(d, &package_file, source));
                }
                Ok(Line::Artifact { artifact, emit }) if emit == "link" => library = Some(artifact),
                // Other notifications, or not JSON (a panic message).
                _ => {}
            }
        }
        if !finished.status.success() {
            if diagnostics.iter().any(|d| d.level == crate::Level::Error) {
                return Err(Error::Compile { diagnostics });
            }
            tracing::debug!(status = %finished.status, "replay failed without an error message; building with cargo");
            return Ok(None);
        }
        let suffix = format!(".{}", std::env::consts::DLL_EXTENSION);
        let library = library.filter(|path| {
            path.starts_with(target_dir) && path.to_string_lossy().ends_with(&suffix)
        });
        let Some(library) = library else {
            tracing::debug!("replay produced no library in the target dir; building with cargo");
            return Ok(None);
        };
        let artifact = BuiltArtifact {
            package_id: String::new(),
            manifest_path: package_file,
            target_name: self.crate_name.clone(),
            files: vec![library.clone()],
            cdylib: Some(library),
            fresh: false,
        };
        Ok(Some((artifact, diagnostics)))
    }
}

type Recorded = (PathBuf, Vec<OsString>, Vec<(OsString, OsString)>, String);

/// One run of the wrapper.
enum Record {
    /// Cargo asking rustc about itself (no crate being compiled).
    Query,
    /// A crate compiled: working directory, arguments after the program,
    /// environment, crate name.
    Crate(Recorded),
}

impl Record {
    /// Reads `<stem>.{cwd,args,env}`; `None` when any is missing or bad.
    fn read(stem: &Path) -> Option<Record> {
        let read = |ext: &str| {
            let mut bytes = Vec::new();
            std::fs::File::open(stem.with_extension(ext))
                .ok()?
                .take(FILE_CAP)
                .read_to_end(&mut bytes)
                .ok()?;
            Some(bytes)
        };
        let cwd = read("cwd")?;
        let cwd = PathBuf::from(OsStr::from_bytes(cwd.strip_suffix(b"\n").unwrap_or(&cwd)));
        let mut args = nul_separated(&read("args")?);
        let env: Vec<(OsString, OsString)> = nul_separated(&read("env")?)
            .iter()
            .filter_map(|entry| {
                let bytes = entry.as_bytes();
                let eq = bytes.iter().position(|&b| b == b'=')?;
                Some((
                    OsStr::from_bytes(&bytes[..eq]).to_owned(),
                    OsStr::from_bytes(&bytes[eq + 1..]).to_owned(),
                ))
            })
            .collect();
        let crate_name = env
            .iter()
            .find(|(key, _)| key == "CARGO_CRATE_NAME")
            .and_then(|(_, value)| value.to_str().map(str::to_owned));
        let Some(crate_name) = crate_name else {
            return Some(Record::Query);
        };
        if args.len() < 2 || !cwd.is_absolute() {
            return None;
        }
        args.remove(0); // the rustc cargo chose; a replay runs the toolchain's
        for arg in &mut args {
            *arg = plain_diagnostics(arg);
        }
        Some(Record::Crate((cwd, args, env, crate_name)))
    }
}

/// One line rustc writes to stderr with `--error-format=json`.
#[derive(serde::Deserialize)]
#[serde(tag = "$message_type")]
enum Line {
    #[serde(rename = "diagnostic")]
    Diagnostic(RustcDiagnostic),
    #[serde(rename = "artifact")]
    Artifact { artifact: PathBuf, emit: String },
}

/// Cargo asks rustc for diagnostics rendered with colours and strips them
/// itself when colour is off; a replay has no cargo to strip them, so it
/// asks for plain ones (`--json=diagnostic-rendered-ansi,artifacts` →
/// `--json=artifacts`).
fn plain_diagnostics(arg: &OsString) -> OsString {
    let Some(kinds) = arg.to_str().and_then(|a| a.strip_prefix("--json=")) else {
        return arg.clone();
    };
    let kinds: Vec<&str> = kinds
        .split(',')
        .filter(|kind| *kind != "diagnostic-rendered-ansi")
        .collect();
    OsString::from(format!("--json={}", kinds.join(",")))
}

/// `a\0b\0` → `[a, b]` (empty entries kept: an argument may be empty).
fn nul_separated(bytes: &[u8]) -> Vec<OsString> {
    let Some(bytes) = bytes.strip_suffix(&[0]) else {
        return Vec::new();
    };
    bytes
        .split(|&b| b == 0)
        .map(|part| OsStr::from_bytes(part).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plants one wrapper record `<pid>.{cwd,args,env}` in `target`.
    fn record(target: &Path, pid: u32, args: &[&str], env: &[&str]) {
        let dir = target.join(CAPTURE_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let nul = |items: &[&str]| items.iter().map(|i| format!("{i}\0")).collect::<String>();
        std::fs::write(dir.join(format!("{pid}.cwd")), "/src/tree\n").unwrap();
        std::fs::write(dir.join(format!("{pid}.env")), nul(env)).unwrap();
        std::fs::write(dir.join(format!("{pid}.args")), nul(args)).unwrap();
    }

    fn digest() -> TreeDigest {
        TreeDigest::for_tests(&[("src:Cargo.toml", 1), ("src:src/lib.rs", 2)])
    }

    const CRATE_ENV: &[&str] = &[
        "CARGO_CRATE_NAME=counter",
        "CARGO_PKG_VERSION=0.1.0",
        "CARGO_MAKEFLAGS=--jobserver-fds=3,4 -j",
        "PATH=/usr/bin",
        "CARGO_PKG_DESCRIPTION=two\nlines",
    ];

    #[test]
    fn reads_the_one_crate_cargo_compiled_and_ignores_its_queries() {
        let target = tempfile::tempdir().unwrap();
        record(
            target.path(),
            7,
            &[
                "/tc/bin/rustc",
                "--crate-name",
                "counter",
                "--json=diagnostic-rendered-ansi,artifacts",
                "",
            ],
            CRATE_ENV,
        );
        record(
            target.path(),
            8,
            &["/tc/bin/rustc", "-vV"],
            &["PATH=/usr/bin"],
        );
        let capture = Capture::read(target.path(), digest()).expect("a capture");
        assert_eq!(capture.cwd, Path::new("/src/tree"));
        assert_eq!(capture.crate_name, "counter");
        // The program is dropped (the toolchain's rustc runs), an empty
        // argument kept, colours turned off.
        assert_eq!(
            capture.args,
            ["--crate-name", "counter", "--json=artifacts", ""]
        );
        let keys: Vec<_> = capture
            .env
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            keys,
            [
                "CARGO_CRATE_NAME",
                "CARGO_PKG_VERSION",
                "CARGO_PKG_DESCRIPTION"
            ]
        );
        assert_eq!(capture.env[2].1, "two\nlines");
    }

    #[test]
    fn two_crates_a_build_script_or_a_broken_record_mean_no_capture() {
        let two = tempfile::tempdir().unwrap();
        record(two.path(), 1, &["rustc", "--crate-name", "a"], CRATE_ENV);
        record(two.path(), 2, &["rustc", "--crate-name", "b"], CRATE_ENV);
        assert!(Capture::read(two.path(), digest()).is_none());

        let build_script = tempfile::tempdir().unwrap();
        let mut env = CRATE_ENV.to_vec();
        env.push("OUT_DIR=/t/debug/build/counter-1/out");
        record(
            build_script.path(),
            1,
            &["rustc", "--crate-name", "counter"],
            &env,
        );
        assert!(Capture::read(build_script.path(), digest()).is_none());

        let broken = tempfile::tempdir().unwrap();
        record(
            broken.path(),
            1,
            &["rustc", "--crate-name", "counter"],
            CRATE_ENV,
        );
        std::fs::remove_file(broken.path().join(CAPTURE_DIR).join("1.env")).unwrap();
        assert!(Capture::read(broken.path(), digest()).is_none());

        let none = tempfile::tempdir().unwrap();
        assert!(Capture::read(none.path(), digest()).is_none());
    }

    /// A capture is written where the jailed build can write: one that was
    /// tampered with still runs the toolchain's rustc in the jail, and a
    /// library it puts anywhere but the tree's target dir is not taken.
    #[test]
    fn a_tampered_capture_gets_no_library_from_outside_the_target_dir() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("tree");
        let target = root.path().join("target");
        let elsewhere = root.path().join("elsewhere");
        for dir in [source.join("src"), target.join("tmp"), elsewhere.clone()] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(
            source.join("src/lib.rs"),
            "#[no_mangle]\npub extern \"C\" fn f() {}\n",
        )
        .unwrap();
        let args = |out: &Path| -> Vec<OsString> {
            [
                "--crate-name",
                "t",
                "--crate-type",
                "cdylib",
                "--error-format=json",
                "--json=artifacts",
                "src/lib.rs",
                "--out-dir",
            ]
            .iter()
            .map(OsString::from)
            .chain([out.as_os_str().to_owned()])
            .collect()
        };
        let capture = |out: &Path| Capture {
            cwd: source.clone(),
            args: args(out),
            env: Vec::new(),
            crate_name: "t".into(),
            digest: digest(),
        };
        let run = |capture: Capture, jail: &JailConfig| {
            capture.run(
                Path::new("rustc"),
                &source,
                &target,
                Some(jail),
                ChildLimits::default(),
                std::time::Instant::now() + std::time::Duration::from_secs(120),
            )
        };
        let rules = |writable: &Path| {
            JailConfig::build(sandbox_jail::FsRules::for_build(&sandbox_jail::BuildTree {
                source: &source,
                path_dependencies: &[],
                shared_crates: &[],
                target_dir: writable,
            }))
        };
        // The control: into the target dir, the library is taken.
        let built = run(capture(&target), &rules(&target)).unwrap();
        assert!(built.is_some_and(|(a, _)| a.cdylib.is_some_and(|p| p.starts_with(&target))));
        // Elsewhere, where the jail does not let it write: nothing escapes.
        let jailed = run(capture(&elsewhere), &rules(&target));
        assert!(!matches!(jailed, Ok(Some(_))), "{jailed:?}");
        assert!(
            !elsewhere.join("libt.so").exists(),
            "the replay wrote outside its jail"
        );
        // Elsewhere, even where a jail lets it write: not taken.
        let moved = run(capture(&elsewhere), &rules(root.path())).unwrap();
        assert!(
            elsewhere.join("libt.so").exists(),
            "the control of the check did not build"
        );
        assert!(
            moved.is_none(),
            "a library outside the target dir was taken: {moved:?}"
        );
    }

    #[test]
    fn covers_edits_of_the_package_s_own_files_only() {
        let base = [
            ("src:Cargo.toml", 1),
            ("src:Cargo.lock", 1),
            ("src:src/lib.rs", 1),
            ("dep:/api:Cargo.toml", 1),
            ("dep:/api:src/lib.rs", 1),
        ];
        let capture = Capture {
            cwd: PathBuf::from("/src/tree"),
            args: Vec::new(),
            env: Vec::new(),
            crate_name: "counter".into(),
            digest: TreeDigest::for_tests(&base),
        };
        let with = |changes: &[(&'static str, u8)]| {
            let mut entries = base.to_vec();
            for (key, value) in changes {
                match entries.iter_mut().find(|(k, _)| k == key) {
                    Some(entry) => entry.1 = *value,
                    None => entries.push((key, *value)),
                }
            }
            TreeDigest::for_tests(&entries)
        };
        assert!(capture.covers(&with(&[("src:src/lib.rs", 2)])));
        assert!(capture.covers(&with(&[("src:src/new_module.rs", 1)])));
        assert!(capture.covers(&with(&[("src:data/table.txt", 1)])));
        assert!(
            !capture.covers(&with(&[])),
            "nothing changed: a cache hit, not a build"
        );
        assert!(!capture.covers(&with(&[("src:Cargo.toml", 2)])));
        assert!(!capture.covers(&with(&[("src:Cargo.lock", 2)])));
        assert!(!capture.covers(&with(&[("src:build.rs", 1)])));
        assert!(!capture.covers(&with(&[("dep:/api:src/lib.rs", 2)])));
        assert!(!capture.covers(&with(&[
            ("src:helper/Cargo.toml", 1),
            ("src:src/lib.rs", 2)
        ])));
    }
}
