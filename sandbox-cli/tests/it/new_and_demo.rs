//! `sandbox new` and `sandbox demo`.

use serde_json::json;

use crate::host::{sandbox, Host, BUILD};

#[test]
fn new_scaffolds_a_plugin_that_builds_and_loads_with_no_edits() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("greeter");
    let out = sandbox().arg("new").arg(&target).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(target.join("Cargo.toml").is_file() && target.join("src/lib.rs").is_file());
    let mut h = Host::run(&target, &[]);
    let r = h.request(
        json!({"op": "call", "module": "greeter", "input": {"text": "hi"}}),
        BUILD,
    );
    assert_eq!(r["output"], json!({"echo": "hi", "seen": 1}), "{r}");
    assert_eq!(h.quit(), 0);

    // A second `new` into a non-empty folder is refused.
    let out = sandbox().arg("new").arg(&target).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn demo_walks_through_create_swap_broken_edit_and_rollback() {
    let out = sandbox().arg("demo").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        r#"{"add": 2} -> {"calls":2,"value":7}"#,
        "swapped `counter` v1 -> v2",
        r#"{"add": 3} -> {"calls":3,"value":13}"#,
        "reload refused (compile)",
        r#"{"add": 1} -> {"calls":4,"value":15}"#,
        "rolled `counter` back v2 -> v1",
        r#"{"add": 1} -> {"calls":5,"value":16}"#,
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
