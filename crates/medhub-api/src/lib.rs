//! medhub's HTTP and WebSocket layer: thin handlers that parse, authenticate, call a
//! service and encode the answer. No SQL and no business rules live here.

mod audit;
mod audit_export;
mod audit_reports;
pub mod authz;
mod error;
mod escalation;
mod extract;
mod handoff;
mod headers;
mod identity;
mod longpoll;
mod oncall;
pub mod openapi;
mod ops;
mod passkey;
mod patients;
mod presence;
mod ratelimit;
mod rest;
mod retention;
mod sso;
pub mod tls;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use medhub_service::Services;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use audit::event_view as audit_event_view;
pub use error::ApiError;
pub use tls::{Tls, TlsError, TlsSettings, serve_tls};

/// The log filter for `spec` (EnvFilter syntax), with the libraries that would log frame
/// payloads (message bodies, tokens) at debug or trace held at `info` whatever `spec` asks.
pub fn log_filter(spec: &str) -> tracing_subscriber::EnvFilter {
    let mut filter =
        tracing_subscriber::EnvFilter::try_new(spec).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // webauthn-rs traces ceremony states and authenticator answers at debug and trace.
    for quiet in [
        "tungstenite=info",
        "tokio_tungstenite=info",
        "hyper=info",
        "h2=info",
        "tokio_postgres=info",
        "rusqlite=info",
        "webauthn_rs=info",
        "webauthn_rs_core=info",
    ] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}
pub use ws::{close, text_header};

/// Settings of the HTTP and real-time layer.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Interval between server WebSocket pings.
    pub heartbeat_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed (4009).
    pub heartbeat_timeout: Duration,
    /// Time allowed between the upgrade and the `hello` frame (4001 after).
    pub hello_timeout: Duration,
    /// A write that cannot complete in this time closes the connection.
    pub write_timeout: Duration,
    /// Largest WebSocket frame and message, in bytes (1009 above).
    pub max_frame_bytes: usize,
    /// Largest HTTP request body, in bytes (413 above).
    pub max_http_body_bytes: usize,
    /// Sustained client frames per second per connection.
    pub frames_per_second: u32,
    /// Burst of client frames above the sustained rate.
    pub frame_burst: u32,
    /// Requests awaiting an answer per connection before the server stops reading it.
    pub max_in_flight: usize,
    /// Real-time connections (WebSocket plus long polls) per process.
    pub max_connections: usize,
    /// Longest wait of one long poll.
    pub long_poll_max: Duration,
    /// Initial WebSocket read buffer per connection (grows on demand for larger frames).
    pub ws_read_buffer_bytes: usize,
    /// Accept the session's bearer token in `hello` (instead of a single-use ticket). Off by
    /// default; for old clients and the load generator.
    pub allow_token_hello: bool,
    /// Origins (`https://host[:port]`) besides the server's own that may open WebSockets.
    pub allowed_origins: Vec<String>,
    /// Send `Strict-Transport-Security`: set when the server is reached over HTTPS.
    pub hsts: bool,
    /// Reverse proxies whose `X-Forwarded-For` is believed (see `extract::client_ip`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(75),
            hello_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_frame_bytes: 64 * 1024,
            max_http_body_bytes: 64 * 1024,
            frames_per_second: 20,
            frame_burst: 100,
            max_in_flight: 32,
            max_connections: 19_000,
            long_poll_max: Duration::from_secs(30),
            ws_read_buffer_bytes: 512,
            allow_token_hello: false,
            allowed_origins: Vec::new(),
            hsts: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub config: Arc<ApiConfig>,
    /// Bounds real-time connections: the process has 20,000 file descriptors in all.
    pub connections: Arc<Semaphore>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

impl AppState {
    pub fn new(services: Services, config: ApiConfig) -> Self {
        let connections = Arc::new(Semaphore::new(config.max_connections));
        Self { services, config: Arc::new(config), connections, shutdown: CancellationToken::new() }
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_http_body_bytes;
    Router::new()
        .merge(rest::routes())
        .merge(identity::routes())
        .merge(patients::routes())
        .merge(audit::routes())
        .merge(retention::routes())
        .merge(handoff::routes())
        .merge(presence::routes())
        .merge(oncall::routes())
        .merge(escalation::routes())
        .merge(audit_reports::routes())
        .merge(audit_export::routes())
        .merge(sso::routes())
        .merge(passkey::routes())
        .merge(longpoll::routes())
        .merge(ws::routes())
        .merge(ops::routes())
        .merge(openapi::routes())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authz::enforce))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), error::count_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(error::panic_response))
        // Outside the panic catcher, so that a panic's 500 carries the headers too.
        .layer(axum::middleware::from_fn_with_state(state.clone(), headers::security_headers))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(tower_http::trace::DefaultMakeSpan::new().include_headers(false))
                .on_request(())
                .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}

/// Binds a listener with a deep accept queue, so that a connection storm is queued by the
/// kernel rather than refused. The kernel caps the backlog at `net.core.somaxconn`.
pub fn bind(addr: SocketAddr, backlog: i32) -> std::io::Result<TcpListener> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    TcpListener::from_std(socket.into())
}

/// Serves until `state.shutdown` is cancelled, then closes real-time connections with 1001.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let shutdown = state.shutdown.clone();
    let hub = state.services.hub.clone();
    let listener = listener.tap_io(|tcp| {
        // Without TCP_NODELAY small frames wait for delayed ACKs (up to 40 ms).
        let _ = tcp.set_nodelay(true);
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            hub.kick_all();
        })
        .await
}

pub use tokio_util::sync::CancellationToken as Shutdown;
