//! Reading `cargo build --message-format=json` output, with
//! `cargo_metadata`'s message types.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use cargo_metadata::diagnostic::{Diagnostic as RustcDiagnostic, DiagnosticLevel};
use cargo_metadata::{CrateType, Message};

use crate::{Diagnostic, Level};

/// At most this many diagnostics are kept from one build; a proc macro that
/// spews millions of warnings must not exhaust the host's memory.
pub(crate) const MAX_DIAGNOSTICS: usize = 2_000;

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
    let Ok(message) = serde_json::from_slice::<Message>(line) else {
        // Not every line is JSON (a build script may print to stdout through
        // cargo in some setups), nor every JSON line a message this version
        // of `cargo_metadata` knows; nothing to learn from those.
        return;
    };
    match message {
        Message::CompilerMessage(message) => {
            if is_summary(&message.message) || out.diagnostics.len() >= MAX_DIAGNOSTICS {
                return;
            }
            // rustc names a member's files relative to the workspace root,
            // or else to the package: the target's source file is inside
            // the package.
            let package_file = message.target.src_path.into_std_path_buf();
            out.diagnostics
                .push(to_diagnostic(message.message, &package_file, root));
        }
        Message::CompilerArtifact(artifact) => {
            let package_id = artifact.package_id.repr;
            if !package_id.contains("path+file://") {
                return;
            }
            let files: Vec<PathBuf> = artifact
                .filenames
                .into_iter()
                .map(|f| f.into_std_path_buf())
                .collect();
            let suffix = format!(".{}", std::env::consts::DLL_EXTENSION);
            let cdylib = if artifact.target.crate_types.contains(&CrateType::CDyLib) {
                files
                    .iter()
                    .find(|f| f.to_string_lossy().ends_with(&suffix))
                    .cloned()
            } else {
                None
            };
            out.artifacts.push(BuiltArtifact {
                package_id,
                manifest_path: artifact.manifest_path.into_std_path_buf(),
                target_name: artifact.target.name,
                files,
                cdylib,
                fresh: artifact.fresh,
            });
        }
        Message::BuildFinished(finished) => out.success = Some(finished.success),
        _ => {}
    }
}

/// rustc's closing summaries ("2 warnings emitted", "aborting due to ...",
/// "For more information about this error ...") repeat what the real
/// diagnostics say.
pub(crate) fn is_summary(d: &RustcDiagnostic) -> bool {
    if !d.spans.is_empty() {
        return false;
    }
    let m = d.message.as_str();
    d.level == DiagnosticLevel::FailureNote
        || m.starts_with("aborting due to")
        || (d.level == DiagnosticLevel::Warning
            && (m.ends_with("warning emitted") || m.ends_with("warnings emitted")))
}

pub(crate) fn to_diagnostic(d: RustcDiagnostic, package_file: &Path, root: &Path) -> Diagnostic {
    let span = d
        .spans
        .iter()
        .find(|s| s.is_primary)
        .or_else(|| d.spans.first());
    Diagnostic {
        level: Level::from_rustc(&d.level),
        file: span.map(|s| resolve_file(&s.file_name, package_file, root)),
        line: span.map(|s| saturating_u32(s.line_start)),
        column: span.map(|s| saturating_u32(s.column_start)),
        message: d.message,
        rendered: d.rendered,
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// rustc runs in the workspace root, so a member's files are named relative
/// to it; dependencies outside the workspace have absolute names. Failing
/// the root, the folders above `package_file` (a file of the package the
/// message is about: its manifest, or its target's source) are tried.
fn resolve_file(name: &str, package_file: &Path, root: &Path) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_owned();
    }
    let candidates = std::iter::once(root).chain(package_file.ancestors().skip(1));
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

    /// A `compiler-message` line as cargo writes it, for a member whose
    /// target's source is `src_path`.
    fn message(level: &str, text: &str, file: &str, src_path: &str, primary_first: bool) -> String {
        let span = |primary: bool, line: u32, column: u32| {
            format!(
                r#"{{"byte_end":22,"byte_start":19,"column_end":{end},"column_start":{column},"expansion":null,"file_name":"{file}","is_primary":{primary},"label":null,"line_end":{line},"line_start":{line},"suggested_replacement":null,"suggestion_applicability":null,"text":[]}}"#,
                end = column + 3,
            )
        };
        let spans = if file.is_empty() {
            String::new()
        } else if primary_first {
            format!("{},{}", span(true, 3, 7), span(false, 9, 1))
        } else {
            format!("{},{}", span(false, 9, 1), span(true, 3, 7))
        };
        format!(
            r#"{{"reason":"compiler-message","package_id":"path+file:///nonexistent/ws#p@0.1.0","manifest_path":"/nonexistent/ws/Cargo.toml","target":{{"kind":["cdylib"],"crate_types":["cdylib"],"name":"p","src_path":"{src_path}","edition":"2021","doc":true,"doctest":false,"test":true}},"message":{{"rendered":"{level}: {text}\n","$message_type":"diagnostic","children":[],"level":"{level}","message":"{text}","spans":[{spans}],"code":null}}}}"#
        )
    }

    const ARTIFACT: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///nonexistent/ws#p@0.1.0","manifest_path":"/nonexistent/ws/Cargo.toml","target":{"kind":["cdylib"],"crate_types":["cdylib"],"name":"p","src_path":"/nonexistent/ws/src/lib.rs","edition":"2021","doc":true,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/t/debug/libp.so"],"executable":null,"fresh":true}"#;

    const REGISTRY_ARTIFACT: &str = r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#serde@1.0.0","manifest_path":"/reg/serde/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"serde","src_path":"/reg/serde/src/lib.rs","edition":"2018","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"0","debuginfo":0,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/t/debug/deps/libserde.rlib"],"executable":null,"fresh":true}"#;

    #[test]
    fn parses_an_error_and_skips_summaries() {
        let root = Path::new("/nonexistent/ws");
        let src = "/nonexistent/ws/src/lib.rs";
        let mut out = BuildMessages::default();
        for line in [
            message("error", "boom", "src/lib.rs", src, false),
            message(
                "failure-note",
                "For more information about this error, try `rustc --explain E0308`.",
                "",
                src,
                true,
            ),
            message("warning", "2 warnings emitted", "", src, true),
            message("error", "aborting due to 1 previous error", "", src, true),
            "not json".to_owned(),
            r#"{"reason":"compiler-message","truncated":"#.to_owned(),
            ARTIFACT.to_owned(),
            REGISTRY_ARTIFACT.to_owned(),
            r#"{"reason":"build-finished","success":false}"#.to_owned(),
        ] {
            parse_line(line.as_bytes(), root, &mut out);
        }
        assert_eq!(out.diagnostics.len(), 1, "{:?}", out.diagnostics);
        let d = &out.diagnostics[0];
        // The primary span, though it is not the first.
        assert_eq!(
            (d.level, d.line, d.column),
            (Level::Error, Some(3), Some(7))
        );
        assert_eq!(d.message, "boom");
        assert_eq!(d.rendered.as_deref(), Some("error: boom\n"));
        assert_eq!(
            d.file.as_deref(),
            Some(Path::new("/nonexistent/ws/src/lib.rs"))
        );
        // Only the path package's artifact.
        assert_eq!(out.artifacts.len(), 1);
        let a = &out.artifacts[0];
        assert!(a.fresh);
        assert_eq!(a.package_id, "path+file:///nonexistent/ws#p@0.1.0");
        assert_eq!(a.manifest_path, Path::new("/nonexistent/ws/Cargo.toml"));
        assert_eq!(a.target_name, "p");
        assert_eq!(a.files, [PathBuf::from("/t/debug/libp.so")]);
        assert_eq!(a.cdylib.as_deref(), Some(Path::new("/t/debug/libp.so")));
        assert_eq!(out.success, Some(false));
    }

    #[test]
    fn levels_map_to_ours_and_a_message_without_span_has_no_location() {
        let src = "/nonexistent/ws/src/lib.rs";
        let mut out = BuildMessages::default();
        for level in ["warning", "note", "help", "error: internal compiler error"] {
            parse_line(
                message(level, "m", "", src, true).as_bytes(),
                Path::new("/nonexistent/ws"),
                &mut out,
            );
        }
        let levels: Vec<Level> = out.diagnostics.iter().map(|d| d.level).collect();
        assert_eq!(
            levels,
            [Level::Warning, Level::Note, Level::Help, Level::Error]
        );
        assert!(out
            .diagnostics
            .iter()
            .all(|d| d.file.is_none() && d.line.is_none() && d.column.is_none()));
    }

    #[test]
    fn a_file_named_relative_to_its_package_is_found_there() {
        let dir = tempfile::tempdir().unwrap();
        let member = dir.path().join("member");
        std::fs::create_dir_all(member.join("src")).unwrap();
        std::fs::write(member.join("src/lib.rs"), "").unwrap();
        let src = member.join("src/lib.rs");
        let mut out = BuildMessages::default();
        parse_line(
            message("error", "boom", "src/lib.rs", src.to_str().unwrap(), true).as_bytes(),
            dir.path(),
            &mut out,
        );
        assert_eq!(out.diagnostics[0].file.as_deref(), Some(src.as_path()));
    }
}
