//! The one error type of this crate.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Diagnostic, Level};

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building a sandbox tree.
///
/// Each message says what was wrong and what to do about it. Compile errors
/// carry the structured diagnostics; see [`Error::diagnostics`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source directory does not exist (or is not a directory).
    #[error("source directory `{}` does not exist; pass the path of a Cargo package or workspace", path.display())]
    SourceMissing {
        /// The path that was given.
        path: PathBuf,
    },

    /// The source directory has no `Cargo.toml`.
    #[error("`{}` has no Cargo.toml; a sandbox source must be a Cargo package or workspace", path.display())]
    NotCargoProject {
        /// The directory that was given.
        path: PathBuf,
    },

    /// rustc reported errors; the diagnostics (errors and warnings) say where.
    #[error("{}", compile_message(diagnostics))]
    Compile {
        /// Every diagnostic of the failed build, errors first in build order.
        diagnostics: Vec<Diagnostic>,
    },

    /// The build ran longer than its timeout; its whole process group was
    /// killed.
    #[error(
        "the build did not finish within {after:?} and was killed; raise `BuildRequest::timeout`, \
         or look for a build script or proc macro that never finishes"
    )]
    Timeout {
        /// The timeout that expired.
        after: Duration,
    },

    /// The build succeeded but produced no `cdylib`, so there is nothing to
    /// load.
    #[error(
        "`{}` has no cdylib library target, so it has no plugin module to load; \
         add `[lib] crate-type = [\"cdylib\"]` to the plugin's Cargo.toml",
        path.display()
    )]
    NoPluginModules {
        /// The source directory.
        path: PathBuf,
    },

    /// An artifact is not a loadable plugin.
    #[error(
        "`{}` is not a sandbox plugin: {reason}; a plugin is a cdylib that exports its module \
         with the plugin API crate's export macro",
        path.display()
    )]
    NotAPlugin {
        /// The library cargo produced.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Cargo failed without compiler diagnostics: a bad manifest, a
    /// dependency that cannot be resolved (offline), a failing build script...
    #[error(
        "cargo failed ({status}) without compiler diagnostics; its output ends with:\n{stderr}"
    )]
    Cargo {
        /// How cargo exited.
        status: String,
        /// The useful tail of cargo's stderr.
        stderr: String,
    },

    /// The toolchain could not be queried (`rustc -vV`).
    #[error(
        "could not ask `{}` for its version: {reason}; install a Rust toolchain or set the \
         path with `CargoCompilerBuilder::rustc`",
        program.display()
    )]
    Toolchain {
        /// The rustc that was run.
        program: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// Cargo (or rustc) could not be started.
    #[error(
        "could not start the build tool: {0}; install cargo, or set its path with \
         `CargoCompilerBuilder::cargo`"
    )]
    Spawn(#[source] std::io::Error),

    /// A file or directory could not be read or written.
    #[error("i/o error on `{}`: {source}; check that it exists and is accessible", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// Untrusted source carries something that would run or read code
    /// outside the tree (cargo configuration, a toolchain override, a patch
    /// or path dependency outside the tree); refused before anything ran.
    #[error(
        "untrusted source refused before anything of it ran: `{}`: {reason}; if this source is \
         yours, declare it trusted (profile `trusted`) to build it as it is",
        path.display()
    )]
    Refused {
        /// The file or folder refused.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },

    /// An artifact's bytes are not the ones the compiler recorded.
    #[error(
        "artifact `{}` was modified after it was built (sha256 {found}, recorded {expected}); \
         it is not loaded: rebuild the sandbox, and find out what wrote to the build cache",
        path.display()
    )]
    Tampered {
        /// The artifact.
        path: PathBuf,
        /// The recorded sha256.
        expected: String,
        /// The sha256 of the file now.
        found: String,
    },

    /// The compiler was configured wrongly.
    #[error("invalid compiler configuration: {reason}")]
    Config {
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl Error {
    /// The compiler diagnostics of a [`Error::Compile`]; empty for every
    /// other error.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Error::Compile { diagnostics } => diagnostics,
            _ => &[],
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

fn compile_message(diagnostics: &[Diagnostic]) -> String {
    let errors: Vec<&Diagnostic> = diagnostics
        .iter()
        .filter(|d| d.level == Level::Error)
        .collect();
    let Some(first) = errors.first() else {
        return "compilation failed; fix the source and build again".to_owned();
    };
    let mut location = String::new();
    if let Some(file) = &first.file {
        location.push_str(&file.display().to_string());
        if let Some(line) = first.line {
            location.push_str(&format!(":{line}"));
            if let Some(column) = first.column {
                location.push_str(&format!(":{column}"));
            }
        }
        location.push_str(": ");
    }
    let more = match errors.len() {
        1 => String::new(),
        2 => " (and 1 more error)".to_owned(),
        n => format!(" (and {} more errors)", n - 1),
    };
    format!(
        "compilation failed with {} error{}: {location}{}{more}; fix the source and build again",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        first.message
    )
}
