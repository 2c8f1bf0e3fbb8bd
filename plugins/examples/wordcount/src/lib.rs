//! A pure module: `{"text": "..."}` → `{"words": w, "lines": l, "chars": c}`.
//!
//! It declares itself `PURE`, so a host may answer a repeated request from
//! its result cache without calling it.

use sandbox_plugin::{export_plugin, json, Host, Plugin, Result};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct WordCount;

#[derive(Deserialize)]
struct Request {
    text: String,
}

#[derive(Serialize)]
struct Counts {
    words: usize,
    lines: usize,
    chars: usize,
}

impl Plugin for WordCount {
    const NAME: &'static str = "wordcount";
    const PURE: bool = true;

    fn handle(&mut self, _host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let Request { text } = json::decode(request)?;
        json::encode(&Counts {
            words: text.split_whitespace().count(),
            lines: text.lines().count(),
            chars: text.chars().count(),
        })
    }
}

export_plugin!(WordCount);
