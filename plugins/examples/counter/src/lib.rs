//! A stateful counter: `{"add": n}` adds `n` to a running total and answers
//! `{"value": total, "calls": c}`; `{}` reads the total.
//!
//! A [`JsonPlugin`]: requests, responses and state are typed, and the plugin
//! API decodes and encodes them (a request that is not such JSON is answered
//! with a `bad_request` error before `handle` runs).
//!
//! State schema history:
//! - 1: `{"total": n}`
//! - 2: `{"value": n, "calls": c}` (adds a call count); `migrate` reads
//!   schema 1 state.

use sandbox_plugin::{export_plugin, Error, Host, JsonPlugin, OldState, Result};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Counter {
    value: i64,
    calls: u64,
}

#[derive(Deserialize)]
pub struct Request {
    #[serde(default)]
    add: i64,
}

#[derive(Serialize)]
pub struct Response {
    value: i64,
    calls: u64,
}

/// Schema 1 state, kept to migrate from.
#[derive(Deserialize)]
struct StateV1 {
    total: i64,
}

/// Schema 2 state.
#[derive(Serialize, Deserialize, Default)]
pub struct StateV2 {
    value: i64,
    calls: u64,
}

impl JsonPlugin for Counter {
    const NAME: &'static str = "counter";
    const SCHEMA: u32 = 2;
    type Request = Request;
    type Response = Response;
    type State = StateV2;

    fn handle(&mut self, _host: &Host<'_>, Request { add }: Request) -> Result<Response> {
        self.value = self
            .value
            .checked_add(add)
            .ok_or_else(|| Error::bad_request(format!("adding {add} overflows the total {}", self.value)))?;
        self.calls += 1;
        Ok(Response { value: self.value, calls: self.calls })
    }

    fn save_state(&self) -> Result<StateV2> {
        Ok(StateV2 { value: self.value, calls: self.calls })
    }

    fn restore_state(&mut self, _host: &Host<'_>, state: StateV2) -> Result<()> {
        self.value = state.value;
        self.calls = state.calls;
        Ok(())
    }

    fn migrate(host: &Host<'_>, old: OldState<'_>) -> Result<StateV2> {
        match old.schema() {
            1 => {
                let StateV1 { total } = old.decode()?;
                host.info(format_args!("migrating counter state from schema 1 (total {total})"));
                Ok(StateV2 { value: total, calls: 0 })
            }
            other => Err(Error::state(format!("counter cannot read state schema {other}; it knows 1 and 2"))),
        }
    }
}

export_plugin!(Counter);

#[cfg(test)]
mod tests {
    use sandbox_plugin::testing::{Harness, Snapshot};
    use sandbox_plugin::ErrorKind;
    use serde_json::{json, Value};

    use super::Counter;

    #[test]
    fn adds_keeps_its_state_across_a_swap_and_migrates_schema_1() {
        let mut counter = Harness::<Counter>::restore(Snapshot::json(1, &json!({"total": 4})).unwrap()).unwrap();
        let out: Value = counter.call_json(&json!({"add": 1})).unwrap();
        assert_eq!(out, json!({"value": 5, "calls": 1}));
        counter.swap().unwrap();
        assert_eq!(counter.call(b"{}").unwrap(), br#"{"value":5,"calls":2}"#);
        assert_eq!(counter.call(b"[").unwrap_err().kind(), ErrorKind::BadRequest);
        let err = counter.call(format!(r#"{{"add":{}}}"#, i64::MAX).as_bytes()).unwrap_err();
        assert!(err.message().contains("overflows"), "{err}");
    }
}
