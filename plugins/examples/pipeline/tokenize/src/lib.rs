//! `tokenize`: `{"text": s}` → `{"tokens": [...]}` (lowercased words).
//! The first module of the `pipeline` chain; depends on nothing.

use sandbox_plugin::{export_plugin, Host, JsonPlugin, Result};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Tokenize;

#[derive(Deserialize)]
pub struct Request {
    text: String,
}

#[derive(Serialize)]
pub struct Tokens {
    tokens: Vec<String>,
}

impl JsonPlugin for Tokenize {
    const NAME: &'static str = "tokenize";
    const PURE: bool = true;
    type Request = Request;
    type Response = Tokens;
    type State = ();

    fn handle(&mut self, _host: &Host<'_>, Request { text }: Request) -> Result<Tokens> {
        let tokens = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|t| !t.is_empty())
            .map(str::to_lowercase)
            .collect();
        Ok(Tokens { tokens })
    }
}

export_plugin!(Tokenize);
