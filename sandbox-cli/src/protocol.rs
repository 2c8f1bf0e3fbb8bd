//! The JSON-lines protocol of `sandbox run`.
//!
//! One request object per line on stdin, one reply or event object per line
//! on stdout:
//!
//! - request: `{"op": "call" | "info" | "reload" | "versions" | "rollback" |
//!   "restart" | "quit", "id": <any JSON, echoed>, ...}`
//! - reply: `{"type": "reply", "id": .., "output": ..}`
//! - error: `{"type": "error", "id": .., "error": {"kind", "class",
//!   "message", "recovery", "diagnostics"?}}`
//! - event: `{"type": "event", "event": "<name>", "sandbox": .., "at": ..,
//!   ...fields}`; events caused by a request are written before its reply.
//!
//! Lines are raw bytes: one that is not UTF-8, not JSON or not a request
//! gets a `bad_request` error echoing its `id` when that can be read (see
//! [`parse`]); one over [`MAX_LINE`] bytes is skipped ([`too_long`]).

use serde::Deserialize;
use serde_json::{json, Value};

/// One request line.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Call a module.
    Call {
        /// Echoed in the reply.
        id: Option<Value>,
        /// Module name.
        module: String,
        /// The JSON request for the module.
        #[serde(default)]
        input: Value,
    },
    /// Describe the sandbox.
    Info {
        /// Echoed in the reply.
        id: Option<Value>,
    },
    /// Rebuild and swap what changed.
    Reload {
        /// Echoed in the reply.
        id: Option<Value>,
    },
    /// List a module's retained versions.
    Versions {
        /// Echoed in the reply.
        id: Option<Value>,
        /// Module name.
        module: String,
    },
    /// Swap a module to a retained version.
    Rollback {
        /// Echoed in the reply.
        id: Option<Value>,
        /// Module name.
        module: String,
        /// Version number.
        version: u32,
    },
    /// Rebuild every instance from its current version, keeping state.
    Restart {
        /// Echoed in the reply.
        id: Option<Value>,
    },
    /// Clean up and exit 0.
    Quit {
        /// Echoed in the reply.
        id: Option<Value>,
    },
}

impl Request {
    /// The request's id.
    pub fn id(&self) -> Option<Value> {
        match self {
            Self::Call { id, .. }
            | Self::Info { id }
            | Self::Reload { id }
            | Self::Versions { id, .. }
            | Self::Rollback { id, .. }
            | Self::Restart { id }
            | Self::Quit { id } => id.clone(),
        }
    }
}

/// The longest request line read whole, in bytes (1 MiB). The rest of a
/// longer line is skipped and the line is answered with a `bad_request`.
pub const MAX_LINE: usize = 1 << 20;

/// The ops, as error messages list them.
const OPS: &str = "ops are call, info, reload, versions, rollback, restart, quit";

/// Parses one line (raw bytes, without its newline); on failure returns the
/// error line to print, echoing the line's top-level `id` when it can be read.
pub fn parse(line: &[u8]) -> Result<Request, Value> {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(e) => {
            let message = format!(
                "the line is not valid UTF-8 (an invalid byte at offset {}); send one JSON object per line, encoded as UTF-8",
                e.valid_up_to()
            );
            return Err(bad_request(
                readable_id(&String::from_utf8_lossy(line)),
                &message,
            ));
        }
    };
    serde_json::from_str(text).map_err(|e| match serde_json::from_str::<Value>(text) {
        Ok(value) => bad_request(
            value.get("id").cloned(),
            &format!("bad request: {e}; {OPS}"),
        ),
        Err(_) => bad_request(
            scan_id(text),
            &format!("the line is not JSON ({e}); send one JSON object per line"),
        ),
    })
}

/// The error line for a line longer than [`MAX_LINE`] bytes (`len` in all),
/// whose first [`MAX_LINE`] bytes are `head`.
pub fn too_long(head: &[u8], len: usize) -> Value {
    let message = format!(
        "the line is {len} bytes long, over the limit of {MAX_LINE} bytes; it was skipped — send smaller requests (one JSON object per line)"
    );
    bad_request(readable_id(&String::from_utf8_lossy(head)), &message)
}

fn bad_request(id: Option<Value>, message: &str) -> Value {
    error_line(id, "bad_request", "request", "fix_request", message, None)
}

/// The top-level `id` of a line that may not be (whole, valid) JSON.
fn readable_id(text: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => value.get("id").cloned(),
        Err(_) => scan_id(text),
    }
}

/// Reads a JSON object's members in order up to its `id` and returns the
/// id's value: the id of a line cut short or broken after its id is still
/// echoed. `None` when the object breaks before its id.
fn scan_id(text: &str) -> Option<Value> {
    /// One JSON value at the start of `s` and the bytes it took.
    fn value_at(s: &str) -> Option<(Value, usize)> {
        let mut values = serde_json::Deserializer::from_str(s).into_iter::<Value>();
        let value = values.next()?.ok()?;
        Some((value, values.byte_offset()))
    }
    let mut rest = text.trim_start().strip_prefix('{')?;
    loop {
        let (key, used) = value_at(rest)?;
        let Value::String(key) = key else { return None };
        rest = rest[used..].trim_start().strip_prefix(':')?;
        let (value, used) = value_at(rest)?;
        if key == "id" {
            return Some(value);
        }
        rest = rest[used..].trim_start().strip_prefix(',')?;
    }
}

/// A reply line.
pub fn reply(id: Option<Value>, output: Value) -> Value {
    json!({ "type": "reply", "id": id, "output": output })
}

/// An error line.
pub fn error_line(
    id: Option<Value>,
    kind: &str,
    class: &str,
    recovery: &str,
    message: &str,
    diagnostics: Option<Value>,
) -> Value {
    let mut error = sandbox_core::wire::error_fields(kind, class, recovery, message);
    if let Some(d) = diagnostics {
        error["diagnostics"] = d;
    }
    json!({ "type": "error", "id": id, "error": error })
}

/// The error line for a `Manager` error (the shared error object of
/// [`sandbox_core::wire`]).
pub fn from_error(id: Option<Value>, e: &sandbox_core::Error) -> Value {
    json!({ "type": "error", "id": id, "error": sandbox_core::wire::error_object(e) })
}

/// An event line (the shared event object of [`sandbox_core::wire`]).
pub fn event_line(event: &sandbox_core::Event) -> Value {
    sandbox_core::wire::event_object(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_get_a_bad_request_error() {
        let e = parse(b"{not json").unwrap_err();
        assert_eq!(e["type"], "error");
        assert_eq!(e["error"]["kind"], "bad_request");
        let e = parse(br#"{"op":"fly","id":7}"#).unwrap_err();
        assert_eq!(
            e["id"], 7,
            "the id of a well-formed but unknown request is echoed"
        );
        let e = parse(br#"{"op":"call","id":8}"#).unwrap_err();
        assert!(
            e["error"]["message"].as_str().unwrap().contains("module"),
            "{e}"
        );
    }

    #[test]
    fn a_readable_id_is_echoed_from_a_broken_line() {
        for (line, id) in [
            (&br#"{"id": 9, "op": "call", "module": "#[..], json!(9)),
            (
                br#"{"op":"call","id":{"n":[1,"x"]},"input":{oops}}"#,
                json!({"n": [1, "x"]}),
            ),
            (b"{\"id\":\"a\",\"op\":\"info\",\"x\":\"\xff\"}", json!("a")),
            (b"{\"x\":\"\xff\",\"id\":3}", json!(3)),
        ] {
            let e = parse(line).unwrap_err();
            assert_eq!(e["id"], id, "{}: {e}", String::from_utf8_lossy(line));
            assert_eq!(e["error"]["kind"], "bad_request");
        }
        for line in [
            &br#"{"op": oops, "id": 4}"#[..],
            b"[1,2]",
            b"\xff",
            b"",
            b"{",
        ] {
            let e = parse(line).unwrap_err();
            assert!(e["id"].is_null(), "no readable id: {e}");
        }
    }

    #[test]
    fn invalid_utf8_says_where_and_too_long_says_the_limit() {
        let e = parse(b"{\"op\":\"info\"}\xfe").unwrap_err();
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("not valid UTF-8") && message.contains("offset 13"),
            "{e}"
        );
        let e = too_long(br#"{"id":5,"op":"call","input":"xxxx"#, MAX_LINE + 10);
        assert_eq!(e["id"], 5);
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(&(MAX_LINE + 10).to_string()), "{e}");
        assert!(message.contains(&MAX_LINE.to_string()), "{e}");
    }

    #[test]
    fn requests_parse() {
        assert!(matches!(
            parse(br#"{"op":"call","module":"counter","input":{"add":5},"id":1}"#),
            Ok(Request::Call { ref module, .. }) if module == "counter"
        ));
        assert!(matches!(
            parse(br#"{"op":"rollback","module":"m","version":2}"#),
            Ok(Request::Rollback { version: 2, .. })
        ));
        assert!(matches!(
            parse(b"{\"op\":\"quit\"}\r"),
            Ok(Request::Quit { id: None })
        ));
    }
}
