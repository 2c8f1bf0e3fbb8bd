//! Writing plugin crates for tests.

use std::path::{Path, PathBuf};

use crate::{plugin_api_dir, Error, Result};

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the Cargo project at `from` to `to` (without `target/` and hidden
/// entries), rewriting relative `path = "…"` dependencies that point outside
/// the project to absolute paths, so the copy builds where it is.
pub fn copy_crate(from: &Path, to: &Path) -> Result<()> {
    let from = from.canonicalize().map_err(io("resolving", from))?;
    for entry in walkdir::WalkDir::new(&from).into_iter().filter_entry(|e| {
        let name = e.file_name().to_string_lossy();
        e.depth() == 0 || !(name.starts_with('.') || (name == "target" && e.file_type().is_dir()))
    }) {
        let entry = entry.map_err(|e| Error::Io {
            action: "walking",
            path: from.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let rel = entry.path().strip_prefix(&from).unwrap_or(entry.path());
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).map_err(io("creating", &dest))?;
        } else if entry.file_name() == "Cargo.toml" {
            let text =
                std::fs::read_to_string(entry.path()).map_err(io("reading", entry.path()))?;
            let dir = entry.path().parent().unwrap_or(&from);
            std::fs::write(&dest, absolutize_paths(&text, dir, &from))
                .map_err(io("writing", &dest))?;
        } else {
            std::fs::copy(entry.path(), &dest).map_err(io("copying to", &dest))?;
        }
    }
    Ok(())
}

/// Rewrites `path = "rel"` values that leave `root` to absolute paths.
fn absolutize_paths(manifest: &str, dir: &Path, root: &Path) -> String {
    let mut out = String::with_capacity(manifest.len());
    let mut rest = manifest;
    while let Some(i) = rest.find("path = \"") {
        let (head, tail) = rest.split_at(i + "path = \"".len());
        out.push_str(head);
        let Some(end) = tail.find('"') else {
            rest = tail;
            break;
        };
        let value = &tail[..end];
        let target = dir.join(value);
        let resolved = target.canonicalize().unwrap_or(target);
        if Path::new(value).is_relative() && !resolved.starts_with(root) {
            out.push_str(&resolved.to_string_lossy());
        } else {
            out.push_str(value);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The manifest of a generated plugin crate named `name`.
pub fn plugin_manifest(name: &str, version: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "{version}"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
sandbox-plugin = {{ path = "{api}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[workspace]
"#,
        api = plugin_api_dir().display()
    )
}

/// Writes a plugin crate named `name` with `lib_rs` as its `src/lib.rs` into
/// `dir`, with the counter example's lockfile so it resolves the same
/// dependency versions (and builds offline from the shared target dir).
pub fn write_plugin(dir: &Path, name: &str, lib_rs: &str) -> Result<PathBuf> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).map_err(io("creating", &src))?;
    let manifest = dir.join("Cargo.toml");
    std::fs::write(&manifest, plugin_manifest(name, "0.1.0")).map_err(io("writing", &manifest))?;
    let lock = crate::example_dir("counter").join("Cargo.lock");
    if lock.is_file() {
        let dest = dir.join("Cargo.lock");
        std::fs::copy(&lock, &dest).map_err(io("copying to", &dest))?;
    }
    let lib = src.join("lib.rs");
    std::fs::write(&lib, lib_rs).map_err(io("writing", &lib))?;
    Ok(dir.to_path_buf())
}

/// A counter plugin (like the `counter` example) at state schema 1, whose
/// state is `{"total": n}`: used to show a migration to the example's schema 2.
pub const COUNTER_SCHEMA_1: &str = r#"
use sandbox_plugin::{export_plugin, json, state, Host, Plugin, Result};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Counter { total: i64 }

#[derive(Deserialize)]
struct Request { #[serde(default)] add: i64 }

#[derive(Serialize, Deserialize)]
struct State { total: i64 }

impl Plugin for Counter {
    const NAME: &'static str = "counter";
    const SCHEMA: u32 = 1;

    fn handle(&mut self, _host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let Request { add } = json::decode(request)?;
        self.total += add;
        json::encode(&serde_json::json!({ "value": self.total }))
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        state::save(&State { total: self.total })
    }

    fn restore_state(&mut self, _host: &Host<'_>, bytes: &[u8], from_schema: u32) -> Result<()> {
        let s: State = state::load(bytes, from_schema, Self::SCHEMA)?;
        self.total = s.total;
        Ok(())
    }
}

export_plugin!(Counter);
"#;

/// A compiler sharing the test target dir and build cache.
pub fn compiler() -> Result<sandbox_core::compiler::CargoCompiler> {
    let root = crate::shared_cache_root();
    sandbox_core::compiler::CargoCompiler::builder()
        .target_dir(root.join("target"))
        .cache_dir(root.join("builds"))
        .build()
        .map_err(|e| Error::Sandbox(e.into()))
}

/// Builds the Cargo project at `dir` with real cargo and returns its
/// validated plugin artifacts (cached after the first build).
pub fn build(dir: &Path) -> Result<Vec<sandbox_core::compiler::Artifact>> {
    use sandbox_core::compiler::Compiler as _;
    let out = compiler()?
        .build(&sandbox_core::compiler::BuildRequest::new(dir))
        .map_err(|e| Error::Sandbox(e.into()))?;
    Ok(out.artifacts)
}

/// Builds a fixture that is not meant to pass the compiler's plugin check
/// (`not-a-plugin`, `incompatible-api`) with plain cargo into the shared
/// target dir, and returns the path of its `.so` (a copy, so later builds do
/// not change it).
pub fn build_raw(dir: &Path, lib_name: &str, copy_to: &Path) -> Result<PathBuf> {
    let target = crate::shared_cache_root().join("raw-target");
    use sandbox_core::isolate::spawn::{spawn, ChildSpec};
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let spec = ChildSpec::new(cargo)
        .args(["build", "--quiet", "--lib", "--target-dir"])
        .arg(&target)
        .current_dir(dir);
    let output = spawn(&spec)
        .map_err(std::io::Error::from)
        .and_then(|c| c.wait_with_output())
        .map_err(io("running cargo in", dir))?;
    if !output.status.success() {
        return Err(Error::Assertion(format!(
            "cargo build of {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let built = target.join("debug").join(format!("lib{lib_name}.so"));
    std::fs::copy(&built, copy_to).map_err(io("copying", &built))?;
    Ok(copy_to.to_path_buf())
}

/// The source of a "probe" plugin for host tests, named `name`, declaring
/// `dependencies`, whose `init` panics when `panic_in_init` is set and whose
/// `restore_state` fails when `fail_restore` is set. Requests:
///
/// - `{"op": "echo", ...}` → the request back
/// - `{"op": "add", "n": k}` → `{"value": total}` (stateful, saved as `{"total": t}`)
/// - `{"op": "panic"}` → panics
/// - `{"op": "fail"}` → a plugin error
/// - `{"op": "hang"}` → never answers (a stuck call, for timeouts)
/// - `{"op": "call", "module": m, "input": v}` → `m`'s answer to `v`
/// - `{"op": "log", "message": s}` → logs `s` at info level
pub fn probe_plugin(
    name: &str,
    dependencies: &[&str],
    panic_in_init: bool,
    fail_restore: bool,
) -> String {
    let deps = dependencies
        .iter()
        .map(|d| format!("{d:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
use sandbox_plugin::{{export_plugin, json, state, Error, Host, Plugin, Result}};
use serde::{{Deserialize, Serialize}};

#[derive(Default)]
pub struct Probe {{ total: i64 }}

#[derive(Serialize, Deserialize)]
struct Saved {{ total: i64 }}

impl Plugin for Probe {{
    const NAME: &'static str = "{name}";
    const DEPENDENCIES: &'static [&'static str] = &[{deps}];

    fn init(&mut self, _host: &Host<'_>) -> Result<()> {{
        if {panic_in_init} {{
            panic!("init of {name} panics on purpose");
        }}
        Ok(())
    }}

    fn handle(&mut self, host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {{
        let v: serde_json::Value = json::decode(request)?;
        match v["op"].as_str().unwrap_or("") {{
            "echo" => json::encode(&v),
            "add" => {{
                self.total += v["n"].as_i64().unwrap_or(0);
                json::encode(&serde_json::json!({{ "value": self.total }}))
            }}
            "panic" => panic!("handle of {name} panics on purpose"),
            "fail" => Err(Error::failed("failing on purpose")),
            "hang" => loop {{
                std::thread::park();
            }},
            "call" => {{
                let module = v["module"].as_str().unwrap_or("");
                let out: serde_json::Value = host.call_json(module, &v["input"])?;
                json::encode(&out)
            }}
            "image" => {{
                // Counts calls in this image of the library: a fresh image
                // (another load of the same file) starts again at 1.
                static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                json::encode(&serde_json::json!({{ "calls": calls }}))
            }}
            "log" => {{
                host.info(v["message"].as_str().unwrap_or(""));
                json::encode(&serde_json::json!({{ "logged": true }}))
            }}
            other => Err(Error::bad_request(format!("unknown op `{{other}}`"))),
        }}
    }}

    fn save_state(&self) -> Result<Vec<u8>> {{
        state::save(&Saved {{ total: self.total }})
    }}

    fn restore_state(&mut self, _host: &Host<'_>, bytes: &[u8], from_schema: u32) -> Result<()> {{
        if {fail_restore} {{
            return Err(Error::state("restore fails on purpose"));
        }}
        self.total = state::load::<Saved>(bytes, from_schema, Self::SCHEMA)?.total;
        Ok(())
    }}
}}

export_plugin!(Probe);
"#
    )
}

/// Writes the probe plugin (see [`probe_plugin`]) into `dir` and builds it.
pub fn build_probe(
    dir: &Path,
    name: &str,
    dependencies: &[&str],
    panic_in_init: bool,
    fail_restore: bool,
) -> Result<sandbox_core::compiler::Artifact> {
    write_plugin(
        dir,
        name,
        &probe_plugin(name, dependencies, panic_in_init, fail_restore),
    )?;
    build(dir)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Assertion(format!("{} built no artifact", dir.display())))
}

/// Writes a Cargo workspace of plugin crates into `dir`: one member per
/// `(name, lib_rs)`, each like [`write_plugin`].
pub fn write_workspace(dir: &Path, members: &[(&str, &str)]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let names: Vec<String> = members.iter().map(|(n, _)| format!("{n:?}")).collect();
    let manifest = dir.join("Cargo.toml");
    let text = format!(
        "[workspace]\nresolver = \"2\"\nmembers = [{}]\n",
        names.join(", ")
    );
    std::fs::write(&manifest, text).map_err(io("writing", &manifest))?;
    let lock = crate::example_dir("counter").join("Cargo.lock");
    if lock.is_file() {
        let dest = dir.join("Cargo.lock");
        std::fs::copy(&lock, &dest).map_err(io("copying to", &dest))?;
    }
    for (name, lib_rs) in members {
        let member = dir.join(name);
        write_plugin(&member, name, lib_rs)?;
        // Members share the workspace's lockfile and are not workspaces themselves.
        let _ = std::fs::remove_file(member.join("Cargo.lock"));
        let m = member.join("Cargo.toml");
        let text = std::fs::read_to_string(&m)
            .map_err(io("reading", &m))?
            .replace("\n[workspace]\n", "\n");
        std::fs::write(&m, text).map_err(io("writing", &m))?;
    }
    Ok(dir.to_path_buf())
}

/// Bumps the patch number of the first `version = "x.y.z"` line of the
/// manifest at `manifest`, so the artifact changes; returns the new version.
pub fn bump_version(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest).map_err(io("reading", manifest))?;
    let mut out = String::with_capacity(text.len());
    let mut bumped = None;
    for line in text.lines() {
        if bumped.is_none() && line.starts_with("version = \"") {
            let v = line
                .trim_start_matches("version = \"")
                .trim_end_matches('"');
            let mut parts: Vec<u64> = v.split('.').filter_map(|p| p.parse().ok()).collect();
            if parts.len() == 3 {
                parts[2] += 1;
                let new = format!("{}.{}.{}", parts[0], parts[1], parts[2]);
                out.push_str(&format!("version = \"{new}\"\n"));
                bumped = Some(new);
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    let new = bumped
        .ok_or_else(|| Error::Assertion(format!("no version line in {}", manifest.display())))?;
    std::fs::write(manifest, out).map_err(io("writing", manifest))?;
    Ok(new)
}

/// The source of a module `m` that adds `{"add": n}` to a total and whose
/// `init`, `save_state` or `restore_state` never returns, per `hang`:
/// `"init"`, `"save"`, `"restore"`, or anything else for a well-behaved
/// one. For tests of lifecycle deadlines.
pub fn stuck_plugin(hang: &str) -> String {
    STUCK.replace("@HANG@", hang)
}

const STUCK: &str = r#"
use sandbox_plugin::{export_plugin, json, state, Host, Plugin, Result};

const HANG: &str = "@HANG@";

fn hang(at: &str) {
    if HANG == at {
        loop {
            std::thread::park();
        }
    }
}

#[derive(Default)]
pub struct M {
    total: i64,
}

impl Plugin for M {
    const NAME: &'static str = "m";

    fn init(&mut self, _host: &Host<'_>) -> Result<()> {
        hang("init");
        Ok(())
    }

    fn handle(&mut self, _host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let request: serde_json::Value = json::decode(request)?;
        self.total += request["add"].as_i64().unwrap_or(0);
        json::encode(&serde_json::json!({ "value": self.total }))
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        hang("save");
        state::save(&self.total)
    }

    fn restore_state(&mut self, _host: &Host<'_>, bytes: &[u8], from: u32) -> Result<()> {
        hang("restore");
        self.total = state::load(bytes, from, Self::SCHEMA)?;
        Ok(())
    }
}

export_plugin!(M);
"#;
