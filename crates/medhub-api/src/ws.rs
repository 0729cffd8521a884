//! The WebSocket transport at `/api/v1/ws`: one task per connection.
//!
//! A connection authenticates with `hello`, registers with the hub, replays what it missed
//! and then follows live events, while answering requests (up to `max_in_flight` at once).
//! Every buffer is bounded: the read buffer starts at `ws_read_buffer_bytes`, frames are
//! capped at `max_frame_bytes`, and the outgoing queue lives in the hub with its own bound.
//!
//! Reading (unmasking, fragments, control frames, UTF-8 checks) is tungstenite's. Outgoing
//! text frames are written by [`write_frames`] directly to the socket: a 2-10 byte header
//! and the frame's shared bytes, many frames per vectored write. The same serialized event is
//! sent to thousands of connections without a copy, and no connection keeps a write buffer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use medhub_core::audit::Outcome;
use medhub_core::{ConversationId, EventId, MessageId, Seq, UserId};
use medhub_service::hub::{MAX_PRESENCE_SUBSCRIPTIONS, Subscription, frame_bytes};
use medhub_service::{Hub, Principal, ServiceError};
use medhub_wire::frames::LimitsView;
use medhub_wire::views::{AckView, MessageView};
use medhub_wire::{ClientFrame, ErrorCode, PROTOCOL_VERSION, ServerFrame, WireError};
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::AppState;
use crate::error::{ApiError, wire_error};
use crate::ratelimit::TokenBucket;

/// Frames written by one vectored write at most (two slices each; IOV_MAX is 1024).
const FRAMES_PER_WRITE: usize = 256;

/// The server's side of an upgraded connection.
type WebSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
/// Consecutive rate-limited frames after which the connection is closed (4029).
const FLOOD_CLOSE_AFTER: u32 = 200;
/// Longest accepted request id.
const MAX_REQUEST_ID: usize = 64;

/// Close codes. See `docs/protocol.md`.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const UNAUTHENTICATED: u16 = 4001;
    pub const SESSION_ENDED: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const HEARTBEAT_TIMEOUT: u16 = 4009;
    pub const RESYNC_REQUIRED: u16 = 4010;
    pub const FLOOD: u16 = 4029;
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/ws", get(upgrade))
}

/// A valid WebSocket upgrade request (RFC 6455 §4.2.1), ready to be accepted.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Cross-site WebSocket hijacking defence: a browser always sends `Origin` on an upgrade, and
/// only pages served by medhub itself (same host) or listed in `allowed_origins` may open one.
/// Clients that are not browsers send no `Origin` and are let through; they authenticate like
/// everyone else.
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    let origin = origin.trim_end_matches('/');
    if allowed.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

impl FromRequestParts<AppState> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let bad = |m: &str| ApiError::with_message(ErrorCode::InvalidRequest, format!("not a WebSocket upgrade: {m}"));
        if !origin_allowed(&parts.headers, &state.config.allowed_origins) {
            return Err(ApiError::code(ErrorCode::OriginNotAllowed));
        }
        if parts.method != Method::GET {
            return Err(ApiError::code(ErrorCode::MethodNotAllowed));
        }
        if !header_has(&parts.headers, header::CONNECTION, "upgrade")
            || !header_has(&parts.headers, header::UPGRADE, "websocket")
        {
            return Err(bad("Connection: upgrade and Upgrade: websocket are required"));
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
            return Err(bad("Sec-WebSocket-Version must be 13"));
        }
        let key =
            parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned().ok_or_else(|| bad("Sec-WebSocket-Key is missing"))?;
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or_else(|| bad("the connection cannot be upgraded"))?;
        Ok(Upgrade { key, on_upgrade })
    }
}

async fn upgrade(State(state): State<AppState>, up: Upgrade) -> Response {
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return ApiError::code(ErrorCode::Overloaded).into_response();
    };
    let c = &state.config;
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = c.ws_read_buffer_bytes;
    // Outgoing text frames bypass tungstenite's write buffer (see `write_frames`); it only
    // carries pongs, pings and the close frame.
    config.write_buffer_size = 0;
    config.max_write_buffer_size = 64 * 1024;
    config.max_message_size = Some(c.max_frame_bytes);
    config.max_frame_size = Some(c.max_frame_bytes);
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(up.key.as_bytes());
    let on_upgrade = up.on_upgrade;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                connection(state, socket, permit).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

type Reply = Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>;

fn error_frame(id: Option<String>, error: WireError) -> Bytes {
    frame_bytes(&ServerFrame::Error { id, error })
}

async fn send_close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame =
        Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: Utf8Bytes::from_static(reason) }));
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.send(frame)).await;
}

async fn send_bytes(socket: &mut WebSocket, frame: Bytes) -> bool {
    let mut one = vec![frame];
    tokio::time::timeout(Duration::from_secs(5), write_frames(socket, &mut one)).await.is_ok_and(|r| r.is_ok())
}

/// A server-to-client text frame header: FIN, opcode 1, unmasked, and the payload length.
pub fn text_header(len: usize, buf: &mut [u8; 10]) -> usize {
    buf[0] = 0x81;
    if len < 126 {
        buf[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        buf[1] = 126;
        buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        buf[1] = 127;
        buf[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Writes `out` as text frames straight to the socket, many per vectored write, and empties
/// it. Frames are serde_json output, hence valid UTF-8. Whatever tungstenite still holds (a
/// pong) is flushed first so that frames never interleave.
async fn write_frames(socket: &mut WebSocket, out: &mut Vec<Bytes>) -> std::io::Result<()> {
    socket.flush().await.map_err(std::io::Error::other)?;
    for chunk in out.chunks(FRAMES_PER_WRITE) {
        let mut headers = [[0u8; 10]; FRAMES_PER_WRITE];
        let mut lens = [0usize; FRAMES_PER_WRITE];
        for (i, f) in chunk.iter().enumerate() {
            lens[i] = text_header(f.len(), &mut headers[i]);
        }
        let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(chunk.len() * 2);
        for (i, f) in chunk.iter().enumerate() {
            slices.push(std::io::IoSlice::new(&headers[i][..lens[i]]));
            slices.push(std::io::IoSlice::new(f));
        }
        let mut rest = &mut slices[..];
        let io = socket.get_mut();
        while !rest.is_empty() {
            let n = io.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            std::io::IoSlice::advance_slices(&mut rest, n);
        }
    }
    out.clear();
    Ok(())
}

enum Write {
    Done,
    Failed,
    Interrupted,
}

/// Writes `out`, but gives up as soon as the connection must stop (its queue overflowed
/// while the client was not reading, or it was kicked), or when the write times out.
async fn write_watching(
    socket: &mut WebSocket,
    out: &mut Vec<Bytes>,
    conn: &medhub_service::Conn,
    timeout: Duration,
) -> Write {
    use futures_util::FutureExt;
    let write = write_frames(socket, out);
    tokio::pin!(write);
    // Almost every write completes at once (the socket has room): no timer, no waiter.
    if let Some(r) = (&mut write).now_or_never() {
        return if r.is_ok() { Write::Done } else { Write::Failed };
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = &mut write => return if r.is_ok() { Write::Done } else { Write::Failed },
            _ = conn.wait() => {
                if conn.must_stop() {
                    return Write::Interrupted;
                }
            }
            _ = &mut deadline => return Write::Failed,
        }
    }
}

/// Why the hello phase failed.
enum HelloError {
    /// The peer went away.
    Closed,
    /// Answer with this error frame, then close with this code.
    Refuse(WireError, u16, &'static str),
}

/// Maps a WebSocket read error to the close code the protocol specifies.
fn read_error_close(e: &tungstenite::Error) -> Option<(u16, &'static str, ErrorCode)> {
    match e {
        tungstenite::Error::Capacity(_) => Some((close::TOO_BIG, "frame too large", ErrorCode::PayloadTooLarge)),
        tungstenite::Error::Utf8(_) => Some((close::INVALID_PAYLOAD, "invalid utf-8", ErrorCode::BadFrame)),
        tungstenite::Error::Protocol(_) => Some((close::PROTOCOL_ERROR, "protocol error", ErrorCode::BadFrame)),
        _ => None,
    }
}

/// How a `hello` authenticates.
enum Credential {
    /// A single-use ticket from `POST /api/v1/auth/ws-ticket`.
    Ticket(String),
    /// The session's bearer token, only where `allow_token_hello` is on.
    Token(String),
}

async fn read_hello(socket: &mut WebSocket) -> Result<(Credential, Option<u64>), HelloError> {
    loop {
        let msg = match socket.next().await {
            None => return Err(HelloError::Closed),
            Some(Err(e)) => {
                return Err(match read_error_close(&e) {
                    Some((code, reason, err)) => HelloError::Refuse(WireError::new(err), code, reason),
                    None => HelloError::Closed,
                });
            }
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Text(text) => {
                return match serde_json::from_str::<ClientFrame>(&text) {
                    Ok(ClientFrame::Hello { ticket: Some(t), token: None, cursor }) => {
                        Ok((Credential::Ticket(t.0), cursor))
                    }
                    Ok(ClientFrame::Hello { ticket: None, token: Some(t), cursor }) => {
                        Ok((Credential::Token(t.0), cursor))
                    }
                    Ok(ClientFrame::Hello { .. }) => Err(HelloError::Refuse(
                        WireError::with_message(ErrorCode::BadFrame, "hello needs exactly one of ticket and token"),
                        close::UNAUTHENTICATED,
                        "hello expected",
                    )),
                    Ok(_) => Err(HelloError::Refuse(
                        WireError::with_message(ErrorCode::Unauthenticated, "the first frame must be hello"),
                        close::UNAUTHENTICATED,
                        "hello expected",
                    )),
                    Err(e) => Err(HelloError::Refuse(
                        WireError::with_message(ErrorCode::BadFrame, e.to_string()),
                        close::UNAUTHENTICATED,
                        "hello expected",
                    )),
                };
            }
            Message::Binary(_) => {
                return Err(HelloError::Refuse(
                    WireError::new(ErrorCode::UnsupportedFrame),
                    close::UNAUTHENTICATED,
                    "hello expected",
                ));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(_) => return Err(HelloError::Closed),
        }
    }
}

/// Unregisters the connection however the task ends.
struct Registration(Arc<Hub>, Arc<medhub_service::Conn>);

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.unregister(&self.1);
    }
}

/// A connection's task. Its future stays resident for the connection's whole life, so its
/// size is per-connection memory: the one-off phases (hello, closing) and the rare branches
/// are boxed so that they cost heap only while they run.
async fn connection(state: AppState, mut socket: WebSocket, _permit: OwnedSemaphorePermit) {
    let Some((principal, mut sub, _registration)) = Box::pin(open(&state, &mut socket)).await else { return };
    let (code, reason) = run(&state, &mut socket, &mut sub, &principal).await;
    if let Some(code) = code {
        Box::pin(send_close(&mut socket, code, reason)).await;
    }
}

/// The hello phase: authenticate, register with the hub, start the subscription and answer
/// `ready`. `None` when the connection was refused or went away.
async fn open(state: &AppState, socket: &mut WebSocket) -> Option<(Arc<Principal>, Subscription, Registration)> {
    let cfg = state.config.clone();
    let services = &state.services;
    let (credential, resume) = match tokio::time::timeout(cfg.hello_timeout, read_hello(socket)).await {
        Err(_) => {
            send_bytes(
                socket,
                error_frame(None, WireError::with_message(ErrorCode::Unauthenticated, "no hello in time")),
            )
            .await;
            send_close(socket, close::UNAUTHENTICATED, "hello timeout").await;
            return None;
        }
        Ok(Err(HelloError::Closed)) => return None,
        Ok(Err(HelloError::Refuse(err, code, reason))) => {
            services.metrics.error(err.code.as_str());
            send_bytes(socket, error_frame(None, err)).await;
            send_close(socket, code, reason).await;
            return None;
        }
        Ok(Ok(hello)) => hello,
    };
    let authenticated = match credential {
        Credential::Ticket(ticket) => services.auth.redeem_ws_ticket(&ticket).await,
        Credential::Token(token) if cfg.allow_token_hello => services.auth.authenticate(&token).await,
        Credential::Token(_) => Err(ServiceError::InvalidRequest(
            "authenticate with a ticket from POST /api/v1/auth/ws-ticket; tokens are not accepted here".into(),
        )),
    };
    let principal = match authenticated.and_then(|p| p.require_active().map(|()| p)) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            let err = wire_error(&e);
            services.metrics.error(err.code.as_str());
            send_bytes(socket, error_frame(None, err)).await;
            send_close(socket, close::UNAUTHENTICATED, "unauthenticated").await;
            return None;
        }
    };
    let hub = services.hub.clone();
    let conn = hub.register(principal.user.id, principal.session.id);
    let registration = Registration(hub.clone(), conn.clone());
    let sub = match Subscription::start(hub, conn, resume.map(EventId::new)) {
        Ok(s) => s,
        Err(e) => {
            send_bytes(socket, error_frame(None, wire_error(&e))).await;
            send_close(socket, close::RESYNC_REQUIRED, "cursor out of range").await;
            return None;
        }
    };
    let ready = ServerFrame::Ready {
        protocol: PROTOCOL_VERSION,
        user_id: principal.user.id.as_uuid(),
        session_id: principal.session.id.as_uuid(),
        cursor: sub.cursor().get(),
        heartbeat_interval_ms: cfg.heartbeat_interval.as_millis() as u64,
        limits: LimitsView {
            max_message_bytes: services.config.limits.max_body_bytes,
            max_frame_bytes: cfg.max_frame_bytes,
            frames_per_second: cfg.frames_per_second,
            frame_burst: cfg.frame_burst,
            queue_frames: services.config.connection_queue_frames,
            max_in_flight: cfg.max_in_flight,
        },
    };
    if !send_bytes(socket, frame_bytes(&ready)).await {
        return None;
    }
    Some((principal, sub, registration))
}

/// The live phase. Returns the close code to send (if the socket is still usable).
async fn run(
    state: &AppState,
    socket: &mut WebSocket,
    sub: &mut Subscription,
    principal: &Arc<Principal>,
) -> (Option<u16>, &'static str) {
    let cfg = &state.config;
    let metrics = &state.services.metrics;
    let conn = sub.conn().clone();
    let mut out: Vec<Bytes> = Vec::new();
    let mut inflight: Option<FuturesUnordered<Reply>> = None;
    let mut bucket = TokenBucket::new(cfg.frames_per_second, cfg.frame_burst, Instant::now());
    let mut limited_in_a_row = 0u32;
    let mut last_heard = Instant::now();
    // Spread first ticks over one interval, so that connections opened together (a storm
    // after an outage) do not all ping and re-check their session at the same instant.
    let spread = cfg.heartbeat_interval.mul_f64((conn.id.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0);
    let first = tokio::time::Instant::now() + cfg.heartbeat_interval / 2 + spread / 2;
    let mut heartbeat = tokio::time::interval_at(first, cfg.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match sub.next_batch(&mut out).await {
            Ok(()) => {}
            Err(ServiceError::SlowConsumer) => {
                metrics.slow_consumer_closes.inc();
                return (Some(close::SLOW_CONSUMER), "too slow; resume from your cursor");
            }
            Err(e) => {
                let _ = wire_error(&e);
                return (Some(close::INTERNAL), "internal error; resume from your cursor");
            }
        }
        if conn.is_kicked() {
            return if state.shutdown.is_cancelled() {
                (Some(close::GOING_AWAY), "server shutting down")
            } else {
                (Some(close::SESSION_ENDED), "session ended")
            };
        }
        if !out.is_empty() {
            let written = Box::pin(write_watching(socket, &mut out, &conn, cfg.write_timeout)).await;
            // After a burst (a replayed page), release the batch's memory.
            if out.capacity() > medhub_service::hub::SHRINK_ABOVE {
                out = Vec::new();
            }
            match written {
                Write::Done => continue,
                Write::Failed => return (None, ""),
                // Overflowed or kicked while a write was stuck: the top of the loop closes it.
                Write::Interrupted => {
                    if conn.is_kicked() {
                        continue;
                    }
                    metrics.slow_consumer_closes.inc();
                    return (Some(close::SLOW_CONSUMER), "too slow; resume from your cursor");
                }
            }
        }
        let busy = inflight.as_ref().map_or(0, FuturesUnordered::len);
        // Shutdown reaches this loop as a kick (the hub kicks every connection), so no
        // branch waits on the shutdown token: that would register a waiter on one shared
        // lock per connection per loop.
        tokio::select! {
            biased;
            _ = sub.wait() => {}
            Some(reply) = async { match inflight.as_mut() { Some(f) if !f.is_empty() => f.next().await, _ => std::future::pending().await } } => {
                if let Some(frame) = reply {
                    out.push(frame);
                }
            }
            msg = socket.next(), if busy < cfg.max_in_flight => {
                last_heard = Instant::now();
                match msg {
                    None | Some(Ok(Message::Close(_))) => return (None, ""),
                    Some(Err(e)) => {
                        return match read_error_close(&e) {
                            Some((code, reason, err)) => {
                                metrics.error(err.as_str());
                                (Some(code), reason)
                            }
                            None => (None, ""),
                        };
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Binary(_))) => {
                        metrics.error(ErrorCode::UnsupportedFrame.as_str());
                        out.push(error_frame(None, WireError::new(ErrorCode::UnsupportedFrame)));
                    }
                    Some(Ok(Message::Text(text))) => {
                        let allowed = bucket.take(Instant::now());
                        limited_in_a_row = if allowed { 0 } else { limited_in_a_row + 1 };
                        if limited_in_a_row > FLOOD_CLOSE_AFTER {
                            return (Some(close::FLOOD), "flooding");
                        }
                        match handle_text(state, &conn, principal, &text, allowed) {
                            Handled::Reply(frame) => out.push(frame),
                            Handled::Later(fut) => inflight.get_or_insert_with(FuturesUnordered::new).push(fut),
                        }
                    }
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > cfg.heartbeat_timeout {
                    return (Some(close::HEARTBEAT_TIMEOUT), "heartbeat timeout");
                }
                // Expired: end the connection. (Revocations arrive as kicks from the hub's
                // session sweeper, within its interval.)
                if state.services.clock.now() >= principal.session.expires_at {
                    return (Some(close::SESSION_ENDED), "session expired");
                }
                let ping = Box::pin(tokio::time::timeout(cfg.write_timeout, socket.send(Message::Ping(Bytes::new()))));
                if ping.await.map_or(true, |r| r.is_err()) {
                    return (None, "");
                }
            }
        }
    }
}

enum Handled {
    Reply(Bytes),
    Later(Reply),
}

fn reply_error(state: &AppState, id: Option<String>, e: &ServiceError) -> Bytes {
    let err = wire_error(e);
    state.services.metrics.error(err.code.as_str());
    error_frame(id, err)
}

fn handle_text(
    state: &AppState,
    conn: &Arc<medhub_service::Conn>,
    principal: &Arc<Principal>,
    text: &str,
    allowed: bool,
) -> Handled {
    let metrics = &state.services.metrics;
    let frame = match serde_json::from_str::<ClientFrame>(text) {
        Ok(f) => f,
        Err(e) => {
            metrics.error(ErrorCode::BadFrame.as_str());
            return Handled::Reply(error_frame(None, WireError::with_message(ErrorCode::BadFrame, e.to_string())));
        }
    };
    let id = frame.request_id().map(str::to_owned);
    if id.as_ref().is_some_and(|i| i.is_empty() || i.len() > MAX_REQUEST_ID) {
        metrics.error(ErrorCode::BadFrame.as_str());
        return Handled::Reply(error_frame(
            None,
            WireError::with_message(ErrorCode::BadFrame, "id must be 1-64 characters"),
        ));
    }
    if !allowed {
        metrics.error(ErrorCode::RateLimited.as_str());
        return Handled::Reply(error_frame(id, WireError::new(ErrorCode::RateLimited)));
    }
    let services = state.services.clone();
    let p = principal.clone();
    let allowed = crate::authz::frame_need(crate::authz::frame_type(&frame))
        .ok_or_else(|| ApiError::code(ErrorCode::Forbidden))
        .and_then(|need| crate::authz::check(&p, need));
    if let Err(ApiError(e)) = allowed {
        metrics.error(e.code.as_str());
        let r = services.audit.by(&p, "ws.frame", Outcome::Deny).target(crate::authz::frame_type(&frame));
        // Refused either way; a record that could not be written is logged by the sink.
        let audit = services.audit.clone();
        let r = r.reason(e.code.as_str());
        tokio::spawn(async move { audit.write(vec![r]).await });
        return Handled::Reply(error_frame(id, e));
    }
    if frame.is_user_action() {
        services.auth.touch(p.session.id);
    }
    match frame {
        ClientFrame::Hello { .. } => {
            metrics.error(ErrorCode::BadFrame.as_str());
            Handled::Reply(error_frame(None, WireError::with_message(ErrorCode::BadFrame, "already authenticated")))
        }
        ClientFrame::Ping { id } => Handled::Reply(frame_bytes(&ServerFrame::Pong { id })),
        ClientFrame::PresenceSubscribe { id, user_ids } => {
            if user_ids.len() > MAX_PRESENCE_SUBSCRIPTIONS {
                let e = ServiceError::InvalidRequest(format!("at most {MAX_PRESENCE_SUBSCRIPTIONS} users"));
                return Handled::Reply(reply_error(state, id, &e));
            }
            let (conn, st) = (conn.clone(), state.clone());
            Handled::Later(Box::pin(async move {
                let ids: Vec<UserId> = user_ids.into_iter().map(UserId::from_uuid).collect();
                // Another organization's users are left out, as if they did not exist.
                match services.auth.users_in_org(&p, &ids).await {
                    Ok(own) => {
                        let users = services.hub.set_presence_subscriptions(&conn, own);
                        Some(frame_bytes(&ServerFrame::PresenceState { id, users }))
                    }
                    Err(e) => Some(reply_error(&st, id, &e)),
                }
            }))
        }
        ClientFrame::Typing { conversation_id } => {
            let conn_id = conn.id;
            let st = state.clone();
            Handled::Later(Box::pin(async move {
                match services.messaging.typing(&p, conn_id, ConversationId::from_uuid(conversation_id)).await {
                    Ok(()) => None,
                    Err(e) => Some(reply_error(&st, None, &e)),
                }
            }))
        }
        ClientFrame::Send { id, conversation_id, client_txn_id, body, priority, reply_to } => {
            let st = state.clone();
            Handled::Later(Box::pin(async move {
                let r = services
                    .messaging
                    .send(
                        &p,
                        ConversationId::from_uuid(conversation_id),
                        &client_txn_id,
                        body,
                        priority.into(),
                        reply_to.map(MessageId::from_uuid),
                    )
                    .await;
                Some(match r {
                    Ok((m, duplicate)) => {
                        frame_bytes(&ServerFrame::Sent { id, message: MessageView::from(&m), duplicate })
                    }
                    Err(e) => reply_error(&st, id, &e),
                })
            }))
        }
        ClientFrame::Edit { id, message_id, body } => {
            let st = state.clone();
            Handled::Later(Box::pin(async move {
                Some(match services.messaging.edit(&p, MessageId::from_uuid(message_id), body).await {
                    Ok(m) => frame_bytes(&ServerFrame::Edited { id, message: MessageView::from(&m) }),
                    Err(e) => reply_error(&st, id, &e),
                })
            }))
        }
        ClientFrame::Recall { id, message_id } => {
            let st = state.clone();
            Handled::Later(Box::pin(async move {
                let actor = medhub_core::policy::Actor::User(p.user_id());
                Some(match services.messaging.recall(actor, Some(&p), MessageId::from_uuid(message_id)).await {
                    Ok(m) => frame_bytes(&ServerFrame::Recalled { id, message: MessageView::from(&m) }),
                    Err(e) => reply_error(&st, id, &e),
                })
            }))
        }
        ClientFrame::Receipt { id, conversation_id, delivered_seq, read_seq } => {
            let st = state.clone();
            Handled::Later(Box::pin(async move {
                let conv = ConversationId::from_uuid(conversation_id);
                Some(
                    match services
                        .messaging
                        .receipt(&p, conv, delivered_seq.map(Seq::new), read_seq.map(Seq::new))
                        .await
                    {
                        Ok((d, r)) => frame_bytes(&ServerFrame::ReceiptSaved {
                            id,
                            conversation_id,
                            delivered_seq: d.get(),
                            read_seq: r.get(),
                        }),
                        Err(e) => reply_error(&st, id, &e),
                    },
                )
            }))
        }
        ClientFrame::Ack { id, message_id, response } => {
            let st = state.clone();
            Handled::Later(Box::pin(async move {
                Some(match services.messaging.ack(&p, MessageId::from_uuid(message_id), response.into()).await {
                    Ok(a) => frame_bytes(&ServerFrame::Acked { id, ack: AckView::from(&a) }),
                    Err(e) => reply_error(&st, id, &e),
                })
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::text_header;

    #[test]
    fn text_frame_headers_use_the_shortest_length_encoding() {
        let mut b = [0u8; 10];
        assert_eq!((text_header(0, &mut b), &b[..2]), (2, &[0x81, 0][..]));
        assert_eq!((text_header(125, &mut b), &b[..2]), (2, &[0x81, 125][..]));
        assert_eq!((text_header(126, &mut b), &b[..4]), (4, &[0x81, 126, 0, 126][..]));
        assert_eq!((text_header(65_535, &mut b), &b[..4]), (4, &[0x81, 126, 0xff, 0xff][..]));
        assert_eq!((text_header(65_536, &mut b), &b[..10]), (10, &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0][..]));
    }
}
