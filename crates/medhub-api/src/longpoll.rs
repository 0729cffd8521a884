//! The long-polling transport at `GET /api/v1/events`, for clients behind proxies that block
//! WebSocket upgrades. It delivers the same frames, in the same order, as the WebSocket, and
//! follows the same cursor rules. Requests go over REST.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{BufMut, Bytes, BytesMut};
use medhub_core::EventId;
use medhub_service::hub::Subscription;
use medhub_wire::ErrorCode;
use medhub_wire::rest::EventsResponse;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, AuthedPassive};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/events", get(events))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// The last cursor processed. Omit to learn the current head without waiting.
    cursor: Option<u64>,
    /// How long to wait for something new, in milliseconds (0-30000, default 25000).
    timeout_ms: Option<u64>,
}

/// Wait for events after `cursor`. Answers as soon as there is at least one frame, or with an
/// empty list after `timeout_ms`. Pass the returned `cursor` to the next poll.
#[utoipa::path(get, path = "/api/v1/events", tag = "realtime", security(("bearer" = [])), params(EventsQuery),
    responses((status = 200, body = EventsResponse), (status = 400, description = "cursor_out_of_range", body = medhub_wire::ErrorBody),
              (status = 401, body = medhub_wire::ErrorBody), (status = 503, description = "overloaded", body = medhub_wire::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    AuthedPassive(p): AuthedPassive,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    p.require_active()?;
    let max = state.config.long_poll_max.as_millis() as u64;
    let timeout_ms = q.timeout_ms.unwrap_or(25_000);
    if timeout_ms > max {
        return Err(ApiError::with_message(ErrorCode::InvalidRequest, format!("timeout_ms must be at most {max}")));
    }
    let Ok(_permit) = state.connections.clone().try_acquire_owned() else {
        return Err(ApiError::code(ErrorCode::Overloaded));
    };
    let hub = state.services.hub.clone();
    let conn = hub.register(p.user.id, p.session.id);
    let result = poll(
        &state,
        Subscription::start(hub.clone(), conn.clone(), q.cursor.map(EventId::new)),
        q.cursor.is_none(),
        timeout_ms,
    )
    .await;
    hub.unregister(&conn);
    result
}

async fn poll(
    state: &AppState,
    sub: Result<Subscription, medhub_service::ServiceError>,
    head_only: bool,
    timeout_ms: u64,
) -> Result<Response, ApiError> {
    let mut sub = sub?;
    let mut frames = Vec::new();
    if !head_only {
        sub.next_batch(&mut frames).await?;
        if frames.is_empty() && !sub.catching_up() {
            tokio::select! {
                _ = sub.wait() => sub.next_batch(&mut frames).await?,
                _ = tokio::time::sleep(Duration::from_millis(timeout_ms)) => {}
                _ = state.shutdown.cancelled() => {}
            }
        }
    }
    Ok(body(&frames, sub.cursor().get()))
}

/// `{"frames":[...],"cursor":N}`, splicing the already-serialized frames.
fn body(frames: &[Bytes], cursor: u64) -> Response {
    let mut buf = BytesMut::with_capacity(32 + frames.iter().map(Bytes::len).sum::<usize>() + frames.len());
    buf.put_slice(b"{\"frames\":[");
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(f);
    }
    buf.put_slice(format!("],\"cursor\":{cursor}}}").as_bytes());
    ([(header::CONTENT_TYPE, "application/json")], buf.freeze()).into_response()
}
