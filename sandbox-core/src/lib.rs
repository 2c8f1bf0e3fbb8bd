//! sandbox-core
