//! Security headers on every kind of answer a real server gives: a success, a 404, an
//! authentication error, a wrong method and an oversized body; `Cache-Control: no-store` on
//! `/api/` only; HSTS only when the server says it is reached over HTTPS. (The HTTPS side, with
//! the real binary and a real certificate, is `crates/medhub/tests/tls.rs`.)

// Tests panic on anything unexpected; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medhub_api::ApiConfig;
use medhub_store::Backend;
use medhub_testkit::{Settings, TestServer};
use reqwest::Method;
use reqwest::header::HeaderMap;

const ALWAYS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("x-frame-options", "DENY"),
];

const HSTS: &str = "max-age=63072000; includeSubDomains";

/// Each answer the test asks for: method, path, body size, expected status.
const ANSWERS: &[(&str, &str, usize, u16)] = &[
    ("GET", "/healthz", 0, 200),
    ("GET", "/api/docs", 0, 200),
    ("GET", "/no/such/page", 0, 404),
    ("GET", "/api/v1/no-such-route", 0, 404),
    ("GET", "/api/v1/me", 0, 401),
    ("DELETE", "/api/v1/me", 0, 405),
    ("POST", "/api/v1/auth/login", 128 * 1024, 413),
];

async fn answer(s: &TestServer, method: &str, path: &str, body: usize) -> (u16, HeaderMap) {
    let r = reqwest::Client::new()
        .request(Method::from_bytes(method.as_bytes()).unwrap(), s.url(path))
        .header("content-type", "application/json")
        .body(vec![b' '; body])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (r.status().as_u16(), r.headers().clone())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers_and_plain_http_no_hsts() {
    let s = TestServer::start(Backend::Sqlite).await;
    for &(method, path, body, status) in ANSWERS {
        let (got, h) = answer(&s, method, path, body).await;
        assert_eq!(got, status, "{method} {path}");
        for (name, value) in ALWAYS {
            assert_eq!(header(&h, name), Some(*value), "{name} on {method} {path} ({got})");
        }
        let no_store = path.starts_with("/api/").then_some("no-store");
        assert_eq!(header(&h, "cache-control"), no_store, "cache-control on {method} {path} ({got})");
        assert_eq!(header(&h, "strict-transport-security"), None, "HSTS over plain HTTP on {method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reached_over_https_sends_hsts_on_every_answer() {
    let settings = Settings { api: ApiConfig { hsts: true, ..ApiConfig::default() }, ..Settings::default() };
    let s = TestServer::start_with(Backend::Sqlite, settings).await;
    for &(method, path, body, status) in ANSWERS {
        let (got, h) = answer(&s, method, path, body).await;
        assert_eq!(got, status, "{method} {path}");
        assert_eq!(header(&h, "strict-transport-security"), Some(HSTS), "{method} {path} ({got})");
        assert_eq!(header(&h, "x-frame-options"), Some("DENY"), "{method} {path} ({got})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_page_works_under_its_own_policy() {
    // `default-src 'self'` refuses inline styles and scripts: the page links its style sheet.
    let s = TestServer::start(Backend::Sqlite).await;
    let html = reqwest::get(s.url("/api/docs")).await.unwrap().text().await.unwrap();
    for inline in ["<style", "<script", " style=", " onload="] {
        assert!(!html.contains(inline), "the reference page has inline {inline}");
    }
    assert!(html.contains("<link rel=\"stylesheet\" href=\"/api/docs/style.css\">"));
    let css = reqwest::get(s.url("/api/docs/style.css")).await.unwrap();
    assert_eq!(css.status(), 200);
    assert_eq!(header(css.headers(), "content-type"), Some("text/css; charset=utf-8"));
    assert!(css.text().await.unwrap().contains("font-family"));
}
