//! `report`: `{"text": s}` → `{"summary": "...", "tokens": n, "score": x}`:
//! asks `score`, which asks `tokenize`. The last module of the `pipeline`
//! chain.

use sandbox_plugin::{export_plugin, Host, JsonPlugin, Result};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Report;

#[derive(Deserialize)]
struct Scored {
    tokens: usize,
    score: usize,
}

#[derive(Serialize)]
pub struct Summary {
    summary: String,
    tokens: usize,
    score: usize,
}

impl JsonPlugin for Report {
    const NAME: &'static str = "report";
    const DEPENDENCIES: &'static [&'static str] = &["score"];
    /// The request is passed on to `score` as it came.
    type Request = serde_json::Value;
    type Response = Summary;
    type State = ();

    fn handle(&mut self, host: &Host<'_>, input: serde_json::Value) -> Result<Summary> {
        let Scored { tokens, score } = host.call_json("score", &input)?;
        host.debug(format_args!("report: {tokens} tokens, score {score}"));
        Ok(Summary { summary: format!("{tokens} tokens, score {score}"), tokens, score })
    }
}

export_plugin!(Report);
