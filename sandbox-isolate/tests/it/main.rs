//! Integration tests of the isolation backends, with real plugin libraries
//! built by real cargo (shared target dir, see `sandbox-testkit`) and real
//! worker processes.

// Tests may report what they measured; libraries never print.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod deadlines;
mod default_worker;
mod hostile;
mod inprocess;
mod jail;
mod memory;
mod process;
mod scenarios;
mod support;
