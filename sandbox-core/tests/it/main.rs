//! Integration tests of the `Manager`, with real cargo, real loading and
//! real file-system events. Plugin builds are shared through
//! `sandbox-testkit`'s target dir and cache.

// Tests may report what they measured; libraries never print.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod audit;
mod autoreload;
mod bad_input;
mod calls;
mod checkpoint_store;
mod deadlines;
mod hotswap;
mod isolators;
mod lifecycle;
mod messages;
mod schemas;
mod workdir;

use std::time::Duration;

/// How long a test waits for something that involves a cargo build.
pub const BUILD: Duration = Duration::from_secs(600);
