//! `Config::checkpoint_store` and `SandboxSpec::restore_from`: every
//! checkpoint reaches the store (in-process sandboxes too), an every-call
//! reply waits for it, and a sandbox created again starts from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use sandbox_core::isolate::SavedState;
use sandbox_core::{CheckpointStore, Durability, Manager, SandboxId, SandboxSpec};
use sandbox_testkit::{example_dir, test_config, unique_id};
use serde_json::json;

/// The last checkpoint of each sandbox, and how many were stored.
#[derive(Debug, Default)]
struct Memory {
    last: Mutex<BTreeMap<String, Vec<(String, SavedState)>>>,
    stores: Mutex<u32>,
}

impl CheckpointStore for Memory {
    fn store(&self, sandbox: &SandboxId, states: &[(String, SavedState)]) -> std::io::Result<()> {
        self.last
            .lock()
            .insert(sandbox.to_string(), states.to_vec());
        *self.stores.lock() += 1;
        Ok(())
    }
}

/// What the stored counter state says its value is.
fn stored_value(store: &Memory, id: &SandboxId) -> i64 {
    let last = store.last.lock();
    let states = last.get(id.as_str()).expect("a checkpoint of the sandbox");
    let (_, state) = states
        .iter()
        .find(|(m, _)| m == "counter")
        .expect("the counter's state");
    let v: serde_json::Value = serde_json::from_slice(&state.bytes).expect("counter state is JSON");
    v["value"].as_i64().expect("a value")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_replies_after_the_store_and_a_new_sandbox_restores_from_it() {
    let scratch = tempfile::tempdir().unwrap();
    let store = Arc::new(Memory::default());
    let config = sandbox_core::Config {
        checkpoint_store: Some(store.clone()),
        ..test_config(scratch.path())
    };
    let manager = Manager::new(config).unwrap();
    let id = unique_id("store");
    // In-process: checkpointed because a store is configured.
    let spec = SandboxSpec::trusted(example_dir("counter")).durability(Durability::EveryCall);
    tokio::time::timeout(crate::BUILD, manager.create(id.clone(), spec))
        .await
        .unwrap()
        .unwrap();
    assert!(*store.stores.lock() >= 1, "the created state is stored");
    for n in 1..=3 {
        let out = manager
            .call_json(id.as_str(), "counter", &json!({"add": 1}))
            .await
            .unwrap();
        assert_eq!(out["value"], n);
        assert_eq!(stored_value(&store, &id), n, "stored before the reply");
    }
    manager.destroy(id.as_str()).await.unwrap();

    // A new manager (a restarted host) starts the sandbox from the store.
    let again = Manager::new(test_config(scratch.path())).unwrap();
    let saved = store.last.lock().get(id.as_str()).cloned().unwrap();
    let spec = SandboxSpec::trusted(example_dir("counter")).restore_from(saved);
    tokio::time::timeout(crate::BUILD, again.create(id.clone(), spec))
        .await
        .unwrap()
        .unwrap();
    let out = again
        .call_json(id.as_str(), "counter", &json!({"add": 1}))
        .await
        .unwrap();
    assert_eq!(out["value"], 4, "restored through restore_state: {out}");

    // A state of a newer schema than the module reads is refused, and the
    // create leaves nothing behind.
    let newer = vec![(
        "counter".to_owned(),
        SavedState {
            schema: 99,
            bytes: b"{}".to_vec(),
        },
    )];
    let other = unique_id("store");
    let spec = SandboxSpec::trusted(example_dir("counter")).restore_from(newer);
    assert!(again.create(other.clone(), spec).await.is_err());
    assert!(again.info(other.as_str()).is_err());
}
