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

/// Parses one line; on failure returns the error line to print.
pub fn parse(line: &str) -> Result<Request, Value> {
    serde_json::from_str(line).map_err(|e| {
        // Echo the id when the line was JSON with an id but a bad shape.
        let id = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("id").cloned());
        let message = if serde_json::from_str::<Value>(line).is_err() {
            format!("the line is not JSON ({e}); send one JSON object per line")
        } else {
            format!(
                "bad request: {e}; ops are call, info, reload, versions, rollback, restart, quit"
            )
        };
        error_line(id, "bad_request", "request", "fix_request", &message, None)
    })
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
    let mut error =
        json!({ "kind": kind, "class": class, "recovery": recovery, "message": message });
    if let Some(d) = diagnostics {
        error["diagnostics"] = d;
    }
    json!({ "type": "error", "id": id, "error": error })
}

/// The error line for a `Manager` error.
pub fn from_error(id: Option<Value>, e: &sandbox_core::Error) -> Value {
    let diagnostics = (!e.diagnostics().is_empty()).then(|| {
        Value::Array(
            e.diagnostics()
                .iter()
                .map(|d| {
                    json!({
                        "level": d.level,
                        "message": d.message,
                        "file": d.file,
                        "line": d.line,
                        "column": d.column,
                        "rendered": d.rendered,
                    })
                })
                .collect(),
        )
    });
    let class = serde_json::to_value(e.class()).unwrap_or(Value::Null);
    let recovery = serde_json::to_value(e.recovery()).unwrap_or(Value::Null);
    error_line(
        id,
        e.kind(),
        class.as_str().unwrap_or("system"),
        recovery.as_str().unwrap_or("escalate"),
        &e.to_string(),
        diagnostics,
    )
}

/// An event line.
pub fn event_line(event: &sandbox_core::Event) -> Value {
    let mut v = serde_json::to_value(event)
        .unwrap_or_else(|e| json!({ "event": "unserializable", "message": e.to_string() }));
    if let Value::Object(map) = &mut v {
        map.insert("type".into(), Value::String("event".into()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_get_a_bad_request_error() {
        let e = parse("{not json").unwrap_err();
        assert_eq!(e["type"], "error");
        assert_eq!(e["error"]["kind"], "bad_request");
        let e = parse(r#"{"op":"fly","id":7}"#).unwrap_err();
        assert_eq!(
            e["id"], 7,
            "the id of a well-formed but unknown request is echoed"
        );
        let e = parse(r#"{"op":"call","id":8}"#).unwrap_err();
        assert!(
            e["error"]["message"].as_str().unwrap().contains("module"),
            "{e}"
        );
    }

    #[test]
    fn requests_parse() {
        assert!(matches!(
            parse(r#"{"op":"call","module":"counter","input":{"add":5},"id":1}"#),
            Ok(Request::Call { ref module, .. }) if module == "counter"
        ));
        assert!(matches!(
            parse(r#"{"op":"rollback","module":"m","version":2}"#),
            Ok(Request::Rollback { version: 2, .. })
        ));
        assert!(matches!(
            parse(r#"{"op":"quit"}"#),
            Ok(Request::Quit { id: None })
        ));
    }
}
