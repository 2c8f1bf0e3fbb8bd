//! The JSON shapes of errors and events that every host front end speaks:
//! `sandbox run`'s JSON lines and `sandbox serve`'s HTTP API and event
//! stream use these, so a client reads the same objects from both.
//!
//! - error: `{"kind", "class", "recovery", "message", "diagnostics"?}`
//!   ([`error_object`]); `diagnostics` only for errors that carry compiler
//!   diagnostics, each `{level, message, file, line, column, rendered}`.
//! - event: `{"type": "event", "event": NAME, "sandbox", "at", ...fields}`
//!   ([`event_object`]).

use serde_json::{json, Value};

use crate::{Error, Event};

/// The error object of `e`: `{"kind", "class", "recovery", "message",
/// "diagnostics"?}`.
pub fn error_object(e: &Error) -> Value {
    let mut error = json!({
        "kind": text(serde_json::to_value(e.kind()).ok(), "system"),
        "class": text(serde_json::to_value(e.class()).ok(), "system"),
        "recovery": text(serde_json::to_value(e.recovery()).ok(), "escalate"),
        "message": e.to_string(),
    });
    if !e.diagnostics().is_empty() {
        error["diagnostics"] = e
            .diagnostics()
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
            .collect();
    }
    error
}

/// An error object made by a front end itself (a malformed request, a
/// missing token): the same fields as [`error_object`]'s.
pub fn error_fields(kind: &str, class: &str, recovery: &str, message: &str) -> Value {
    json!({ "kind": kind, "class": class, "recovery": recovery, "message": message })
}

/// The event object of `event`: `{"type": "event", "event": NAME,
/// "sandbox", "at", ...fields}`.
pub fn event_object(event: &Event) -> Value {
    let mut v = serde_json::to_value(event)
        .unwrap_or_else(|e| json!({ "event": "unserializable", "message": e.to_string() }));
    if let Value::Object(map) = &mut v {
        map.insert("type".into(), Value::String("event".into()));
    }
    v
}

/// A serialized enum's text, or `default` when it is not a string.
fn text(value: Option<Value>, default: &str) -> Value {
    match value {
        Some(Value::String(s)) => Value::String(s),
        _ => Value::String(default.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_object_has_the_protocol_fields() {
        let e = Error::DuplicateSandbox {
            id: crate::SandboxId::new("x").unwrap(),
        };
        let v = error_object(&e);
        assert_eq!(v["kind"], "bad_request", "{v}");
        assert_eq!(v["class"], "request");
        assert_eq!(v["recovery"], "fix_request");
        assert!(v["message"].as_str().unwrap().contains("`x`"));
        assert!(v.get("diagnostics").is_none());
    }
}
