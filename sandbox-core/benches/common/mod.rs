//! Shared by the benches: building fixtures and recording percentiles for
//! `cargo xtask bench` (which turns `target/sandbox-bench/*.json` into the
//! table in BENCHMARKS.md).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox_core::compiler::{BuildRequest, Compiler as _, Profile};

/// Builds the plugin crate at `dir` (release or debug) with the shared test
/// cache, returning its artifact path.
pub fn build(dir: &Path, profile: Profile) -> PathBuf {
    let compiler = sandbox_testkit::fixtures::compiler().expect("compiler");
    let request = BuildRequest::new(dir)
        .profile(profile)
        .debug_info(sandbox_core::compiler::DebugInfo::None);
    compiler
        .build(&request)
        .expect("build")
        .artifacts
        .remove(0)
        .path
}

/// Writes `p50`/`p99` (and `p90`) of `samples` as `target/sandbox-bench/<file>.json`.
pub fn record(file: &str, name: &str, samples: &mut [Duration], note: &str) {
    samples.sort();
    let pick =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_nanos() as f64;
    let (p50, p90, p99) = (pick(0.5), pick(0.9), pick(0.99));
    let dir = sandbox_testkit::repo_root()
        .join("target")
        .join("sandbox-bench");
    let _ = std::fs::create_dir_all(&dir);
    let value = serde_json::json!({ "name": name, "p50_ns": p50, "p90_ns": p90, "p99_ns": p99, "n": samples.len(), "note": note });
    let _ = std::fs::write(dir.join(format!("{file}.json")), value.to_string());
    eprintln!(
        "{name}: p50 {:?} p90 {:?} p99 {:?} (n = {})",
        Duration::from_nanos(p50 as u64),
        Duration::from_nanos(p90 as u64),
        Duration::from_nanos(p99 as u64),
        samples.len()
    );
}

/// Resident set size of this process, in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// An echo plugin: answers its request bytes unchanged (no JSON), to
/// measure the boundary alone.
pub const ECHO: &str = r#"
use sandbox_plugin::{export_plugin, Host, Plugin, Result};

#[derive(Default)]
pub struct Echo;

impl Plugin for Echo {
    const NAME: &'static str = "echo";
    fn handle(&mut self, _host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        Ok(request.to_vec())
    }
}

export_plugin!(Echo);
"#;

/// A plugin whose state is a byte blob: `{"fill": n}` makes it n bytes.
pub const BLOB: &str = r#"
use sandbox_plugin::{export_plugin, json, Host, Plugin, Result};

#[derive(Default)]
pub struct Blob { data: Vec<u8> }

impl Plugin for Blob {
    const NAME: &'static str = "blob";
    fn handle(&mut self, _host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let v: serde_json::Value = json::decode(request)?;
        let n = v["fill"].as_u64().unwrap_or(0) as usize;
        self.data = vec![7u8; n];
        json::encode(&serde_json::json!({ "len": self.data.len() }))
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(self.data.clone())
    }
    fn restore_state(&mut self, _host: &Host<'_>, state: &[u8], _from: u32) -> Result<()> {
        self.data = state.to_vec();
        Ok(())
    }
}

export_plugin!(Blob);
"#;
