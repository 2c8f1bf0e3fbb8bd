//! `score`: `{"text": s}` → `{"tokens": n, "score": x, "scored": k}`: asks
//! `tokenize` for the tokens, then scores them (longer words weigh more).
//! Keeps a count of texts scored as its state.

use sandbox_plugin::{export_plugin, Host, JsonPlugin, Result};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Score {
    scored: u64,
}

#[derive(Deserialize)]
struct Tokens {
    tokens: Vec<String>,
}

#[derive(Serialize)]
pub struct Scored {
    tokens: usize,
    score: usize,
    scored: u64,
}

#[derive(Serialize, Deserialize, Default)]
pub struct Saved {
    scored: u64,
}

impl JsonPlugin for Score {
    const NAME: &'static str = "score";
    const DEPENDENCIES: &'static [&'static str] = &["tokenize"];
    /// The request is passed on to `tokenize` as it came.
    type Request = serde_json::Value;
    type Response = Scored;
    type State = Saved;

    fn handle(&mut self, host: &Host<'_>, input: serde_json::Value) -> Result<Scored> {
        let Tokens { tokens } = host.call_json("tokenize", &input)?;
        let score = tokens.iter().map(|t| t.chars().count()).sum();
        self.scored += 1;
        Ok(Scored { tokens: tokens.len(), score, scored: self.scored })
    }

    fn save_state(&self) -> Result<Saved> {
        Ok(Saved { scored: self.scored })
    }

    fn restore_state(&mut self, _host: &Host<'_>, saved: Saved) -> Result<()> {
        self.scored = saved.scored;
        Ok(())
    }
}

export_plugin!(Score);
