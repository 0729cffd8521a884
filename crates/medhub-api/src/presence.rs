//! Presence over REST (issue 5 §1, docs/clinical.md "Presence"): set and clear one's own
//! override, read a colleague's presence. Changes reach followers over the WebSocket
//! (`presence_subscribe`).

use axum::Router;
use axum::routing::{get, put};
use axum::{Json, extract::State};
use medhub_core::UserId;
use medhub_wire::ErrorBody;
use medhub_wire::frames::PresenceView;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Authed};

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/me/presence", put(set).delete(clear)).route("/api/v1/users/{id}/presence", get(of))
}

/// `PUT /api/v1/me/presence`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPresence {
    /// `available`, `busy`, `in_procedure` (do not disturb) or `off_shift`.
    pub state: String,
    /// How long, 1-960 minutes; then the state is derived again.
    pub minutes: i64,
}

/// Set your presence by hand for a while (in a procedure, busy, off shift).
#[utoipa::path(put, path = "/api/v1/me/presence", tag = "users", security(("bearer" = [])),
    request_body = SetPresence,
    responses((status = 200, body = PresenceView), (status = 400, description = "invalid_presence", body = ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<SetPresence>,
) -> ApiResult<Json<PresenceView>> {
    Ok(Json(state.services.presence.set(&p, &req.state, req.minutes).await?))
}

/// End your override now: your presence is derived from your connections and schedules again.
#[utoipa::path(delete, path = "/api/v1/me/presence", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = PresenceView)))]
pub async fn clear(State(state): State<AppState>, Authed(p): Authed) -> ApiResult<Json<PresenceView>> {
    Ok(Json(state.services.presence.clear(&p).await?))
}

/// A colleague's presence (your organization only; anyone else is `not_found`).
#[utoipa::path(get, path = "/api/v1/users/{id}/presence", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = PresenceView), (status = 404, body = ErrorBody)))]
pub async fn of(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<PresenceView>> {
    Ok(Json(state.services.presence.of(&p, UserId::from_uuid(id)).await?))
}
