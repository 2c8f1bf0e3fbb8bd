//! Why the service could not start, and the HTTP error answers of its API
//! ([`ApiError`]: a status code and the `run` protocol's error object).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// A result whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the service could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store file cannot be opened or read. Nothing was written to it.
    #[error("the service's store `{}` cannot be used: {message}; nothing was written to it — move it away to start with no sandboxes, or put back a good copy", path.display())]
    Store {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Another service holds the store (it is locked).
    #[error("the service's store `{}` is in use by another `sandbox serve`; stop that one, or pass another --data-dir", path.display())]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// The data dir cannot be created or is not a folder.
    #[error("the data dir `{}` cannot be used: {source}; pass a folder this user can write with --data-dir", path.display())]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No token is configured and the address is not a loopback one.
    #[error("refusing to listen on {addr} without a token: anyone who can reach it could run code; set SANDBOX_TOKEN or pass --token-file, or listen on a loopback address (127.0.0.1, ::1)")]
    NoToken {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// A token file could not be read, or holds no token.
    #[error("token file `{}`: {message}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}; pick another address with --listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The audit log does not hold the head the store recorded.
    #[error("the audit log `{}` does not hold entry {seq} with the hash the store recorded ({hash}); it was truncated or replaced — put back the log, or check it with `sandbox audit verify`", path.display())]
    AuditHead {
        /// The log.
        path: PathBuf,
        /// The recorded sequence number.
        seq: u64,
        /// The recorded hash.
        hash: String,
    },
    /// The sandbox manager failed to start.
    #[error(transparent)]
    Manager(#[from] sandbox_core::Error),
    /// The HTTP server failed.
    #[error("the HTTP server failed: {0}")]
    Server(#[source] std::io::Error),
}

/// An HTTP error answer: `status` and `{"error": {"kind", "class",
/// "recovery", "message", "diagnostics"?}}`.
#[derive(Debug)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// The error object.
    pub error: Value,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error the service makes itself.
    pub fn new(status: StatusCode, kind: &str, class: &str, recovery: &str, message: &str) -> Self {
        Self {
            status,
            error: sandbox_core::wire::error_fields(kind, class, recovery, message),
            retry_after: None,
        }
    }

    /// A malformed request (400).
    pub fn bad_request(message: impl AsRef<str>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "request",
            "fix_request",
            message.as_ref(),
        )
    }

    /// Not ready yet (503, retry in a second): the stored sandboxes are
    /// being restored.
    pub fn not_ready() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_running",
            "runtime",
            "retry",
            "the service is restoring its sandboxes; retry when GET /readyz answers 200",
        );
        e.retry_after = Some(1);
        e
    }

    /// A failure of the service itself (500): a bug or a broken disk.
    pub fn system(message: impl AsRef<str>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "system",
            "system",
            "escalate",
            message.as_ref(),
        )
    }

    /// The error's `kind`.
    pub fn kind(&self) -> &str {
        self.error["kind"].as_str().unwrap_or("system")
    }
}

/// The status code of a manager error, by its kind.
pub fn status_of(e: &sandbox_core::Error) -> StatusCode {
    if matches!(e, sandbox_core::Error::DuplicateSandbox { .. }) {
        return StatusCode::CONFLICT;
    }
    let kind = serde_json::to_value(e.kind()).unwrap_or(Value::Null);
    match kind.as_str().unwrap_or("system") {
        "not_found" | "version" => StatusCode::NOT_FOUND,
        "bad_request" | "watch" => StatusCode::BAD_REQUEST,
        "compile" | "dependency" | "plugin" => StatusCode::UNPROCESSABLE_ENTITY,
        "swap" => StatusCode::CONFLICT,
        "security" => StatusCode::FORBIDDEN,
        "timeout" => StatusCode::GATEWAY_TIMEOUT,
        "limit_exceeded" | "crashed" | "not_running" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<sandbox_core::Error> for ApiError {
    fn from(e: sandbox_core::Error) -> Self {
        let status = status_of(&e);
        Self {
            status,
            error: sandbox_core::wire::error_object(&e),
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.error }))).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
