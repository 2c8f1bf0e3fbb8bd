//! The routes: `/v1` (behind [`auth::guard`](crate::auth::guard)), health
//! and metrics. Every answer is JSON (Prometheus text for `/metrics`,
//! Server-Sent Events for `/v1/events`); every error is
//! `{"error": {"kind", "class", "recovery", "message", "diagnostics"?}}`,
//! the `sandbox run` protocol's error object.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use sandbox_core::isolate::IsolationKind;
use sandbox_core::monitor::ResourceLimits;
use sandbox_core::security::Profile;
use sandbox_core::{Durability, SandboxId, SandboxSpec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::App;

/// The body of `POST /v1/sandboxes`, and what the store keeps to create the
/// sandbox again at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The sandbox's id.
    pub id: String,
    /// Its source folder (a Cargo package or workspace), as the service
    /// sees it.
    pub source: PathBuf,
    /// `process` or `in-process` (default: `in-process` for the `trusted`
    /// profile, else `process`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// `high`, `medium` (default) or `trusted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Resource limits (the fields of `ResourceLimits`; missing ones take
    /// their defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Value>,
    /// `call`, `interval` (default) or `interval=MS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<String>,
}

impl CreateRequest {
    /// The id and spec it asks for, or what is wrong with it.
    pub fn spec(&self) -> Result<(SandboxId, SandboxSpec), ApiError> {
        let id = SandboxId::new(self.id.clone()).map_err(ApiError::from)?;
        let profile = match &self.profile {
            Some(p) => p
                .parse::<Profile>()
                .map_err(|e| ApiError::bad_request(format!("profile: {e}")))?,
            None => Profile::default(),
        };
        let isolation = match &self.isolation {
            Some(i) => i
                .parse::<IsolationKind>()
                .map_err(|e| ApiError::bad_request(format!("isolation: {e}")))?,
            None if profile == Profile::Trusted => IsolationKind::IN_PROCESS,
            None => IsolationKind::PROCESS,
        };
        let mut spec = SandboxSpec::new(&self.source)
            .isolation(isolation)
            .profile(profile);
        if let Some(limits) = &self.limits {
            let limits: ResourceLimits = serde_json::from_value(limits.clone())
                .map_err(|e| ApiError::bad_request(format!("limits: {e}")))?;
            spec = spec.limits(limits);
        }
        if let Some(d) = &self.durability {
            let d: Durability = d
                .parse()
                .map_err(|e: String| ApiError::bad_request(format!("durability: {e}")))?;
            spec = spec.durability(d);
        }
        Ok((id, spec))
    }
}

/// The body of `POST …/rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    version: u32,
}

/// The query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    sandbox: Option<String>,
}

/// Every route.
pub(crate) fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/sandboxes", get(list).post(create))
        .route("/sandboxes/{id}", get(info).delete(destroy))
        .route("/sandboxes/{id}/modules/{module}/call", post(call))
        .route("/sandboxes/{id}/reload", post(reload))
        .route("/sandboxes/{id}/restart", post(restart))
        .route("/sandboxes/{id}/modules/{module}/versions", get(versions))
        .route("/sandboxes/{id}/modules/{module}/history", get(history))
        .route("/sandboxes/{id}/modules/{module}/rollback", post(rollback))
        .route("/events", get(events))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            crate::auth::guard,
        ));
    Router::new()
        .nest("/v1", v1)
        .merge(crate::dashboard::router())
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(app.limits.max_body))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            app.limits.body_timeout,
        ))
        .with_state(app)
}

/// A JSON answer.
type Answer = Result<Response, ApiError>;

/// Counts and returns an error answer.
fn failed(app: &App, e: impl Into<ApiError>) -> ApiError {
    let e = e.into();
    app.telemetry.error(e.kind());
    e
}

/// The body as JSON, or a 400 (413 over the body limit).
fn json_body<T: serde::de::DeserializeOwned>(
    app: &App,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = read_body(app, body)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        failed(
            app,
            ApiError::bad_request(format!("the body is not a valid request: {e}")),
        )
    })
}

fn read_body(app: &App, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let e = if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "bad_request",
                "request",
                "fix_request",
                &format!(
                    "the body is over the limit of {} bytes; send a smaller one",
                    app.limits.max_body
                ),
            )
        } else {
            ApiError::new(
                status,
                "bad_request",
                "request",
                "fix_request",
                &format!("the body could not be read: {rejection}"),
            )
        };
        failed(app, e)
    })
}

fn ok(status: StatusCode, value: Value) -> Answer {
    Ok((status, Json(value)).into_response())
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({ "unserializable": e.to_string() }))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "request",
        "fix_request",
        &format!(
            "no route {}; the API is under /v1 (see the README's `sandbox serve` section)",
            uri.path()
        ),
    )
}

async fn livez() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// 200 once the stored sandboxes are back (with those that could not be
/// restored and why), 503 before.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    if !app.is_ready() {
        return ApiError::not_ready().into_response();
    }
    let restore = app.restore.lock().clone();
    Json(json!({ "ready": true, "restored": restore.restored, "failed": restore.failed }))
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.telemetry.render(&app.manager);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn list(State(app): State<Arc<App>>) -> Answer {
    ok(StatusCode::OK, to_json(&app.manager.list()))
}

async fn info(State(app): State<Arc<App>>, Path(id): Path<String>) -> Answer {
    let info = app.manager.info(&id).map_err(|e| failed(&app, e))?;
    ok(StatusCode::OK, to_json(&info))
}

async fn create(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Answer {
    let mut request: CreateRequest = json_body(&app, body)?;
    let (id, spec) = request.spec().map_err(|e| failed(&app, e))?;
    if spec.profile == Profile::Trusted && !app.limits.allow_trusted {
        return Err(failed(
            &app,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "security",
                "security",
                "fix_request",
                "this service refuses trusted sandboxes (they would build and run with the service's own rights; an operator allows them with `sandbox serve --allow-trusted`): leave out the profile or ask for `medium` or `high`, and the sandbox is built and run in the jail",
            ),
        ));
    }
    // The source as the store keeps it: absolute, so a restart from
    // another working directory finds it.
    if let Ok(source) = std::fs::canonicalize(&request.source) {
        request.source = source;
    }
    let _reservation = app.reserve(&id).map_err(|e| failed(&app, e))?;
    // Stored before it exists, so its first checkpoints (and any call under
    // `call` durability) are kept; removed again if the create fails.
    let stored = serde_json::to_vec(&request).map_err(|e| ApiError::system(e.to_string()))?;
    app.store
        .put_spec(id.as_str(), &stored)
        .map_err(|e| failed(&app, ApiError::system(e.to_string())))?;
    if let Err(e) = app.manager.create(id.clone(), spec).await {
        if let Err(forget) = app.store.remove(id.as_str()) {
            tracing::warn!(sandbox = %id, error = %forget, "could not remove the spec of a failed create");
        }
        return Err(failed(&app, e));
    }
    app.record_history(id.as_str());
    let info = app.manager.info(id.as_str()).map_err(|e| failed(&app, e))?;
    ok(StatusCode::CREATED, to_json(&info))
}

async fn destroy(State(app): State<Arc<App>>, Path(id): Path<String>) -> Answer {
    // Known? (Unknown ids answer 404 and leave the store alone.)
    app.manager.info(&id).map_err(|e| failed(&app, e))?;
    // Forgotten first: a checkpoint racing the destroy cannot bring it back.
    app.store
        .remove(&id)
        .map_err(|e| failed(&app, ApiError::system(e.to_string())))?;
    app.manager
        .destroy(&id)
        .await
        .map_err(|e| failed(&app, e))?;
    ok(StatusCode::OK, json!({ "destroyed": id }))
}

async fn call(
    State(app): State<Arc<App>>,
    Path((id, module)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = read_body(&app, body)?;
    let input: Bytes = if body.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"null")
    } else {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return Err(failed(
                &app,
                ApiError::bad_request(format!(
                    "the body is not JSON ({e}); send the module's input as JSON"
                )),
            ));
        }
        body
    };
    let started = Instant::now();
    let result = app.manager.call(&id, &module, &input).await;
    // Only calls that reached a module are counted by sandbox and module:
    // names from unknown paths would grow the label sets without bound.
    let reached = !matches!(&result, Err(e) if crate::status_of(e) == StatusCode::NOT_FOUND);
    if reached {
        app.telemetry.call(&id, &module, started.elapsed());
    }
    let out = result.map_err(|e| failed(&app, e))?;
    if out.len() > app.limits.max_response {
        return Err(failed(
            &app,
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "limit_exceeded",
                "resource",
                "fix_request",
                &format!(
                    "the module answered {} bytes, over the service's response limit of {} bytes",
                    out.len(),
                    app.limits.max_response
                ),
            ),
        ));
    }
    let body = if serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_ok() {
        out
    } else {
        // Not JSON: as a JSON string, like `sandbox run` does.
        serde_json::to_vec(&String::from_utf8_lossy(&out)).unwrap_or_default()
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

async fn reload(State(app): State<Arc<App>>, Path(id): Path<String>) -> Answer {
    let report = app
        .manager
        .hot_reload(&id)
        .await
        .map_err(|e| failed(&app, e))?;
    app.record_history(&id);
    let mut v = to_json(&report);
    if report.is_unchanged() {
        v["message"] = json!("nothing changed; no module was swapped");
    }
    ok(StatusCode::OK, v)
}

async fn restart(State(app): State<Arc<App>>, Path(id): Path<String>) -> Answer {
    let info = app
        .manager
        .restart(&id)
        .await
        .map_err(|e| failed(&app, e))?;
    ok(StatusCode::OK, to_json(&info))
}

async fn versions(
    State(app): State<Arc<App>>,
    Path((id, module)): Path<(String, String)>,
) -> Answer {
    let versions = app
        .manager
        .versions(&id, &module)
        .map_err(|e| failed(&app, e))?;
    ok(StatusCode::OK, to_json(&versions))
}

/// `GET …/history`: every version the module ran, across restarts of the
/// service (the stored record, oldest first).
async fn history(
    State(app): State<Arc<App>>,
    Path((id, module)): Path<(String, String)>,
) -> Answer {
    // Unknown sandboxes and modules answer 404 like `versions`.
    app.manager
        .versions(&id, &module)
        .map_err(|e| failed(&app, e))?;
    let stored = app
        .store
        .history(&id)
        .map_err(|e| failed(&app, ApiError::system(e.to_string())))?;
    let list = stored
        .get(&module)
        .and_then(|json| serde_json::from_slice(json).ok())
        .unwrap_or(Value::Array(Vec::new()));
    ok(StatusCode::OK, list)
}

async fn rollback(
    State(app): State<Arc<App>>,
    Path((id, module)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let request: RollbackRequest = json_body(&app, body)?;
    let swapped = app
        .manager
        .rollback(&id, &module, request.version)
        .await
        .map_err(|e| failed(&app, e))?;
    app.record_history(&id);
    ok(StatusCode::OK, to_json(&swapped))
}

/// `GET /v1/events[?sandbox=ID]`: the manager's events as Server-Sent
/// Events, each `data:` one event object of the `run` protocol, in the
/// order they were emitted. A reader that falls behind gets a `lagged`
/// event saying how many it missed. The stream ends when the service
/// shuts down.
async fn events(
    State(app): State<Arc<App>>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) =
        query.map_err(|e| failed(&app, ApiError::bad_request(format!("bad query: {e}"))))?;
    let filter = match query.sandbox {
        Some(id) => Some(SandboxId::new(id).map_err(|e| failed(&app, e))?),
        None => None,
    };
    let stream = app.manager.subscribe();
    let stop = app.stopping.clone();
    let state = (stream, stop, filter);
    let events = futures::stream::unfold(state, |(mut stream, mut stop, filter)| async move {
        loop {
            let next = tokio::select! {
                next = stream.recv() => next,
                _ = stop.wait_for(|s| *s) => return None,
            };
            let data = match next {
                Ok(event) => {
                    if filter.as_ref().is_some_and(|id| *id != event.sandbox) {
                        continue;
                    }
                    sandbox_core::wire::event_object(&event)
                }
                Err(RecvError::Lagged(missed)) => {
                    json!({"type": "event", "event": "lagged", "missed": missed})
                }
                Err(RecvError::Closed) => return None,
            };
            let event = SseEvent::default().data(data.to_string());
            return Some((Ok(event), (stream, stop, filter)));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// What restoring the stored sandboxes gave (`/readyz`).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RestoreReport {
    /// Ids created again.
    pub(crate) restored: Vec<String>,
    /// Ids that could not be, with the error object.
    pub(crate) failed: BTreeMap<String, Value>,
}
