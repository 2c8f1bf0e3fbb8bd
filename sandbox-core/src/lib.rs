//! The host side of `sandbox`: the [`Manager`] creates sandboxes from Rust
//! source, calls their modules, hot-swaps them with their state kept, rolls
//! them back, and reports everything as typed [`Event`]s.
//!
//! This is the crate a host program depends on. It composes the component
//! crates through their traits — [`Compiler`](sandbox_compiler::Compiler),
//! [`Isolator`](sandbox_isolate::Isolator), [`Policy`](sandbox_security::Policy)
//! — and re-exports them, so one dependency is enough; each default can be
//! replaced with [`Manager::builder`].
//!
//! Writing a plugin? You want `sandbox-plugin`. Only need to build plugin
//! crates, or watch files? `sandbox-compiler` and `sandbox-watch` work alone.
//!
//! # A tour
//!
//! ```no_run
//! # async fn tour() -> sandbox_core::Result<()> {
//! use sandbox_core::{Config, EventKind, Manager, SandboxSpec};
//!
//! let manager = Manager::new(Config::default())?;
//! let mut events = manager.subscribe();
//! manager.create("demo", SandboxSpec::trusted("plugins/examples/counter")).await?;
//! manager.call_json("demo", "counter", &serde_json::json!({"add": 2})).await?;
//! // ... edit plugins/examples/counter/src/lib.rs ...
//! let report = manager.hot_reload("demo").await?;
//! for s in &report.swapped {
//!     println!("{} {:?} -> {}", s.module, s.from, s.to);
//! }
//! manager.rollback("demo", "counter", 1).await?;
//! while let Ok(event) = events.try_recv() {
//!     if let EventKind::Swapped { module, .. } = &event.kind {
//!         println!("swapped {module}");
//!     }
//! }
//! # Ok(()) }
//! ```

mod autoreload;
mod cache;
mod config;
mod error;
mod event;
mod handle;
mod manager;
mod plan;
mod store;
mod supervise;
mod swap;
mod types;
pub mod wire;
mod workdir;

pub use cache::CacheStats;
pub use config::Config;
pub use error::{Error, ErrorClass, ErrorKind, Recovery, Result};
pub use event::{Event, EventKind, EventStream};
pub use handle::{SandboxEvents, SandboxHandle};
pub use manager::{Manager, ManagerBuilder};
pub use store::CheckpointStore;
pub use types::{
    CallRequest, Durability, IntoSandboxId, ModuleStatus, ReloadReport, SandboxId, SandboxInfo,
    SandboxSpec, Status, Swapped, VersionInfo,
};

pub use sandbox_compiler as compiler;
pub use sandbox_isolate as isolate;
pub use sandbox_monitor as monitor;
pub use sandbox_security as security;
pub use sandbox_versions as versions;
pub use sandbox_watch as watch;
