//! sandbox-compiler
