//! Who may call `/v1`: bearer tokens compared in constant time, and a rate
//! limit per token (`governor`'s GCRA, keyed by token).

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::App;

/// Requests each token may make: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: NonZeroU32,
    /// Requests allowed at once above the rate.
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    /// 100 requests per second, bursts of 200.
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// The tokens and the limiter.
#[derive(Debug)]
pub(crate) struct Auth {
    tokens: Vec<Vec<u8>>,
    limiter: DefaultKeyedRateLimiter<usize>,
}

impl Auth {
    pub(crate) fn new(tokens: &[String], limit: RateLimit) -> Self {
        Self {
            tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
            limiter: RateLimiter::keyed(
                Quota::per_second(limit.per_second).allow_burst(limit.burst),
            ),
        }
    }

    /// The index of the token `given` is (every token is compared, each in
    /// constant time); `Some(0)` for anyone when no token is configured.
    fn check(&self, given: Option<&[u8]>) -> Option<usize> {
        if self.tokens.is_empty() {
            return Some(0);
        }
        let given = given?;
        let mut found = None;
        for (i, token) in self.tokens.iter().enumerate() {
            if bool::from(token.as_slice().ct_eq(given)) {
                found = Some(i);
            }
        }
        found
    }
}

/// The bearer token of a request's `Authorization` header.
fn bearer(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

/// Refuses a request without a valid token (401), over its token's rate
/// (429 with `Retry-After`), or before the restored sandboxes are back
/// (503 with `Retry-After`).
pub(crate) async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Some(key) = app.auth.check(bearer(&request)) else {
        app.telemetry.error("unauthorized");
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "request",
            "fix_request",
            "missing or wrong token; send `Authorization: Bearer <token>` with a token the service was started with",
        )
        .into_response();
    };
    if let Err(not_until) = app.auth.limiter.check_key(&key) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        app.telemetry.error("rate_limited");
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "resource",
            "retry",
            &format!(
                "too many requests with this token; retry in {} ms",
                wait.as_millis()
            ),
        );
        e.retry_after = Some(secs.max(1));
        return e.into_response();
    }
    if !app.is_ready() {
        return ApiError::not_ready().into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_matched_whole() {
        let auth = Auth::new(&["alpha".into(), "beta".into()], RateLimit::default());
        assert_eq!(auth.check(Some(b"beta")), Some(1));
        assert_eq!(auth.check(Some(b"alpha")), Some(0));
        assert_eq!(auth.check(Some(b"alph")), None);
        assert_eq!(auth.check(Some(b"alphaa")), None);
        assert_eq!(auth.check(None), None);
        let open = Auth::new(&[], RateLimit::default());
        assert_eq!(open.check(None), Some(0));
    }
}
