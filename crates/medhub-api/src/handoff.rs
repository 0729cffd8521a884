//! Shift handoff over REST (issue 5 §4, docs/clinical.md "Shift handoff"): give an I-PASS
//! handoff, list one's handoffs, read one (recorded), accept it with a synthesis, cancel it.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, extract::State};
use medhub_core::handoff::{ActionItem, Draft, Handoff, PatientNote, Severity};
use medhub_core::patient::PatientRef;
use medhub_core::{ConversationId, DomainError, HandoffId, UserId};
use medhub_wire::ErrorBody;
use medhub_wire::handoff::{
    AcceptHandoff, ActionItemView, GiveHandoff, HandoffList, HandoffSummary, HandoffView, PatientNoteView,
};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authed};

type ApiResult<T> = Result<T, ApiError>;

/// The default and largest listing.
const DEFAULT_LIST: u32 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/handoffs", get(list).post(give))
        .route("/api/v1/handoffs/{id}", get(one))
        .route("/api/v1/handoffs/{id}/accept", post(accept))
        .route("/api/v1/handoffs/{id}/cancel", post(cancel))
}

fn view(h: &Handoff, now: jiff::Timestamp) -> HandoffView {
    HandoffView {
        id: h.id.as_uuid(),
        from: h.from.as_uuid(),
        to: h.to.as_uuid(),
        state: h.state_at(now).as_str().to_owned(),
        created_at: h.created_at,
        expires_at: h.expires_at(),
        closed_at: h.closed_at,
        patients: h
            .patients
            .iter()
            .map(|n| PatientNoteView {
                patient_ref: n.patient.as_str().to_owned(),
                severity: n.severity.as_str().to_owned(),
                summary: n.summary.clone(),
                actions: n.actions.iter().map(|a| ActionItemView { text: a.text.clone(), done: a.done }).collect(),
                awareness: n.awareness.clone(),
                synthesis: n.synthesis.clone(),
            })
            .collect(),
        conversations: h.conversations.iter().map(|c| c.as_uuid()).collect(),
    }
}

fn invalid(reason: &'static str) -> ApiError {
    ApiError::from(DomainError::InvalidHandoff { reason })
}

fn draft(req: GiveHandoff) -> Result<Draft, ApiError> {
    let patients = req
        .patients
        .into_iter()
        .map(|n| {
            if n.synthesis.is_some() {
                return Err(invalid("the synthesis is the receiver's, given when accepting"));
            }
            Ok(PatientNote {
                patient: PatientRef::parse(&n.patient_ref)?,
                severity: Severity::parse(&n.severity)
                    .ok_or_else(|| invalid("severity must be stable, watcher or unstable"))?,
                summary: n.summary,
                actions: n.actions.into_iter().map(|a| ActionItem { text: a.text, done: a.done }).collect(),
                awareness: n.awareness,
                synthesis: None,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Draft {
        to: UserId::from_uuid(req.to),
        patients,
        conversations: req.conversations.into_iter().map(ConversationId::from_uuid).collect(),
    })
}

/// Give a handoff to the incoming clinician: an I-PASS note per patient (whose care team you
/// are on) and the conversations (of which you are a member) that go with the shift. It waits
/// for the receiver for 16 hours.
#[utoipa::path(post, path = "/api/v1/handoffs", tag = "handoffs", security(("bearer" = [])),
    request_body = GiveHandoff,
    responses((status = 201, body = HandoffView),
              (status = 400, description = "invalid_handoff, invalid_patient_ref or bad_request", body = ErrorBody),
              (status = 404, description = "not_found: the receiver or a conversation", body = ErrorBody)))]
pub async fn give(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<GiveHandoff>,
) -> ApiResult<(StatusCode, Json<HandoffView>)> {
    let h = state.services.handoffs.give(&p, draft(req)?).await?;
    Ok((StatusCode::CREATED, Json(view(&h, state.services.clock.now()))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// At most this many (1-50, default 50).
    limit: Option<u32>,
}

/// The caller's handoffs of the last 7 days, given and received, newest first: without notes
/// or patient references (open one to read it).
#[utoipa::path(get, path = "/api/v1/handoffs", tag = "handoffs", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = HandoffList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<HandoffList>> {
    let limit = q.limit.unwrap_or(DEFAULT_LIST);
    if !(1..=DEFAULT_LIST).contains(&limit) {
        return Err(ApiError::from(medhub_service::ServiceError::InvalidRequest("limit must be 1-50".into())));
    }
    let now = state.services.clock.now();
    let handoffs = state.services.handoffs.list(&p, limit).await?;
    let handoffs = handoffs
        .iter()
        .map(|h| HandoffSummary {
            id: h.id.as_uuid(),
            from: h.from.as_uuid(),
            to: h.to.as_uuid(),
            state: h.state_at(now).as_str().to_owned(),
            created_at: h.created_at,
            expires_at: h.expires_at(),
            patient_count: h.patients.len(),
            conversation_count: h.conversations.len(),
        })
        .collect();
    Ok(Json(HandoffList { handoffs }))
}

/// One handoff with its notes, for its giver or receiver (anyone else: `not_found`). The read
/// is in the audit log, per patient, before the answer.
#[utoipa::path(get, path = "/api/v1/handoffs/{id}", tag = "handoffs", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = HandoffView), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<HandoffView>> {
    let h = state.services.handoffs.get(&p, HandoffId::from_uuid(id)).await?;
    Ok(Json(view(&h, state.services.clock.now())))
}

/// The receiver accepts with a synthesis of every patient. Then they join the handed-over
/// conversations and the patients' care teams. Accepting again re-applies those moves and
/// answers the same.
#[utoipa::path(post, path = "/api/v1/handoffs/{id}/accept", tag = "handoffs", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = AcceptHandoff,
    responses((status = 200, body = HandoffView),
              (status = 400, description = "invalid_handoff (a synthesis missing, twice, empty or too long)", body = ErrorBody),
              (status = 403, description = "forbidden: the giver cannot accept", body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, description = "handoff_closed", body = ErrorBody)))]
pub async fn accept(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<AcceptHandoff>,
) -> ApiResult<Json<HandoffView>> {
    let synthesis = req
        .synthesis
        .into_iter()
        .map(|s| Ok((PatientRef::parse(&s.patient_ref)?, s.synthesis)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let h = state.services.handoffs.accept(&p, HandoffId::from_uuid(id), &synthesis).await?;
    Ok(Json(view(&h, state.services.clock.now())))
}

/// The giver withdraws a handoff the receiver has not accepted yet.
#[utoipa::path(post, path = "/api/v1/handoffs/{id}/cancel", tag = "handoffs", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = HandoffView),
              (status = 403, description = "forbidden: only the giver cancels", body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, description = "handoff_closed", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<HandoffView>> {
    let h = state.services.handoffs.cancel(&p, HandoffId::from_uuid(id)).await?;
    Ok(Json(view(&h, state.services.clock.now())))
}
