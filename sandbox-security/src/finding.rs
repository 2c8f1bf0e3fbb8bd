//! What a scan finds.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The kinds of [`Capability`], without their data: what a [`Permissions`]
/// set allows.
///
/// [`Permissions`]: crate::Permissions
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CapabilityKind {
    /// See [`Capability::Unsafe`].
    Unsafe,
    /// See [`Capability::ExternBlock`].
    ExternBlock,
    /// See [`Capability::Linkage`].
    Linkage,
    /// See [`Capability::Process`].
    Process,
    /// See [`Capability::Network`].
    Network,
    /// See [`Capability::FileSystem`].
    FileSystem,
    /// See [`Capability::Environment`].
    Environment,
    /// See [`Capability::BuildScript`].
    BuildScript,
    /// See [`Capability::ProcMacro`].
    ProcMacro,
    /// See [`Capability::Dependency`].
    Dependency,
    /// See [`Capability::CargoConfig`].
    CargoConfig,
}

impl CapabilityKind {
    /// Every kind.
    pub const ALL: [CapabilityKind; 11] = [
        CapabilityKind::Unsafe,
        CapabilityKind::ExternBlock,
        CapabilityKind::Linkage,
        CapabilityKind::Process,
        CapabilityKind::Network,
        CapabilityKind::FileSystem,
        CapabilityKind::Environment,
        CapabilityKind::BuildScript,
        CapabilityKind::ProcMacro,
        CapabilityKind::Dependency,
        CapabilityKind::CargoConfig,
    ];
}

/// Something source code can do that a profile may refuse.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Capability {
    /// `unsafe` blocks, functions, impls, traits and attributes; inline assembly.
    Unsafe,
    /// `extern` blocks declaring foreign functions.
    ExternBlock,
    /// Attributes that control symbols: `#[no_mangle]`, `#[export_name]`,
    /// `#[link_section]`, `#[link]`.
    Linkage,
    /// `std::process` (and `std::os::*::process`).
    Process,
    /// `std::net` (and `std::os::*::net`).
    Network,
    /// `std::fs` (and `std::os::*::fs`), `include!`-family macros, `#[path]`
    /// leaving the source tree.
    FileSystem,
    /// `std::env`, `env!`, `option_env!`.
    Environment,
    /// A build script: `build.rs`, `package.build`, `[build-dependencies]`.
    BuildScript,
    /// A procedural macro crate (`proc-macro = true`).
    ProcMacro,
    /// A normal or build dependency whose package name is not on the
    /// allow-list. The allow-list goes by name only, wherever the package
    /// comes from (registry, git or path); a path dependency inside the tree
    /// is scanned like the rest of it.
    Dependency(String),
    /// Cargo configuration or a toolchain override in the source root
    /// (`.cargo/config.toml`, `rust-toolchain.toml`): it can name programs
    /// cargo runs (a rustc wrapper, a linker, a runner).
    CargoConfig,
}

impl Capability {
    /// The kind of this capability.
    pub fn kind(&self) -> CapabilityKind {
        match self {
            Capability::Unsafe => CapabilityKind::Unsafe,
            Capability::ExternBlock => CapabilityKind::ExternBlock,
            Capability::Linkage => CapabilityKind::Linkage,
            Capability::Process => CapabilityKind::Process,
            Capability::Network => CapabilityKind::Network,
            Capability::FileSystem => CapabilityKind::FileSystem,
            Capability::Environment => CapabilityKind::Environment,
            Capability::BuildScript => CapabilityKind::BuildScript,
            Capability::ProcMacro => CapabilityKind::ProcMacro,
            Capability::Dependency(_) => CapabilityKind::Dependency,
            Capability::CargoConfig => CapabilityKind::CargoConfig,
        }
    }

    /// A short description: what using this capability means.
    pub fn describe(&self) -> &'static str {
        match self {
            Capability::Unsafe => "unsafe code",
            Capability::ExternBlock => "foreign function declarations",
            Capability::Linkage => "symbol linkage control",
            Capability::Process => "process creation",
            Capability::Network => "network access",
            Capability::FileSystem => "file system access",
            Capability::Environment => "environment access",
            Capability::BuildScript => "a build script",
            Capability::ProcMacro => "a procedural macro crate",
            Capability::Dependency(_) => "a dependency not on the allow-list",
            Capability::CargoConfig => "build configuration that can run programs",
        }
    }
}

/// One use of a [`Capability`] in the scanned source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Finding {
    /// What is used.
    pub capability: Capability,
    /// The file, relative to the scanned source root.
    pub file: PathBuf,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub column: u32,
    /// The construct, as written: "`std::process`", "`unsafe` block", ...
    pub detail: String,
}

impl fmt::Display for Finding {
    /// Formats as `file:line:column: detail (description)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {} ({})",
            self.file.display(),
            self.line,
            self.column,
            self.detail,
            self.capability.describe()
        )
    }
}

/// The result of scanning a source tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// Every finding, ordered by file, line and column.
    pub findings: Vec<Finding>,
    /// How many files (`.rs`, `Cargo.toml`, cargo configuration) were read.
    pub files_scanned: usize,
}

impl ScanReport {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The findings of one kind.
    pub fn of_kind(&self, kind: CapabilityKind) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(move |f| f.capability.kind() == kind)
    }
}
