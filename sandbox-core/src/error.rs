//! One error type for everything the `Manager` does, with its class and a
//! recovery strategy.

use std::path::PathBuf;

pub use sandbox_isolate::ErrorKind;
use serde::Serialize;

use crate::{SandboxId, Status};

/// A result whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The broad class of a failure, which decides how a host recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The caller asked for something that does not exist or is malformed
    /// (unknown id, bad path, duplicate id). Nothing to recover: fix the request.
    Request,
    /// The source did not build or is not a valid plugin.
    Compilation,
    /// Plugin code failed, panicked, timed out, or a swap was rolled back.
    Runtime,
    /// A resource limit was hit.
    Resource,
    /// The security policy refused the source or an operation.
    Security,
    /// The host itself failed (I/O, spawning, a runtime that went away).
    System,
}

/// What a host should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// Fix the request and try again.
    FixRequest,
    /// Fix the source; the sandbox keeps serving its current versions.
    FixSource,
    /// Try the same operation again.
    Retry,
    /// Restart the sandbox from its last saved state.
    Restart,
    /// Raise the limit or reduce the load.
    RaiseLimit,
    /// Nothing automatic helps; a person must look.
    Escalate,
}

/// Everything that can go wrong in `sandbox-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No sandbox has this id.
    #[error("no sandbox `{id}`; known sandboxes: {}", list(known))]
    UnknownSandbox {
        /// The requested id.
        id: SandboxId,
        /// The ids that exist.
        known: Vec<SandboxId>,
    },
    /// A sandbox with this id exists already.
    #[error("a sandbox `{id}` exists already; destroy it first or pick another id")]
    DuplicateSandbox {
        /// The id.
        id: SandboxId,
    },
    /// The id is not usable.
    #[error("invalid sandbox id `{id}`: {reason}")]
    InvalidId {
        /// The id given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The source folder does not exist.
    #[error("source folder `{}` does not exist; pass the folder of a Cargo package or workspace", path.display())]
    SourceMissing {
        /// The path given.
        path: PathBuf,
    },
    /// The source folder has no `Cargo.toml`.
    #[error("`{}` is not a Cargo project (no Cargo.toml); create one with `sandbox new`", path.display())]
    NotCargoProject {
        /// The path given.
        path: PathBuf,
    },
    /// Building the source failed; the diagnostics say where.
    #[error("{}", compile_text(.0))]
    Compile(#[source] sandbox_compiler::Error),
    /// Loading, calling or swapping a module failed.
    #[error(transparent)]
    Isolate(#[from] sandbox_isolate::Error),
    /// The modules' declared dependencies are not usable (a cycle, an unknown module).
    #[error("{0}")]
    Dependencies(#[source] sandbox_versions::Error),
    /// A version lookup failed (unknown version, already current).
    #[error("{0}")]
    Version(#[source] sandbox_versions::Error),
    /// Two libraries of the sandbox export modules with the same name.
    #[error("two libraries of the sandbox export a module named `{module}`: {first} and {second}; give each module its own NAME")]
    DuplicateModule {
        /// The module name.
        module: String,
        /// One library.
        first: String,
        /// The other.
        second: String,
    },
    /// The source built but contains no plugin module.
    #[error("`{}` builds no plugin module; add `crate-type = [\"cdylib\"]` and `sandbox_plugin::export_plugin!`", path.display())]
    NoModules {
        /// The source folder.
        path: PathBuf,
    },
    /// The security policy refused the source.
    #[error("security policy: {0}")]
    Security(#[source] sandbox_security::Error),
    /// Watching the source for auto-reload failed.
    #[error("auto-reload: {0}")]
    Watch(#[source] sandbox_watch::Error),
    /// The sandbox is not in a state that allows the operation.
    #[error("sandbox `{id}` is {status}; {hint}")]
    NotRunning {
        /// The sandbox.
        id: SandboxId,
        /// Its status.
        status: Status,
        /// What to do.
        hint: &'static str,
    },
    /// Untrusted source was refused before anything of it ran, or an
    /// artifact changed after it was built.
    #[error(transparent)]
    Untrusted(sandbox_compiler::Error),
    /// Source that is not declared trusted was sent to a backend that does
    /// not confine it (in-process code runs with the host's rights, unjailed;
    /// see [`Isolator::confines_untrusted`](sandbox_isolate::Isolator::confines_untrusted)).
    #[error("`{kind}` isolation does not jail the module (in-process runs it in the host process), so it needs source you trust, and the profile is `{profile}`; either declare the source trusted (profile `trusted`, `--profile trusted`) or run it in a jailed worker (isolation `process`, `--isolation process`)")]
    UntrustedInProcess {
        /// The profile that was asked for.
        profile: sandbox_security::Profile,
        /// The backend that was asked for.
        kind: sandbox_isolate::IsolationKind,
    },
    /// The manager has no backend for the isolation a sandbox asks for.
    #[error("this manager cannot run `{kind}` isolation: {reason}")]
    NoIsolator {
        /// The isolation asked for.
        kind: sandbox_isolate::IsolationKind,
        /// Why, and what to do: the default worker was not found (where it
        /// was looked for), or the kinds the manager does have.
        reason: String,
    },
    /// A swap or rollback would hand live state to a version with a lower
    /// schema, which cannot know it, and no host migration is registered.
    #[error("cannot swap `{module}` of `{id}` to version {version}: that version reads state schema {to}, older than the live state's schema {from}, so it cannot know that state; register a migration from {from} to {to} with Manager::register_migration, or pick a version with schema {from} or later (nothing was changed)")]
    SchemaDowngrade {
        /// The sandbox.
        id: SandboxId,
        /// The module.
        module: String,
        /// The version asked for.
        version: u32,
        /// The live state's schema.
        from: u32,
        /// The schema of the version asked for.
        to: u32,
    },
    /// A host-side task failed.
    #[error("internal error: {0}; this is a bug in the host, please report it")]
    Internal(String),
}

/// The compiler's message, said to be a failed compilation once.
fn compile_text(e: &sandbox_compiler::Error) -> String {
    let text = e.to_string();
    if text.starts_with("compilation failed") {
        text
    } else {
        format!("compilation failed: {text}")
    }
}

fn list(ids: &[SandboxId]) -> String {
    if ids.is_empty() {
        "(none)".to_owned()
    } else {
        ids.iter()
            .map(|i| i.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Error {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        use sandbox_isolate::Error as I;
        match self {
            Self::UnknownSandbox { .. }
            | Self::DuplicateSandbox { .. }
            | Self::InvalidId { .. }
            | Self::SourceMissing { .. }
            | Self::NotCargoProject { .. }
            | Self::NotRunning { .. }
            | Self::NoIsolator { .. }
            | Self::SchemaDowngrade { .. }
            | Self::Version(_) => ErrorClass::Request,
            Self::Compile(_)
            | Self::Dependencies(_)
            | Self::DuplicateModule { .. }
            | Self::NoModules { .. } => ErrorClass::Compilation,
            Self::Security(_) | Self::UntrustedInProcess { .. } | Self::Untrusted(_) => {
                ErrorClass::Security
            }
            Self::Isolate(e) => match e.root() {
                I::Load { .. } | I::NotAPlugin { .. } | I::Incompatible { .. } => {
                    ErrorClass::Compilation
                }
                I::UnknownModule { .. } | I::UnknownVersion { .. } => ErrorClass::Request,
                I::Timeout { .. } | I::Exhausted { .. } => ErrorClass::Resource,
                I::Io { .. } => ErrorClass::System,
                _ => ErrorClass::Runtime,
            },
            Self::Internal(_) => ErrorClass::System,
            Self::Watch(e) => match e {
                sandbox_watch::Error::TooManyFiles { .. } => ErrorClass::Resource,
                sandbox_watch::Error::RootMissing { .. }
                | sandbox_watch::Error::NotADirectory { .. } => ErrorClass::Request,
                _ => ErrorClass::System,
            },
        }
    }

    /// What a host should do about it.
    pub fn recovery(&self) -> Recovery {
        match self.class() {
            ErrorClass::Request => Recovery::FixRequest,
            ErrorClass::Security if matches!(self, Self::UntrustedInProcess { .. }) => {
                Recovery::FixRequest
            }
            ErrorClass::Compilation | ErrorClass::Security => Recovery::FixSource,
            ErrorClass::Resource => Recovery::RaiseLimit,
            ErrorClass::Runtime => match self {
                Self::Isolate(
                    sandbox_isolate::Error::Swap { .. }
                    | sandbox_isolate::Error::UndeclaredDependency { .. },
                ) => Recovery::FixSource,
                Self::Isolate(sandbox_isolate::Error::Abandoned { .. }) => Recovery::Restart,
                // The plugin said the request was malformed: retrying it
                // as it is gets the same answer.
                Self::Isolate(sandbox_isolate::Error::Plugin {
                    kind: sandbox_isolate::PluginErrorKind::BadRequest,
                    ..
                }) => Recovery::FixRequest,
                _ => Recovery::Retry,
            },
            ErrorClass::System => Recovery::Escalate,
        }
    }

    /// What kind of failure this is: `kind` in the `sandbox run` protocol
    /// and in `failed` events (serialized as `compile`, `not_found`,
    /// `bad_request`, `plugin`, `swap`, `timeout`, `limit_exceeded`,
    /// `crashed`, `security`, `version`, `dependency`, `watch`,
    /// `not_running`, `system`).
    ///
    /// An isolation error says its own kind
    /// ([`sandbox_isolate::Error::kind`]): a swap that failed because plugin
    /// code overran its deadline is a `timeout`, and one that failed because
    /// the worker ran out of memory or descriptors is `limit_exceeded`,
    /// whatever step it was at.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownSandbox { .. } => ErrorKind::NotFound,
            Self::DuplicateSandbox { .. }
            | Self::InvalidId { .. }
            | Self::SourceMissing { .. }
            | Self::NotCargoProject { .. }
            | Self::NoIsolator { .. } => ErrorKind::BadRequest,
            Self::Compile(_) | Self::NoModules { .. } | Self::DuplicateModule { .. } => {
                ErrorKind::Compile
            }
            Self::Dependencies(_) => ErrorKind::Dependency,
            Self::SchemaDowngrade { .. } => ErrorKind::Swap,
            Self::Version(_) => ErrorKind::Version,
            Self::Security(_) | Self::UntrustedInProcess { .. } | Self::Untrusted(_) => {
                ErrorKind::Security
            }
            Self::NotRunning { .. } => ErrorKind::NotRunning,
            Self::Internal(_) => ErrorKind::System,
            Self::Watch(_) => ErrorKind::Watch,
            Self::Isolate(e) => e.kind(),
        }
    }

    /// Compiler diagnostics carried by a compile error (empty otherwise).
    pub fn diagnostics(&self) -> &[sandbox_compiler::Diagnostic] {
        match self {
            Self::Compile(e) => e.diagnostics(),
            _ => &[],
        }
    }
}

impl From<sandbox_compiler::Error> for Error {
    fn from(e: sandbox_compiler::Error) -> Self {
        match e {
            sandbox_compiler::Error::SourceMissing { path } => Self::SourceMissing { path },
            sandbox_compiler::Error::NotCargoProject { path } => Self::NotCargoProject { path },
            e @ (sandbox_compiler::Error::Refused { .. }
            | sandbox_compiler::Error::Tampered { .. }) => Self::Untrusted(e),
            other => Self::Compile(other),
        }
    }
}
