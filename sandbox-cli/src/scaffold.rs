//! `sandbox new DIR`: a plugin crate that builds and loads with no edits.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use crate::NewArgs;

/// The plugin API crate this binary was built with.
pub fn default_api_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("plugins")
        .join("sandbox-plugin")
}

pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} exists and is not empty; pick a new folder",
            dir.display()
        );
    }
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = args.name.clone().unwrap_or(folder);
    let package: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if package.is_empty() || !package.starts_with(|c: char| c.is_ascii_alphabetic()) {
        bail!("`{name}` is not a usable crate name; pass --name with a name that starts with a letter");
    }
    let api = args.api.clone().unwrap_or_else(default_api_dir);
    let api = api.canonicalize().with_context(|| {
        format!(
            "the plugin API crate is not at {}; pass --api PATH/TO/plugins/sandbox-plugin",
            api.display()
        )
    })?;
    if !api.join("Cargo.toml").is_file() {
        bail!(
            "{} has no Cargo.toml; pass --api with the sandbox-plugin crate's folder",
            api.display()
        );
    }
    write(dir, &package, &api)
        .with_context(|| format!("writing the plugin crate in {}", dir.display()))?;
    println!("created plugin `{package}` in {}", dir.display());
    println!("run it:   sandbox run {}", dir.display());
    println!(r#"then send: {{"op":"call","module":"{package}","input":{{"text":"hi"}},"id":1}}"#);
    Ok(ExitCode::SUCCESS)
}

fn write(dir: &Path, package: &str, api: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(dir.join("Cargo.toml"), manifest(package, api))?;
    std::fs::write(
        dir.join("src").join("lib.rs"),
        LIB_RS.replace("{{name}}", package),
    )?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    Ok(())
}

fn manifest(package: &str, api: &Path) -> String {
    format!(
        r#"[package]
name = "{package}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# A plugin is a C-compatible dynamic library the host loads.
crate-type = ["cdylib"]

[dependencies]
sandbox-plugin = {{ path = "{api}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A sandbox is its own Cargo project.
[workspace]
"#,
        api = api.display()
    )
}

const LIB_RS: &str = r#"//! The `{{name}}` plugin module.
//!
//! `{"text": "..."}` → `{"echo": "...", "seen": n}`, where `seen` counts the
//! requests since the module was first created: it is state, kept across hot
//! swaps by `save_state` / `restore_state`.

use sandbox_plugin::{export_plugin, Host, JsonPlugin, Result};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Module {
    seen: u64,
}

#[derive(Deserialize)]
pub struct Request {
    text: String,
}

#[derive(Serialize)]
pub struct Response {
    echo: String,
    seen: u64,
}

/// What `save_state` writes (schema 1; bump `SCHEMA` and add `migrate`
/// when it changes).
#[derive(Serialize, Deserialize, Default)]
pub struct Saved {
    seen: u64,
}

impl JsonPlugin for Module {
    const NAME: &'static str = "{{name}}";
    const SCHEMA: u32 = 1;
    type Request = Request;
    type Response = Response;
    type State = Saved;

    fn handle(&mut self, host: &Host<'_>, Request { text }: Request) -> Result<Response> {
        self.seen += 1;
        host.debug(format_args!("request {} of {{name}}", self.seen));
        Ok(Response { echo: text, seen: self.seen })
    }

    fn save_state(&self) -> Result<Saved> {
        Ok(Saved { seen: self.seen })
    }

    fn restore_state(&mut self, _host: &Host<'_>, saved: Saved) -> Result<()> {
        self.seen = saved.seen;
        Ok(())
    }
}

export_plugin!(Module);

#[cfg(test)]
mod tests {
    use sandbox_plugin::testing::Harness;
    use serde_json::{json, Value};

    use super::Module;

    #[test]
    fn echoes_and_keeps_its_count_across_a_swap() {
        let mut module = Harness::<Module>::new().unwrap();
        let out: Value = module.call_json(&json!({"text": "hi"})).unwrap();
        assert_eq!(out, json!({"echo": "hi", "seen": 1}));
        module.swap().unwrap();
        let out: Value = module.call_json(&json!({"text": "again"})).unwrap();
        assert_eq!(out["seen"], 2);
    }
}
"#;
