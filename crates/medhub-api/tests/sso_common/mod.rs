//! What the single sign-on tests (`oidc.rs`, `saml.rs`) share: a bootstrapped server with a
//! controllable clock, the start route's redirect, and reading answers.

// Each test binary uses its own subset.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use medhub_core::ManualClock;
use medhub_store::testdb::TestDb;
use medhub_testkit::{Settings, TestServer};
use reqwest::Url;
use serde_json::Value;

/// A server on `db` with these services and `clock`, bootstrapped (organization and admin).
pub async fn sso_server(db: TestDb, clock: &Arc<ManualClock>, service: medhub_service::ServiceConfig) -> TestServer {
    let s = TestServer::start_on(db, Settings { clock: clock.clone(), service, ..Default::default() }).await;
    let auth = s.services.auth.clone();
    s.on_server(async move { auth.bootstrap("Test Hospital", "admin").await.unwrap() }).await;
    s
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// `GET path` (a start route) with an optional `return_to`: the provider URL it redirects
/// to, or the error.
pub async fn start_at(s: &TestServer, path: &str, return_to: Option<&str>) -> Result<Url, (u16, Value)> {
    let mut url = Url::parse(&s.url(path)).unwrap();
    if let Some(r) = return_to {
        url.query_pairs_mut().append_pair("return_to", r);
    }
    let resp = no_redirects().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    if status == 302 {
        return Ok(Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap());
    }
    Err((status, resp.json().await.unwrap_or(Value::Null)))
}

/// The error code of an answer.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// `GET /api/v1/me` with a token: "ok" or the error code.
pub async fn me(s: &TestServer, token: &str) -> String {
    let resp = reqwest::Client::new().get(s.url("/api/v1/me")).bearer_auth(token).send().await.unwrap();
    if resp.status().is_success() { "ok".into() } else { code(&resp.json().await.unwrap()).to_owned() }
}

/// Waits until the audit interface holds a successful `method` sign-in of `user` and a
/// refused one (which has no actor).
pub async fn audit_shows_sign_ins(s: &TestServer, method: &str, user: uuid::Uuid) {
    let sso = |all: &[medhub_core::audit::AuditRecord], outcome: &str| {
        all.iter()
            .filter(|r| r.action == "auth.sign_in" && r.target.as_deref() == Some(method))
            .filter(|r| r.outcome.as_str() == outcome)
            .map(|r| r.actor.map(|a| a.as_uuid()))
            .collect::<Vec<_>>()
    };
    s.audit_until(|all| sso(all, "success").contains(&Some(user)) && sso(all, "failure").contains(&None)).await;
}

/// Whether the session of `token` may do a sensitive action now without a step-up.
pub async fn step_up_is_fresh(s: &TestServer, token: &str) -> bool {
    let (sessions, token) = (s.services.auth.clone(), token.to_owned());
    s.on_server(async move {
        let p = sessions.authenticate(&token).await.unwrap();
        p.require_step_up(jiff::Timestamp::now()).is_ok()
    })
    .await
}
