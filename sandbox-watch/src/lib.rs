//! sandbox-watch
