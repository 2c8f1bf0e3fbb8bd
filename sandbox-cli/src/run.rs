//! `sandbox run DIR`: one sandbox, JSON lines on stdin/stdout.

use std::process::ExitCode;

use anyhow::Context as _;
use sandbox_core::isolate::{Process, WorkerCommand};
use sandbox_core::{Config, EventStream, Manager, SandboxId, SandboxSpec};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::mpsc;

use crate::protocol::{self, Request};
use crate::RunArgs;

/// A sandbox id from a folder name: its usable characters, or `sandbox`.
pub fn id_for(dir: &std::path::Path) -> SandboxId {
    let name: String = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(64)
        .collect();
    SandboxId::new(name)
        .or_else(|_| SandboxId::new("sandbox"))
        .expect("`sandbox` is a valid id")
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let base = match &args.cache_dir {
        Some(dir) => Config::with_cache_root(dir),
        None => Config::default(),
    };
    let config = Config {
        offline: args.offline,
        history: args.history,
        recycle_after_swaps: args.recycle_after,
        max_restarts: args.max_restarts,
        ..base
    };
    let worker = WorkerCommand::current_exe_with([crate::WORKER_SUBCOMMAND])
        .context("finding this executable to run sandbox workers")?;
    let manager = Manager::builder(config)
        .isolator(Process::new(worker).with_pool(args.warm_pool))
        .build()
        .context("starting the sandbox manager")?;
    let id = match &args.id {
        Some(id) => SandboxId::new(id.clone())?,
        None => id_for(&args.dir),
    };
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(write_lines(rx, manager.subscribe()));

    let spec = SandboxSpec::new(&args.dir)
        .isolation(args.isolation())
        .profile(args.profile);
    if let Err(e) = manager.create(id.clone(), spec).await {
        let _ = tx.send(protocol::from_error(None, &e));
        drop(tx);
        let _ = writer.await;
        return Ok(ExitCode::from(2));
    }
    if args.watch {
        if let Err(e) = manager.enable_auto_reload(id.as_str()).await {
            let _ = tx.send(protocol::from_error(None, &e));
            manager.shutdown().await;
            drop(tx);
            let _ = writer.await;
            return Ok(ExitCode::from(2));
        }
    }

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "stdin failed; shutting down");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match protocol::parse(&line) {
            Err(error_line) => {
                let _ = tx.send(error_line);
            }
            Ok(Request::Quit { id: rid }) => {
                while tasks.join_next().await.is_some() {}
                let _ = tx.send(protocol::reply(rid, json!("bye")));
                break;
            }
            Ok(request) => {
                let (manager, id, tx) = (manager.clone(), id.clone(), tx.clone());
                tasks.spawn(async move {
                    let line = handle(&manager, &id, request).await;
                    let _ = tx.send(line);
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    manager.shutdown().await;
    drop(tx);
    let _ = writer.await;
    Ok(ExitCode::SUCCESS)
}

async fn handle(manager: &Manager, id: &SandboxId, request: Request) -> Value {
    let rid = request.id();
    let result: Result<Value, sandbox_core::Error> = async {
        let id = id.as_str();
        match request {
            Request::Call { module, input, .. } => {
                let bytes = serde_json::to_vec(&input).unwrap_or_default();
                let out = manager.call(id, &module, &bytes).await?;
                Ok(serde_json::from_slice(&out)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out).into_owned())))
            }
            Request::Info { .. } => Ok(to_json(&manager.info(id)?)),
            Request::Reload { .. } => {
                let report = manager.hot_reload(id).await?;
                let mut v = to_json(&report);
                if report.is_unchanged() {
                    v["message"] = json!("nothing changed; no module was swapped");
                }
                Ok(v)
            }
            Request::Versions { module, .. } => Ok(to_json(&manager.versions(id, &module)?)),
            Request::Rollback {
                module, version, ..
            } => Ok(to_json(&manager.rollback(id, &module, version).await?)),
            Request::Restart { .. } => Ok(to_json(&manager.restart(id).await?)),
            Request::Quit { .. } => Ok(json!("bye")),
        }
    }
    .await;
    match result {
        Ok(output) => protocol::reply(rid, output),
        Err(e) => protocol::from_error(rid, &e),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({ "unserializable": e.to_string() }))
}

/// The only writer of stdout: events as they come, and before each reply
/// every event already emitted, so a request's events precede its reply.
async fn write_lines(mut replies: mpsc::UnboundedReceiver<Value>, mut events: EventStream) {
    let mut out = tokio::io::stdout();
    let mut events_open = true;
    loop {
        let line = tokio::select! {
            reply = replies.recv() => match reply {
                Some(reply) => {
                    while events_open {
                        match events.try_recv() {
                            Ok(event) => emit(&mut out, &protocol::event_line(&event)).await,
                            Err(TryRecvError::Lagged(_)) => continue,
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Closed) => events_open = false,
                        }
                    }
                    reply
                }
                None => break,
            },
            event = events.recv(), if events_open => match event {
                Ok(event) => protocol::event_line(&event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => json!({"type": "event", "event": "lagged", "missed": n}),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    events_open = false;
                    continue;
                }
            },
        };
        emit(&mut out, &line).await;
    }
    // Events emitted during shutdown (destroyed).
    while let Ok(event) = events.try_recv() {
        emit(&mut out, &protocol::event_line(&event)).await;
    }
}

async fn emit(out: &mut tokio::io::Stdout, line: &Value) {
    let mut text = line.to_string();
    text.push('\n');
    if out.write_all(text.as_bytes()).await.is_err() || out.flush().await.is_err() {
        tracing::debug!("stdout closed");
    }
}
