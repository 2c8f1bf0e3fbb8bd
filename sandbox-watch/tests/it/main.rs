//! Integration tests of `sandbox-watch`: real files in temp dirs, real
//! inotify events. Every wait has a deadline; nothing sleeps to synchronize.

mod changes;
mod errors;
mod filter;
mod keys;
mod lifecycle;
mod manual;
mod root;
mod settle;
mod support;
