//! Integration tests of the isolation backends, with real plugin libraries
//! built by real cargo (shared target dir, see `sandbox-testkit`).

mod inprocess;
