//! `tokenize`: `{"text": s}` → `{"tokens": [...]}` (lowercased words).
//! The first module of the `pipeline` chain; depends on nothing.

use sandbox_plugin::{export_plugin, json, Host, Plugin, Result};
use serde::Deserialize;

#[derive(Default)]
pub struct Tokenize;

#[derive(Deserialize)]
struct Request {
    text: String,
}

impl Plugin for Tokenize {
    const NAME: &'static str = "tokenize";
    const PURE: bool = true;

    fn handle(&mut self, _host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let Request { text } = json::decode(request)?;
        let tokens: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|t| !t.is_empty())
            .map(str::to_lowercase)
            .collect();
        json::encode(&serde_json::json!({ "tokens": tokens }))
    }
}

export_plugin!(Tokenize);
