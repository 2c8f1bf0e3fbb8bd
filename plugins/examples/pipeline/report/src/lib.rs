//! `report`: `{"text": s}` → `{"summary": "..."}`: asks `score`, which asks
//! `tokenize`. The last module of the `pipeline` chain.

use sandbox_plugin::{export_plugin, json, Host, Plugin, Result};
use serde::Deserialize;

#[derive(Default)]
pub struct Report;

#[derive(Deserialize)]
struct Scored {
    tokens: usize,
    score: usize,
}

impl Plugin for Report {
    const NAME: &'static str = "report";
    const DEPENDENCIES: &'static [&'static str] = &["score"];

    fn handle(&mut self, host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let input: serde_json::Value = json::decode(request)?;
        let Scored { tokens, score } = host.call_json("score", &input)?;
        host.debug(format_args!("report: {tokens} tokens, score {score}"));
        json::encode(&serde_json::json!({
            "summary": format!("{tokens} tokens, score {score}"),
            "tokens": tokens,
            "score": score,
        }))
    }
}

export_plugin!(Report);
