//! `sandbox serve`: a long-running HTTP/JSON service hosting many
//! sandboxes in one [`Manager`], keeping their specs and state in an
//! embedded store so that they come back — with their last durable state —
//! after the service is restarted or killed.
//!
//! This crate is the service as a library: [`Service::start`] binds,
//! serves and restores; [`Service::shutdown`] drains and checkpoints. The
//! `sandbox serve` command (in `sandbox-cli`) is a thin wrapper that reads
//! flags and signals; tests start the service in-process the same way.
//! Want to host sandboxes in your own program instead? Use `sandbox-core`.
//!
//! # Routes
//!
//! All `/v1` routes need `Authorization: Bearer <token>` when tokens are
//! configured (401 otherwise), are rate-limited per token (429 with
//! `Retry-After`) and answer 503 until the stored sandboxes are back.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/sandboxes` `{"id","source","isolation"?,"profile"?,"limits"?,"durability"?}` | 201, the sandbox's info (409 for a duplicate id) |
//! | `GET /v1/sandboxes` | every sandbox's info |
//! | `GET /v1/sandboxes/{id}` / `DELETE /v1/sandboxes/{id}` | its info / `{"destroyed": id}` |
//! | `POST /v1/sandboxes/{id}/modules/{module}/call` (body: the input JSON) | the module's output JSON |
//! | `POST /v1/sandboxes/{id}/reload` | the reload report |
//! | `POST /v1/sandboxes/{id}/restart` | the info after the restart |
//! | `GET /v1/sandboxes/{id}/modules/{module}/versions` | the retained versions |
//! | `GET /v1/sandboxes/{id}/modules/{module}/history` | every version it ran, across restarts |
//! | `POST /v1/sandboxes/{id}/modules/{module}/rollback` `{"version"}` | `{module, from, to}` |
//! | `GET /v1/events[?sandbox=ID]` | Server-Sent Events, one event object per `data:` |
//! | `GET /livez`, `GET /readyz`, `GET /metrics` | liveness, readiness, Prometheus text |
//!
//! Infos, reports, events and errors are the objects of the `sandbox run`
//! protocol ([`sandbox_core::wire`]); an error answer is
//! `{"error": {"kind","class","recovery","message","diagnostics"?}}`.
//!
//! # Persistence
//!
//! The data dir holds `serve.redb` ([`store`]: specs, checkpoints, version
//! history, the audit log's head) and `audit.log`. Every checkpoint the
//! manager takes goes to the store before it counts
//! ([`sandbox_core::CheckpointStore`]), in-process sandboxes included; a
//! sandbox with `"durability":"call"` answers a call only once the state
//! after it is on disk. At start every stored sandbox is created again
//! (from the build cache when its source did not change) starting from its
//! last checkpoint, and only then does `/readyz` answer 200.

mod api;
mod auth;
pub mod client;
pub mod dashboard;
mod error;
pub mod store;
mod telemetry;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use sandbox_core::isolate::{Process, WorkerCommand};
use sandbox_core::{Manager, SandboxId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use api::CreateRequest;
pub use auth::RateLimit;
pub use error::{status_of, ApiError, Error, Result};
use store::Store;

/// Versions kept per module in the stored history (across restarts).
pub const HISTORY_KEPT: usize = 100;

/// The address `sandbox serve` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// The data dir `sandbox serve` uses by default:
/// `$XDG_DATA_HOME/sandbox/serve`, else `~/.local/share/sandbox/serve`
/// (the temp dir when there is no home).
pub fn default_data_dir() -> PathBuf {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local").join("share"),
            None => std::env::temp_dir(),
        },
    };
    base.join("sandbox").join("serve")
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen. Default [`DEFAULT_LISTEN`]; port 0 picks a free one
    /// ([`Service::local_addr`] tells which).
    pub listen: SocketAddr,
    /// Everything the service must not lose: `serve.redb` and `audit.log`.
    pub data_dir: PathBuf,
    /// Accepted bearer tokens. Empty: no authentication, allowed only on
    /// a loopback address.
    pub tokens: Vec<String>,
    /// The manager's configuration. Its build cache and target dir are
    /// kept (default: the shared cache of every `sandbox` command,
    /// `$SANDBOX_CACHE_DIR` or `~/.cache/sandbox`: it can be rebuilt, so it
    /// is not in the data dir); the service sets its `audit_log` (to
    /// `<data_dir>/audit.log`) and `checkpoint_store`.
    pub manager: sandbox_core::Config,
    /// How to start worker processes for process isolation; `None` offers
    /// in-process isolation only.
    pub worker: Option<WorkerCommand>,
    /// Requests per token.
    pub rate_limit: RateLimit,
    /// Largest request body, in bytes (413 past it). Default 1 MiB.
    pub max_body: usize,
    /// Largest module answer passed on, in bytes (502 past it). Default 16 MiB.
    pub max_response: usize,
    /// How long a request body may take to arrive. Default 30 s.
    pub body_timeout: Duration,
    /// How long requests in flight may take to finish on shutdown. Default 10 s.
    pub drain_timeout: Duration,
    /// Sandboxes created at once while restoring. Default 4.
    pub restore_concurrency: usize,
    /// Whether a request may declare its source `trusted` (built and run
    /// with the service's own rights, in-process by default). Default
    /// `false`: such a create is refused with 403, so every sandbox is
    /// built and run in the jail whoever holds a token. `true` makes a
    /// token worth what the service's user can do.
    pub allow_trusted: bool,
}

impl ServeConfig {
    /// Defaults, listening on `listen` and keeping data in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            tokens: Vec::new(),
            manager: sandbox_core::Config::default(),
            worker: None,
            rate_limit: RateLimit::default(),
            max_body: 1 << 20,
            max_response: 16 << 20,
            body_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            restore_concurrency: 4,
            allow_trusted: false,
        }
    }
}

/// Size and time limits of requests and answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_body: usize,
    pub(crate) max_response: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) allow_trusted: bool,
}

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) manager: Manager,
    pub(crate) store: Arc<Store>,
    pub(crate) auth: auth::Auth,
    pub(crate) telemetry: telemetry::Telemetry,
    pub(crate) limits: Limits,
    ready: AtomicBool,
    pub(crate) restore: Mutex<api::RestoreReport>,
    /// Ids being created (so a concurrent duplicate is refused before its
    /// spec is stored).
    creating: Mutex<BTreeSet<SandboxId>>,
    /// Becomes `true` when the service shuts down (event streams end).
    pub(crate) stopping: watch::Receiver<bool>,
}

/// An id reserved while it is being created; released on drop.
pub(crate) struct Reservation<'a> {
    app: &'a App,
    id: SandboxId,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.app.creating.lock().remove(&self.id);
    }
}

impl App {
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Reserves `id` for a create: a duplicate of a sandbox that exists or
    /// is being created is refused.
    pub(crate) fn reserve(&self, id: &SandboxId) -> Result<Reservation<'_>, sandbox_core::Error> {
        let mut creating = self.creating.lock();
        if self.manager.info(id.as_str()).is_ok() || !creating.insert(id.clone()) {
            return Err(sandbox_core::Error::DuplicateSandbox { id: id.clone() });
        }
        Ok(Reservation {
            app: self,
            id: id.clone(),
        })
    }

    /// Keeps the version lists of sandbox `id`'s modules in the store.
    ///
    /// The stored list is every version the module ran across restarts of
    /// the service, oldest first (at most [`HISTORY_KEPT`]): the versions
    /// of this run are added to what earlier runs stored. Version numbers
    /// start again at 1 after a restart; `loaded_at` tells them apart.
    pub(crate) fn record_history(&self, id: &str) {
        let Ok(info) = self.manager.info(id) else {
            return;
        };
        let stored = self.store.history(id).unwrap_or_default();
        for module in &info.modules {
            let Ok(versions) = self.manager.versions(id, &module.name) else {
                continue;
            };
            let mut list: Vec<serde_json::Value> = stored
                .get(&module.name)
                .and_then(|json| serde_json::from_slice(json).ok())
                .unwrap_or_default();
            for version in versions {
                let mut v = serde_json::to_value(&version).unwrap_or_default();
                if let Some(map) = v.as_object_mut() {
                    // What is current changes; the record does not.
                    map.remove("current");
                }
                if !list.contains(&v) {
                    list.push(v);
                }
            }
            let excess = list.len().saturating_sub(HISTORY_KEPT);
            list.drain(..excess);
            let json = serde_json::to_vec(&list).unwrap_or_default();
            if let Err(e) = self.store.put_history(id, &module.name, &json) {
                tracing::warn!(sandbox = id, error = %e, "could not store the version history");
            }
        }
    }

    /// Keeps the audit log's head in the store.
    fn record_audit_head(&self) {
        let Some(path) = &self.manager.config().audit_log else {
            return;
        };
        match sandbox_core::security::AuditLog::open(path) {
            Ok(log) => {
                let (seq, hash) = log.head();
                let json = serde_json::json!({ "seq": seq, "hash": hash }).to_string();
                if let Err(e) = self.store.put_meta("audit_head", json.as_bytes()) {
                    tracing::warn!(error = %e, "could not store the audit log's head");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the audit log's head"),
        }
    }
}

/// A running service.
#[derive(Debug)]
pub struct Service {
    app: Arc<App>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    /// Restoring the stored sandboxes, until it was awaited.
    restore: Option<JoinHandle<()>>,
    telemetry: JoinHandle<()>,
    drain_timeout: Duration,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Every request in flight finished within the drain timeout.
    pub drained: bool,
    /// Sandboxes checkpointed.
    pub checkpointed: usize,
    /// Sandboxes whose last checkpoint failed, with why.
    pub failed: Vec<(String, String)>,
    /// Every sandbox was shut down within the drain timeout.
    pub stopped: bool,
}

impl Service {
    /// Opens the store, builds the manager, listens, and starts restoring
    /// the stored sandboxes in the background (`/livez` answers at once,
    /// `/readyz` once they are back; see [`ready`](Self::ready)).
    pub async fn start(config: ServeConfig) -> Result<Self> {
        if config.tokens.is_empty() && !config.listen.ip().is_loopback() {
            return Err(Error::NoToken {
                addr: config.listen,
            });
        }
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let store = Arc::new(Store::open(data_dir)?);
        let audit_log = data_dir.join("audit.log");
        check_audit_head(&store, &audit_log)?;
        let manager_config = sandbox_core::Config {
            audit_log: Some(audit_log),
            checkpoint_store: Some(Arc::clone(&store) as Arc<dyn sandbox_core::CheckpointStore>),
            ..config.manager.clone()
        };
        let mut builder = Manager::builder(manager_config);
        if let Some(worker) = config.worker.clone() {
            builder = builder.isolator(Process::new(worker));
        }
        let manager = builder.build()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let (stop, stopping) = watch::channel(false);
        let telemetry = telemetry::Telemetry::new();
        let app = Arc::new(App {
            manager: manager.clone(),
            store: Arc::clone(&store),
            auth: auth::Auth::new(&config.tokens, config.rate_limit),
            telemetry: telemetry.clone(),
            limits: Limits {
                max_body: config.max_body,
                max_response: config.max_response,
                body_timeout: config.body_timeout,
                allow_trusted: config.allow_trusted,
            },
            ready: AtomicBool::new(false),
            restore: Mutex::new(api::RestoreReport::default()),
            creating: Mutex::new(BTreeSet::new()),
            stopping: stopping.clone(),
        });
        let counting = {
            let mut events = manager.subscribe();
            let mut stopping = stopping.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        next = events.recv() => match next {
                            Ok(event) => telemetry.event(&event),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                        },
                        _ = stopping.wait_for(|s| *s) => break,
                    }
                }
            })
        };
        let router = api::router(Arc::clone(&app));
        let server = {
            let mut stopping = stopping.clone();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopping.wait_for(|s| *s).await;
                    })
                    .await
            })
        };
        let restore = tokio::spawn(restore_all(Arc::clone(&app), config.restore_concurrency));
        tracing::info!(%addr, data_dir = %data_dir.display(), "sandbox serve listening");
        Ok(Self {
            app,
            addr,
            stop,
            server,
            restore: Some(restore),
            telemetry: counting,
            drain_timeout: config.drain_timeout,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The manager hosting the sandboxes.
    pub fn manager(&self) -> &Manager {
        &self.app.manager
    }

    /// The store's file.
    pub fn store_path(&self) -> &Path {
        self.app.store.path()
    }

    /// Returns once the stored sandboxes are back (`/readyz` answers 200).
    pub async fn ready(&mut self) {
        if let Some(restore) = self.restore.take() {
            let _ = restore.await;
        }
    }

    /// Whether the stored sandboxes are back.
    pub fn is_ready(&self) -> bool {
        self.app.is_ready()
    }

    /// Stops gracefully: stops accepting connections, lets the requests in
    /// flight finish (at most the drain timeout; event streams end at
    /// once), checkpoints every sandbox into the store, then shuts the
    /// sandboxes down (at most the drain timeout again).
    pub async fn shutdown(self) -> Shutdown {
        let mut report = Shutdown::default();
        self.stop.send_replace(true);
        if let Some(restore) = self.restore {
            restore.abort();
            let _ = restore.await;
        }
        let mut server = self.server;
        report.drained = match tokio::time::timeout(self.drain_timeout, &mut server).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "the HTTP server failed while draining");
                false
            }
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(
                    "requests still ran {:?} after the shutdown began; abandoning them",
                    self.drain_timeout
                );
                server.abort();
                // Its tasks (and what they hold) are gone before the store closes.
                let _ = server.await;
                false
            }
        };
        let manager = &self.app.manager;
        for info in manager.list() {
            let id = info.id.to_string();
            match tokio::time::timeout(self.drain_timeout, manager.checkpoint_now(&id)).await {
                Ok(Ok(())) => report.checkpointed += 1,
                Ok(Err(e)) => report.failed.push((id, e.to_string())),
                Err(_) => report
                    .failed
                    .push((id, "the checkpoint did not finish in time".into())),
            }
        }
        report.stopped = tokio::time::timeout(self.drain_timeout, manager.shutdown())
            .await
            .is_ok();
        self.telemetry.abort();
        let _ = self.telemetry.await;
        self.app.record_audit_head();
        report
    }
}

/// Refuses an audit log that lost the entries the store saw last.
fn check_audit_head(store: &Store, log: &Path) -> Result<()> {
    let Some(head) = store.meta("audit_head")? else {
        return Ok(());
    };
    let head: serde_json::Value = serde_json::from_slice(&head).unwrap_or_default();
    let (Some(seq), Some(hash)) = (head["seq"].as_u64(), head["hash"].as_str()) else {
        return Ok(());
    };
    if seq == 0 {
        return Ok(());
    }
    let bad = || Error::AuditHead {
        path: log.to_owned(),
        seq,
        hash: hash.to_owned(),
    };
    let entries = sandbox_core::security::AuditLog::entries(log).map_err(|_| bad())?;
    let index = usize::try_from(seq - 1).map_err(|_| bad())?;
    match entries.get(index) {
        Some(entry) if entry.hash == hash => Ok(()),
        _ => Err(bad()),
    }
}

/// Creates every stored sandbox again from its last checkpoint, then
/// marks the service ready. One that fails is reported (`/readyz`) and
/// stays stored, so a later start tries again.
async fn restore_all(app: Arc<App>, concurrency: usize) {
    let started = Instant::now();
    let specs = match app.store.specs() {
        Ok(specs) => specs,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the stored sandboxes");
            Default::default()
        }
    };
    let total = specs.len();
    let results: Vec<(String, Result<(), ApiError>)> = futures::stream::iter(specs)
        .map(|(id, json)| {
            let app = Arc::clone(&app);
            async move {
                let result = restore_one(&app, &json).await;
                (id, result)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    {
        let mut report = app.restore.lock();
        for (id, result) in results {
            match result {
                Ok(()) => report.restored.push(id),
                Err(e) => {
                    tracing::warn!(sandbox = id, error = %e.error, "could not restore the sandbox");
                    report.failed.insert(id, e.error);
                }
            }
        }
        report.restored.sort();
    }
    app.record_audit_head();
    app.ready.store(true, Ordering::Release);
    tracing::info!(sandboxes = total, took = ?started.elapsed(), "restored; ready");
}

async fn restore_one(app: &App, json: &[u8]) -> Result<(), ApiError> {
    let request: CreateRequest = serde_json::from_slice(json)
        .map_err(|e| ApiError::system(format!("the stored spec cannot be read: {e}")))?;
    let (id, spec) = request.spec()?;
    if spec.profile == sandbox_core::security::Profile::Trusted && !app.limits.allow_trusted {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "security",
            "security",
            "fix_request",
            "a trusted sandbox, and this service refuses them (start it with --allow-trusted to serve them); it stays stored for a start that allows them",
        ));
    }
    let checkpoint = app
        .store
        .checkpoint(id.as_str())
        .map_err(|e| ApiError::system(e.to_string()))?;
    let spec = spec.restore_from(checkpoint.states);
    app.manager.create(id.clone(), spec).await?;
    app.record_history(id.as_str());
    Ok(())
}
