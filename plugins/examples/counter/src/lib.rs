//! A stateful counter: `{"add": n}` adds `n` to a running total and answers
//! `{"value": total}`; `{}` reads the total.
//!
//! State schema history:
//! - 1: `{"total": n}`
//! - 2: `{"value": n, "calls": c}` (adds a call count); `restore_state`
//!   migrates schema 1 state.

use sandbox_plugin::{export_plugin, json, state, Error, Host, Plugin, Result};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Counter {
    value: i64,
    calls: u64,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    add: i64,
}

#[derive(Serialize)]
struct Response {
    value: i64,
    calls: u64,
}

/// Schema 1 state, kept to migrate from.
#[derive(Deserialize)]
struct StateV1 {
    total: i64,
}

/// Schema 2 state.
#[derive(Serialize, Deserialize)]
struct StateV2 {
    value: i64,
    calls: u64,
}

impl Plugin for Counter {
    const NAME: &'static str = "counter";
    const SCHEMA: u32 = 2;

    fn handle(&mut self, _host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let Request { add } = json::decode(request)?;
        self.value = self
            .value
            .checked_add(add)
            .ok_or_else(|| Error::bad_request(format!("adding {add} overflows the total {}", self.value)))?;
        self.calls += 1;
        json::encode(&Response { value: self.value, calls: self.calls })
    }

    fn save_state(&mut self) -> Result<Vec<u8>> {
        state::save(&StateV2 { value: self.value, calls: self.calls })
    }

    fn restore_state(&mut self, host: &Host<'_>, bytes: &[u8], from_schema: u32) -> Result<()> {
        match from_schema {
            1 => {
                let old: StateV1 = state::decode(bytes)?;
                host.info(format_args!("migrating counter state from schema 1 (total {})", old.total));
                self.value = old.total;
                self.calls = 0;
            }
            2 => {
                let s: StateV2 = state::decode(bytes)?;
                self.value = s.value;
                self.calls = s.calls;
            }
            other => return Err(Error::state(format!("counter cannot read state schema {other}; it knows 1 and 2"))),
        }
        Ok(())
    }
}

export_plugin!(Counter);
