//! `score`: `{"text": s}` → `{"tokens": n, "score": x}`: asks `tokenize`
//! for the tokens, then scores them (longer words weigh more). Keeps a
//! count of texts scored as its state.

use sandbox_plugin::{export_plugin, json, state, Host, Plugin, Result};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Score {
    scored: u64,
}

#[derive(Deserialize)]
struct Tokens {
    tokens: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    scored: u64,
}

impl Plugin for Score {
    const NAME: &'static str = "score";
    const DEPENDENCIES: &'static [&'static str] = &["tokenize"];

    fn handle(&mut self, host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let input: serde_json::Value = json::decode(request)?;
        let Tokens { tokens } = host.call_json("tokenize", &input)?;
        let score: usize = tokens.iter().map(|t| t.chars().count()).sum();
        self.scored += 1;
        json::encode(&serde_json::json!({ "tokens": tokens.len(), "score": score, "scored": self.scored }))
    }

    fn save_state(&mut self) -> Result<Vec<u8>> {
        state::save(&Saved { scored: self.scored })
    }

    fn restore_state(&mut self, _host: &Host<'_>, bytes: &[u8], from_schema: u32) -> Result<()> {
        self.scored = state::load::<Saved>(bytes, from_schema, Self::SCHEMA)?.scored;
        Ok(())
    }
}

export_plugin!(Score);
