//! Reading `cargo build --message-format=json` output.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Diagnostic, Level};

/// At most this many diagnostics are kept from one build; a proc macro that
/// spews millions of warnings must not exhaust the host's memory.
const MAX_DIAGNOSTICS: usize = 2_000;

/// What a build said on stdout, reduced to what the compiler needs.
#[derive(Debug, Default)]
pub(crate) struct BuildMessages {
    /// Compiler messages, in order (summaries like "N warnings emitted" are
    /// dropped).
    pub diagnostics: Vec<Diagnostic>,
    /// Everything built (or found fresh) for `path` packages: workspace
    /// members and path dependencies. Registry and git packages are left
    /// out; their outputs are named after their real identity.
    pub artifacts: Vec<BuiltArtifact>,
    /// The `build-finished` verdict, when cargo got that far.
    pub success: Option<bool>,
}

/// One `compiler-artifact` message of a `path` package.
#[derive(Debug, Clone)]
pub(crate) struct BuiltArtifact {
    pub package_id: String,
    pub manifest_path: PathBuf,
    pub target_name: String,
    /// Every file cargo names for the target.
    pub files: Vec<PathBuf>,
    /// The shared library (`lib<name>.so`), for a `cdylib` target.
    pub cdylib: Option<PathBuf>,
    /// Cargo did not rebuild it.
    pub fresh: bool,
}

#[derive(Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
enum JsonLine {
    CompilerMessage {
        manifest_path: PathBuf,
        message: RustcDiagnostic,
    },
    CompilerArtifact {
        package_id: String,
        manifest_path: PathBuf,
        target: Target,
        filenames: Vec<PathBuf>,
        #[serde(default)]
        fresh: bool,
    },
    BuildFinished {
        success: bool,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    #[serde(default)]
    crate_types: Vec<String>,
}

#[derive(Deserialize)]
struct RustcDiagnostic {
    message: String,
    level: String,
    #[serde(default)]
    spans: Vec<Span>,
    rendered: Option<String>,
}

#[derive(Deserialize)]
struct Span {
    file_name: String,
    line_start: u32,
    column_start: u32,
    is_primary: bool,
}

/// Reads cargo's JSON lines from `stdout` until it closes. `root` is the
/// source directory, against which rustc's relative file names are resolved.
pub(crate) fn read(stdout: impl Read, root: &Path) -> BuildMessages {
    let mut out = BuildMessages::default();
    let reader = BufReader::new(stdout);
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        parse_line(&line, root, &mut out);
    }
    out
}

pub(crate) fn parse_line(line: &[u8], root: &Path, out: &mut BuildMessages) {
    let Ok(message) = serde_json::from_slice::<JsonLine>(line) else {
        // Not every line is JSON (a build script may print to stdout through
        // cargo in some setups); nothing to learn from those.
        return;
    };
    match message {
        JsonLine::CompilerMessage {
            manifest_path,
            message,
        } => {
            if is_summary(&message) || out.diagnostics.len() >= MAX_DIAGNOSTICS {
                return;
            }
            out.diagnostics
                .push(to_diagnostic(message, &manifest_path, root));
        }
        JsonLine::CompilerArtifact {
            package_id,
            manifest_path,
            target,
            filenames,
            fresh,
        } => {
            if !package_id.contains("path+file://") {
                return;
            }
            let suffix = format!(".{}", std::env::consts::DLL_EXTENSION);
            let cdylib = if target.crate_types.iter().any(|t| t == "cdylib") {
                filenames
                    .iter()
                    .find(|f| f.to_string_lossy().ends_with(&suffix))
                    .cloned()
            } else {
                None
            };
            out.artifacts.push(BuiltArtifact {
                package_id,
                manifest_path,
                target_name: target.name,
                files: filenames,
                cdylib,
                fresh,
            });
        }
        JsonLine::BuildFinished { success } => out.success = Some(success),
        JsonLine::Other => {}
    }
}

/// rustc's closing summaries ("2 warnings emitted", "aborting due to ...",
/// "For more information about this error ...") repeat what the real
/// diagnostics say.
fn is_summary(d: &RustcDiagnostic) -> bool {
    if !d.spans.is_empty() {
        return false;
    }
    let m = d.message.as_str();
    d.level == "failure-note"
        || m.starts_with("aborting due to")
        || (d.level == "warning"
            && (m.ends_with("warning emitted") || m.ends_with("warnings emitted")))
}

fn to_diagnostic(d: RustcDiagnostic, manifest_path: &Path, root: &Path) -> Diagnostic {
    let span = d
        .spans
        .iter()
        .find(|s| s.is_primary)
        .or_else(|| d.spans.first());
    Diagnostic {
        level: Level::from_rustc(&d.level),
        message: d.message,
        file: span.map(|s| resolve_file(&s.file_name, manifest_path, root)),
        line: span.map(|s| s.line_start),
        column: span.map(|s| s.column_start),
        rendered: d.rendered,
    }
}

/// rustc runs in the workspace root, so a member's files are named relative
/// to it; dependencies outside the workspace have absolute names.
fn resolve_file(name: &str, manifest_path: &Path, root: &Path) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_owned();
    }
    let candidates = std::iter::once(root).chain(manifest_path.ancestors().skip(1));
    for dir in candidates {
        let candidate = dir.join(name);
        if candidate.exists() {
            return candidate;
        }
    }
    root.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_error_and_skips_summaries() {
        let root = Path::new("/nonexistent/ws");
        let mut out = BuildMessages::default();
        let error = r#"{"reason":"compiler-message","package_id":"p","manifest_path":"/nonexistent/ws/Cargo.toml","target":{"name":"p","crate_types":["cdylib"]},"message":{"rendered":"error: boom\n","level":"error","message":"boom","children":[],"code":null,"spans":[{"file_name":"src/lib.rs","line_start":3,"column_start":7,"is_primary":true}]}}"#;
        let note = r#"{"reason":"compiler-message","package_id":"p","manifest_path":"/nonexistent/ws/Cargo.toml","target":{"name":"p","crate_types":["cdylib"]},"message":{"rendered":"x","level":"failure-note","message":"For more information","children":[],"code":null,"spans":[]}}"#;
        let artifact = r#"{"reason":"compiler-artifact","package_id":"path+file:///nonexistent/ws#p@0.1.0","manifest_path":"/nonexistent/ws/Cargo.toml","target":{"name":"p","kind":["cdylib"],"crate_types":["cdylib"]},"filenames":["/t/debug/libp.so"],"fresh":true}"#;
        for line in [
            error,
            note,
            "not json",
            artifact,
            r#"{"reason":"build-finished","success":false}"#,
        ] {
            parse_line(line.as_bytes(), root, &mut out);
        }
        assert_eq!(out.diagnostics.len(), 1);
        let d = &out.diagnostics[0];
        assert_eq!(
            (d.level, d.line, d.column),
            (Level::Error, Some(3), Some(7))
        );
        assert_eq!(
            d.file.as_deref(),
            Some(Path::new("/nonexistent/ws/src/lib.rs"))
        );
        assert_eq!(out.artifacts.len(), 1);
        assert!(out.artifacts[0].fresh);
        assert_eq!(
            out.artifacts[0].cdylib.as_deref(),
            Some(Path::new("/t/debug/libp.so"))
        );
        assert_eq!(out.success, Some(false));
    }
}
