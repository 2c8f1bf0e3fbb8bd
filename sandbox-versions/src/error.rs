//! The crate's one error type.

use crate::VersionNumber;

/// Everything that can go wrong in this crate.
///
/// Every message says what was wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A version number that the history does not hold: it was never
    /// recorded, or the retention bound has evicted it.
    #[error(
        "module `{module}` has no version {requested} (retained: {}); pick one of the retained versions",
        numbers(.retained)
    )]
    UnknownVersion {
        /// The module whose history was asked.
        module: String,
        /// The version number that was asked for.
        requested: VersionNumber,
        /// The version numbers the history does hold, oldest first.
        retained: Vec<VersionNumber>,
    },

    /// A rollback was asked to the version that is already current.
    #[error(
        "version {version} of module `{module}` is already current; pick another retained version to roll back to"
    )]
    AlreadyCurrent {
        /// The module whose history was asked.
        module: String,
        /// The current version.
        version: VersionNumber,
    },

    /// Declared dependencies that would form a cycle.
    #[error(
        "dependency cycle: {}; remove one of these declared dependencies",
        .cycle.join(" -> ")
    )]
    Cycle {
        /// The modules of the cycle in dependency order, the first repeated
        /// at the end: `["a", "b", "a"]` means `a` depends on `b` and `b`
        /// depends on `a`; a self-dependency is `["a", "a"]`.
        cycle: Vec<String>,
    },

    /// A module name that is not in the dependency graph.
    #[error("unknown module `{module}`; insert it into the dependency graph first")]
    UnknownModule {
        /// The name that was asked for.
        module: String,
    },

    /// A module declares a dependency on a name that is not a module.
    #[error(
        "module `{module}` depends on `{dependency}`, which is not a module; add `{dependency}` or remove it from the dependencies of `{module}`"
    )]
    UnknownDependency {
        /// The module that declares the dependency.
        module: String,
        /// The declared dependency that is not a module.
        dependency: String,
    },

    /// A retention bound below one.
    #[error(
        "version retention must be at least 1, got {retention}; use 1 to keep only the current version"
    )]
    InvalidRetention {
        /// The retention that was asked for.
        retention: usize,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn numbers(numbers: &[VersionNumber]) -> String {
    if numbers.is_empty() {
        return "none".to_owned();
    }
    numbers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
