//! SAML 2.0 sign-in end to end, on both databases, against a real identity provider: PyPI
//! `pysaml2` (tests/idp/saml/idp.py, signing with Debian's `xmlsec1`) on loopback as a child
//! process. The test is the browser: it follows medhub's redirect to the IdP (adding what the
//! IdP's login form would fill in), reads the auto-submitting form the IdP answers with, and
//! posts it to medhub's ACS.
//!
//! The IdP's key and certificate are made per test with the openssl CLI. pysaml2 lives in a
//! venv outside the repository (MEDHUB_PYSAML2_VENV, default /var/tmp/medhub-pysaml2-venv),
//! created here when missing. Without python3, openssl or xmlsec1 these tests fail; they never
//! skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use medhub_core::ManualClock;
use medhub_service::auth::SamlConfig;
use medhub_store::testdb::TestDb;
use medhub_testkit::{LogCapture, TestServer, each_backend};
use reqwest::Url;
use serde_json::{Value, json};

mod sso_common;
use sso_common::{audit_shows_sign_ins, code, me, sso_server, start_at, step_up_is_fresh};

/// The ACS URL medhub is configured with; the test posts to the real address itself.
const ACS_URL: &str = "http://127.0.0.1/api/v1/auth/saml/acs";
const SP_ENTITY_ID: &str = "https://medhub.test/saml";
const MFA: &str = "https://refeds.org/profile/mfa";
/// The assertion lifetime the test IdP is started with.
const LIFETIME: SignedDuration = SignedDuration::from_mins(5);

fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/idp/saml")
}

/// The venv's python, with the pinned pysaml2 installed (once per test binary).
fn python() -> PathBuf {
    static DONE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = done.as_ref() {
        return p.clone();
    }
    assert!(Path::new("/usr/bin/xmlsec1").exists(), "the SAML tests need xmlsec1 (Debian package xmlsec1)");
    let venv = std::env::var("MEDHUB_PYSAML2_VENV").unwrap_or_else(|_| "/var/tmp/medhub-pysaml2-venv".into());
    let python = Path::new(&venv).join("bin/python");
    let requirements = std::fs::read_to_string(idp_dir().join("requirements.txt")).unwrap();
    let pin = requirements.lines().find(|l| l.starts_with("pysaml2==")).unwrap().trim().to_owned();
    let version = pin.trim_start_matches("pysaml2==");
    let installed = Command::new(&python)
        .args(["-c", "import importlib.metadata as m; print(m.version('pysaml2'))"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == version);
    if !installed {
        let status = Command::new("python3").args(["-m", "venv", "--clear", &venv]).status().expect("python3 -m venv");
        assert!(status.success(), "python3 -m venv {venv} failed (is python3-venv installed?)");
        let status = Command::new(Path::new(&venv).join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(idp_dir().join("requirements.txt"))
            .status()
            .expect("pip install");
        assert!(status.success(), "pip install -r tests/idp/saml/requirements.txt failed");
    }
    *done = Some(python.clone());
    python
}

/// A fresh self-signed RSA key and certificate, made with the openssl CLI.
fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join(format!("{name}-key.pem")), dir.join(format!("{name}-cert.pem")));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=medhub-test-idp"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (is it installed?)");
    assert!(status.success());
    (key, cert)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The IdP process. Dropping it kills the process.
struct Idp {
    base: String,
    child: Child,
}

impl Idp {
    /// Starts pysaml2 on `port` with this key and certificate, trusting medhub's metadata.
    async fn start(port: u16, entity_id: &str, key: &Path, cert: &Path, sp_metadata: &Path) -> Self {
        let child = Command::new(python())
            .arg(idp_dir().join("idp.py"))
            .args(["--port", &port.to_string(), "--entity-id", entity_id])
            .args(["--lifetime-minutes", &LIFETIME.as_mins().to_string()])
            .arg("--key")
            .arg(key)
            .arg("--cert")
            .arg(cert)
            .arg("--sp-metadata")
            .arg(sp_metadata)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tests/idp/saml/idp.py");
        let idp = Idp { base: format!("http://127.0.0.1:{port}"), child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/health", idp.base)).await
                && r.status().is_success()
            {
                return idp;
            }
            assert!(Instant::now() < deadline, "the IdP did not come up at {}", idp.base);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// medhub with SAML configured, and the IdP that trusts it.
struct World {
    s: TestServer,
    idp: Idp,
    clock: Arc<ManualClock>,
    dir: tempfile::TempDir,
    idp_entity_id: String,
}

async fn world(db: TestDb, tune: impl FnOnce(&mut SamlConfig)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = make_cert(dir.path(), "idp");
    let port = free_port();
    let idp_entity_id = format!("http://127.0.0.1:{port}/idp");
    let pem = std::fs::read_to_string(&cert).unwrap();
    let mut c =
        SamlConfig::new(&idp_entity_id, &format!("http://127.0.0.1:{port}/sso/redirect"), &pem, SP_ENTITY_ID, ACS_URL);
    c.admin_groups = vec!["medhub-admins".into()];
    tune(&mut c);
    let clock = Arc::new(ManualClock::new(Timestamp::now()));
    let s = server(db, &clock, Some(c)).await;
    // The IdP learns about medhub from medhub's own metadata.
    let resp = reqwest::get(s.url("/api/v1/auth/saml/metadata")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/samlmetadata+xml");
    let sp_metadata = dir.path().join("sp.xml");
    std::fs::write(&sp_metadata, resp.text().await.unwrap()).unwrap();
    let idp = Idp::start(port, &idp_entity_id, &key, &cert, &sp_metadata).await;
    World { s, idp, clock, dir, idp_entity_id }
}

async fn server(db: TestDb, clock: &Arc<ManualClock>, saml: Option<SamlConfig>) -> TestServer {
    sso_server(db, clock, medhub_service::ServiceConfig { saml, ..Default::default() }).await
}

/// `GET /api/v1/auth/saml/start`: the IdP URL, or the error.
async fn start(s: &TestServer, return_to: Option<&str>) -> Result<Url, (u16, Value)> {
    start_at(s, "/api/v1/auth/saml/start", return_to).await
}

/// Follows medhub's redirect to the IdP with what its login form would fill in, and returns
/// the `SAMLResponse` of the form the IdP answers with (to be posted to medhub).
async fn at_idp(mut url: Url, knobs: &[(&str, &str)]) -> String {
    for (k, v) in knobs {
        url.query_pairs_mut().append_pair(k, v);
    }
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status();
    let page = resp.text().await.unwrap();
    assert!(status.is_success(), "the IdP answered {status}: {page}");
    assert!(page.contains(&format!(r#"action="{ACS_URL}""#)), "the IdP posts to medhub's ACS: {page}");
    let value = page.split(r#"name="SAMLResponse" value=""#).nth(1).unwrap().split('"').next().unwrap();
    value.replace("&#43;", "+").replace("&#x2B;", "+").replace("&#61;", "=").replace("&#x3D;", "=")
}

/// A fresh sign-in at the IdP: the `SAMLResponse` for a new flow.
async fn mint(s: &TestServer, knobs: &[(&str, &str)]) -> String {
    at_idp(start(s, None).await.expect("start"), knobs).await
}

/// `POST /api/v1/auth/saml/acs` as the IdP's form does.
async fn acs(s: &TestServer, saml_response: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(s.url("/api/v1/auth/saml/acs"))
        .form(&[("SAMLResponse", saml_response), ("RelayState", "")])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn sign_in(s: &TestServer, knobs: &[(&str, &str)]) -> (u16, Value) {
    let response = mint(s, knobs).await;
    acs(s, &response).await
}

/// The response's XML after `edit`, base64 again: what an attacker can do after signing.
fn edit(saml_response: &str, edit: impl FnOnce(String) -> String) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let xml = String::from_utf8(b64.decode(saml_response).unwrap()).unwrap();
    let edited = edit(xml.clone());
    assert_ne!(edited, xml, "the edit changed nothing");
    b64.encode(edited)
}

fn refused(status: u16, body: &Value) {
    assert_eq!((status, code(body)), (401, "sso_failed"), "{body}");
    assert_eq!(body["error"]["message"], medhub_wire::ErrorCode::SsoFailed.description(), "a fixed message");
}

// --- the flow ---------------------------------------------------------------------------------

each_backend! {
    async fn a_good_assertion_creates_the_user_with_the_mapped_role_and_later_ones_find_it(db) {
        let w = world(db, |_| {}).await;
        let s = &w.s;

        // The AuthnRequest goes to the IdP's SSO URL with the HTTP-Redirect binding.
        let url = start(s, None).await.unwrap();
        assert!(url.as_str().starts_with(&format!("{}/sso/redirect?SAMLRequest=", w.idp.base)), "{url}");

        // An MFA AuthnContext, but this organization has not said its IdP enforces MFA:
        // medhub's own factor follows.
        let knobs = [("user", "Alice"), ("name", "Alice Adams"), ("groups", "staff"), ("authn_class", MFA)];
        let (status, body) = acs(s, &at_idp(url, &knobs).await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user"]["username"], "alice", "the uid attribute, normalized");
        assert_eq!(body["user"]["display_name"], "Alice Adams");
        assert_eq!(body["user"]["role"], "user");
        assert_eq!(body["state"], "mfa_enrollment_required");
        let token = body["token"].as_str().unwrap();
        assert_eq!(me(s, token).await, "mfa_enrollment_required", "a real session, gated until enrolment");

        // The same NameID with another uid: the same medhub user (matched by NameID).
        let (status, again) = sign_in(s, &[("user", "Alice"), ("name", "Alice A.")]).await;
        assert_eq!((status, &again["user"]["id"]), (200, &body["user"]["id"]), "{again}");

        // Members of an admin group are administrators.
        let (status, carol) = sign_in(s, &[("user", "carol"), ("groups", "staff,medhub-admins")]).await;
        assert_eq!((status, &carol["user"]["role"]), (200, &json!("admin")), "{carol}");

        // return_to is kept with the flow and echoed.
        let url = start(s, Some("/conversations/42")).await.unwrap();
        let (status, bob) = acs(s, &at_idp(url, &[("user", "bob")]).await).await;
        assert_eq!((status, &bob["return_to"]), (200, &json!("/conversations/42")), "{bob}");
        let (status, err) = start(s, Some("https://evil.example/")).await.unwrap_err();
        assert_eq!((status, code(&err)), (400, "invalid_request"));

        // Garbage is a refused sign-in; both outcomes reach the audit interface.
        let (status, body_bad) = acs(s, "bm90IHhtbA==").await;
        refused(status, &body_bad);
        let alice: uuid::Uuid = body["user"]["id"].as_str().unwrap().parse().unwrap();
        audit_shows_sign_ins(s, "saml", alice).await;
    }
}

each_backend! {
    async fn a_tampered_name_id_is_refused_and_does_not_spend_the_flow(db) {
        let w = world(db, |_| {}).await;
        let s = &w.s;
        let genuine = mint(s, &[("user", "alice")]).await;
        // Change who the signed assertion names, after signing.
        let forged = edit(&genuine, |x| x.replace(">alice-persistent-id<", ">admin-persistent-id<"));
        let (status, body) = acs(s, &forged).await;
        refused(status, &body);
        // An attribute changed after signing: refused too.
        let forged = edit(&genuine, |x| x.replace(">alice</", ">admin</"));
        let (status, body) = acs(s, &forged).await;
        refused(status, &body);
        // The genuine response still works: a refused forgery spends neither the flow nor
        // the assertion.
        let (status, body) = acs(s, &genuine).await;
        assert_eq!((status, &body["user"]["username"]), (200, &json!("alice")), "{body}");
    }
}

each_backend! {
    async fn an_assertion_for_another_audience_is_refused(db) {
        let w = world(db, |_| {}).await;
        let (status, body) = sign_in(&w.s, &[("audience", "https://other-sp.example/saml")]).await;
        refused(status, &body);
        // Control: the same IdP and user with medhub as audience.
        assert_eq!(sign_in(&w.s, &[]).await.0, 200);
    }
}

each_backend! {
    async fn a_replayed_assertion_is_refused(db) {
        let w = world(db, |_| {}).await;
        let response = mint(&w.s, &[("user", "alice")]).await;
        assert_eq!(acs(&w.s, &response).await.0, 200);
        let (status, body) = acs(&w.s, &response).await;
        refused(status, &body);
    }
}

each_backend! {
    async fn an_expired_assertion_is_refused_after_sixty_seconds_of_skew(db) {
        let w = world(db, |_| {}).await;
        let (s, clock) = (&w.s, &w.clock);
        // The IdP's assertions live 5 minutes. medhub's clock 30 s past that: accepted.
        clock.set(Timestamp::now());
        let response = mint(s, &[]).await;
        clock.set(Timestamp::now() + LIFETIME + SignedDuration::from_secs(30));
        let (status, body) = acs(s, &response).await;
        assert_eq!(status, 200, "{body}");
        // 90 s past: refused (the flow itself would still be valid for 10 minutes).
        clock.set(Timestamp::now());
        let response = mint(s, &[]).await;
        clock.set(Timestamp::now() + LIFETIME + SignedDuration::from_secs(90));
        let (status, body) = acs(s, &response).await;
        refused(status, &body);
        // An assertion not yet valid by more than 60 s (NotBefore): refused; 30 s: accepted.
        clock.set(Timestamp::now());
        let response = mint(s, &[]).await;
        clock.set(Timestamp::now() - SignedDuration::from_secs(120));
        let (status, body) = acs(s, &response).await;
        refused(status, &body);
        clock.set(Timestamp::now());
        let response = mint(s, &[]).await;
        clock.set(Timestamp::now() - SignedDuration::from_secs(30));
        let (status, body) = acs(s, &response).await;
        assert_eq!(status, 200, "{body}");
    }
}

each_backend! {
    async fn an_unsigned_or_foreign_signed_assertion_is_refused(db) {
        let w = world(db, |_| {}).await;
        let s = &w.s;
        // No signature at all.
        let (status, body) = sign_in(s, &[("sign", "none")]).await;
        refused(status, &body);
        // Only the Response signed, the Assertion inside not: refused (signed assertions are
        // required).
        let (status, body) = sign_in(s, &[("sign", "response")]).await;
        refused(status, &body);
        // Both signed: accepted (control).
        let (status, body) = sign_in(s, &[("sign", "both")]).await;
        assert_eq!(status, 200, "{body}");

        // The IdP replaced by one with the same entity id and address but another key: its
        // signatures are not accepted.
        let World { s, idp, dir, idp_entity_id, clock: _clock } = w;
        let port = Url::parse(&idp.base).unwrap().port().unwrap();
        drop(idp);
        let (key, cert) = make_cert(dir.path(), "impostor");
        let _impostor = Idp::start(port, &idp_entity_id, &key, &cert, &dir.path().join("sp.xml")).await;
        let (status, body) = sign_in(&s, &[]).await;
        refused(status, &body);
    }
}

each_backend! {
    async fn a_response_to_another_request_is_refused(db) {
        let w = world(db, |_| {}).await;
        let (status, body) = sign_in(&w.s, &[("in_response_to", "_not-a-request-medhub-made")]).await;
        refused(status, &body);
        // A flow is used once: the same IdP answer cannot open a second session either (see
        // a_replayed_assertion_is_refused), and a flow expires after 10 minutes.
        let response = mint(&w.s, &[]).await;
        w.clock.advance(SignedDuration::from_mins(10));
        let (status, body) = acs(&w.s, &response).await;
        refused(status, &body);
    }
}

each_backend! {
    async fn a_wrapped_signature_is_refused(db) {
        let w = world(db, |_| {}).await;
        let s = &w.s;
        let genuine = mint(s, &[("user", "alice")]).await;
        let xml = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(&genuine).unwrap()).unwrap();
        let open = xml.find("<ns1:Assertion ").unwrap();
        let close = xml.find("</ns1:Assertion>").unwrap() + "</ns1:Assertion>".len();
        let signed = &xml[open..close];
        // A forged assertion for someone else, without the signature...
        let sig_start = signed.find("<ns2:Signature").unwrap();
        let sig_end = signed.find("</ns2:Signature>").unwrap() + "</ns2:Signature>".len();
        let forged = format!("{}{}", &signed[..sig_start], &signed[sig_end..])
            .replace(" ID=\"", " ID=\"forged-")
            .replace(">alice-persistent-id<", ">carol-persistent-id<");
        // ...placed before the signed one, or with the signed one hidden inside it.
        let before = format!("{}{forged}{}", &xml[..open], &xml[open..]);
        let hidden = format!(
            "{}{}{}",
            &xml[..open],
            forged.replace("</ns1:Issuer>", &format!("</ns1:Issuer>{signed}")),
            &xml[close..]
        );
        // ...or carrying the genuine signature, which covers the original ID.
        let stolen = format!(
            "{}{}{}",
            &xml[..open],
            forged.replace("</ns1:Issuer>", &format!("</ns1:Issuer>{}", &signed[sig_start..sig_end])),
            &xml[close..]
        );
        for (what, doc) in [("before", before), ("hidden", hidden), ("stolen", stolen)] {
            let (status, body) = acs(s, &base64::engine::general_purpose::STANDARD.encode(doc)).await;
            assert_eq!((status, code(&body)), (401, "sso_failed"), "{what}: {body}");
        }
        let (status, body) = acs(s, &genuine).await;
        assert_eq!((status, &body["user"]["username"]), (200, &json!("alice")), "{body}");
    }
}

// --- MFA ----------------------------------------------------------------------------------------

each_backend! {
    async fn the_idps_mfa_counts_only_when_enforced_and_shown_in_the_authn_context(db) {
        let w = world(db, |c| c.idp_enforces_mfa = true).await;
        let s = &w.s;
        let (status, body) = sign_in(s, &[("user", "bob")]).await;
        assert_eq!((status, &body["state"]), (200, &json!("mfa_enrollment_required")), "{body}");
        assert_eq!(me(s, body["token"].as_str().unwrap()).await, "mfa_enrollment_required");
        let (status, body) = sign_in(s, &[("user", "bob"), ("authn_class", MFA)]).await;
        assert_eq!((status, &body["state"]), (200, &json!("active")), "{body}");
        let token = body["token"].as_str().unwrap().to_owned();
        assert_eq!(me(s, &token).await, "ok");
        // The factor counts as just proven: a sensitive action needs no step-up now.
        assert!(step_up_is_fresh(s, &token).await);
    }
}

// --- logs ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_from_an_assertion_reaches_the_log() {
    let capture = LogCapture::install();
    let w = world(TestDb::new(medhub_store::Backend::Sqlite).await, |_| {}).await;
    let knobs = [("user", "zed"), ("name", "Zed PATIENT-NAME-77"), ("groups", "GROUP-SECRET-91")];
    let response = mint(&w.s, &knobs).await;
    let (status, body) = acs(&w.s, &response).await;
    assert_eq!(status, 200, "{body}");
    // Refused ones too: a replay and a forgery.
    refused_pair(&w.s, &response).await;
    let log = capture.text();
    assert!(log.contains("SSO sign-in refused"), "the capture saw the server's logs");
    let xml = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(&response).unwrap()).unwrap();
    let signature = xml.split("SignatureValue>").nth(1).unwrap().trim_end_matches("</ns2:").replace('\n', "");
    for secret in [&response[200..260], "zed-persistent-id", "PATIENT-NAME-77", "GROUP-SECRET-91", &signature[..40]] {
        assert!(!log.contains(secret), "the log contains {secret:?}");
    }
}

async fn refused_pair(s: &TestServer, response: &str) {
    let (status, body) = acs(s, response).await;
    refused(status, &body);
    let forged = edit(response, |x| x.replace(">zed-persistent-id<", ">admin-persistent-id<"));
    let (status, body) = acs(s, &forged).await;
    refused(status, &body);
}

// --- configuration --------------------------------------------------------------------------

each_backend! {
    async fn without_saml_the_routes_answer_sso_not_configured(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = server(db, &clock, None).await;
        let (status, body) = start(&s, None).await.unwrap_err();
        assert_eq!((status, code(&body)), (501, "sso_not_configured"));
        let (status, body) = acs(&s, "PHg+").await;
        assert_eq!((status, code(&body)), (501, "sso_not_configured"));
        let resp = reqwest::get(s.url("/api/v1/auth/saml/metadata")).await.unwrap();
        assert_eq!(resp.status().as_u16(), 501);
    }
}
