//! Durable checkpoints: the hook a host uses to keep module state across
//! its own restarts ([`CheckpointStore`]), and what a sandbox starts from
//! when it is created again ([`SandboxSpec::restore_from`](crate::SandboxSpec::restore_from)).
//!
//! Without a store the manager keeps checkpoints in memory only: they are
//! what a crashed worker restarts from, and they die with the host. A host
//! that must survive its own death (`sandbox serve`, a supervised service)
//! sets [`Config::checkpoint_store`](crate::Config::checkpoint_store); every
//! checkpoint is then handed to the store before it counts as taken.

use std::fmt::Debug;

use sandbox_isolate::SavedState;

use crate::SandboxId;

/// Keeps every checkpoint the [`Manager`](crate::Manager) takes somewhere
/// that outlives the host (a file, a database).
///
/// # When it is called
///
/// [`store`](Self::store) (required) is called once per checkpoint, with
/// the state of every module of the sandbox, from a blocking thread, one
/// call at a time per sandbox and in the order the checkpoints were taken
/// (a later call always holds newer state). A checkpoint is taken:
///
/// - when a sandbox is created (the state it starts from),
/// - after every committed swap (reload, rollback),
/// - on the sandbox's [`Durability`](crate::Durability) interval, or, under
///   [`Durability::EveryCall`](crate::Durability::EveryCall), after a call
///   and **before its reply is handed back**: the reply waits for `store`
///   to return, so a store that writes durably before returning loses no
///   acknowledged call even if the host is killed.
///
/// With a store configured, in-process sandboxes are checkpointed the same
/// way as process sandboxes (without one they keep no saved state, since a
/// crash there is the host's).
///
/// An error fails the operation that needed the checkpoint when one waits
/// for it (an `EveryCall` call answers with a `system` error: its effect
/// happened, but is not durable); interval checkpoints only log it and try
/// again on the next tick. A sandbox that is destroyed is not forgotten by
/// the manager: the host removes what it stored for it.
///
/// To start a sandbox again from what was stored, pass the states to
/// [`SandboxSpec::restore_from`](crate::SandboxSpec::restore_from): each
/// module's new instance gets them through its `restore_state`, with the
/// schema they were written under (so a newer version migrates them, and an
/// older one refuses them).
///
/// # Example
///
/// A store that keeps the last checkpoint of each sandbox in memory (a real
/// one writes to disk and syncs before returning):
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
///
/// use sandbox_core::isolate::SavedState;
/// use sandbox_core::{CheckpointStore, Config, SandboxId};
///
/// #[derive(Debug, Default)]
/// struct Memory(Mutex<HashMap<String, Vec<(String, SavedState)>>>);
///
/// impl CheckpointStore for Memory {
///     fn store(&self, sandbox: &SandboxId, states: &[(String, SavedState)]) -> std::io::Result<()> {
///         self.0.lock().unwrap().insert(sandbox.to_string(), states.to_vec());
///         Ok(())
///     }
/// }
///
/// let config = Config {
///     checkpoint_store: Some(Arc::new(Memory::default())),
///     ..Config::default()
/// };
/// # let _ = config;
/// ```
pub trait CheckpointStore: Send + Sync + Debug {
    /// Keeps `states` (module name → state and the schema it was written
    /// under) as the latest checkpoint of `sandbox`, replacing the one
    /// before. Returns once it is durable.
    fn store(&self, sandbox: &SandboxId, states: &[(String, SavedState)]) -> std::io::Result<()>;
}

impl<T: CheckpointStore + ?Sized> CheckpointStore for std::sync::Arc<T> {
    fn store(&self, sandbox: &SandboxId, states: &[(String, SavedState)]) -> std::io::Result<()> {
        (**self).store(sandbox, states)
    }
}
