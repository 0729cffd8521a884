//! The real peers the channels talk to, all on loopback: an aiosmtpd SMTP server (Python, in a
//! venv this module creates when missing), the web-push-testing push service (Node, `npm ci`
//! when missing), and an SMS provider API served in process that records every request.
//! Each peer gets a free port and is killed when dropped. Without python3 or Node the tests
//! fail with a message saying what is missing; they never skip.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use medhub_core::model::{Conversation, ConversationKind, SystemRole, User};
use medhub_core::patient::PatientRef;
use medhub_core::{ConversationId, OrgId, Seq, Timestamp, UserId};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `port` accepts connections, failing with the child's stderr if it exits.
async fn wait_for_port(what: &str, port: u16, child: &mut Child, stderr: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 60 s:\n{}",
            std::fs::read_to_string(stderr).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A throw-away CA and a server certificate for 127.0.0.1, as PEM files in a temp directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(DnType::CommonName, "medhub test hospital CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            dir,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SMTP: PyPI aiosmtpd

fn smtp_dir() -> PathBuf {
    crate_dir().join("tests/peers/smtp")
}

/// The venv's python with the pinned aiosmtpd (made once per test binary when missing or
/// at another version).
fn smtp_python() -> PathBuf {
    static DONE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = done.as_ref() {
        return p.clone();
    }
    let venv = std::env::var("MEDHUB_AIOSMTPD_VENV").unwrap_or_else(|_| "/var/tmp/medhub-aiosmtpd-venv".into());
    let python = Path::new(&venv).join("bin/python");
    let requirements = std::fs::read_to_string(smtp_dir().join("requirements.txt")).unwrap();
    let pin = requirements.lines().find(|l| l.starts_with("aiosmtpd==")).unwrap().trim().to_owned();
    let version = pin.trim_start_matches("aiosmtpd==");
    let installed = Command::new(&python)
        .args(["-c", "import importlib.metadata as m; print(m.version('aiosmtpd'))"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == version);
    if !installed {
        let status = Command::new("python3")
            .args(["-m", "venv", "--clear", &venv])
            .status()
            .unwrap_or_else(|e| panic!("the SMTP tests need python3 (with venv; Debian python3-venv): {e}"));
        assert!(status.success(), "python3 -m venv {venv} failed (is python3-venv installed?)");
        let status = Command::new(Path::new(&venv).join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(smtp_dir().join("requirements.txt"))
            .status()
            .expect("pip install");
        assert!(status.success(), "pip install -r tests/peers/smtp/requirements.txt failed");
    }
    *done = Some(python.clone());
    python
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpMode {
    Starttls,
    Implicit,
    Plain,
}

/// How to start the SMTP server.
pub struct SmtpPeerOptions<'a> {
    pub mode: SmtpMode,
    pub pki: Option<&'a Pki>,
    /// "user:password" it accepts with AUTH (over TLS only).
    pub auth: Option<&'a str>,
    /// Answer DATA with this instead of accepting ("451 4.3.0 Try again later").
    pub data_reply: Option<&'a str>,
}

/// A message the SMTP server accepted.
#[derive(Debug)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The DATA bytes exactly as they arrived.
    pub data: Vec<u8>,
    /// The TLS version of the session ("TLSv1.3"), None without TLS.
    pub tls: Option<String>,
    pub auth_login: Option<String>,
}

pub struct SmtpPeer {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl SmtpPeer {
    pub async fn start(options: SmtpPeerOptions<'_>) -> Self {
        let python = smtp_python();
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let outdir = dir.path().join("mail");
        std::fs::create_dir(&outdir).unwrap();
        let stderr = dir.path().join("stderr.txt");
        let mode = match options.mode {
            SmtpMode::Starttls => "starttls",
            SmtpMode::Implicit => "implicit",
            SmtpMode::Plain => "plain",
        };
        let mut cmd = Command::new(python);
        cmd.arg(smtp_dir().join("smtp_peer.py"))
            .args(["--port", &port.to_string(), "--mode", mode])
            .arg("--outdir")
            .arg(&outdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        if let Some(pki) = options.pki {
            cmd.arg("--cert").arg(&pki.cert).arg("--key").arg(&pki.key);
        }
        if let Some(auth) = options.auth {
            cmd.args(["--auth", auth]);
        }
        if let Some(reply) = options.data_reply {
            cmd.args(["--data-reply", reply]);
        }
        let mut child = cmd.spawn().expect("start tests/peers/smtp/smtp_peer.py");
        wait_for_port("the aiosmtpd SMTP server", port, &mut child, &stderr).await;
        SmtpPeer { port, child, dir }
    }

    /// Every message accepted so far, in order. The server writes a message before it answers
    /// DATA, so a send that returned has its message here.
    pub fn messages(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mail"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| {
                let v: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
                Received {
                    mail_from: v["mail_from"].as_str().unwrap().to_owned(),
                    rcpt_tos: v["rcpt_tos"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_str().unwrap().to_owned())
                        .collect(),
                    data: base64::engine::general_purpose::STANDARD.decode(v["data_b64"].as_str().unwrap()).unwrap(),
                    tls: v["tls"].as_str().map(str::to_owned),
                    auth_login: v["auth_login"].as_str().map(str::to_owned),
                }
            })
            .collect()
    }
}

impl Drop for SmtpPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        show_stderr_if_failing("aiosmtpd", &self.dir.path().join("stderr.txt"));
    }
}

/// When a test fails, what its peer wrote to stderr helps to see why.
fn show_stderr_if_failing(what: &str, path: &Path) {
    if std::thread::panicking() {
        eprintln!("--- {what} stderr ---\n{}", std::fs::read_to_string(path).unwrap_or_default());
    }
}

// ---------------------------------------------------------------------------------------------
// Web Push: npm web-push-testing

fn webpush_dir() -> PathBuf {
    crate_dir().join("tests/peers/webpush")
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
        "the Web Push tests need Node.js 20 or later (`node` on PATH; Debian nodejs and npm): {node:?}"
    );
    if !webpush_dir().join("node_modules/web-push-testing").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(webpush_dir())
            .status()
            .expect("npm ci in crates/medhub-notify/tests/peers/webpush (is npm installed?)");
        assert!(status.success(), "npm ci in crates/medhub-notify/tests/peers/webpush failed");
    }
    *done = true;
}

/// A subscription the push service made, as a browser would hand it to medhub.
pub struct Subscribed {
    pub json: Value,
    pub client_hash: String,
}

pub struct PushPeer {
    pub origin: String,
    http: reqwest::Client,
    child: Child,
    dir: tempfile::TempDir,
}

impl PushPeer {
    pub async fn start() -> Self {
        ensure_node_modules();
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr.txt");
        let mut child = Command::new("node")
            .arg(webpush_dir().join("emulator.js"))
            .args(["--port", &port.to_string()])
            // web-push-testing's CLI keeps state in the working directory; the emulator does
            // not use it, but keep the checkout clean anyway.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start tests/peers/webpush/emulator.js with node");
        wait_for_port("the web-push-testing push service", port, &mut child, &stderr).await;
        PushPeer { origin: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new(), child, dir }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.http.post(format!("{}{path}", self.origin)).json(&body).send().await.unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Subscribes as a browser would with `applicationServerKey` = the VAPID public key.
    pub async fn subscribe(&self, application_server_key: &str) -> Subscribed {
        let (status, v) = self.post("/subscribe", json!({ "applicationServerKey": application_server_key })).await;
        assert_eq!(status, StatusCode::OK, "subscribe: {v}");
        let data = &v["data"];
        Subscribed {
            json: json!({ "endpoint": data["endpoint"], "keys": data["keys"] }),
            client_hash: data["clientHash"].as_str().unwrap().to_owned(),
        }
    }

    /// The payloads the push service decrypted for this subscription.
    pub async fn notifications(&self, client_hash: &str) -> Vec<String> {
        let (status, v) = self.post("/get-notifications", json!({ "clientHash": client_hash })).await;
        assert_eq!(status, StatusCode::OK, "get-notifications: {v}");
        v["data"]["messages"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()).collect()
    }

    /// Marks the subscription expired: the push service answers 410 from now on.
    pub async fn expire(&self, client_hash: &str) {
        let (status, v) = self.post(&format!("/expire-subscription/{client_hash}"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "expire-subscription: {v}");
    }

    /// Every push request the service received: headers, decoded token, and its answer.
    pub async fn requests(&self) -> Vec<Value> {
        let (status, v) = self.post("/medhub/requests", json!({})).await;
        assert_eq!(status, StatusCode::OK);
        v["requests"].as_array().unwrap().clone()
    }
}

impl Drop for PushPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        show_stderr_if_failing("web-push-testing", &self.dir.path().join("stderr.txt"));
    }
}

// ---------------------------------------------------------------------------------------------
// SMS: a provider API in process

/// An answer the SMS provider gives.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn ok(id: &str) -> Self {
        Reply { status: 200, headers: vec![], body: json!({ "id": id, "status": "queued" }).to_string() }
    }

    pub fn status(status: u16) -> Self {
        Reply { status, headers: vec![], body: "{\"error\":\"x\"}".into() }
    }
}

/// A request the SMS provider received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct SmsState {
    script: VecDeque<Reply>,
    received: Vec<Recorded>,
}

pub struct SmsPeer {
    pub url: String,
    state: Arc<Mutex<SmsState>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmsPeer {
    /// Answers each request with the next reply of `script`, then with `Reply::ok("SM-default")`.
    pub async fn start(script: Vec<Reply>) -> Self {
        let state = Arc::new(Mutex::new(SmsState { script: script.into(), received: vec![] }));
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/v1/messages",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move {
                    let mut s = state.lock().unwrap();
                    s.received.push(Recorded {
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("<binary>").to_owned()))
                            .collect(),
                        body: body.to_vec(),
                    });
                    let reply = s.script.pop_front().unwrap_or_else(|| Reply::ok("SM-default"));
                    let mut response = axum::response::Response::builder()
                        .status(reply.status)
                        .header("content-type", "application/json");
                    for (k, v) in &reply.headers {
                        response = response.header(*k, v);
                    }
                    response.body(axum::body::Body::from(reply.body)).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        SmsPeer { url: format!("http://{addr}/v1/messages"), state, task }
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().received.clone()
    }
}

impl Drop for SmsPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Domain records

pub fn user(display_name: &str) -> User {
    User {
        id: UserId::new_v7(),
        org: OrgId::new_v7(),
        username: "asmith".into(),
        display_name: display_name.into(),
        role: SystemRole::User,
        active: true,
        created_at: Timestamp::UNIX_EPOCH,
    }
}

pub fn conversation(kind: ConversationKind, title: Option<&str>, patient: Option<&str>) -> Conversation {
    Conversation {
        id: ConversationId::new_v7(),
        kind,
        title: title.map(str::to_owned),
        created_by: None,
        created_at: Timestamp::UNIX_EPOCH,
        last_seq: Seq::new(3),
        member_count: 4,
        owner_count: 1,
        org: OrgId::new_v7(),
        patient: patient.map(|p| PatientRef::parse(p).unwrap()),
    }
}
