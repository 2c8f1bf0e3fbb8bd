//! The `sandbox` command as a client of a running `sandbox serve`:
//! `ls`, `create`, `call`, `reload`, `versions`, `rollback`, `restart`,
//! `rm` and `events`, each one request (or one event stream) to the
//! service's `/v1` API.
//!
//! The service is `--server URL` (default `$SANDBOX_SERVER`, else
//! `http://127.0.0.1:7878`); the token is the first line of `--token-file`
//! or `$SANDBOX_TOKEN`, sent as `Authorization: Bearer`. An error answer is
//! printed as its error object's message (compile diagnostics first) and
//! the command exits 1. HTTP is `ureq` (blocking; TLS through rustls, for a
//! service behind a TLS proxy).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};

/// The service's address when neither `--server` nor `$SANDBOX_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// Where the service is and how to authenticate (every client subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct Server {
    /// The service's URL. Default: $SANDBOX_SERVER, else http://127.0.0.1:7878.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// File whose first non-blank line is the bearer token. Default:
    /// $SANDBOX_TOKEN (none: no Authorization header is sent).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// The subcommands that talk to a running `sandbox serve`.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// List the service's sandboxes (client of `sandbox serve`).
    Ls {
        /// Print the service's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: Server,
    },
    /// Create a sandbox on the service from DIR (a path the service can read).
    Create {
        /// The new sandbox's id.
        id: String,
        /// The plugin crate or workspace.
        dir: PathBuf,
        /// `high`, `medium` or `trusted` (the service's default: medium).
        #[arg(long)]
        profile: Option<String>,
        /// `process` or `in-process` (default: in-process for trusted, else process).
        #[arg(long)]
        isolation: Option<String>,
        /// `call`, `interval` or `interval=MS` (default: interval).
        #[arg(long)]
        durability: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Call MODULE of sandbox ID with JSON as its input; prints its output.
    Call {
        /// The sandbox.
        id: String,
        /// The module.
        module: String,
        /// The input, as JSON.
        json: String,
        #[command(flatten)]
        server: Server,
    },
    /// Rebuild sandbox ID's source and hot-swap what changed.
    Reload {
        /// The sandbox.
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// List the retained versions of MODULE of sandbox ID.
    Versions {
        /// The sandbox.
        id: String,
        /// The module.
        module: String,
        /// Print the service's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: Server,
    },
    /// Roll MODULE of sandbox ID back (or forward) to a retained VERSION.
    Rollback {
        /// The sandbox.
        id: String,
        /// The module.
        module: String,
        /// The version number (see `sandbox versions`).
        version: u32,
        #[command(flatten)]
        server: Server,
    },
    /// Restart sandbox ID from its saved state.
    Restart {
        /// The sandbox.
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Destroy sandbox ID (the service forgets it and its state).
    Rm {
        /// The sandbox.
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Print the service's events as JSON lines until it stops (or Ctrl-C).
    Events {
        /// Only this sandbox's events.
        id: Option<String>,
        #[command(flatten)]
        server: Server,
    },
}

/// Runs one client subcommand.
pub fn run(command: ClientCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClientCommand::Ls { json, server } => {
            let list = Client::new(&server)?.request("GET", "/v1/sandboxes", None)?;
            if json {
                print_json(&list)?;
            } else {
                print_sandboxes(&list)?;
            }
        }
        ClientCommand::Create {
            id,
            dir,
            profile,
            isolation,
            durability,
            server,
        } => {
            let mut body = json!({ "id": id, "source": source_path(&dir) });
            for (key, value) in [
                ("profile", profile),
                ("isolation", isolation),
                ("durability", durability),
            ] {
                if let Some(value) = value {
                    body[key] = Value::String(value);
                }
            }
            let info = Client::new(&server)?.request("POST", "/v1/sandboxes", Some(&body))?;
            print_json(&info)?;
        }
        ClientCommand::Call {
            id,
            module,
            json,
            server,
        } => {
            let input: Value = serde_json::from_str(&json).with_context(|| {
                format!(
                    "the input is not JSON: {json}; quote it for the shell, e.g. '{{\"add\":1}}'"
                )
            })?;
            let path = format!(
                "/v1/sandboxes/{}/modules/{}/call",
                segment(&id),
                segment(&module)
            );
            let output = Client::new(&server)?.request("POST", &path, Some(&input))?;
            // One line: the module's answer, as a script reads it.
            let mut out = std::io::stdout().lock();
            writeln!(out, "{output}")?;
        }
        ClientCommand::Reload { id, server } => {
            let path = format!("/v1/sandboxes/{}/reload", segment(&id));
            print_json(&Client::new(&server)?.request("POST", &path, None)?)?;
        }
        ClientCommand::Versions {
            id,
            module,
            json,
            server,
        } => {
            let path = format!(
                "/v1/sandboxes/{}/modules/{}/versions",
                segment(&id),
                segment(&module)
            );
            let versions = Client::new(&server)?.request("GET", &path, None)?;
            if json {
                print_json(&versions)?;
            } else {
                print_versions(&versions)?;
            }
        }
        ClientCommand::Rollback {
            id,
            module,
            version,
            server,
        } => {
            let path = format!(
                "/v1/sandboxes/{}/modules/{}/rollback",
                segment(&id),
                segment(&module)
            );
            let body = json!({ "version": version });
            print_json(&Client::new(&server)?.request("POST", &path, Some(&body))?)?;
        }
        ClientCommand::Restart { id, server } => {
            let path = format!("/v1/sandboxes/{}/restart", segment(&id));
            print_json(&Client::new(&server)?.request("POST", &path, None)?)?;
        }
        ClientCommand::Rm { id, server } => {
            let path = format!("/v1/sandboxes/{}", segment(&id));
            Client::new(&server)?.request("DELETE", &path, None)?;
            println!("destroyed {id}");
        }
        ClientCommand::Events { id, server } => {
            let path = match &id {
                Some(id) => format!("/v1/events?sandbox={}", segment(id)),
                None => "/v1/events".to_owned(),
            };
            Client::new(&server)?.events(&path)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One service and its token.
struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(server: &Server) -> anyhow::Result<Self> {
        let base = server
            .server
            .clone()
            .or_else(|| {
                std::env::var("SANDBOX_SERVER")
                    .ok()
                    .filter(|s| !s.trim().is_empty())
            })
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let base = base.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server {base}: give the service's URL, e.g. {DEFAULT_SERVER}");
        }
        let token = match &server.token_file {
            Some(path) => Some(read_token(path)?),
            None => std::env::var("SANDBOX_TOKEN")
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
        };
        let agent = ureq::Agent::config_builder()
            // Error answers are read, not turned into errors: they carry
            // the service's error object.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .user_agent(concat!("sandbox/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Self { base, token, agent })
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the service at {}: {e}; is `sandbox serve` running there? (--server URL or SANDBOX_SERVER names another)",
            self.base
        )
    }

    /// Sends one request and returns the answer's JSON, or the service's
    /// error message as the error.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        macro_rules! with_auth {
            ($req:expr) => {{
                let req = $req;
                match &auth {
                    Some(a) => req.header("Authorization", a.as_str()),
                    None => req,
                }
            }};
        }
        let sent = match method {
            "GET" => with_auth!(self.agent.get(&url)).call(),
            "DELETE" => with_auth!(self.agent.delete(&url)).call(),
            "POST" => {
                let req = with_auth!(self.agent.post(&url));
                match body {
                    Some(body) => req
                        .content_type("application/json")
                        .send(body.to_string().as_bytes()),
                    None => req.send_empty(),
                }
            }
            other => bail!("no such method {other}"),
        };
        let mut response = sent.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| anyhow!("reading the service's answer to {method} {path}: {e}"))?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        Err(service_error(status.as_u16(), &value))
    }

    /// Streams `/v1/events…` to stdout, one event object per line, until
    /// the service ends the stream.
    fn events(&self, path: &str) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url).header("Accept", "text/event-stream");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut response = req.call().map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(service_error(status.as_u16(), &value));
        }
        let reader = BufReader::new(response.into_body().into_reader());
        let mut out = std::io::stdout().lock();
        let mut data = String::new();
        for line in reader.lines() {
            let line = line.context("reading the event stream")?;
            if line.is_empty() {
                // The end of one event: its data lines joined.
                if !data.is_empty() {
                    writeln!(out, "{data}")?;
                    out.flush()?;
                    data.clear();
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            }
            // Comments (keep-alives) and other fields are skipped.
        }
        Ok(())
    }
}

/// The service's error object as an error: its message (and the rendered
/// compile diagnostics before it), else the status.
fn service_error(status: u16, value: &Value) -> anyhow::Error {
    let error = &value["error"];
    let Some(message) = error["message"].as_str() else {
        return anyhow!("the service answered {status}: {value}");
    };
    let mut text = String::new();
    for d in error["diagnostics"].as_array().into_iter().flatten() {
        if let Some(rendered) = d["rendered"].as_str().or(d["message"].as_str()) {
            text.push_str(rendered.trim_end());
            text.push('\n');
        }
    }
    text.push_str(message);
    anyhow!(text)
}

/// DIR as the service should read it: absolute when it exists here (the
/// service may run in another folder), else as given.
fn source_path(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned())
}

/// `s` as one percent-encoded path segment (or query value).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the token file {} holds no token", path.display()))
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

fn print_sandboxes(list: &Value) -> anyhow::Result<()> {
    let mut rows = vec![[
        "ID".to_owned(),
        "STATUS".to_owned(),
        "ISOLATION".to_owned(),
        "PROFILE".to_owned(),
        "MODULES".to_owned(),
        "RESTARTS".to_owned(),
    ]];
    for info in list.as_array().into_iter().flatten() {
        let modules: Vec<String> = info["modules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| format!("{}@{}", text(&m["name"]), text(&m["version"])))
            .collect();
        rows.push([
            text(&info["id"]),
            text(&info["status"]),
            text(&info["isolation"]),
            text(&info["profile"]),
            modules.join(","),
            text(&info["restart_count"]),
        ]);
    }
    print_table(&rows)
}

fn print_versions(versions: &Value) -> anyhow::Result<()> {
    let mut rows = vec![[
        "VERSION".to_owned(),
        "CURRENT".to_owned(),
        "CRATE".to_owned(),
        "SCHEMA".to_owned(),
        "LOADED (UTC)".to_owned(),
        "CHECKSUM".to_owned(),
    ]];
    for v in versions.as_array().into_iter().flatten() {
        let checksum = text(&v["checksum"]);
        rows.push([
            text(&v["number"]),
            if v["current"].as_bool() == Some(true) {
                "*"
            } else {
                ""
            }
            .to_owned(),
            text(&v["module_version"]),
            text(&v["schema"]),
            v["loaded_at"]
                .as_u64()
                .map_or_else(|| text(&v["loaded_at"]), utc),
            checksum.chars().take(12).collect(),
        ]);
    }
    print_table(&rows)
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` in UTC (days to a civil
/// date as in Howard Hinnant's `civil_from_days`).
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn print_table<const N: usize>(rows: &[[String; N]]) -> anyhow::Result<()> {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("counter-1_a.b~"), "counter-1_a.b~");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
    }

    #[test]
    fn load_times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_126_013_060), "2026-12-01 11:53:33");
    }

    #[test]
    fn an_error_object_becomes_its_message() {
        let e = service_error(
            404,
            &json!({"error": {"kind": "not_found", "message": "no sandbox `x`"}}),
        );
        assert_eq!(e.to_string(), "no sandbox `x`");
        let e = service_error(
            422,
            &json!({"error": {"kind": "compile", "message": "build failed",
                "diagnostics": [{"rendered": "error[E0425]: x\n"}]}}),
        );
        assert_eq!(e.to_string(), "error[E0425]: x\nbuild failed");
        let e = service_error(502, &json!("bad gateway"));
        assert_eq!(e.to_string(), "the service answered 502: \"bad gateway\"");
    }
}
