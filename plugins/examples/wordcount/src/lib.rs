//! A pure module: `{"text": "..."}` → `{"words": w, "lines": l, "chars": c}`.
//!
//! It declares itself `PURE`, so a host may answer a repeated request from
//! its result cache without calling it. It has no state (`type State = ()`).

use sandbox_plugin::{export_plugin, Host, JsonPlugin, Result};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct WordCount;

#[derive(Deserialize)]
pub struct Request {
    text: String,
}

#[derive(Serialize)]
pub struct Counts {
    words: usize,
    lines: usize,
    chars: usize,
}

impl JsonPlugin for WordCount {
    const NAME: &'static str = "wordcount";
    const PURE: bool = true;
    type Request = Request;
    type Response = Counts;
    type State = ();

    fn handle(&mut self, _host: &Host<'_>, Request { text }: Request) -> Result<Counts> {
        Ok(Counts {
            words: text.split_whitespace().count(),
            lines: text.lines().count(),
            chars: text.chars().count(),
        })
    }
}

export_plugin!(WordCount);
