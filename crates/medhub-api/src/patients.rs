//! Patient scope over REST: care teams, break-glass, and the grants compliance officers
//! review.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, extract::State};
use jiff::Timestamp;
use medhub_core::{ConversationId, UserId};
use medhub_store::BreakGlassGrant;
use medhub_wire::ErrorBody;
use medhub_wire::patients::{BreakGlassGrantView, BreakGlassList, BreakGlassRequest, CareTeam, CareTeamMemberView};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authed};

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/patients/{patient_ref}/care-team", get(care_team))
        .route(
            "/api/v1/patients/{patient_ref}/care-team/{user_id}",
            put(add_to_care_team).delete(remove_from_care_team),
        )
        .route("/api/v1/conversations/{id}/break-glass", post(break_glass))
        .route("/api/v1/break-glass", get(grants))
        .route("/api/v1/break-glass/{id}/end", post(end_grant))
}

fn grant_view(g: &BreakGlassGrant) -> BreakGlassGrantView {
    BreakGlassGrantView {
        id: g.id,
        user_id: g.user.as_uuid(),
        session_id: g.session.as_uuid(),
        conversation_id: g.conversation.as_uuid(),
        patient_ref: g.patient.as_str().to_owned(),
        reason: g.reason.clone(),
        started_at: g.started_at,
        expires_at: g.expires_at,
        ended_at: g.ended_at,
    }
}

/// Who is on the patient's care team (and so may read the patient's conversations).
#[utoipa::path(get, path = "/api/v1/patients/{patient_ref}/care-team", tag = "patients", security(("bearer" = [])),
    params(("patient_ref" = String, Path)),
    responses((status = 200, body = CareTeam), (status = 400, description = "invalid_patient_ref", body = ErrorBody)))]
pub async fn care_team(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(patient): ApiPath<String>,
) -> ApiResult<Json<CareTeam>> {
    let members = state.services.patients.care_team(&p, &patient).await?;
    Ok(Json(CareTeam {
        patient_ref: patient,
        members: members
            .iter()
            .map(|m| CareTeamMemberView {
                user_id: m.user.as_uuid(),
                added_by: m.added_by.map(|u| u.as_uuid()),
                added_at: m.added_at,
            })
            .collect(),
    }))
}

/// Put a user of the organization on the patient's care team: `201`, or `200` if already on
/// it.
#[utoipa::path(put, path = "/api/v1/patients/{patient_ref}/care-team/{user_id}", tag = "patients", security(("bearer" = [])),
    params(("patient_ref" = String, Path), ("user_id" = Uuid, Path)),
    responses((status = 201), (status = 200), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, description = "no such active user in the organization", body = ErrorBody)))]
pub async fn add_to_care_team(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath((patient, user)): ApiPath<(String, Uuid)>,
) -> ApiResult<StatusCode> {
    let added = state.services.patients.add_to_care_team(&p, &patient, UserId::from_uuid(user)).await?;
    Ok(if added { StatusCode::CREATED } else { StatusCode::OK })
}

/// Take a user off the patient's care team.
#[utoipa::path(delete, path = "/api/v1/patients/{patient_ref}/care-team/{user_id}", tag = "patients", security(("bearer" = [])),
    params(("patient_ref" = String, Path), ("user_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, description = "not on the care team", body = ErrorBody)))]
pub async fn remove_from_care_team(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath((patient, user)): ApiPath<(String, Uuid)>,
) -> ApiResult<StatusCode> {
    state.services.patients.remove_from_care_team(&p, &patient, UserId::from_uuid(user)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Break-glass: open a patient's conversation one is not in, read only, for the
/// organization's break-glass duration (60 minutes by default). Needs a reason and a
/// step-up within the last 5 minutes. Compliance officers are alerted.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/break-glass", tag = "patients", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = BreakGlassRequest,
    responses((status = 201, body = BreakGlassGrantView), (status = 400, description = "invalid_reason", body = ErrorBody),
              (status = 403, description = "step_up_required or forbidden", body = ErrorBody),
              (status = 404, description = "no such patient conversation", body = ErrorBody),
              (status = 409, description = "break_glass_not_needed", body = ErrorBody)))]
pub async fn break_glass(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<BreakGlassRequest>,
) -> ApiResult<(StatusCode, Json<BreakGlassGrantView>)> {
    let g = state.services.patients.break_glass(&p, ConversationId::from_uuid(id), &req.reason).await?;
    Ok((StatusCode::CREATED, Json(grant_view(&g))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GrantQuery {
    /// Grants started before this instant (paging: the last `started_at` of a page).
    #[param(value_type = Option<String>, format = DateTime)]
    before: Option<Timestamp>,
    /// At most this many (1-500, default 100).
    limit: Option<u32>,
}

/// The organization's break-glass grants, newest first, with their reasons (compliance
/// officers).
#[utoipa::path(get, path = "/api/v1/break-glass", tag = "patients", security(("bearer" = [])), params(GrantQuery),
    responses((status = 200, body = BreakGlassList), (status = 403, body = ErrorBody)))]
pub async fn grants(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiQuery(q): ApiQuery<GrantQuery>,
) -> ApiResult<Json<BreakGlassList>> {
    let grants = state.services.patients.grants(&p, q.before, q.limit.unwrap_or(100)).await?;
    Ok(Json(BreakGlassList { grants: grants.iter().map(grant_view).collect() }))
}

/// Ends an open break-glass grant before it expires; the access stops at once. The grantee
/// may end their own grant; a compliance officer (`audit.read`) any grant of the
/// organization. Anything else, and a grant that has ended, answers `404 not_found`.
#[utoipa::path(post, path = "/api/v1/break-glass/{id}/end", tag = "patients", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = BreakGlassGrantView), (status = 404, description = "not_found", body = ErrorBody)))]
pub async fn end_grant(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<BreakGlassGrantView>> {
    let g = state.services.patients.end_break_glass(&p, id).await?;
    Ok(Json(grant_view(&g)))
}
