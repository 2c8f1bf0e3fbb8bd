//! Version history and the module dependency graph for sandbox hot swaps.
//!
//! Two independent pieces:
//!
//! - [`VersionHistory`]: the bounded, numbered history of the artifacts
//!   loaded for one module. The same artifact checksum twice is the same
//!   version (no swap happens); any retained version can be rolled back to;
//!   evicted versions are handed back so the host can release what it kept
//!   for them.
//! - [`DependencyGraph`]: which modules depend on which, on `petgraph`. It
//!   refuses cycles and names them, and turns a set of changed modules into
//!   the affected set and its reload order, in levels whose modules may be
//!   swapped in parallel.
//!
//! `sandbox-core`'s `Manager` uses both to drive hot swaps and rollbacks; a
//! host that manages its own plugins can use this crate alone, it depends on
//! no other sandbox crate. Writing a plugin? You want the plugin API crate
//! (`sandbox-plugin`) instead.
//!
//! ```
//! use std::time::SystemTime;
//! use sandbox_versions::{DependencyGraph, NewVersion, Recorded, VersionHistory};
//!
//! # fn main() -> sandbox_versions::Result<()> {
//! // report depends on score, which depends on tokenize.
//! let graph = DependencyGraph::from_modules([
//!     ("tokenize", vec![]),
//!     ("score", vec!["tokenize"]),
//!     ("report", vec!["score"]),
//! ])?;
//! graph.check_dependencies_known()?;
//! let order = graph.reload_order(&["tokenize".to_owned()])?;
//! assert_eq!(order, [["tokenize"], ["score"], ["report"]]);
//!
//! let mut history = VersionHistory::new("score", 10)?;
//! let artifact = |sha: &str| NewVersion {
//!     artifact_sha256: sha.to_owned(),
//!     module_version: "0.1.0".to_owned(),
//!     ..NewVersion::default()
//! };
//! let v1 = history.record(artifact("aa11"), SystemTime::now());
//! history.set_current(v1.record().number)?;
//! let v2 = history.record(artifact("bb22"), SystemTime::now());
//! assert!(v2.is_new());
//! history.set_current(v2.record().number)?;
//!
//! // The same artifact again is the same version: no swap.
//! let again = history.record(artifact("bb22"), SystemTime::now());
//! assert!(matches!(again, Recorded::Existing(ref r) if r.number == 2));
//!
//! // Roll back one step.
//! let target = history.previous().map(|r| r.number);
//! assert_eq!(target, Some(1));
//! # Ok(())
//! # }
//! ```

mod error;
mod graph;
mod history;

pub use error::{Error, Result};
pub use graph::DependencyGraph;
pub use history::{
    NewVersion, Recorded, VersionHistory, VersionNumber, VersionRecord, DEFAULT_RETENTION,
};
