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

#[test]
fn runtime_errors_say_what_happened_and_what_to_do() {
    use sandbox_core::compiler::{Diagnostic, Level};
    use sandbox_core::isolate::{Error as I, PluginErrorKind, SwapStage};

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
            resource: "address space".into(),
            usage: "498 MiB of address space in use of its 512 MiB".into(),
            limit: "memory_bytes".into(),
        }),
        Error::Isolate(I::Exhausted {
            action: "cannot load `/cache/libcounter.so`".into(),
            resource: "file descriptors".into(),
            usage: "255 of its 256 open files in use; a module keeps files open".into(),
            limit: "open_files".into(),
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
