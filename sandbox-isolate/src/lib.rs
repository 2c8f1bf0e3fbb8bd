//! Isolation backends for sandbox modules, and the one function that spawns
//! child processes ([`spawn::spawn`]).
//!
//! placeholder: filled by the loader work.

pub mod spawn;
