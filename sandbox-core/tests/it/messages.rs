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

#[test]
fn runtime_errors_say_what_happened_and_what_to_do() {
    use sandbox_core::compiler::{Diagnostic, Level};
    use sandbox_core::isolate::{Error as I, Limit, PluginErrorKind, SwapStage};

    let id = SandboxId::new("demo").unwrap();
    let limit = Duration::from_secs(10);
    let timeout = |stopped| I::Timeout {
        module: "counter".into(),
        after: Duration::from_millis(200),
        stopped,
    };
    let errors = vec![
        // The host restarts a crashed worker by itself.
        Error::Isolate(I::WorkerDied {
            cause: "killed by signal 9 (SIGKILL)".into(),
        }),
        // The plugin said the request is malformed: fix it, do not retry it.
        Error::Isolate(I::Plugin {
            module: "counter".into(),
            kind: PluginErrorKind::BadRequest,
            message: "request is not valid JSON: expected value at line 1 column 2".into(),
        }),
        // Said once.
        Error::from(sandbox_core::compiler::Error::Compile {
            diagnostics: vec![Diagnostic {
                level: Level::Error,
                message: "cannot find value `x` in this scope".into(),
                file: Some("src/lib.rs".into()),
                line: Some(3),
                column: Some(5),
                rendered: None,
            }],
        }),
        // A worker is killed, in-process code is abandoned.
        Error::Isolate(timeout(true)),
        Error::Isolate(timeout(false)),
        Error::Isolate(I::Swap {
            module: "counter".into(),
            version: 2,
            stage: SwapStage::Init,
            source: Box::new(I::Timeout {
                module: "counter".into(),
                after: limit,
                stopped: false,
            }),
        }),
        Error::Isolate(I::Abandoned {
            module: "counter".into(),
            stage: SwapStage::Save,
            after: limit,
        }),
        // Out of address space or descriptors: a limit, not the source.
        Error::Isolate(I::Exhausted {
            action: "cannot load `/cache/libcounter.so`".into(),
            limit: Limit::AddressSpace,
            usage: "498 MiB of address space in use of its 512 MiB".into(),
        }),
        Error::Isolate(I::Exhausted {
            action: "cannot load `/cache/libcounter.so`".into(),
            limit: Limit::OpenFiles,
            usage: "255 of its 256 open files in use; a module keeps files open".into(),
        }),
        // A worker's own error, with its advice once.
        Error::Isolate(I::InWorker {
            message: "the worker failed while running a request".into(),
        }),
        Error::SchemaDowngrade {
            id,
            module: "counter".into(),
            version: 1,
            from: 3,
            to: 1,
        },
    ];
    let text: Vec<String> = errors.iter().map(describe).collect();
    insta::assert_snapshot!(text.join("\n"));
}

/// The `kind` of an error object and of a `failed` event, as the README's
/// `run` protocol lists them.
const DOCUMENTED_KINDS: [&str; 14] = [
    "bad_request",
    "not_found",
    "compile",
    "dependency",
    "version",
    "plugin",
    "swap",
    "timeout",
    "limit_exceeded",
    "crashed",
    "security",
    "watch",
    "not_running",
    "system",
];

#[test]
fn error_kinds_serialize_to_the_documented_names_and_back() {
    use sandbox_core::ErrorKind;

    assert_eq!(ErrorKind::ALL.len(), DOCUMENTED_KINDS.len());
    for (kind, name) in ErrorKind::ALL.into_iter().zip(DOCUMENTED_KINDS) {
        let json = serde_json::to_value(kind).unwrap();
        assert_eq!(json, serde_json::json!(name));
        assert_eq!(serde_json::from_value::<ErrorKind>(json).unwrap(), kind);
        assert_eq!(name.parse::<ErrorKind>(), Ok(kind));
        assert_eq!(kind.to_string(), name);
    }
    assert!("resource".parse::<ErrorKind>().is_err());
}

#[test]
fn events_carry_kinds_and_limits_as_their_protocol_names() {
    use sandbox_core::isolate::Limit;
    use sandbox_core::{ErrorKind, EventKind};

    let json = |kind: EventKind| serde_json::to_value(kind).unwrap();
    let failed = json(EventKind::Failed {
        operation: "reload".into(),
        kind: ErrorKind::LimitExceeded,
        message: "out of address space".into(),
    });
    assert_eq!(failed["event"], "failed");
    assert_eq!(failed["kind"], "limit_exceeded");
    let exceeded = json(EventKind::LimitExceeded {
        resource: Limit::AddressSpace,
        value: 450.0,
        limit: 512.0,
    });
    assert_eq!(exceeded["resource"], "address_space");
    let crashed = json(EventKind::Crashed {
        cause: "address space limit (RLIMIT_AS) exhausted (killed by signal 6 (SIGABRT))".into(),
        signal: Some(6),
        exit_code: None,
        limit: Some(Limit::AddressSpace),
    });
    assert_eq!(crashed["limit"], "address_space");
    let unexplained = json(EventKind::Crashed {
        cause: "killed by signal 9 (SIGKILL)".into(),
        signal: Some(9),
        exit_code: None,
        limit: None,
    });
    assert_eq!(unexplained["limit"], serde_json::Value::Null);
}
