//! What users read: the messages of the errors a host meets most, with
//! their class, kind and recovery (snapshots).

use std::time::Duration;

use sandbox_core::{Error, SandboxId, Status};

fn describe(e: &Error) -> String {
    format!("[{:?} / {} / {:?}] {e}", e.class(), e.kind(), e.recovery())
}

#[test]
fn request_errors_say_what_was_wrong_and_what_to_do() {
    let id = SandboxId::new("demo").unwrap();
    let errors = vec![
        Error::UnknownSandbox {
            id: SandboxId::new("nope").unwrap(),
            known: vec![id.clone()],
        },
        Error::DuplicateSandbox { id: id.clone() },
        SandboxId::new("bad id!").unwrap_err(),
        SandboxId::new("").unwrap_err(),
        Error::SourceMissing {
            path: "/srv/missing".into(),
        },
        Error::NotCargoProject {
            path: "/srv/empty".into(),
        },
        Error::NotRunning {
            id: id.clone(),
            status: Status::Stopping,
            hint: "wait for it to be running, or restart it",
        },
        Error::Timeout {
            id: id.clone(),
            module: "counter".into(),
            after: Duration::from_millis(200),
        },
        Error::NoModules {
            path: "/srv/rlib-only".into(),
        },
        Error::DuplicateModule {
            module: "counter".into(),
            first: "counter_a".into(),
            second: "counter_b".into(),
        },
        Error::Isolate(sandbox_core::isolate::Error::UnknownModule {
            module: "nosuch".into(),
            known: vec!["counter".into()],
        }),
        Error::Isolate(sandbox_core::isolate::Error::UndeclaredDependency {
            caller: "report".into(),
            callee: "tokenize".into(),
        }),
    ];
    let text: Vec<String> = errors.iter().map(describe).collect();
    insta::assert_snapshot!(text.join("\n"));
}
