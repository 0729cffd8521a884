//! Test support: a real medhub server, in process, on an ephemeral port, over SQLite or
//! PostgreSQL, driven by real HTTP and WebSocket clients.
//!
//! Each [`TestServer`] runs on its own tokio runtime, so [`TestServer::kill`] can drop every
//! task at once (no close frames, no drain), the way a crash would, and
//! [`TestServer::restart`] brings a new server up on the same data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use medhub_api::{ApiConfig, AppState};
use medhub_core::audit::AuditRecord;
use medhub_core::model::{SessionState, SystemRole};
use medhub_core::{Clock, SystemClock};
use medhub_service::auth::NewUser;
use medhub_service::{ServiceConfig, Services};
use medhub_store::testdb::TestDb;
use medhub_store::{Backend, DynStore};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use medhub_store::each_backend;

pub mod audit_export;
pub mod pki;

/// How long a test waits for an expected frame before failing.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(15);

/// A signed-in test user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: uuid::Uuid,
    pub username: String,
    pub token: String,
}

impl TestUser {
    /// The user and session of a login answer (in whatever sign-in state it is).
    pub fn from_login(body: &Value) -> Self {
        TestUser {
            id: body["user"]["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no user id: {body}")),
            username: body["user"]["username"].as_str().unwrap_or_default().to_owned(),
            token: body["token"].as_str().unwrap_or_else(|| panic!("no token: {body}")).to_owned(),
        }
    }

    /// The same session under the new token of an answer that finished sign-in (the
    /// server replaces the token when the second factor is proven).
    pub fn with_token(self, body: &Value) -> Self {
        let token = body["token"].as_str().unwrap_or_else(|| panic!("no new token: {body}")).to_owned();
        assert_ne!(token, self.token, "sign-in must issue a new token");
        TestUser { token, ..self }
    }
}

/// A user signed in over HTTP with password and authenticator.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub user: TestUser,
    /// The authenticator's secret (base32).
    pub totp_secret: String,
    /// The recovery codes, when this sign-in enrolled the authenticator.
    pub recovery_codes: Vec<String>,
}

/// Settings for a test server.
#[derive(Clone)]
pub struct Settings {
    pub service: ServiceConfig,
    pub api: ApiConfig,
    pub clock: Arc<dyn Clock>,
}

impl Default for Settings {
    fn default() -> Self {
        Self { service: ServiceConfig::default(), api: ApiConfig::default(), clock: Arc::new(SystemClock) }
    }
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub services: Services,
    pub state: AppState,
    pub db: Arc<TestDb>,
    settings: Settings,
    runtime: Option<tokio::runtime::Runtime>,
    http: reqwest::Client,
}

impl TestServer {
    /// A fresh server on a fresh database.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, Settings::default()).await
    }

    pub async fn start_with(backend: Backend, settings: Settings) -> Self {
        Self::start_on(TestDb::new(backend).await, settings).await
    }

    /// A server on a given test database (from `each_backend!`).
    pub async fn start_on(db: TestDb, settings: Settings) -> Self {
        Self::boot(Arc::new(db), settings).await.unwrap_or_else(|e| panic!("test server failed to start: {e:#}"))
    }

    async fn boot(db: Arc<TestDb>, settings: Settings) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("medhub-test-server")
            .enable_all()
            .build()?;
        let location = db.location().clone();
        let s = settings.clone();
        let (addr, services, state) = runtime
            .spawn(async move {
                let store: DynStore = medhub_store::open(&location).await?;
                store.migrate().await?;
                let (services, _background) = Services::start(store, s.service.clone(), s.clock.clone()).await?;
                let state = AppState::new(services.clone(), s.api.clone());
                let listener = medhub_api::bind("127.0.0.1:0".parse()?, 1024)?;
                let addr = listener.local_addr()?;
                tokio::spawn(medhub_api::serve(listener, state.clone()));
                Ok::<_, anyhow::Error>((addr, services, state))
            })
            .await??;
        Ok(Self { addr, services, state, db, settings, runtime: Some(runtime), http: reqwest::Client::new() })
    }

    /// Drops every server task at once, without closing connections gracefully.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Kills the server and starts a new one on the same data (new port).
    pub async fn restart(mut self) -> Self {
        self.kill();
        // Let the SQLite worker threads of the old store wind down.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (db, settings) = (self.db.clone(), self.settings.clone());
        Self::boot(db, settings).await.unwrap_or_else(|e| panic!("test server failed to restart: {e:#}"))
    }

    /// Runs a future on the server's runtime (for service calls from tests).
    pub async fn on_server<F, T>(&self, f: F) -> T
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        match &self.runtime {
            Some(rt) => rt.spawn(f).await.unwrap_or_else(|e| panic!("server task failed: {e}")),
            None => panic!("server was killed"),
        }
    }

    /// Runs SQL on the server's database behind its back, as someone with database access
    /// would (to break or tamper with it).
    pub async fn sql(&self, sql: &str) {
        match self.db.location() {
            medhub_store::Location::Sqlite { data_dir } => {
                let c = rusqlite::Connection::open(data_dir.join("medhub.db")).unwrap_or_else(|e| panic!("{e}"));
                c.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            medhub_store::Location::Postgres { url, .. } => {
                let (c, conn) =
                    tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap_or_else(|e| panic!("{e}"));
                let conn = tokio::spawn(conn);
                c.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                drop(c);
                let _ = conn.await;
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/v1/ws", self.addr)
    }

    /// Creates a user (organization bootstrapped on first use) with a fresh session.
    pub async fn user(&self, username: &str) -> TestUser {
        self.user_with_role(username, SystemRole::User).await
    }

    pub async fn user_with_role(&self, username: &str, role: SystemRole) -> TestUser {
        self.user_in_org(None, username, role).await
    }

    /// Creates a further organization (a tenant) as `medhub admin org create` does, the
    /// first one being bootstrapped if needed; returns its id. Its administrator is
    /// `admin_username`, with a one-time password nobody uses.
    pub async fn tenant(&self, name: &str, admin_username: &str) -> uuid::Uuid {
        let auth = self.services.auth.clone();
        let (name, admin) = (name.to_owned(), admin_username.to_owned());
        self.on_server(async move {
            let _ = auth.bootstrap("Test Hospital", "admin").await;
            let (org, _, _) = auth.create_org(&name, &admin).await.unwrap_or_else(|e| panic!("create org {name}: {e}"));
            org.id.as_uuid()
        })
        .await
    }

    /// Creates a user of an organization (`None`: the first one, bootstrapped on first use)
    /// with a fresh session.
    pub async fn user_in_org(&self, org: Option<uuid::Uuid>, username: &str, role: SystemRole) -> TestUser {
        let auth = self.services.auth.clone();
        let name = username.to_owned();
        self.on_server(async move {
            if auth.bootstrap("Test Hospital", "admin").await.is_err() {
                panic!("bootstrap failed");
            }
            let new = NewUser {
                username: name.clone(),
                display_name: name.clone(),
                role,
                password: None,
                must_change_password: false,
            };
            let user = match org {
                Some(o) => auth.create_user_in(medhub_core::OrgId::from_uuid(o), new).await,
                None => auth.create_user(new).await,
            }
            .unwrap_or_else(|e| panic!("create user {name}: {e}"));
            let issued =
                auth.issue_session(&user, SessionState::Active).await.unwrap_or_else(|e| panic!("session: {e}"));
            TestUser { id: user.id.as_uuid(), username: name, token: issued.token }
        })
        .await
    }

    /// Creates a user who signs in with `password` (the organization is bootstrapped on first
    /// use); returns the user's id. Each costs an Argon2id hash: keep these few.
    pub async fn password_user(
        &self,
        username: &str,
        role: SystemRole,
        password: &str,
        must_change_password: bool,
    ) -> uuid::Uuid {
        let auth = self.services.auth.clone();
        let (username, password) = (username.to_owned(), password.to_owned());
        self.on_server(async move {
            let _ = auth.bootstrap("Test Hospital", "admin").await;
            let user = auth
                .create_user(NewUser {
                    username: username.clone(),
                    display_name: username.clone(),
                    role,
                    password: Some(password),
                    must_change_password,
                })
                .await
                .unwrap_or_else(|e| panic!("create {username}: {e}"));
            user.id.as_uuid()
        })
        .await
    }

    /// Gives an existing user exactly these roles (keys of the catalogue), as an
    /// administrator would.
    pub async fn set_roles(&self, user: &TestUser, roles: &[&str]) {
        let store = self.services.store.clone();
        let now = self.services.clock.now();
        let id = medhub_core::UserId::from_uuid(user.id);
        let keys: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        self.on_server(async move {
            store.set_user_roles(id, &keys, id, now, &[]).await.unwrap_or_else(|e| panic!("set roles {keys:?}: {e}"));
        })
        .await
    }

    /// Another fully signed-in session (another device) for an existing user.
    pub async fn new_session(&self, user: &TestUser) -> TestUser {
        let (auth, store) = (self.services.auth.clone(), self.services.store.clone());
        let (id, username) = (user.id, user.username.clone());
        self.on_server(async move {
            let u = store
                .user(medhub_core::UserId::from_uuid(id))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("no user {id}"));
            let issued = auth.issue_session(&u, SessionState::Active).await.unwrap_or_else(|e| panic!("{e}"));
            TestUser { id, username, token: issued.token }
        })
        .await
    }

    /// An HTTP request with the user's bearer token; returns status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<&TestUser>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(u) = user {
            req = req.bearer_auth(&u.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("request to {path} failed: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, json)
    }

    pub async fn get(&self, path: &str, user: &TestUser) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(user), None).await
    }

    pub async fn post(&self, path: &str, user: &TestUser, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(user), Some(body)).await
    }

    /// Creates a conversation through the API and returns its id.
    pub async fn conversation(&self, owner: &TestUser, kind: &str, members: &[&TestUser]) -> String {
        let members: Vec<Value> = members.iter().map(|m| json!({"user_id": m.id})).collect();
        let title = if kind == "direct" { Value::Null } else { json!("Ward 7") };
        let (status, body) =
            self.post("/api/v1/conversations", owner, json!({"kind": kind, "title": title, "members": members})).await;
        assert!(status == 201 || status == 200, "create conversation: {status} {body}");
        body["conversation"]["id"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the hub has published every event committed so far. A 201 means committed;
    /// the hub publishes a moment later, so without this a connection opened right after a
    /// request may start before that request's event.
    pub async fn settle(&self) {
        let last = self.services.store.last_event_id().await.unwrap_or_else(|e| panic!("last event: {e}"));
        let deadline = std::time::Instant::now() + FRAME_TIMEOUT;
        while self.services.hub.published() < last {
            assert!(std::time::Instant::now() < deadline, "event {last:?} was never published");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits (up to 15 s) until the audit records stored so far satisfy `done`, and returns
    /// them: the audit writer appends in the background.
    pub async fn audit_until(&self, done: impl Fn(&[AuditRecord]) -> bool) -> Vec<AuditRecord> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let store = self.services.store.clone();
            let all: Vec<AuditRecord> = self
                .on_server(async move { store.audit_events(0, 100_000).await.unwrap_or_else(|e| panic!("audit: {e}")) })
                .await
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            if done(&all) {
                return all;
            }
            assert!(std::time::Instant::now() < deadline, "the audit records never arrived; have: {all:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /api/v1/auth/login`: status and body.
    pub async fn login(&self, username: &str, password: &str) -> (u16, Value) {
        let body = json!({"username": username, "password": password});
        self.call(reqwest::Method::POST, "/api/v1/auth/login", None, Some(body)).await
    }

    /// Signs in over HTTP with a password, as a client would: `login`, then enrols an
    /// authenticator if the account has none (or proves it with `totp_secret`). Returns the
    /// active user and the authenticator's secret and recovery codes (when it enrolled).
    pub async fn sign_in(&self, username: &str, password: &str, totp_secret: Option<&str>) -> SignedIn {
        let (status, login) = self.login(username, password).await;
        assert_eq!(status, 200, "login {username}: {login}");
        let user = TestUser::from_login(&login);
        match (login["state"].as_str(), totp_secret) {
            (Some("mfa_enrollment_required"), _) => {
                let (status, e) = self.post("/api/v1/auth/mfa/totp/enroll", &user, json!({})).await;
                assert_eq!(status, 200, "enroll: {e}");
                let secret = e["secret"].as_str().unwrap_or_else(|| panic!("{e}")).to_owned();
                let (status, c) = self
                    .post("/api/v1/auth/mfa/totp/confirm", &user, json!({"code": self.totp_code(&secret, 0)}))
                    .await;
                assert_eq!(status, 200, "confirm: {c}");
                assert_eq!(c["state"], "active", "{c}");
                let user = user.with_token(&c);
                let codes = c["recovery_codes"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect());
                SignedIn { user, totp_secret: secret, recovery_codes: codes.unwrap_or_default() }
            }
            (Some("mfa_required"), Some(secret)) => {
                // The next step's code: the current one may have been used already.
                let (status, v) =
                    self.post("/api/v1/auth/mfa/verify", &user, json!({"code": self.totp_code(secret, 1)})).await;
                assert_eq!(status, 200, "verify: {v}");
                let user = user.with_token(&v);
                SignedIn { user, totp_secret: secret.to_owned(), recovery_codes: Vec::new() }
            }
            (state, _) => panic!("unexpected sign-in state {state:?}: {login}"),
        }
    }

    /// The TOTP code for `secret` at the server's clock, `steps_ahead` 30-second steps on
    /// (within the ±1 step window, so a code can be made that is not yet used).
    pub fn totp_code(&self, secret: &str, steps_ahead: i64) -> String {
        let at = self.services.clock.now().as_second() + 30 * steps_ahead;
        medhub_service::auth::totp_code(secret, at).unwrap_or_else(|| panic!("bad TOTP secret"))
    }

    /// A single-use WebSocket ticket for the user's session.
    pub async fn ws_ticket(&self, user: &TestUser) -> String {
        let (status, body) = self.post("/api/v1/auth/ws-ticket", user, json!({})).await;
        assert_eq!(status, 200, "ws-ticket: {body}");
        body["ticket"].as_str().unwrap_or_else(|| panic!("no ticket: {body}")).to_owned()
    }

    /// Opens a WebSocket, says hello and returns the client and its `ready` frame. It first
    /// [settles](Self::settle), so the `ready` cursor is after everything done before the call.
    pub async fn connect(&self, user: &TestUser, cursor: Option<u64>) -> (WsClient, Value) {
        self.settle().await;
        let ticket = self.ws_ticket(user).await;
        let mut c = WsClient::open(&self.ws_url()).await.unwrap_or_else(|e| panic!("ws connect: {e:#}"));
        let mut hello = json!({"type": "hello", "ticket": ticket});
        if let Some(c) = cursor {
            hello["cursor"] = json!(c);
        }
        c.send(hello).await;
        let ready = c.next().await.unwrap_or_else(|e| panic!("no ready frame: {e:#}"));
        assert_eq!(ready["type"], "ready", "{ready}");
        (c, ready)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real WebSocket client speaking the medhub protocol.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Frames received while waiting for something else, in order.
    backlog: std::collections::VecDeque<Value>,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The TCP connection ended without a close frame.
    Dropped,
}

impl WsClient {
    pub async fn open(url: &str) -> Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.context("connect")?;
        Ok(Self { ws, next_id: 0, backlog: Default::default() })
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_raw(Message::text(frame.to_string())).await;
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.unwrap_or_else(|e| panic!("ws send: {e}"));
    }

    /// The next text frame, as JSON.
    pub async fn next(&mut self) -> Result<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Ok(v);
        }
        self.read().await
    }

    async fn read(&mut self) -> Result<Value> {
        loop {
            let msg = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .map_err(|_| anyhow!("no frame within {FRAME_TIMEOUT:?}"))?
                .ok_or_else(|| anyhow!("connection ended"))??;
            match msg {
                Message::Text(t) => return Ok(serde_json::from_str(&t)?),
                Message::Close(c) => bail!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Sends a request with a fresh `id` and waits for the frame answering it; frames that
    /// arrive meanwhile are kept for [`Self::next`].
    pub async fn request(&mut self, mut frame: Value) -> Value {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        frame["id"] = json!(id);
        self.send(frame).await;
        loop {
            let v = self.read().await.unwrap_or_else(|e| panic!("waiting for reply {id}: {e:#}"));
            if v["id"] == json!(id) {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    /// The next frame of type `ty`, keeping the others in the backlog.
    pub async fn next_of_type(&mut self, ty: &str) -> Value {
        if let Some(pos) = self.backlog.iter().position(|v| v["type"] == ty)
            && let Some(v) = self.backlog.remove(pos)
        {
            return v;
        }
        loop {
            let v = self.read().await.unwrap_or_else(|e| panic!("waiting for {ty}: {e:#}"));
            if v["type"] == ty {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    /// The next `event` frame.
    pub async fn next_event(&mut self) -> Value {
        self.next_of_type("event").await
    }

    /// Waits for the connection to end and reports how.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match tokio::time::timeout(FRAME_TIMEOUT, self.ws.next()).await {
                Err(_) => panic!("connection still open after {FRAME_TIMEOUT:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Closed::Dropped,
                Ok(Some(Ok(Message::Close(Some(c))))) => return Closed::Code(c.code.into()),
                Ok(Some(Ok(Message::Close(None)))) => return Closed::Dropped,
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Ok(v) = serde_json::from_str(&t) {
                        self.backlog.push_back(v);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Frames kept while waiting for replies.
    pub fn backlog(&mut self) -> &mut std::collections::VecDeque<Value> {
        &mut self.backlog
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Log output for tests that want it (`RUST_LOG=debug`).
/// Everything the process logs, through the filter the server installs asked for `trace`.
/// It becomes the process's global subscriber, so a test binary installs it once.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn install() -> Self {
        let capture = LogCapture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_env_filter(medhub_api::log_filter("trace"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init()
            .unwrap_or_else(|e| panic!("a global subscriber was installed already: {e}"));
        capture
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A hand-rolled WebSocket client for what a well-behaved library will not do: send invalid
/// frames, or never answer pings.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Connects and completes the opening handshake.
    pub async fn connect(addr: SocketAddr, path: &str) -> Result<Self> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(addr).await?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("closed during handshake");
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                if !head.starts_with("HTTP/1.1 101") {
                    bail!("handshake refused: {head}");
                }
                buf.drain(..end + 4);
                return Ok(Self { stream, buf });
            }
        }
    }

    /// Sends one masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut f = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len < 65536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&f).await?;
        Ok(())
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.send_frame(0x1, text.as_bytes()).await
    }

    /// Reads one (unmasked) server frame: opcode and payload.
    pub async fn read_frame(&mut self) -> Result<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 2 {
                let opcode = self.buf[0] & 0x0f;
                let (len, header) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= header + len {
                    let payload = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return Ok((opcode, payload));
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(FRAME_TIMEOUT, self.stream.read(&mut chunk))
                .await
                .map_err(|_| anyhow!("no frame within {FRAME_TIMEOUT:?}"))??;
            if n == 0 {
                bail!("connection ended");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames (ignoring pings, never answering them) until a close frame; returns its
    /// code and how many pings arrived first.
    pub async fn read_until_close(&mut self) -> Result<(u16, usize)> {
        let mut pings = 0;
        loop {
            let (op, payload) = self.read_frame().await?;
            match op {
                0x8 if payload.len() >= 2 => return Ok((u16::from_be_bytes([payload[0], payload[1]]), pings)),
                0x8 => return Ok((1005, pings)),
                0x9 => pings += 1,
                _ => {}
            }
        }
    }
}
