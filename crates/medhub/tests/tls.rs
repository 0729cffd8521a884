//! HTTPS in the real binary: `medhub serve --tls-cert --tls-key` with a certificate from a CA
//! made at test time, checked with real TLS clients.
//!
//! - TLS 1.3 only by default: a TLS 1.2 client is refused; with `tls.allow_tls12` a TLS 1.2
//!   client gets an ECDHE AEAD suite, and a hand-written TLS 1.2 ClientHello offering only
//!   CBC, 3DES or static-RSA suites is refused (rustls cannot offer such suites, so the test
//!   writes the ClientHello bytes itself; the same bytes with a GCM suite get a ServerHello).
//! - ALPN: h2 and http/1.1; `GET /healthz` over both carries HSTS.
//! - The WebSocket upgrade over TLS: hello, ready, ping, pong; SIGTERM closes it with 1001.
//! - SIGHUP reloads the certificate for new connections; a broken pair is refused, logged
//!   without the key's contents, and the previous certificate stays.
//! - A missing or broken certificate or key stops the start with a message naming the file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use medhub_testkit::pki::{Leaf, TestCa};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How long a test waits for the server to say something before failing.
const WAIT: Duration = Duration::from_secs(60);

const HSTS: &str = "max-age=63072000; includeSubDomains";

/// A running `medhub serve`, its address and its log lines.
struct Medhub {
    child: tokio::process::Child,
    addr: SocketAddr,
    log: mpsc::UnboundedReceiver<String>,
}

impl Medhub {
    /// Starts the binary with `args` (after `serve --listen 127.0.0.1:0 --data-dir DIR`) and
    /// `env`, and waits until it announces its address (which must use `scheme`).
    async fn start(data_dir: &Path, args: &[String], env: &[(&str, &str)], scheme: &str) -> Self {
        Self::start_on("127.0.0.1:0", data_dir, args, env, scheme).await
    }

    async fn start_on(listen: &str, data_dir: &Path, args: &[String], env: &[(&str, &str)], scheme: &str) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_medhub"))
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn medhub");
        let (tx, log) = mpsc::unbounded_channel();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let _ = tx.send(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let prefix = format!("medhub: listening on {scheme}://");
        let addr = tokio::time::timeout(WAIT, async {
            let mut seen = Vec::new();
            while let Some(line) = stdout.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix(&prefix) {
                    return rest.trim().parse().unwrap();
                }
                seen.push(line);
            }
            panic!("medhub exited before listening on {scheme}: {seen:?}");
        })
        .await
        .expect("medhub listens");
        // Keep draining standard output so the server never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Self { child, addr, log }
    }

    /// Waits for a log line containing `needle`, and returns it.
    async fn wait_log(&mut self, needle: &str) -> String {
        tokio::time::timeout(WAIT, async {
            while let Some(line) = self.log.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("medhub's log ended without {needle:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no log line with {needle:?}"))
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("medhub runs").to_string();
        let status = std::process::Command::new("kill").args(["-s", name, &pid]).status().unwrap();
        assert!(status.success(), "kill -s {name}");
    }
}

/// A directory with the data, a CA and a server certificate for localhost and 127.0.0.1.
struct Setup {
    dir: tempfile::TempDir,
    ca: TestCa,
    leaf: Leaf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("medhub test CA");
        let leaf = ca.issue(&["localhost", "127.0.0.1"]);
        let s = Self { dir, ca, leaf };
        s.install(&s.leaf.clone());
        s
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tls_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert().display().to_string(),
            "--tls-key".into(),
            self.key().display().to_string(),
        ]
    }

    /// Writes a certificate and key in place, each by an atomic rename, as an operator's
    /// renewal tool would.
    fn install(&self, leaf: &Leaf) {
        replace(&self.cert(), leaf.cert_pem.as_bytes());
        replace(&self.key(), leaf.key_pem.as_bytes());
    }
}

fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A rustls client trusting `ca` (DER), speaking `versions`, offering `alpn`.
fn client(ca: &[u8], versions: &[&'static SupportedProtocolVersion], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.to_vec())).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn tls13_and_12() -> Vec<&'static SupportedProtocolVersion> {
    vec![&rustls::version::TLS13, &rustls::version::TLS12]
}

async fn handshake(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// The certificate the server presented.
fn peer_cert(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One HTTPS request over a fresh connection, HTTP/2 if `h2`, else HTTP/1.1.
async fn https(
    addr: SocketAddr,
    ca: &[u8],
    h2: bool,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, hyper::HeaderMap, Value) {
    https_as(addr, ca, h2, method, path, body, None).await
}

/// [`https`] with a bearer token.
async fn https_as(
    addr: SocketAddr,
    ca: &[u8],
    h2: bool,
    method: &str,
    path: &str,
    body: Option<Value>,
    bearer: Option<&str>,
) -> (u16, hyper::HeaderMap, Value) {
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    let tls = handshake(addr, client(ca, &tls13_and_12(), &[alpn])).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "ALPN");
    let req = Request::builder()
        .method(method)
        .uri(if h2 { format!("https://localhost:{}{path}", addr.port()) } else { path.to_owned() })
        .header("content-type", "application/json");
    let req = if h2 { req } else { req.header("host", format!("localhost:{}", addr.port())) };
    let req = match bearer {
        Some(t) => req.header("authorization", format!("Bearer {t}")),
        None => req,
    };
    let req = req.body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default()))).unwrap();
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A TLS 1.2 ClientHello offering exactly `suites` (and the usual groups and signature
/// schemes), written by hand because rustls cannot offer CBC or static-RSA suites.
fn tls12_client_hello(suites: &[u16]) -> Vec<u8> {
    fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend((data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    let mut extensions = Vec::new();
    let host = b"localhost";
    let mut sni = Vec::new();
    sni.extend(((host.len() + 3) as u16).to_be_bytes());
    sni.push(0); // host_name
    sni.extend((host.len() as u16).to_be_bytes());
    sni.extend(host);
    extension(&mut extensions, 0x0000, &sni);
    // supported_groups: x25519, secp256r1, secp384r1
    extension(&mut extensions, 0x000a, &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    // ec_point_formats: uncompressed
    extension(&mut extensions, 0x000b, &[1, 0]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    extension(&mut extensions, 0x000d, &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
    // extended_master_secret, renegotiation_info (initial handshake)
    extension(&mut extensions, 0x0017, &[]);
    extension(&mut extensions, 0xff01, &[0]);

    let mut body = vec![0x03, 0x03]; // TLS 1.2
    body.extend([0x5a; 32]); // random
    body.push(0); // no session id
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null only
    body.extend((extensions.len() as u16).to_be_bytes());
    body.extend(extensions);

    let mut handshake = vec![0x01]; // client_hello
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// What the server answered to a hand-written ClientHello.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A ServerHello choosing this suite.
    ServerHello(u16),
    /// A fatal alert with this description.
    Alert(u8),
    /// The connection closed without either.
    Closed,
}

async fn raw_hello(addr: SocketAddr, suites: &[u16]) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&tls12_client_hello(suites)).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut chunk = [0u8; 4096];
        // Enough for the record header, the handshake header and the ServerHello's suite.
        while buf.len() < 5 + 4 + 2 + 32 + 1 + 32 + 2 {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend(&chunk[..n]),
            }
            if buf.first() == Some(&0x15) && buf.len() >= 7 {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    match buf.first() {
        Some(0x15) if buf.len() >= 7 => Answer::Alert(buf[6]),
        Some(0x16) if buf.len() > 5 && buf[5] == 0x02 => {
            let sid_len = buf[5 + 4 + 2 + 32] as usize;
            let at = 5 + 4 + 2 + 32 + 1 + sid_len;
            Answer::ServerHello(u16::from_be_bytes([buf[at], buf[at + 1]]))
        }
        _ => Answer::Closed,
    }
}

/// TLS 1.2 suites that must never be chosen: CBC (with and without ECDHE), 3DES, RC4-free
/// static RSA with GCM (no forward secrecy), and NULL.
const REFUSED_TLS12_SUITES: &[(u16, &str)] = &[
    (0xc009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xc00a, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xc023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xc013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    (0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA"),
    (0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256"),
    (0x000a, "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0xc006, "TLS_ECDHE_ECDSA_WITH_NULL_SHA"),
];

/// The ECDHE AEAD suites a server with an ECDSA certificate can choose.
const ECDSA_AEAD_SUITES: &[u16] = &[0xc02b, 0xc02c, 0xcca9];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_only_tls13_is_spoken_and_https_and_websockets_work() {
    let setup = Setup::new();
    let ca = setup.ca.der();
    // A user with a password of its own (not a one-time one), made with the admin CLI.
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_medhub"))
        .args(["admin", "user", "create", "doc", "--display-name", "Dr Doc", "--password-stdin", "--data-dir"])
        .arg(setup.data())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut created = created;
    {
        use std::io::Write;
        created.stdin.take().unwrap().write_all(b"correct horse battery staple\n").unwrap();
    }
    assert!(created.wait_with_output().unwrap().status.success(), "admin user create");

    let mut medhub = Medhub::start(&setup.data(), &setup.tls_args(), &[], "https").await;
    let addr = medhub.addr;

    // TLS 1.3 is negotiated by a client that offers both.
    let tls = handshake(addr, client(&ca, &tls13_and_12(), &[])).await.unwrap();
    assert_eq!(tls.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(peer_cert(&tls), setup.leaf.cert_der);
    drop(tls);

    // A TLS 1.2-only client is refused, and so is a hand-written TLS 1.2 hello with a good suite.
    let refused = handshake(addr, client(&ca, &[&rustls::version::TLS12], &[])).await;
    let e = refused.expect_err("a TLS 1.2 client must be refused");
    assert!(e.to_string().contains("ProtocolVersion"), "{e}");
    assert_eq!(raw_hello(addr, ECDSA_AEAD_SUITES).await, Answer::Alert(70), "protocol_version alert");

    // ALPN offers h2 and http/1.1; /healthz answers over both, with HSTS.
    for h2 in [true, false] {
        let (status, headers, body) = https(addr, &ca, h2, "GET", "/healthz", None).await;
        assert_eq!(status, 200, "h2={h2}");
        assert_eq!(body["status"], "ok");
        assert_eq!(headers.get("strict-transport-security").unwrap(), HSTS, "h2={h2}");
        assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
    }
    let (status, headers, _) = https(addr, &ca, true, "GET", "/api/v1/no-such-route", None).await;
    assert_eq!(status, 404);
    assert_eq!(headers.get("strict-transport-security").unwrap(), HSTS);
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");

    // Sign in over HTTPS, then the WebSocket over TLS (HTTP/1.1 upgrade).
    let (status, _, login) = https(
        addr,
        &ca,
        true,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"username": "doc", "password": "correct horse battery staple"})),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["state"], "mfa_enrollment_required", "{login}");
    let token = login["token"].as_str().unwrap().to_owned();
    // The second factor: enrol an authenticator, confirm it with a code, then ask for a ticket.
    let (status, _, enrol) =
        https_as(addr, &ca, true, "POST", "/api/v1/auth/mfa/totp/enroll", None, Some(&token)).await;
    assert_eq!(status, 200, "{enrol}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let code = medhub_service::auth::totp_code(enrol["secret"].as_str().unwrap(), now).unwrap();
    let confirm = json!({"code": code});
    let (status, _, confirmed) =
        https_as(addr, &ca, true, "POST", "/api/v1/auth/mfa/totp/confirm", Some(confirm), Some(&token)).await;
    assert_eq!((status, &confirmed["state"]), (200, &json!("active")), "{confirmed}");
    let token = confirmed["token"].as_str().unwrap().to_owned();
    let (status, _, ticket) = https_as(addr, &ca, true, "POST", "/api/v1/auth/ws-ticket", None, Some(&token)).await;
    assert_eq!(status, 200, "{ticket}");
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let tls = handshake(addr, client(&ca, &tls13_and_12(), &[b"http/1.1"])).await.unwrap();
    let (mut ws, upgrade) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/api/v1/ws", addr.port()), tls).await.unwrap();
    assert_eq!(upgrade.status().as_u16(), 101);
    assert_eq!(upgrade.headers().get("strict-transport-security").unwrap(), HSTS);
    ws.send(Message::text(json!({"type": "hello", "ticket": ticket}).to_string())).await.unwrap();
    let ready = next_json(&mut ws).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    ws.send(Message::text(json!({"type": "ping", "id": "p1"}).to_string())).await.unwrap();
    let pong = next_json(&mut ws).await;
    assert_eq!(pong, json!({"type": "pong", "id": "p1"}));

    // Graceful shutdown reaches TLS connections: the socket closes with 1001 (going away).
    medhub.signal("TERM");
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                other => panic!("the connection ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame at shutdown");
    assert_eq!(close, Some(CloseCode::Away));
    let status = tokio::time::timeout(WAIT, medhub.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "medhub exits cleanly: {status:?}");
    medhub.wait_log("stopped").await;
}

async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("no frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_when_allowed_offers_only_forward_secret_aead_suites() {
    let setup = Setup::new();
    let ca = setup.ca.der();
    let medhub =
        Medhub::start(&setup.data(), &setup.tls_args(), &[("MEDHUB__TLS__ALLOW_TLS12", "true")], "https").await;
    let addr = medhub.addr;

    // TLS 1.3 still comes first.
    let tls = handshake(addr, client(&ca, &tls13_and_12(), &[])).await.unwrap();
    assert_eq!(tls.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    drop(tls);

    // A TLS 1.2 client connects and gets one of the allowed suites.
    let tls = handshake(addr, client(&ca, &[&rustls::version::TLS12], &[])).await.unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    let suite = conn.negotiated_cipher_suite().unwrap().suite();
    assert!(medhub_api::tls::TLS12_SUITES.contains(&suite), "{suite:?}");
    drop(tls);

    // Each ECDHE AEAD suite is accepted on its own (the certificate is ECDSA)...
    for &suite in ECDSA_AEAD_SUITES {
        assert_eq!(raw_hello(addr, &[suite]).await, Answer::ServerHello(suite), "{suite:#06x}");
    }
    // ...and each CBC, 3DES, NULL or static-RSA suite is refused, alone and all together.
    for &(suite, name) in REFUSED_TLS12_SUITES {
        let answer = raw_hello(addr, &[suite]).await;
        assert!(matches!(answer, Answer::Alert(_) | Answer::Closed), "{name}: {answer:?}");
    }
    let all: Vec<u16> = REFUSED_TLS12_SUITES.iter().map(|s| s.0).collect();
    assert_eq!(raw_hello(addr, &all).await, Answer::Alert(40), "handshake_failure for {all:x?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_for_new_connections() {
    let setup = Setup::new();
    let first_ca = setup.ca.der();
    let mut medhub = Medhub::start(&setup.data(), &setup.tls_args(), &[], "https").await;
    let addr = medhub.addr;
    let before = handshake(addr, client(&first_ca, &tls13_and_12(), &[])).await.unwrap();
    assert_eq!(peer_cert(&before), setup.leaf.cert_der);

    // A renewal from another CA, written in place, then SIGHUP.
    let second_ca = TestCa::new("medhub renewed CA");
    let renewed = second_ca.issue(&["localhost", "127.0.0.1"]);
    setup.install(&renewed);
    medhub.signal("HUP");
    medhub.wait_log("TLS certificate and key reloaded").await;
    let after = handshake(addr, client(&second_ca.der(), &tls13_and_12(), &[])).await.unwrap();
    assert_eq!(peer_cert(&after), renewed.cert_der, "a new connection sees the new certificate");
    let e = handshake(addr, client(&first_ca, &tls13_and_12(), &[])).await.expect_err("the old CA no longer fits");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // A connection opened before the reload keeps working on the old certificate.
    assert_eq!(http1_get(before, "/healthz").await, 200);

    // A broken key: the reload is refused and logged without the key's contents, and the
    // renewed certificate stays in use.
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC1kby1ub3QtbG9n";
    std::fs::write(setup.key(), format!("-----BEGIN PRIVATE KEY-----\n{secret}!!\n-----END PRIVATE KEY-----\n"))
        .unwrap();
    medhub.signal("HUP");
    let line = medhub.wait_log("TLS reload failed").await;
    assert!(line.contains(&setup.key().display().to_string()), "the error names the key file: {line}");
    assert!(!line.contains(secret), "the key's contents reached the log: {line}");
    let still = handshake(addr, client(&second_ca.der(), &tls13_and_12(), &[])).await.unwrap();
    assert_eq!(peer_cert(&still), renewed.cert_der);

    // A key that is not the certificate's is refused too.
    std::fs::write(setup.key(), setup.leaf.key_pem.as_bytes()).unwrap();
    medhub.signal("HUP");
    let line = medhub.wait_log("TLS reload failed").await;
    assert!(line.contains("cannot be used with the certificate"), "{line}");
    let still = handshake(addr, client(&second_ca.der(), &tls13_and_12(), &[])).await.unwrap();
    assert_eq!(peer_cert(&still), renewed.cert_der);
}

/// `GET path` over an open TLS connection with HTTP/1.1; returns the status.
async fn http1_get(tls: TlsStream<TcpStream>, path: &str) -> u16 {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder().uri(path).header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}

/// Runs `medhub serve` expecting it to refuse to start; returns its standard error.
async fn refused_start(data_dir: &Path, args: &[String]) -> String {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_medhub"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env_remove("RUST_LOG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("medhub gave up at once")
    .unwrap();
    assert!(!out.status.success(), "medhub started: {}", String::from_utf8_lossy(&out.stdout));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    String::from_utf8(out.stderr).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_broken_certificate_or_key_stops_the_start_naming_the_file() {
    let setup = Setup::new();
    let dir = setup.dir.path();
    let args = |cert: &Path, key: &Path| {
        vec!["--tls-cert".into(), cert.display().to_string(), "--tls-key".into(), key.display().to_string()]
    };

    let missing = dir.join("missing-key.pem");
    let e = refused_start(&setup.data(), &args(&setup.cert(), &missing)).await;
    assert!(e.contains(&missing.display().to_string()) && e.contains("No such file"), "{e}");

    let not_a_cert = dir.join("not-a-cert.pem");
    std::fs::write(&not_a_cert, "hello\n").unwrap();
    let e = refused_start(&setup.data(), &args(&not_a_cert, &setup.key())).await;
    assert!(e.contains(&not_a_cert.display().to_string()) && e.contains("no valid PEM certificate"), "{e}");

    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC1kby1ub3QtbG9n";
    let bad_key = dir.join("bad-key.pem");
    std::fs::write(&bad_key, format!("-----BEGIN PRIVATE KEY-----\n{secret}!!\n-----END PRIVATE KEY-----\n")).unwrap();
    let e = refused_start(&setup.data(), &args(&setup.cert(), &bad_key)).await;
    assert!(e.contains(&bad_key.display().to_string()) && e.contains("no valid PEM private key"), "{e}");
    assert!(!e.contains(secret), "the key's contents were printed: {e}");

    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, setup.ca.issue(&["localhost"]).key_pem).unwrap();
    let e = refused_start(&setup.data(), &args(&setup.cert(), &other_key)).await;
    assert!(e.contains("cannot be used with the certificate"), "{e}");
    assert!(e.contains(&other_key.display().to_string()) && e.contains(&setup.cert().display().to_string()), "{e}");

    let e = refused_start(&setup.data(), &["--tls-cert".into(), setup.cert().display().to_string()]).await;
    assert!(e.contains("must be set together"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_a_public_address_is_warned_about() {
    let setup = Setup::new();
    let mut medhub = Medhub::start_on("0.0.0.0:0", &setup.data(), &[], &[], "http").await;
    medhub.wait_log("plain HTTP on a non-loopback address").await;
}
