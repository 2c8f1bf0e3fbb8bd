//! The dashboard at `/`: one self-contained HTML page (inline CSS and
//! script, no build step, nothing loaded from elsewhere) compiled into the
//! binary from `assets/dashboard.html`.
//!
//! The page itself is public — it holds no data — and everything it shows
//! comes from the `/v1` API with the same bearer token any client sends:
//! sandboxes with status, isolation, profile and memory/CPU sparklines
//! (`GET /v1/sandboxes` every 2 s), each module's retained versions as a
//! timeline with a rollback button (`…/versions`, `…/rollback`), and the
//! live event stream (`GET /v1/events`).
//!
//! # How the page authenticates
//!
//! `EventSource` cannot send an `Authorization` header, and putting the
//! token in a query string or a cookie would widen what it is exposed to (a
//! URL is logged and kept in history; a cookie goes to every port of the
//! host and with cross-site requests). So the page reads the event stream
//! with `fetch()` and a stream reader, sending the header like every other
//! request, and the service needs no second way in. The token is kept in
//! the tab's `sessionStorage`; the page takes it from the form it shows
//! after a 401, or once from the address's fragment (`/#token=…`, which a
//! browser never sends to a server) and then removes it from the address.
//!
//! The answer forbids framing and loading anything but the service's own
//! API (`Content-Security-Policy`), so the rollback button cannot be
//! clicked through another site's page.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page, as served.
pub const PAGE: &str = include_str!("../assets/dashboard.html");

/// Inline script and style only (the page has no other), requests only to
/// this origin, never in a frame.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; frame-ancestors 'none'";

/// `GET /`: the dashboard.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}

/// The dashboard's routes (`GET /`), to merge into the service's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        // Nothing fetched from elsewhere: no external script, style or font.
        for needle in ["src=\"http", "href=\"http", "@import", "url(http", "//cdn"] {
            assert!(!PAGE.contains(needle), "the dashboard loads `{needle}…`");
        }
        // What the page needs from the API.
        for route in ["/v1/sandboxes", "/v1/events", "/versions", "/rollback"] {
            assert!(PAGE.contains(route), "the dashboard does not use {route}");
        }
        // The token travels only in a header.
        assert!(!PAGE.contains("EventSource("));
        assert!(PAGE.contains("\"Authorization\""));
    }
}
