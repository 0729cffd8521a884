//! Operations endpoints end to end: liveness and readiness probes, Prometheus metrics, the
//! OpenAPI document and the HTML reference page, on both databases.

// Tests panic on anything unexpected; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use medhub_testkit::{FRAME_TIMEOUT, Settings, TestServer, each_backend};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Every `/api/v1` route the router serves over plain HTTP, with its methods (from
/// `rest::routes` and `longpoll::routes`). The WebSocket upgrade at `/api/v1/ws` is documented
/// in the protocol description instead: the document's `info.description` says so.
const API_ROUTES: &[(&str, &[&str])] = &[
    ("/api/v1/auth/login", &["post"]),
    ("/api/v1/auth/logout", &["post"]),
    ("/api/v1/auth/password", &["post"]),
    ("/api/v1/auth/mfa/totp/enroll", &["post"]),
    ("/api/v1/auth/mfa/totp/confirm", &["post"]),
    ("/api/v1/auth/mfa/verify", &["post"]),
    ("/api/v1/auth/mfa/recovery-codes", &["post"]),
    ("/api/v1/auth/step-up", &["post"]),
    ("/api/v1/auth/sessions", &["get"]),
    ("/api/v1/auth/sessions/{id}", &["delete"]),
    ("/api/v1/auth/ws-ticket", &["post"]),
    ("/api/v1/auth/invitation", &["post"]),
    ("/api/v1/auth/oidc/start", &["get"]),
    ("/api/v1/auth/oidc/callback", &["get"]),
    ("/api/v1/auth/mfa/passkey/register/start", &["post"]),
    ("/api/v1/auth/mfa/passkey/register/finish", &["post"]),
    ("/api/v1/auth/mfa/passkey/verify/start", &["post"]),
    ("/api/v1/auth/mfa/passkey/verify/finish", &["post"]),
    ("/api/v1/auth/step-up/passkey/start", &["post"]),
    ("/api/v1/auth/step-up/passkey/finish", &["post"]),
    ("/api/v1/auth/mfa/passkeys", &["get"]),
    ("/api/v1/auth/mfa/passkeys/{id}", &["delete"]),
    ("/api/v1/auth/saml/start", &["get"]),
    ("/api/v1/auth/saml/acs", &["post"]),
    ("/api/v1/auth/saml/metadata", &["get"]),
    ("/api/v1/admin/sessions", &["get"]),
    ("/api/v1/admin/sessions/{id}", &["delete"]),
    ("/api/v1/admin/users", &["post"]),
    ("/api/v1/admin/users/{id}", &["patch"]),
    ("/api/v1/admin/users/{id}/invitation", &["post"]),
    ("/api/v1/admin/users/{id}/mfa-reset", &["post"]),
    ("/api/v1/admin/settings", &["get", "patch"]),
    ("/api/v1/admin/roles", &["get", "post"]),
    ("/api/v1/admin/users/{id}/roles", &["get", "put"]),
    ("/api/v1/me", &["get"]),
    ("/api/v1/me/contact", &["get", "put"]),
    ("/api/v1/me/push-subscriptions", &["post", "delete"]),
    ("/api/v1/admin/escalation-policies/{priority}", &["get", "put"]),
    ("/api/v1/users", &["get"]),
    ("/api/v1/users/{id}", &["get"]),
    ("/api/v1/users/{id}/presence", &["get"]),
    ("/api/v1/me/presence", &["put", "delete"]),
    ("/api/v1/conversations", &["get", "post"]),
    ("/api/v1/conversations/{id}", &["get", "patch"]),
    ("/api/v1/conversations/{id}/members", &["post"]),
    ("/api/v1/conversations/{id}/members/{user_id}", &["patch", "delete"]),
    ("/api/v1/conversations/{id}/messages", &["get", "post"]),
    ("/api/v1/conversations/{id}/receipts", &["post"]),
    ("/api/v1/conversations/{id}/typing", &["post"]),
    ("/api/v1/messages/{id}", &["get", "patch"]),
    ("/api/v1/messages/{id}/recall", &["post"]),
    ("/api/v1/messages/{id}/revisions", &["get"]),
    ("/api/v1/messages/{id}/ack", &["post"]),
    ("/api/v1/messages/{id}/status", &["get"]),
    ("/api/v1/messages/{id}/trace", &["get"]),
    ("/api/v1/events", &["get"]),
    ("/api/v1/patients/{patient_ref}/care-team", &["get"]),
    ("/api/v1/patients/{patient_ref}/care-team/{user_id}", &["put", "delete"]),
    ("/api/v1/conversations/{id}/break-glass", &["post"]),
    ("/api/v1/break-glass", &["get"]),
    ("/api/v1/break-glass/{id}/end", &["post"]),
    ("/api/v1/audit/proof/inclusion", &["get"]),
    ("/api/v1/audit/proof/consistency", &["get"]),
    ("/api/v1/audit/reports/{kind}", &["get"]),
    ("/api/v1/audit/events", &["get"]),
    ("/api/v1/retention/policies", &["get"]),
    ("/api/v1/retention/policies/{class}", &["put", "delete"]),
    ("/api/v1/retention/expire", &["post"]),
    ("/api/v1/handoffs", &["get", "post"]),
    ("/api/v1/handoffs/{id}", &["get"]),
    ("/api/v1/handoffs/{id}/accept", &["post"]),
    ("/api/v1/handoffs/{id}/cancel", &["post"]),
    ("/api/v1/legal-holds", &["get", "post"]),
    ("/api/v1/legal-holds/{id}/lift", &["post"]),
    ("/api/v1/users/{id}/erase", &["post"]),
    ("/api/v1/audit/export", &["get"]),
    ("/api/v1/oncall", &["get", "post"]),
    ("/api/v1/oncall/{role}", &["get", "patch"]),
    ("/api/v1/oncall/{role}/schedules", &["post"]),
    ("/api/v1/oncall/{role}/schedules/{id}", &["put", "delete"]),
    ("/api/v1/oncall/{role}/schedules/{id}/overrides", &["post"]),
    ("/api/v1/oncall/{role}/schedules/{id}/overrides/{override_id}", &["delete"]),
    ("/api/v1/oncall/{role}/schedules/{id}/swaps", &["post"]),
    ("/api/v1/oncall/{role}/shifts", &["get"]),
    ("/api/v1/oncall/{role}/calendar.ics", &["get"]),
    ("/api/v1/oncall/{role}/calendar", &["post"]),
    ("/api/v1/oncall/{role}/messages", &["post"]),
    ("/api/v1/coverages", &["get", "post"]),
    ("/api/v1/coverages/{id}", &["delete"]),
];

const OPS_ROUTES: &[(&str, &[&str])] = &[("/healthz", &["get"]), ("/readyz", &["get"]), ("/metrics", &["get"])];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn fetch(s: &TestServer, path: &str) -> (u16, String, String) {
    let resp = reqwest::get(s.url(path)).await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, ctype, resp.text().await.unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// The value of one series (name with labels, exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

async fn metrics(s: &TestServer) -> String {
    let (status, _, text) = fetch(s, "/metrics").await;
    assert_eq!(status, 200);
    text
}

/// Polls `/metrics` until `series` has `value` (for changes the server makes after a client
/// has gone, such as unregistering a closed connection).
async fn wait_for_sample(s: &TestServer, series: &str, value: f64) {
    let deadline = Instant::now() + FRAME_TIMEOUT;
    loop {
        let text = metrics(s).await;
        if sample(&text, series) == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} never reached {value}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An example path for a route template.
fn concrete(template: &str) -> String {
    template
        .replace("{id}", &uuid::Uuid::now_v7().to_string())
        .replace("{user_id}", &uuid::Uuid::now_v7().to_string())
        .replace("{override_id}", &uuid::Uuid::now_v7().to_string())
        .replace("{role}", "cardiology-oncall")
}

fn method(m: &str) -> Method {
    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap_or_else(|e| panic!("{m}: {e}"))
}

each_backend! {
    async fn liveness_and_readiness_answer_without_a_session(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        for path in ["/healthz", "/readyz"] {
            let (status, ctype, body) = fetch(&s, path).await;
            assert_eq!(status, 200, "{path}: {body}");
            assert!(ctype.starts_with("application/json"), "{path}: {ctype}");
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"status": "ok"}), "{path}");
        }
    }
}

each_backend! {
    async fn metrics_expose_the_documented_series_with_live_values(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (status, ctype, text) = fetch(&s, "/metrics").await;
        assert_eq!(status, 200);
        assert!(ctype.starts_with("application/openmetrics-text") || ctype.starts_with("text/plain"), "{ctype}");
        for (name, kind) in [
            ("medhub_connections", "gauge"),
            ("medhub_connections_opened", "counter"),
            ("medhub_messages_committed", "counter"),
            ("medhub_commands", "counter"),
            ("medhub_commit_batch_size", "histogram"),
            ("medhub_commit_latency_seconds", "histogram"),
            ("medhub_pipeline_queue_depth", "gauge"),
            ("medhub_events_published", "counter"),
            ("medhub_deliveries", "counter"),
            ("medhub_connection_queue_depth", "gauge"),
            ("medhub_slow_consumer_closes", "counter"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "no {kind} {name}:\n{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "no help for {name}");
        }
        assert_eq!(sample(&text, "medhub_connections"), Some(0.0));
        assert_eq!(sample(&text, "medhub_messages_committed_total"), Some(0.0));

        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let (mut a, _) = s.connect(&alice, None).await;
        let (mut b, _) = s.connect(&bob, None).await;
        for n in 1..=2 {
            let sent = a
                .request(
                    json!({"type": "send", "conversation_id": conv, "client_txn_id": format!("t{n}"), "body": "obs"}),
                )
                .await;
            assert_eq!(sent["type"], "sent");
        }
        for _ in 0..2 {
            a.next_event().await;
            b.next_event().await;
        }
        a.send_raw(Message::text("{not json")).await;
        assert_eq!(a.next().await.unwrap()["error"]["code"], "bad_frame");

        let text = metrics(&s).await;
        assert_eq!(sample(&text, "medhub_connections"), Some(2.0), "{text}");
        assert_eq!(sample(&text, "medhub_connections_opened_total"), Some(2.0), "{text}");
        assert_eq!(sample(&text, "medhub_messages_committed_total"), Some(2.0), "{text}");
        // One creation and two sends went through the pipeline.
        assert_eq!(sample(&text, "medhub_commands_total"), Some(3.0), "{text}");
        assert_eq!(sample(&text, "medhub_commit_latency_seconds_count"), Some(3.0), "{text}");
        assert_eq!(sample(&text, "medhub_commit_latency_seconds_bucket{le=\"+Inf\"}"), Some(3.0), "{text}");
        // Both members got both messages, and took them off their queues.
        assert_eq!(sample(&text, "medhub_deliveries_total"), Some(4.0), "{text}");
        assert_eq!(sample(&text, "medhub_connection_queue_depth"), Some(0.0), "{text}");
        // The error family appears with its first error.
        assert!(text.contains("# TYPE medhub_errors counter\n"), "{text}");
        assert_eq!(sample(&text, "medhub_errors_total{code=\"bad_frame\"}"), Some(1.0), "{text}");

        b.close().await;
        wait_for_sample(&s, "medhub_connections", 1.0).await;
    }
}

each_backend! {
    async fn rest_errors_are_counted_by_code_like_websocket_errors(db) {
        // The `errors` metric is documented as "errors answered to clients, by wire code"; the
        // long-polling transport and REST clients are clients too, and a burst of 401s or 404s
        // (credential stuffing, id probing) is what an operator alerts on.
        let s = TestServer::start_on(db, Settings::default()).await;
        let alice = s.user("alice").await;
        let (status, _) = s.get(&format!("/api/v1/conversations/{}", uuid::Uuid::now_v7()), &alice).await;
        assert_eq!(status, 404);
        let (status, _) = s.call(Method::GET, "/api/v1/me", None, None).await;
        assert_eq!(status, 401);
        let (status, _) = s.get("/api/v1/events?cursor=999999", &alice).await;
        assert_eq!(status, 400);
        let text = metrics(&s).await;
        let mut missing = Vec::new();
        for code in ["not_found", "unauthenticated", "cursor_out_of_range"] {
            if sample(&text, &format!("medhub_errors_total{{code=\"{code}\"}}")) != Some(1.0) {
                missing.push(code);
            }
        }
        assert!(missing.is_empty(), "REST errors not counted: {missing:?}\n{text}");
    }
}

each_backend! {
    async fn the_openapi_document_describes_every_route_the_router_serves(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (status, ctype, text) = fetch(&s, "/api/openapi.json").await;
        assert_eq!(status, 200);
        assert!(ctype.starts_with("application/json"), "{ctype}");
        let doc: Value = serde_json::from_str(&text).expect("the document is valid JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
        assert!(doc["info"]["title"].is_string());
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        let paths = doc["paths"].as_object().expect("paths");

        let documented: BTreeSet<(String, String)> = paths
            .iter()
            .flat_map(|(p, item)| {
                METHODS.iter().filter(|m| item.get(**m).is_some()).map(move |m| (p.clone(), (*m).to_owned()))
            })
            .collect();
        let served: BTreeSet<(String, String)> = API_ROUTES
            .iter()
            .chain(OPS_ROUTES)
            .flat_map(|(p, ms)| ms.iter().map(move |m| ((*p).to_owned(), (*m).to_owned())))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        assert!(undocumented.is_empty(), "served but not documented: {undocumented:?}");
        let phantom: Vec<_> = documented.difference(&served).collect();
        assert!(phantom.is_empty(), "documented but not in the route table: {phantom:?}");

        // Check the table against the live router: every documented operation is served, and
        // every other method on a documented path is 405.
        let http = reqwest::Client::new();
        for (path, item) in paths {
            for m in METHODS {
                let resp = http.request(method(m), s.url(&concrete(path))).send().await.unwrap();
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if item.get(m).is_some() {
                    assert!(status != 404 && status != 405, "{m} {path} is documented but answers {status} {body}");
                } else {
                    assert_eq!(status, 405, "{m} {path} is served but not documented: {body}");
                }
            }
        }
        // Every session-bound operation declares the bearer scheme; signing in (with a password
        // or single sign-on) and redeeming an invitation do not.
        for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/api/v1/")) {
            for m in METHODS {
                let Some(op) = item.get(m) else { continue };
                let secured = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
                let public = [
                    "/api/v1/auth/login",
                    "/api/v1/auth/invitation",
                    "/api/v1/auth/oidc/start",
                    "/api/v1/auth/oidc/callback",
                    "/api/v1/auth/saml/start",
                    "/api/v1/auth/saml/acs",
                    "/api/v1/auth/saml/metadata",
                ]
                .contains(&path.as_str());
                assert_eq!(secured, !public, "{m} {path}: {}", op["security"]);
            }
        }
        // The error codes a client can receive are all in the schema.
        let codes = &doc["components"]["schemas"]["ErrorCode"];
        let text = codes.to_string();
        for code in [
            "bad_frame",
            "not_found",
            "password_change_required",
            "cursor_out_of_range",
            "message_recalled",
            "mfa_required",
            "step_up_required",
            "session_expired",
        ] {
            assert!(text.contains(&format!("\"{code}\"")), "{code} missing from {codes}");
        }
    }
}

each_backend! {
    async fn the_reference_page_shows_every_route_and_loads_nothing_from_outside(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (status, ctype, html) = fetch(&s, "/api/docs").await;
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/html"), "{ctype}");
        assert!(html.starts_with("<!doctype html>"), "{}", &html[..html.len().min(100)]);
        for (path, methods) in API_ROUTES.iter().chain(OPS_ROUTES) {
            assert!(html.contains(&format!("<code>{path}</code>")), "{path} is not on the page");
            for m in *methods {
                assert!(
                    html.contains(&format!("<span class=\"m\">{m}</span><code>{path}</code>")),
                    "{m} {path} is not on the page"
                );
            }
        }
        assert!(html.contains("href=\"/api/openapi.json\""));
        // Hospitals run air-gapped networks: no scripts, styles or fonts from elsewhere.
        for outside in ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "@import"] {
            assert!(!html.contains(outside), "the page loads {outside}...");
        }
    }
}
