//! sandbox-versions
