//! `GET /api/v1/audit/export`: the caller's organization's audit records as FHIR R4
//! AuditEvent, NDJSON or CSV (docs/audit-export.md), streamed a page at a time. Compliance
//! officers: reading the audit log (`audit.read`, checked by the authorization table) and
//! taking data out of medhub (`export.run`, checked here). The export is audited before the
//! first byte is sent.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use medhub_core::UserId;
use medhub_core::audit::Outcome;
use medhub_core::authz::Permission;
use medhub_service::audit_export::{Export, ExportFilter};
use medhub_wire::ErrorBody;
use medhub_wire::audit_export::ExportFormat;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Authed, Client};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/audit/export", get(export))
}

/// The header that names the export (the object id of its `audit.export` record).
pub const EXPORT_ID_HEADER: &str = "x-medhub-export-id";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `fhir` (a FHIR R4 Bundle of AuditEvent), `fhir-ndjson` (one AuditEvent per line),
    /// `ndjson` (the flat record per line) or `csv`.
    #[param(value_type = String)]
    format: ExportFormat,
    /// Only the records of this user (a user id), as in the search.
    user: Option<uuid::Uuid>,
    /// Only the records about this patient (the EHR's patient id).
    patient: Option<String>,
    /// Only this action (`patient.read`, `break_glass.start`, `http`, …).
    action: Option<String>,
    /// Only records whose object is of this type (`conversation`, `user`, `grant`, …).
    object_type: Option<String>,
    /// Only records about this object id.
    object_id: Option<String>,
    /// Only this outcome: `allow`, `deny`, `success`, `failure` or `error`.
    outcome: Option<String>,
    /// Records at or after this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<jiff::Timestamp>,
    /// Records before this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<jiff::Timestamp>,
}

impl ExportQuery {
    fn filter(&self) -> Result<ExportFilter, ApiError> {
        let outcome = match &self.outcome {
            Some(o) => Some(Outcome::parse(o).ok_or_else(|| {
                ApiError::with_message(
                    medhub_wire::ErrorCode::InvalidRequest,
                    "outcome must be allow, deny, success, failure or error",
                )
            })?),
            None => None,
        };
        Ok(ExportFilter {
            actor: self.user.map(UserId::from_uuid),
            patient_ref: self.patient.clone(),
            action: self.action.clone(),
            object_type: self.object_type.clone(),
            object_id: self.object_id.clone(),
            outcome,
            since: self.since,
            until: self.until,
        })
    }
}

/// The organization's audit records, newest first, in the format asked for. The body is
/// streamed; a failure part-way ends the connection without the end of the body, so a cut
/// export never looks complete. `X-Medhub-Export-Id` names the export's own audit record.
#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", security(("bearer" = [])),
    params(ExportQuery),
    responses(
        (status = 200, description = "The export, streamed", content(
            (String = "application/fhir+json"), (String = "application/fhir+ndjson"),
            (String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 503, description = "the export's audit record could not be stored", body = ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    Authed(p): Authed,
    Client(client): Client,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let filter = q.filter()?;
    let audit = &state.services.audit;
    let mut record = audit.by(&p, "audit.export", Outcome::Success);
    if let Some(ip) = client.ip {
        record.ip = Some(ip.to_string());
    }
    if p.require(Permission::DataExport).is_err() {
        let denied = medhub_service::audit_export::refused(record, p.user.org, &filter, q.format);
        audit.write(vec![denied]).await?;
        return Err(ApiError::from(medhub_service::ServiceError::PermissionRequired));
    }
    let mut export =
        medhub_service::audit_export::begin(state.services.store.clone(), audit, record, p.user.org, &filter, q.format)
            .await?;
    // The first page before the answer: a database that is away answers an error status
    // rather than a cut body.
    let first = export.next_chunk().await?;
    let id = export.id();
    let format = export.format();
    let body = Body::from_stream(futures_util::stream::unfold((first, Some(export)), next));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let disposition = format!("attachment; filename=\"medhub-audit-{id}.{}\"", format.extension());
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        headers.insert(EXPORT_ID_HEADER, v);
    }
    Ok(response)
}

type Pending = (Option<Bytes>, Option<Export>);

/// The body's next chunk: the one read ahead, then the export's, until it ends or fails.
async fn next((ready, export): Pending) -> Option<(Result<Bytes, std::io::Error>, Pending)> {
    if let Some(chunk) = ready {
        return Some((Ok(chunk), (None, export)));
    }
    let mut export = export?;
    match export.next_chunk().await {
        Ok(Some(chunk)) => Some((Ok(chunk), (None, Some(export)))),
        Ok(None) => None,
        Err(e) => {
            let correlation = medhub_service::correlation_id();
            tracing::error!(target: "medhub::audit", correlation = %correlation, export = %export.id(),
                records = export.records(), error = %e, "audit export failed part-way: the body is cut");
            Some((Err(std::io::Error::other(format!("export failed (correlation id {correlation})"))), (None, None)))
        }
    }
}
