//! Retention and legal hold over REST (issue 4 §6, docs/retention.md): the organization's
//! retention policies (administrators set them), legal holds (compliance officers), the
//! expiry on demand, and GDPR erasure.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, extract::State};
use medhub_core::retention::HoldScope;
use medhub_core::{ConversationId, LegalHoldId, UserId};
use medhub_service::retention::HoldTarget;
use medhub_store::{LegalHold, StoredPolicy};
use medhub_wire::ErrorBody;
use medhub_wire::retention::{
    CreateLegalHold, ErasureReportView, ExpiryReportView, HoldScopeView, LegalHoldList, LegalHoldView, LiftLegalHold,
    RetentionPolicies, RetentionPolicyView, SetRetentionPolicy,
};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authed};

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/retention/policies", get(policies))
        .route("/api/v1/retention/policies/{class}", put(set_policy).delete(remove_policy))
        .route("/api/v1/retention/expire", post(expire))
        .route("/api/v1/legal-holds", get(holds).post(create_hold))
        .route("/api/v1/legal-holds/{id}/lift", post(lift_hold))
        .route("/api/v1/users/{id}/erase", post(erase))
}

fn policy_view(p: &StoredPolicy) -> RetentionPolicyView {
    RetentionPolicyView {
        class: p.policy.class.as_str().to_owned(),
        days: p.policy.days,
        set_by: p.set_by.map(|u| u.as_uuid()),
        set_at: p.set_at,
    }
}

fn hold_view(h: &LegalHold) -> LegalHoldView {
    LegalHoldView {
        id: h.id.as_uuid(),
        scope: match &h.scope {
            HoldScope::Conversation(c) => HoldScopeView::Conversation { conversation_id: c.as_uuid() },
            HoldScope::Patient(p) => HoldScopeView::Patient { patient_ref: p.as_str().to_owned() },
            HoldScope::User(u) => HoldScopeView::User { user_id: u.as_uuid() },
        },
        reason: h.reason.clone(),
        created_by: h.created_by.as_uuid(),
        created_at: h.created_at,
        lifted_by: h.lifted.as_ref().map(|l| l.by.as_uuid()),
        lifted_at: h.lifted.as_ref().map(|l| l.at),
        lift_reason: h.lifted.as_ref().map(|l| l.reason.clone()),
    }
}

/// The organization's retention policies. A class without a policy (`clinical`, `direct`,
/// `group`, `channel`) is kept for ever.
#[utoipa::path(get, path = "/api/v1/retention/policies", tag = "retention", security(("bearer" = [])),
    responses((status = 200, body = RetentionPolicies)))]
pub async fn policies(State(state): State<AppState>, Authed(p): Authed) -> ApiResult<Json<RetentionPolicies>> {
    let policies = state.services.retention.policies(&p).await?;
    Ok(Json(RetentionPolicies { policies: policies.iter().map(policy_view).collect() }))
}

/// Set how long the organization keeps one class of conversation (administrators, with a
/// step-up). The expiry job then removes the content of older messages, unless a legal hold
/// covers them.
#[utoipa::path(put, path = "/api/v1/retention/policies/{class}", tag = "retention", security(("bearer" = [])),
    params(("class" = String, Path, description = "clinical, direct, group or channel")),
    request_body = SetRetentionPolicy,
    responses((status = 200, body = RetentionPolicies),
              (status = 400, description = "invalid_retention or invalid_request (unknown class)", body = ErrorBody),
              (status = 403, description = "forbidden or step_up_required", body = ErrorBody)))]
pub async fn set_policy(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(class): ApiPath<String>,
    ApiJson(req): ApiJson<SetRetentionPolicy>,
) -> ApiResult<Json<RetentionPolicies>> {
    state.services.retention.set_policy(&p, &class, Some(req.days)).await?;
    policies(State(state), Authed(p)).await
}

/// Remove one class's policy: its content is kept for ever (administrators, with a step-up).
#[utoipa::path(delete, path = "/api/v1/retention/policies/{class}", tag = "retention", security(("bearer" = [])),
    params(("class" = String, Path, description = "clinical, direct, group or channel")),
    responses((status = 200, body = RetentionPolicies),
              (status = 400, description = "invalid_request (unknown class)", body = ErrorBody),
              (status = 403, description = "forbidden or step_up_required", body = ErrorBody)))]
pub async fn remove_policy(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(class): ApiPath<String>,
) -> ApiResult<Json<RetentionPolicies>> {
    state.services.retention.set_policy(&p, &class, None).await?;
    policies(State(state), Authed(p)).await
}

/// Run the expiry job for the organization now (compliance officers). It also runs every
/// `retention.expiry_interval_secs`.
#[utoipa::path(post, path = "/api/v1/retention/expire", tag = "retention", security(("bearer" = [])),
    responses((status = 200, body = ExpiryReportView), (status = 403, body = ErrorBody)))]
pub async fn expire(State(state): State<AppState>, Authed(p): Authed) -> ApiResult<Json<ExpiryReportView>> {
    let r = state.services.retention.expire_now(&p).await?;
    Ok(Json(ExpiryReportView {
        removed: r.removed,
        revisions: r.revisions,
        held: r.held,
        erasure_finished: r.erasure_finished,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HoldQuery {
    /// Also list lifted holds (default false).
    include_lifted: Option<bool>,
}

/// The organization's legal holds, newest first, with their reasons (compliance officers).
#[utoipa::path(get, path = "/api/v1/legal-holds", tag = "retention", security(("bearer" = [])), params(HoldQuery),
    responses((status = 200, body = LegalHoldList), (status = 403, body = ErrorBody)))]
pub async fn holds(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiQuery(q): ApiQuery<HoldQuery>,
) -> ApiResult<Json<LegalHoldList>> {
    let holds = state.services.retention.holds(&p, q.include_lifted.unwrap_or(false)).await?;
    Ok(Json(LegalHoldList { holds: holds.iter().map(hold_view).collect() }))
}

/// Put a legal hold on a conversation, a patient or a user of the organization (compliance
/// officers). What it covers is kept whatever the retention policy says, and a held user's
/// personal data cannot be erased.
#[utoipa::path(post, path = "/api/v1/legal-holds", tag = "retention", security(("bearer" = [])),
    request_body = CreateLegalHold,
    responses((status = 201, body = LegalHoldView),
              (status = 400, description = "invalid_hold_reason or invalid_patient_ref", body = ErrorBody),
              (status = 403, body = ErrorBody),
              (status = 404, description = "no such conversation or user in the organization", body = ErrorBody)))]
pub async fn create_hold(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<CreateLegalHold>,
) -> ApiResult<(StatusCode, Json<LegalHoldView>)> {
    let target = match req.scope {
        HoldScopeView::Conversation { conversation_id } => {
            HoldTarget::Conversation(ConversationId::from_uuid(conversation_id))
        }
        HoldScopeView::Patient { patient_ref } => HoldTarget::Patient(patient_ref),
        HoldScopeView::User { user_id } => HoldTarget::User(UserId::from_uuid(user_id)),
    };
    let hold = state.services.retention.set_hold(&p, target, &req.reason).await?;
    Ok((StatusCode::CREATED, Json(hold_view(&hold))))
}

/// Lift an active legal hold, with a reason (compliance officers). The hold stays on record;
/// an unknown, another organization's or already lifted hold is `404 not_found`.
#[utoipa::path(post, path = "/api/v1/legal-holds/{id}/lift", tag = "retention", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = LiftLegalHold,
    responses((status = 200, body = LegalHoldView), (status = 400, description = "invalid_hold_reason", body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, description = "not_found", body = ErrorBody)))]
pub async fn lift_hold(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<LiftLegalHold>,
) -> ApiResult<Json<LegalHoldView>> {
    let hold = state.services.retention.lift_hold(&p, LegalHoldId::from_uuid(id), &req.reason).await?;
    Ok(Json(hold_view(&hold)))
}

/// Erase a user's non-clinical personal data (GDPR art. 17; compliance officers, with a
/// step-up). The account becomes a deactivated pseudonym without credentials; messages the
/// user wrote are removed, except clinical content under retention and content under a legal
/// hold, which are kept and flagged. Calling it again finishes an interrupted erasure.
#[utoipa::path(post, path = "/api/v1/users/{id}/erase", tag = "retention", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ErasureReportView),
              (status = 400, description = "invalid_request (your own account)", body = ErrorBody),
              (status = 403, description = "forbidden or step_up_required", body = ErrorBody),
              (status = 404, description = "no such user in the organization", body = ErrorBody),
              (status = 409, description = "under_legal_hold", body = ErrorBody)))]
pub async fn erase(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ErasureReportView>> {
    let user = UserId::from_uuid(id);
    let r = state.services.retention.erase(&p, user).await?;
    Ok(Json(ErasureReportView {
        user_id: id,
        display_name: medhub_core::retention::pseudonym(user).1,
        removed: r.removed,
        revisions: r.revisions,
        flagged: r.flagged,
        sessions_ended: r.sessions_ended as u64,
        first_time: r.first_time,
    }))
}
