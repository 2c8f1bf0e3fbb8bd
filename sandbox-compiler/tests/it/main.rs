//! Integration tests of `sandbox-compiler`: real cargo, real files.
//!
//! Every test builds into one shared target directory
//! (`<CARGO_TARGET_DIR or target>/compiler-tests-target`), so the example
//! plugin's dependencies compile once per machine, not once per test.

mod support;

mod cache;
mod collision;
mod errors;
mod jail;
mod replay;
mod success;
mod timeout;
mod trust;
mod workspace;
