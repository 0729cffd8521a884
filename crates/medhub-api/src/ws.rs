//! The WebSocket transport at `/api/v1/ws`: one task per connection.
//!
//! A connection authenticates with `hello`, registers with the hub, replays what it missed
//! and then follows live events, while answering requests (up to `max_in_flight` at once).
//! Every buffer is bounded: the read buffer starts at `ws_read_buffer_bytes`, frames are
//! capped at `max_frame_bytes`, the outgoing queue lives in the hub with its own bound, and
//! writes are flushed at least every [`FLUSH_EVERY`] bytes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use medhub_core::{ConversationId, EventId, MessageId, Seq, UserId};
use medhub_service::hub::{MAX_PRESENCE_SUBSCRIPTIONS, Subscription, frame_bytes};
use medhub_service::{Hub, Principal, ServiceError};
use medhub_wire::frames::LimitsView;
use medhub_wire::views::{AckView, MessageView};
use medhub_wire::{ClientFrame, ErrorCode, PROTOCOL_VERSION, ServerFrame, WireError};
use tokio::sync::OwnedSemaphorePermit;

use crate::AppState;
use crate::error::{ApiError, wire_error};
use crate::ratelimit::TokenBucket;

/// Buffered outgoing bytes that force a flush in the middle of a batch.
const FLUSH_EVERY: usize = 64 * 1024;
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

async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return ApiError::code(ErrorCode::Overloaded).into_response();
    };
    let c = state.config.clone();
    ws.read_buffer_size(c.ws_read_buffer_bytes)
        .write_buffer_size(c.ws_write_buffer_bytes)
        .max_write_buffer_size(FLUSH_EVERY + 2 * c.max_frame_bytes.max(128 * 1024))
        .max_message_size(c.max_frame_bytes)
        .max_frame_size(c.max_frame_bytes)
        .on_upgrade(move |socket| connection(state, socket, permit))
}

type Reply = Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>;

fn error_frame(id: Option<String>, error: WireError) -> Bytes {
    frame_bytes(&ServerFrame::Error { id, error })
}

async fn send_close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }));
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.send(frame)).await;
}

async fn send_bytes(socket: &mut WebSocket, frame: Bytes) -> bool {
    match Utf8Bytes::try_from(frame) {
        Ok(text) => tokio::time::timeout(Duration::from_secs(5), socket.send(Message::Text(text)))
            .await
            .is_ok_and(|r| r.is_ok()),
        Err(_) => false,
    }
}

/// Writes queued frames, flushing every [`FLUSH_EVERY`] bytes and at the end.
async fn write_frames(socket: &mut WebSocket, out: &mut Vec<Bytes>) -> Result<(), axum::Error> {
    let mut pending = 0usize;
    for frame in out.drain(..) {
        pending += frame.len();
        if let Ok(text) = Utf8Bytes::try_from(frame) {
            socket.feed(Message::Text(text)).await?;
        }
        if pending >= FLUSH_EVERY {
            socket.flush().await?;
            pending = 0;
        }
    }
    socket.flush().await
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
fn read_error_close(e: &axum::Error) -> Option<(u16, &'static str, ErrorCode)> {
    use std::error::Error as _;
    let inner = e.source().and_then(|s| s.downcast_ref::<tungstenite::Error>());
    match inner {
        Some(tungstenite::Error::Capacity(_)) => Some((close::TOO_BIG, "frame too large", ErrorCode::PayloadTooLarge)),
        Some(tungstenite::Error::Utf8(_)) => Some((close::INVALID_PAYLOAD, "invalid utf-8", ErrorCode::BadFrame)),
        Some(tungstenite::Error::Protocol(_)) => Some((close::PROTOCOL_ERROR, "protocol error", ErrorCode::BadFrame)),
        _ => None,
    }
}

async fn read_hello(socket: &mut WebSocket) -> Result<(String, Option<u64>), HelloError> {
    loop {
        let msg = match socket.recv().await {
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
                    Ok(ClientFrame::Hello { token, cursor }) => Ok((token.0, cursor)),
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
            Message::Ping(_) | Message::Pong(_) => continue,
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
    let (token, resume) = match tokio::time::timeout(cfg.hello_timeout, read_hello(socket)).await {
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
    let principal = match services.auth.authenticate(&token).await.and_then(|p| p.require_active().map(|()| p)) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            let err = wire_error(&e);
            services.metrics.error(err.code.as_str());
            send_bytes(socket, error_frame(None, err)).await;
            send_close(socket, close::UNAUTHENTICATED, "unauthenticated").await;
            return None;
        }
    };
    drop(token);
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
            msg = socket.recv(), if busy < cfg.max_in_flight => {
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
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
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
            let users =
                services.hub.set_presence_subscriptions(conn, user_ids.into_iter().map(UserId::from_uuid).collect());
            Handled::Reply(frame_bytes(&ServerFrame::PresenceState { id, users }))
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
