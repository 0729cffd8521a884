//! The audit log over REST: RFC 9162 proofs for auditors holding signed tree heads
//! (docs/audit.md). Compliance officers only (`audit.read`).

use axum::Router;
use axum::routing::get;
use axum::{Json, extract::State};
use medhub_core::authz::Permission;
use medhub_service::tree_heads::hex;
use medhub_wire::ErrorBody;
use medhub_wire::audit::{ConsistencyProof, InclusionProof};
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
