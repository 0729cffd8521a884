//! The audit log over REST: RFC 9162 proofs for auditors holding signed tree heads
//! (docs/audit.md). Compliance officers only (`audit.read`).

use axum::Router;
use axum::routing::get;
use axum::{Json, extract::State};
use medhub_core::audit::Outcome;
use medhub_core::authz::Permission;
use medhub_service::tree_heads::hex;
use medhub_store::audit::AuditQuery;
use medhub_wire::ErrorBody;
use medhub_wire::audit::{AuditEventView, AuditSearchPage, ConsistencyProof, InclusionProof};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Authed};

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/audit/proof/inclusion", get(inclusion))
        .route("/api/v1/audit/proof/consistency", get(consistency))
        .route("/api/v1/audit/events", get(search))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Records of this user (their id).
    user: Option<uuid::Uuid>,
    /// Records about this patient (the EHR's patient id).
    patient: Option<String>,
    /// Records of this action (`patient.read`, `auth.sign_in`, `break_glass.start`, …).
    action: Option<String>,
    /// Records about objects of this type (`conversation`, `message`, `user`, `grant`, …).
    object_type: Option<String>,
    /// Records about this object (with `object_type`).
    object_id: Option<String>,
    /// `allow`, `deny`, `success`, `failure` or `error`.
    outcome: Option<String>,
    /// Records at or after this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<jiff::Timestamp>,
    /// Records before this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<jiff::Timestamp>,
    /// The `next` cursor of the previous page.
    before: Option<String>,
    /// Records per page, 1 to 500. Default: 100.
    limit: Option<u32>,
}

/// Search the audit log of the caller's organization, newest first, by user, patient,
/// action, object, outcome and period. Every filter is served by an index; pages continue
/// with `before`. The search itself is recorded.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", security(("bearer" = [])),
    params(SearchQuery),
    responses((status = 200, body = AuditSearchPage), (status = 400, description = "invalid_request", body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<AuditSearchPage>> {
    let bad = |m: &str| ApiError::from(medhub_service::ServiceError::InvalidRequest(m.into()));
    let outcome = match q.outcome.as_deref() {
        None => None,
        Some(o) => {
            Some(Outcome::parse(o).ok_or_else(|| bad("outcome must be allow, deny, success, failure or error"))?)
        }
    };
    if q.object_id.is_some() && q.object_type.is_none() {
        return Err(bad("object_id needs object_type"));
    }
    let before = q.before.as_deref().map(medhub_service::audit::parse_search_cursor).transpose()?;
    let query = AuditQuery {
        actor: q.user.map(medhub_core::UserId::from_uuid),
        patient_ref: q.patient,
        action: q.action,
        object_type: q.object_type,
        object_id: q.object_id,
        outcome,
        since: q.since,
        until: q.until,
        before,
        ..AuditQuery::org(p.user.org, q.limit.unwrap_or(100))
    };
    let limit = query.limit as usize;
    let entries = medhub_service::audit::search(&state.services.store, &state.services.audit, &p, query).await?;
    let next = (entries.len() == limit).then(|| entries.last().map(medhub_service::audit::search_cursor)).flatten();
    Ok(Json(AuditSearchPage { events: entries.iter().map(event_view).collect(), next }))
}

/// A stored record as the API shows it.
pub fn event_view(e: &medhub_store::AuditEntry) -> AuditEventView {
    let r = &e.record;
    AuditEventView {
        seq: e.seq,
        leaf_hash: hex(&e.leaf_hash),
        version: r.version,
        at: r.at,
        actor: r.actor.map(|a| a.as_uuid()),
        session: r.session.map(|s| s.as_uuid()),
        device: r.device.clone(),
        ip: r.ip.clone(),
        action: r.action.clone(),
        object_type: r.object_type.clone(),
        object_id: r.object_id.clone(),
        patient_ref: r.patient_ref.clone(),
        target: r.target.clone(),
        outcome: r.outcome.as_str().to_owned(),
        reason: r.reason.clone(),
        node: r.node.clone(),
        region: r.region.clone(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The record's leaf number.
    seq: u64,
    /// The size of the tree to prove it in (a signed tree head's size).
    size: u64,
}

/// An inclusion proof: record `seq` is in the log's first `size` records.
#[utoipa::path(get, path = "/api/v1/audit/proof/inclusion", tag = "audit", security(("bearer" = [])),
    params(InclusionQuery),
    responses((status = 200, body = InclusionProof), (status = 400, description = "invalid_request", body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn inclusion(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> ApiResult<Json<InclusionProof>> {
    p.require(Permission::AuditRead)?;
    let proof = medhub_service::tree_heads::inclusion_proof(&state.services.store, q.seq, q.size).await?;
    Ok(Json(InclusionProof {
        seq: q.seq,
        size: q.size,
        leaf_hash: proof.leaf.map(|l| hex(&l)).unwrap_or_default(),
        root: hex(&proof.root),
        proof: proof.path.iter().map(|h| hex(h)).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The older size.
    from: u64,
    /// The newer size.
    to: u64,
}

/// A consistency proof: the log's first `from` records are a prefix of its first `to`.
#[utoipa::path(get, path = "/api/v1/audit/proof/consistency", tag = "audit", security(("bearer" = [])),
    params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 400, description = "invalid_request", body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn consistency(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyProof>> {
    p.require(Permission::AuditRead)?;
    let proof = medhub_service::tree_heads::consistency_proof(&state.services.store, q.from, q.to).await?;
    Ok(Json(ConsistencyProof {
        from: q.from,
        to: q.to,
        from_root: proof.old_root.map(|r| hex(&r)).unwrap_or_default(),
        to_root: hex(&proof.root),
        proof: proof.path.iter().map(|h| hex(h)).collect(),
    }))
}
