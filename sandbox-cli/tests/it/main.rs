//! End-to-end tests of the `sandbox` binary: the JSON-lines protocol of
//! `sandbox run`, `sandbox serve`, `sandbox new` and `sandbox demo`, with
//! real builds.

mod client;
mod durability;
mod handover;
mod host;
mod new_and_demo;
mod process;
mod robust;
mod run;
mod security;
mod serve;
mod trust;
mod workdir;
