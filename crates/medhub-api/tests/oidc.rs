//! OpenID Connect sign-in end to end, on both databases, against a real provider: npm
//! `oidc-provider` (tests/idp/oidc) on loopback as a child process. The test is the browser:
//! it follows the provider's redirects with its own cookie jar up to the redirect URI, then
//! hands `code` and `state` to medhub's callback, as the web client's callback page does.
//!
//! Node is required: without it these tests fail, they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use medhub_core::model::SystemRole;
use medhub_core::{Clock, ManualClock};
use medhub_service::auth::{NewUser, OidcConfig};
use medhub_store::testdb::TestDb;
use medhub_testkit::{TestServer, each_backend};
use reqwest::Url;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod sso_common;
use sso_common::{audit_shows_sign_ins, code, me, sso_server, start_at, step_up_is_fresh};

/// Registered at the provider for every test client; the test stops the browser there.
const REDIRECT_URI: &str = "http://127.0.0.1/oidc/callback";

fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/idp/oidc")
}

/// Runs `npm ci` once per test binary when `node_modules` is missing.
fn ensure_node_modules() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the OIDC tests need Node.js 20 or later (`node` on PATH): {node:?}"
    );
    if !idp_dir().join("node_modules/oidc-provider").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(idp_dir())
            .status()
            .expect("npm ci in tests/idp/oidc (is npm installed?)");
        assert!(status.success(), "npm ci in tests/idp/oidc failed");
    }
    *done = true;
}

/// The provider process. Dropping it kills the process.
struct Idp {
    port: u16,
    keys: tempfile::TempDir,
    child: Option<Child>,
}

impl Idp {
    async fn start() -> Self {
        ensure_node_modules();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut idp = Idp { port, keys: tempfile::tempdir().unwrap(), child: None };
        idp.spawn(None).await;
        idp
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self, rotate: Option<&str>) {
        let mut cmd = Command::new("node");
        cmd.arg("idp.mjs")
            .args(["--port", &self.port.to_string()])
            .args(["--keys", &self.keys.path().join("jwks.json").display().to_string()])
            .args(["--redirect-uri", REDIRECT_URI])
            .current_dir(idp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(alg) = rotate {
            cmd.args(["--rotate", alg]);
        }
        self.child = Some(cmd.spawn().expect("start node idp.mjs"));
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "the provider did not come up at {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts the provider on the same port and keys file; `rotate` puts a new key of that
    /// algorithm first, so it signs with a key medhub has not seen.
    async fn restart(&mut self, rotate: Option<&str>) {
        self.stop();
        self.spawn(rotate).await;
    }

    async fn set_account(&self, sub: &str, claims: Value) {
        let r = reqwest::Client::new()
            .put(format!("{}/test/accounts/{sub}", self.issuer()))
            .json(&claims)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }

    /// The next token request of client `medhub` gets `body` instead of the real answer.
    async fn substitute_token_response(&self, body: &Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/test/next-token-response", self.issuer()))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }

    /// What a client other than medhub gets from the provider: a genuine token response for
    /// `client_id`, with the given nonce (the test plays that client).
    async fn tokens_for(&self, client_id: &str, account: &str, nonce: &str) -> Value {
        let verifier = "a-pkce-verifier-of-the-other-client-0123456789";
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = Url::parse(&format!("{}/auth", self.issuer())).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid profile groups")
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("state", "other-state")
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("login_hint", account);
        let back = Browser::new().follow(url.to_string()).await;
        let code = query(&back, "code");
        let r = reqwest::Client::new()
            .post(format!("{}/token", self.issuer()))
            .basic_auth(client_id, Some(format!("{client_id}-secret-for-tests-only")))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.json().await.unwrap()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A browser: follows redirects itself, keeps cookies, stops at the redirect URI.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http, cookies: HashMap::new() }
    }

    async fn follow(&mut self, start: String) -> Url {
        let mut url = Url::parse(&start).unwrap();
        for _ in 0..12 {
            if url.as_str().starts_with(REDIRECT_URI) {
                return url;
            }
            let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            let resp = self.http.get(url.clone()).header("cookie", cookie).send().await.unwrap();
            for set in resp.headers().get_all("set-cookie") {
                let pair = set.to_str().unwrap().split(';').next().unwrap_or_default();
                if let Some((k, v)) = pair.split_once('=') {
                    if v.is_empty() {
                        self.cookies.remove(k);
                    } else {
                        self.cookies.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
            let status = resp.status();
            let location = resp.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
            let Some(location) = location.filter(|_| status.is_redirection()) else {
                panic!("{url} answered {status}: {}", resp.text().await.unwrap_or_default());
            };
            url = url.join(&location).unwrap();
        }
        panic!("too many redirects");
    }
}

fn query(url: &Url, key: &str) -> String {
    url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned()).unwrap_or_default()
}

fn config(idp: &Idp) -> OidcConfig {
    let mut c = OidcConfig::new(&idp.issuer(), "medhub", "medhub-secret-for-tests-only", REDIRECT_URI);
    c.scopes = vec!["profile".into(), "groups".into()];
    c.admin_groups = vec!["medhub-admins".into()];
    c
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::now()))
}

async fn server(db: TestDb, clock: &Arc<ManualClock>, oidc: Option<OidcConfig>) -> TestServer {
    sso_server(db, clock, medhub_service::ServiceConfig { oidc, ..Default::default() }).await
}

/// `GET /api/v1/auth/oidc/start`: the provider URL, or the error.
async fn start(s: &TestServer, return_to: Option<&str>) -> Result<Url, (u16, Value)> {
    start_at(s, "/api/v1/auth/oidc/start", return_to).await
}

/// Signs `account` in at the provider with these `amr` values: the `code` and `state` the
/// provider sends back.
async fn authorize(s: &TestServer, account: &str, amr: &str) -> (String, String) {
    let mut url = start(s, None).await.expect("start");
    url.query_pairs_mut().append_pair("login_hint", account).append_pair("test_amr", amr);
    let back = Browser::new().follow(url.to_string()).await;
    (query(&back, "code"), query(&back, "state"))
}

async fn callback(s: &TestServer, code: &str, state: &str) -> (u16, Value) {
    let mut url = Url::parse(&s.url("/api/v1/auth/oidc/callback")).unwrap();
    url.query_pairs_mut().append_pair("code", code).append_pair("state", state);
    let resp = reqwest::get(url).await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn sign_in(s: &TestServer, account: &str, amr: &str) -> (u16, Value) {
    let (code, state) = authorize(s, account, amr).await;
    callback(s, &code, &state).await
}

// --- the flow ---------------------------------------------------------------------------------

each_backend! {
    async fn a_good_login_creates_the_user_and_later_logins_find_it_by_subject(db) {
        let idp = Idp::start().await;
        let clock = clock();
        let s = server(db, &clock, Some(config(&idp))).await;

        // `amr` shows a second factor, but this organization has not said its provider
        // enforces one: medhub's own factor follows.
        let (status, body) = sign_in(&s, "alice-sub", "pwd,otp").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user"]["username"], "alice", "preferred_username, normalized");
        assert_eq!(body["user"]["display_name"], "Alice Adams");
        assert_eq!(body["user"]["role"], "user");
        assert_eq!(body["state"], "mfa_enrollment_required");
        assert!(body.get("return_to").is_none());
        let token = body["token"].as_str().unwrap();
        assert_eq!(me(&s, token).await, "mfa_enrollment_required", "a real session, gated until enrolment");

        // The provider renames her: she is still the same medhub user (matched by subject).
        idp.set_account("alice-sub", json!({"preferred_username": "alice.new", "name": "Alice A."})).await;
        let (status, again) = sign_in(&s, "alice-sub", "pwd").await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["user"]["id"], body["user"]["id"]);
        assert_eq!(again["user"]["username"], "alice");

        // return_to is echoed; anything but a relative path is refused before leaving medhub.
        let mut url = start(&s, Some("/conversations/42")).await.unwrap();
        url.query_pairs_mut().append_pair("login_hint", "bob-sub");
        let back = Browser::new().follow(url.to_string()).await;
        let (status, bob) = callback(&s, &query(&back, "code"), &query(&back, "state")).await;
        assert_eq!((status, &bob["return_to"]), (200, &json!("/conversations/42")), "{bob}");
        for bad in ["https://evil.example/", "//evil.example/x", "/\\evil.example"] {
            let (status, err) = start(&s, Some(bad)).await.unwrap_err();
            assert_eq!((status, code(&err)), (400, "invalid_request"), "{bad}");
        }

        // The provider's own refusal (the user cancelled) is an sso_failed.
        let resp = reqwest::get(s.url("/api/v1/auth/oidc/callback?error=access_denied&state=x")).await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        assert_eq!(code(&resp.json().await.unwrap()), "sso_failed");

        // Both outcomes reach the audit interface (a forged state is a refused sign-in).
        let (status, _) = callback(&s, "some-code", "forged-state").await;
        assert_eq!(status, 401);
        let alice: uuid::Uuid = body["user"]["id"].as_str().unwrap().parse().unwrap();
        audit_shows_sign_ins(&s, "oidc", alice).await;
    }
}

each_backend! {
    async fn a_tampered_state_is_refused_and_does_not_spend_the_flow(db) {
        let idp = Idp::start().await;
        let clock = clock();
        let s = server(db, &clock, Some(config(&idp))).await;
        let (code_value, state) = authorize(&s, "alice-sub", "pwd").await;
        for forged in [format!("{state}x"), state[1..].to_owned(), "A".repeat(43), String::new()] {
            let (status, body) = callback(&s, &code_value, &forged).await;
            assert_eq!((status, code(&body)), (401, "sso_failed"), "{forged:?}: {body}");
            assert_eq!(body["error"]["message"], medhub_wire::ErrorCode::SsoFailed.description(), "a fixed message");
        }
        let (status, body) = callback(&s, &code_value, &state).await;
        assert_eq!(status, 200, "the genuine callback still works: {body}");
    }
}

each_backend! {
    async fn a_replayed_code_is_refused(db) {
        let idp = Idp::start().await;
        let clock = clock();
        let s = server(db, &clock, Some(config(&idp))).await;
        let (code_value, state) = authorize(&s, "alice-sub", "pwd").await;
        assert_eq!(callback(&s, &code_value, &state).await.0, 200);
        // The same callback again: the flow is used up.
        let (status, body) = callback(&s, &code_value, &state).await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");
        // The used code with a fresh flow's state: the provider refuses the code (used, and
        // issued for another PKCE challenge).
        let fresh = start(&s, None).await.unwrap();
        let (status, body) = callback(&s, &code_value, &query(&fresh, "state")).await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");
        // A flow expires after 10 minutes.
        let (code_value, state) = authorize(&s, "alice-sub", "pwd").await;
        clock.advance(SignedDuration::from_mins(10));
        let (status, body) = callback(&s, &code_value, &state).await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");
    }
}

// --- the ID token -----------------------------------------------------------------------------

each_backend! {
    async fn an_id_token_for_another_audience_or_unsigned_is_refused(db) {
        let idp = Idp::start().await;
        let clock = clock();
        let s = server(db, &clock, Some(config(&idp))).await;

        // A genuine, correctly signed ID token the provider issued to `other-app` (with the
        // nonce of medhub's flow) arrives at medhub's token request: refused.
        let url = start(&s, None).await.unwrap();
        let other = idp.tokens_for("other-app", "alice-sub", &query(&url, "nonce")).await;
        idp.substitute_token_response(&other).await;
        let (status, body) = callback(&s, "substituted", &query(&url, "state")).await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");

        // Control: the same substitution with a token issued to medhub is accepted, so the
        // refusal above was the audience and nothing else.
        let url = start(&s, None).await.unwrap();
        let ours = idp.tokens_for("medhub", "alice-sub", &query(&url, "nonce")).await;
        idp.substitute_token_response(&ours).await;
        let (status, body) = callback(&s, "substituted", &query(&url, "state")).await;
        assert_eq!(status, 200, "{body}");

        // The same claims unsigned (`alg: none`): refused.
        let url = start(&s, None).await.unwrap();
        let fresh = idp.tokens_for("medhub", "alice-sub", &query(&url, "nonce")).await;
        let payload = fresh["id_token"].as_str().unwrap().split('.').nth(1).unwrap().to_owned();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let mut unsigned = fresh.clone();
        unsigned["id_token"] = json!(format!("{header}.{payload}."));
        idp.substitute_token_response(&unsigned).await;
        let (status, body) = callback(&s, "substituted", &query(&url, "state")).await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");

        // A token with another flow's nonce (a replayed ID token): refused.
        let url = start(&s, None).await.unwrap();
        idp.substitute_token_response(&fresh).await;
        let (status, body) = callback(&s, "substituted", &query(&url, "state")).await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");
    }
}

each_backend! {
    async fn a_provider_signing_with_the_client_secret_hs256_is_refused(db) {
        let idp = Idp::start().await;
        let clock = clock();
        let mut c = config(&idp);
        c.client_id = "medhub-hs".into();
        c.client_secret = "medhub-hs-secret-for-tests-only".into();
        let s = server(db, &clock, Some(c)).await;
        let (status, body) = sign_in(&s, "alice-sub", "pwd").await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");
    }
}

each_backend! {
    async fn expiry_allows_sixty_seconds_of_clock_skew_and_no_more(db) {
        let idp = Idp::start().await;
        let clock = clock();
        let s = server(db, &clock, Some(config(&idp))).await;
        // The provider's ID tokens live 3600 s. medhub's clock 20 s past that: accepted.
        clock.set(Timestamp::now() + SignedDuration::from_secs(3600 + 20));
        let (status, body) = sign_in(&s, "alice-sub", "pwd").await;
        assert_eq!(status, 200, "{body}");
        // 100 s past: refused.
        clock.set(Timestamp::now() + SignedDuration::from_secs(3600 + 100));
        let (status, body) = sign_in(&s, "alice-sub", "pwd").await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");
        // A token issued more than 60 s in medhub's future: refused; 30 s: accepted.
        clock.set(Timestamp::now() - SignedDuration::from_secs(120));
        let (status, body) = sign_in(&s, "alice-sub", "pwd").await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");
        clock.set(Timestamp::now() - SignedDuration::from_secs(30));
        let (status, body) = sign_in(&s, "alice-sub", "pwd").await;
        assert_eq!(status, 200, "{body}");
    }
}

each_backend! {
    async fn a_rotated_signing_key_is_fetched_at_most_once_a_minute(db) {
        let mut idp = Idp::start().await;
        let clock = clock();
        let s = server(db, &clock, Some(config(&idp))).await;
        assert_eq!(sign_in(&s, "alice-sub", "pwd").await.0, 200);
        // The provider now signs with a new key, listed first in its JWKS: medhub meets an
        // unknown `kid`, refetches the keys once, and accepts.
        idp.restart(Some("RS256")).await;
        let (status, body) = sign_in(&s, "alice-sub", "pwd").await;
        assert_eq!(status, 200, "{body}");
        // Another new key within 60 s of that refetch: refused (a forged `kid` cannot make
        // medhub fetch the keys again and again)...
        idp.restart(Some("RS256")).await;
        let (status, body) = sign_in(&s, "alice-sub", "pwd").await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");
        // ...and accepted once a minute has passed.
        clock.advance(SignedDuration::from_secs(61));
        let (status, body) = sign_in(&s, "alice-sub", "pwd").await;
        assert_eq!(status, 200, "{body}");
    }
}

// --- provisioning and MFA ---------------------------------------------------------------------

each_backend! {
    async fn the_providers_mfa_counts_only_when_enforced_and_shown_in_amr(db) {
        let idp = Idp::start().await;
        let clock = clock();
        let mut c = config(&idp);
        c.idp_enforces_mfa = true;
        let s = server(db, &clock, Some(c)).await;
        let (status, body) = sign_in(&s, "bob-sub", "pwd").await;
        assert_eq!((status, &body["state"]), (200, &json!("mfa_enrollment_required")), "{body}");
        assert_eq!(me(&s, body["token"].as_str().unwrap()).await, "mfa_enrollment_required");
        let (status, body) = sign_in(&s, "bob-sub", "pwd,hwk").await;
        assert_eq!((status, &body["state"]), (200, &json!("active")), "{body}");
        let token = body["token"].as_str().unwrap();
        assert_eq!(me(&s, token).await, "ok");
        // The factor counts as just proven: a sensitive action needs no step-up now.
        assert!(step_up_is_fresh(&s, token).await);
    }
}

each_backend! {
    async fn admin_groups_set_the_role_at_every_login_and_losing_them_ends_sessions(db) {
        let idp = Idp::start().await;
        let clock = clock();
        let mut c = config(&idp);
        c.idp_enforces_mfa = true;
        let s = server(db, &clock, Some(c)).await;
        idp.set_account("carol-sub", json!({"preferred_username": "carol", "name": "Carol C", "groups": ["staff", "medhub-admins"]})).await;
        let (status, first) = sign_in(&s, "carol-sub", "otp").await;
        assert_eq!((status, &first["user"]["role"]), (200, &json!("admin")), "{first}");
        let (_, second) = sign_in(&s, "carol-sub", "otp").await;
        let (t1, t2) = (first["token"].as_str().unwrap(), second["token"].as_str().unwrap());
        assert_eq!((me(&s, t1).await, me(&s, t2).await), ("ok".into(), "ok".into()));

        // The provider drops her from the group: the next sign-in demotes her and ends the
        // sessions she had as an administrator.
        idp.set_account("carol-sub", json!({"preferred_username": "carol", "name": "Carol C", "groups": ["staff"]})).await;
        let (status, third) = sign_in(&s, "carol-sub", "otp").await;
        assert_eq!((status, &third["user"]["role"]), (200, &json!("user")), "{third}");
        assert_eq!(me(&s, t1).await, "unauthenticated");
        assert_eq!(me(&s, t2).await, "unauthenticated");
        assert_eq!(me(&s, third["token"].as_str().unwrap()).await, "ok");
        // Back in the group: administrator again.
        idp.set_account("carol-sub", json!({"preferred_username": "carol", "groups": ["medhub-admins"]})).await;
        assert_eq!(sign_in(&s, "carol-sub", "otp").await.1["user"]["role"], "admin");
    }
}

each_backend! {
    async fn groups_map_to_roles_at_every_login(db) {
        let idp = Idp::start().await;
        let clock = clock();
        let mut c = config(&idp);
        c.idp_enforces_mfa = true;
        c.role_groups = vec![
            ("icu-nurses".into(), "charge_nurse".into()),
            ("privacy-office".into(), "compliance_officer".into()),
            ("misspelt".into(), "no_such_role".into()),
        ];
        let s = server(db, &clock, Some(c)).await;
        let get = |token: String, path: &'static str| {
            let url = s.url(path);
            async move { reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().status().as_u16() }
        };
        // A charge nurse by her group: conversations and care teams, no audit review.
        idp.set_account("erin-sub", json!({"preferred_username": "erin", "groups": ["staff", "icu-nurses", "misspelt"]})).await;
        let (status, first) = sign_in(&s, "erin-sub", "otp").await;
        assert_eq!(status, 200, "{first}");
        let t1 = first["token"].as_str().unwrap().to_owned();
        assert_eq!(get(t1.clone(), "/api/v1/conversations").await, 200);
        assert_eq!(get(t1.clone(), "/api/v1/break-glass").await, 403);
        let user = medhub_core::UserId::from_uuid(first["user"]["id"].as_str().unwrap().parse().unwrap());
        let store = s.services.store.clone();
        let roles = s.on_server(async move { store.user_roles(user).await.unwrap() }).await;
        assert_eq!(roles, ["charge_nurse"], "the unknown role is skipped");

        // She moves to the privacy office: the roles follow, and the charge nurse's session ends.
        idp.set_account("erin-sub", json!({"preferred_username": "erin", "groups": ["privacy-office"]})).await;
        let (_, second) = sign_in(&s, "erin-sub", "otp").await;
        let t2 = second["token"].as_str().unwrap().to_owned();
        assert_eq!(me(&s, &t1).await, "unauthenticated");
        assert_eq!(get(t2.clone(), "/api/v1/break-glass").await, 200);
        assert_eq!(get(t2.clone(), "/api/v1/conversations").await, 403);

        // In no mapped group: the default role, clinician.
        idp.set_account("erin-sub", json!({"preferred_username": "erin", "groups": ["staff"]})).await;
        let (_, third) = sign_in(&s, "erin-sub", "otp").await;
        assert_eq!(me(&s, &t2).await, "unauthenticated");
        let store = s.services.store.clone();
        assert_eq!(s.on_server(async move { store.user_roles(user).await.unwrap() }).await, ["clinician"]);
        assert_eq!(get(third["token"].as_str().unwrap().to_owned(), "/api/v1/conversations").await, 200);
    }
}

each_backend! {
    async fn a_local_account_with_the_same_username_is_never_linked(db) {
        let idp = Idp::start().await;
        let clock = clock();
        let s = server(db, &clock, Some(config(&idp))).await;
        let auth = s.services.auth.clone();
        s.on_server(async move {
            auth.create_user(NewUser {
                username: "dave".into(),
                display_name: "Dave Local".into(),
                role: SystemRole::Admin,
                password: Some("correct horse battery staple".into()),
                must_change_password: false,
            })
            .await
            .unwrap()
        })
        .await;
        idp.set_account("dave-sub", json!({"preferred_username": "Dave", "groups": ["medhub-admins"]})).await;
        for _ in 0..2 {
            let (status, body) = sign_in(&s, "dave-sub", "pwd").await;
            assert_eq!((status, code(&body)), (409, "sso_account_conflict"), "{body}");
        }
        // The local account is untouched and still signs in with its password.
        let (status, body) = s
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": "dave", "password": "correct horse battery staple"})),
            )
            .await;
        assert_eq!((status, &body["user"]["display_name"]), (200, &json!("Dave Local")), "{body}");
    }
}

each_backend! {
    async fn the_provider_signs_users_into_its_own_organization_only(db) {
        let idp = Idp::start().await;
        let clock = clock();
        let mut c = config(&idp);
        c.organization = Some("riverside CLINIC".into());
        let s = server(db, &clock, Some(c)).await;
        s.user("gh.nurse").await; // bootstraps the first organization

        // Until the organization exists, sign-ins are refused and nobody is created.
        let (status, body) = sign_in(&s, "alice-sub", "pwd").await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");
        let store = s.services.store.clone();
        let gone = s.on_server(async move { store.user_record_by_username("alice").await.unwrap() }).await;
        assert!(gone.is_none());

        // Then its users land in it (the name matches whatever the letter case).
        let river = s.tenant("Riverside Clinic", "river.root").await;
        let (status, body) = sign_in(&s, "alice-sub", "pwd").await;
        assert_eq!(status, 200, "{body}");
        let store = s.services.store.clone();
        let id = medhub_core::UserId::from_uuid(body["user"]["id"].as_str().unwrap().parse().unwrap());
        let alice = s.on_server(async move { store.user(id).await.unwrap().unwrap() }).await;
        assert_eq!(alice.org.as_uuid(), river);

        // A subject already linked to an account of another organization is refused, never
        // carried across: here Bob of the first organization.
        let (store, issuer, now) = (s.services.store.clone(), idp.issuer(), clock.now());
        s.on_server(async move {
            let first = store.org().await.unwrap().unwrap();
            let bob = medhub_store::UserRecord {
                user: medhub_core::model::User {
                    id: medhub_core::UserId::new_v7(),
                    org: first.id,
                    username: "bob".into(),
                    display_name: "Bob Brown".into(),
                    role: SystemRole::User,
                    active: true,
                    created_at: now,
                },
                password_hash: None,
                must_change_password: false,
            };
            store.create_sso_user(&bob, &issuer, "bob-sub", now).await.unwrap();
        })
        .await;
        let (status, body) = sign_in(&s, "bob-sub", "pwd").await;
        assert_eq!((status, code(&body)), (401, "sso_failed"), "{body}");
    }
}

// --- configuration and provider failures ------------------------------------------------------

each_backend! {
    async fn without_oidc_the_routes_answer_sso_not_configured(db) {
        let clock = clock();
        let s = server(db, &clock, None).await;
        let (status, body) = start(&s, None).await.unwrap_err();
        assert_eq!((status, code(&body)), (501, "sso_not_configured"));
        for q in ["code=a&state=b", "", "error=access_denied"] {
            let resp = reqwest::get(s.url(&format!("/api/v1/auth/oidc/callback?{q}"))).await.unwrap();
            assert_eq!(resp.status().as_u16(), 501, "{q}");
            assert_eq!(code(&resp.json().await.unwrap()), "sso_not_configured");
        }
    }
}

/// A fake provider on loopback that answers every connection with `response` (or, with
/// `None`, accepts and never answers).
async fn fake_provider(response: Option<Vec<u8>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            match &response {
                Some(r) => {
                    let _ = sock.write_all(r).await;
                }
                None => held.push(sock),
            }
        }
    });
    addr
}

fn http_response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n", body.len())
        .into_bytes();
    r.extend_from_slice(body);
    r
}

each_backend! {
    async fn an_unreachable_slow_redirecting_or_oversized_provider_is_unavailable(db) {
        let backend = db.backend();
        drop(db);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let silent = fake_provider(None).await;
        let redirecting = fake_provider(Some(http_response(
            "302 Found",
            "location: http://127.0.0.1:9/.well-known/openid-configuration\r\n",
            b"",
        )))
        .await;
        let big = vec![b' '; 2 * 1024 * 1024];
        let oversized = fake_provider(Some(http_response("200 OK", "content-type: application/json\r\n", &big))).await;
        for (what, addr) in [("closed", closed), ("silent", silent), ("redirecting", redirecting), ("oversized", oversized)] {
            let clock = clock();
            let mut c = OidcConfig::new(&format!("http://{addr}"), "medhub", "x", REDIRECT_URI);
            c.scopes.clear();
            let s = server(TestDb::new(backend).await, &clock, Some(c)).await;
            let began = Instant::now();
            let (status, body) = start(&s, None).await.unwrap_err();
            assert_eq!((status, code(&body)), (503, "sso_unavailable"), "{what}: {body}");
            assert!(began.elapsed() < Duration::from_secs(9), "{what} took {:?}", began.elapsed());
        }
    }
}
