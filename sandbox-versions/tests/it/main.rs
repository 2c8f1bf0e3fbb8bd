//! Integration tests of `sandbox-versions`: one binary, one module per area.

mod graph;
mod history;
