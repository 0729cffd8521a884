//! Security headers on every response: routes, errors, 404s and panics alike (the layer wraps
//! the whole router, fallbacks included).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// Two years, subdomains included: once a browser has seen medhub over HTTPS it never tries
/// plain HTTP for the host again.
pub const HSTS: &str = "max-age=63072000; includeSubDomains";

/// Only medhub's own scripts and resources; no plugins; no framing; no `<base>` rewrites.
pub const CSP: &str =
    "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// A stricter policy a handler asks for, as a response extension: a compliance report page
/// allows its own inline style sheet by hash and nothing else at all.
#[derive(Clone, Debug)]
pub struct OwnCsp(pub HeaderValue);

/// Sets the headers after the inner service answered, replacing any a handler set.
pub async fn security_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let csp = response.extensions_mut().remove::<OwnCsp>().map_or(HeaderValue::from_static(CSP), |c| c.0);
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if state.config.hsts {
        // Sent only over HTTPS: over plain HTTP a browser must ignore it (RFC 6797 §8.1).
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    if api {
        // API answers carry patient data: no browser or proxy keeps a copy.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
