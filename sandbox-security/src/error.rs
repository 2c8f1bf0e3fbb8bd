//! The one error type of this crate: what a scan, a profile, the audit log or a rate limiter refused, and what to do.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Finding, Profile};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source to scan does not exist or is not a directory.
    #[error("source path {} is not a directory; pass the root of a Cargo package or workspace", path.display())]
    NotADirectory {
        /// The path that was given.
        path: PathBuf,
    },

    /// Reading or writing a file failed.
    #[error("cannot access {}: {source}; check that it exists and is readable (and writable for an audit log)", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A Rust source file does not parse, so it cannot be scanned.
    #[error("cannot parse {}:{line}:{column}: {message}; fix the syntax error, the policy only accepts source it can read", file.display())]
    Parse {
        /// The file, relative to the scanned source root.
        file: PathBuf,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
        /// The parser's message.
        message: String,
    },

    /// A `Cargo.toml` does not parse.
    #[error("cannot parse {}: {message}; fix the manifest", file.display())]
    Manifest {
        /// The manifest, relative to the scanned source root.
        file: PathBuf,
        /// The parser's message.
        message: String,
    },

    /// The source uses capabilities its profile does not allow.
    #[error("{}", denied_message(*.profile, .findings))]
    Denied {
        /// The profile the source was checked against.
        profile: Profile,
        /// Every finding the profile does not allow.
        findings: Vec<Finding>,
    },

    /// A profile name that is not `high`, `medium` or `trusted`.
    #[error("unknown profile `{name}`; expected one of: high, medium, trusted")]
    UnknownProfile {
        /// The name that was given.
        name: String,
    },

    /// A profile name that was renamed.
    #[error("the profile `{old}` is now called `{new}`; say `{new}` to declare that you trust this source")]
    RenamedProfile {
        /// The old name.
        old: &'static str,
        /// The name to use.
        new: &'static str,
    },

    /// An audit log's hash chain does not verify.
    #[error("audit log {} is broken at line {line}: {reason}; the file was modified or truncated, keep it as evidence and start a new log", path.display())]
    AuditBroken {
        /// The log file.
        path: PathBuf,
        /// 1-based line of the first bad entry.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// A rate limiter refused a request.
    #[error("rate limit for `{key}` exceeded; retry after {} ms", retry_after.as_millis())]
    RateLimited {
        /// The key that is over its rate.
        key: String,
        /// When the next request for this key will be accepted.
        retry_after: Duration,
    },

    /// A rate limiter was configured with a rate or burst it cannot apply.
    #[error("invalid rate limit: {reason}; use a finite rate above 0 and a burst of at least 1")]
    InvalidRate {
        /// What is wrong.
        reason: String,
    },

    /// The policy does not implement this operation.
    #[error("{operation} is not supported by this policy; use one that implements it (such as `SourcePolicy`)")]
    Unsupported {
        /// The operation that was asked for.
        operation: &'static str,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn denied_message(profile: Profile, findings: &[Finding]) -> String {
    // The strictest profile that would allow every finding.
    let allowing = Profile::ALL
        .into_iter()
        .filter(|p| *p > profile)
        .find(|p| {
            let permissions = p.permissions();
            findings.iter().all(|f| permissions.permits(&f.capability))
        })
        .unwrap_or(Profile::Trusted);
    let way_out = if allowing == Profile::Trusted {
        "or declare the source trusted (profile trusted: built and run outside the jail) only if it is your own".to_owned()
    } else {
        format!("or choose profile {allowing}, which allows them")
    };
    let mut message = format!(
        "source refused under profile {profile} ({} violation{}); remove these uses, {way_out}:",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" }
    );
    for finding in findings {
        message.push_str(&format!(
            "\n  {finding} is not allowed under profile {profile}"
        ));
    }
    message
}
