//! Security for sandboxes: what source code may do, and a record of what
//! was done.
//!
//! - **Policy scan** — [`SourcePolicy`], the default [`Policy`], reads every
//!   file cargo reads to build a sandbox's source tree — its packages'
//!   manifests, targets and build scripts, the modules they declare (with
//!   `#[path]`), path dependencies and workspace members, hidden folders
//!   included — as syntax (via `syn`) and as manifests (via `toml`), and
//!   reports every use of a [`Capability`]: `unsafe`, `extern` blocks,
//!   `std::process`, `std::net`, `std::fs`, `std::env`, build scripts, proc
//!   macros, dependencies off the allow-list and cargo configuration, each
//!   with file, line and column.
//! - **Profiles** — [`Profile::High`] (untrusted), [`Profile::Medium`],
//!   [`Profile::Trusted`] (the only one built and run outside a jail) map to
//!   [`Permissions`]: the capabilities allowed, network and file system
//!   access, and whether the build may run outside a jail.
//!   [`Policy::check`] refuses source with [`Error::Denied`].
//! - **Audit log** — [`AuditLog`], a tamper-evident append-only JSON-lines
//!   file chained by SHA-256.
//! - **Rate limiting** — [`RateLimiter`], a token bucket per key on an
//!   injectable [`Clock`].
//!
//! Who uses it: `sandbox-core`'s `Manager` checks a sandbox's source against
//! its profile before every build, and appends every create, build, reload,
//! rollback, restart, crash and destroy to an [`AuditLog`] when its
//! configuration names one (`sandbox run` keeps one in its cache folder).
//! `sandbox check DIR --profile P` prints a scan's findings as cargo-style
//! diagnostics and fails when the profile refuses them; `sandbox audit
//! verify FILE` checks a log's chain.
//!
//! **The scan is advice; the jail is the guarantee.** A scan sees source,
//! not what macros expand to; a name assembled by a macro or a procedural
//! macro can escape it, and a compiler soundness hole lets safe code reach
//! any memory (even forbidding `unsafe` cannot stop that). So nothing trusts
//! source because its scan was clean: every profile but
//! [`Profile::Trusted`] builds and runs in the jail of `sandbox-isolate`,
//! whose limits the kernel enforces. The scan tells authors and operators
//! what a tree asks for, and refuses it early when the profile forbids it.
//! Writing a plugin? You want the plugin API crate, `sandbox-plugin`.
//!
//! ```
//! use sandbox_security::{Error, Policy, Profile, SourcePolicy};
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::create_dir(dir.path().join("src"))?;
//! std::fs::write(
//!     dir.path().join("src/lib.rs"),
//!     "pub fn run() {\n    std::process::Command::new(\"sh\");\n}\n",
//! )?;
//! let policy = SourcePolicy::new();
//! let Err(Error::Denied { findings, .. }) = policy.check(dir.path(), Profile::High) else {
//!     panic!("std::process must be refused under high")
//! };
//! assert_eq!(findings[0].to_string(), "src/lib.rs:2:5: `std::process` (process creation)");
//! assert!(policy.check(dir.path(), Profile::Trusted).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod audit;
mod error;
mod finding;
mod manifest;
mod profile;
mod rate;
mod rust;
mod scan;

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

pub use audit::{AuditEntry, AuditEvent, AuditLog, GENESIS_HASH};
pub use error::{Error, Result};
pub use finding::{Capability, CapabilityKind, Finding, ScanReport};
pub use profile::{FsAccess, Permissions, Profile, DEFAULT_ALLOWED_DEPENDENCIES};
pub use rate::{Clock, ManualClock, MonotonicClock, RateLimiter};
pub use rust::scan_rust;
pub use scan::SourcePolicy;

/// Decides what a sandbox's source may do.
///
/// Both methods are required:
/// - [`scan`](Policy::scan) is called whenever someone wants to know what a
///   source tree uses (`sandbox check`, a report before a build); it reports
///   and never refuses.
/// - [`check`](Policy::check) is called before every build of a sandbox's
///   source (first build and every reload), with the sandbox's profile; it
///   refuses with [`Error::Denied`] when a finding is not allowed. Most
///   implementations are `profile.enforce(self.scan(source)?)` (see
///   [`Profile::enforce`]).
///
/// Implementations must be usable from several threads at once.
///
/// # A whole implementation
///
/// A policy that only looks for build scripts:
///
/// ```
/// use std::path::Path;
/// use sandbox_security::{Capability, Error, Finding, Policy, Profile, Result, ScanReport};
///
/// #[derive(Debug)]
/// struct NoBuildScripts;
///
/// impl Policy for NoBuildScripts {
///     fn scan(&self, source: &Path) -> Result<ScanReport> {
///         let mut report = ScanReport { findings: Vec::new(), files_scanned: 0 };
///         if source.join("build.rs").is_file() {
///             report.files_scanned = 1;
///             report.findings.push(Finding {
///                 capability: Capability::BuildScript,
///                 file: "build.rs".into(),
///                 line: 1,
///                 column: 1,
///                 detail: "`build.rs`".into(),
///             });
///         }
///         Ok(report)
///     }
///
///     fn check(&self, source: &Path, profile: Profile) -> Result<ScanReport> {
///         profile.enforce(self.scan(source)?)
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("build.rs"), "fn main() {}")?;
/// let policy: Box<dyn Policy> = Box::new(NoBuildScripts);
/// assert_eq!(policy.scan(dir.path())?.findings.len(), 1);
/// let err = policy.check(dir.path(), Profile::High).unwrap_err();
/// assert!(matches!(err, Error::Denied { .. }));
/// assert!(err.to_string().contains(
///     "build.rs:1:1: `build.rs` (a build script) is not allowed under profile high"
/// ));
/// assert!(policy.check(dir.path(), Profile::Trusted).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Policy: Send + Sync + Debug {
    /// Reports every capability the source tree at `source` uses.
    fn scan(&self, source: &Path) -> Result<ScanReport>;

    /// Scans `source` and refuses it with [`Error::Denied`] if `profile` does
    /// not allow a finding; otherwise returns the report.
    fn check(&self, source: &Path, profile: Profile) -> Result<ScanReport>;
}

impl<T: Policy + ?Sized> Policy for Box<T> {
    fn scan(&self, source: &Path) -> Result<ScanReport> {
        (**self).scan(source)
    }
    fn check(&self, source: &Path, profile: Profile) -> Result<ScanReport> {
        (**self).check(source, profile)
    }
}

impl<T: Policy + ?Sized> Policy for Arc<T> {
    fn scan(&self, source: &Path) -> Result<ScanReport> {
        (**self).scan(source)
    }
    fn check(&self, source: &Path, profile: Profile) -> Result<ScanReport> {
        (**self).check(source, profile)
    }
}

/// A policy that finds nothing and allows everything, for hosts that only run
/// their own code, and for tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopPolicy;

impl Policy for NoopPolicy {
    fn scan(&self, _source: &Path) -> Result<ScanReport> {
        Ok(ScanReport::default())
    }
    fn check(&self, _source: &Path, _profile: Profile) -> Result<ScanReport> {
        Ok(ScanReport::default())
    }
}
