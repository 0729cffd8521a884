//! Compliance reports on demand (docs/audit-reports.md): `GET /api/v1/audit/reports/{kind}`
//! answers a printable HTML page or CSV of the caller's organization. Compliance officers
//! only (`audit.read`); each report is recorded in the audit log before it is sent.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use medhub_service::reports::{Format, ReportKind, ReportParams, render};
use medhub_wire::ErrorBody;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, Authed};
use crate::headers::OwnCsp;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/audit/reports/{kind}", get(report))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `html` (default: a printable page) or `csv` (RFC 4180, header row).
    format: Option<String>,
    /// Start of the period: an RFC 3339 time, or a date (midnight UTC). Default: `until`
    /// minus six years for patient-access, minus 30 days otherwise.
    since: Option<String>,
    /// End of the period, excluded: an RFC 3339 time, or a date (that day is included).
    /// Default: now.
    until: Option<String>,
    /// The patient reference; required by patient-access, refused by the others.
    patient: Option<String>,
    /// The user id; required by user-activity, refused by the others.
    user: Option<String>,
}

/// A compliance report of the caller's organization: `patient-access`, `user-activity`,
/// `break-glass`, `failed-sign-ins`, `permission-changes` or `exports`.
#[utoipa::path(get, path = "/api/v1/audit/reports/{kind}", tag = "audit", security(("bearer" = [])),
    params(("kind" = String, Path, description = "patient-access, user-activity, break-glass, failed-sign-ins, permission-changes or exports"), ReportQuery),
    responses(
        (status = 200, description = "The report: text/html (printable, self-contained) or text/csv", content_type = "text/html"),
        (status = 400, description = "invalid_request: an unknown kind or format, a bad date, since not before until, a missing or extra patient or user, or more than 100,000 rows", body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "not_found: the user is not one of the organization's", body = ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let kind = ReportKind::parse(&kind).ok_or_else(|| {
        let kinds: Vec<&str> = ReportKind::ALL.iter().map(|k| k.slug()).collect();
        medhub_service::ServiceError::InvalidRequest(format!("unknown report {kind:?}: one of {}", kinds.join(", ")))
    })?;
    let format = match q.format.as_deref() {
        None => Format::Html,
        Some(f) => Format::parse(f)
            .ok_or_else(|| medhub_service::ServiceError::InvalidRequest(format!("format: {f:?} is not html or csv")))?,
    };
    let params = ReportParams { since: q.since, until: q.until, patient: q.patient, user: q.user };
    let r = state.services.reports.report(&p, kind, &params, format).await?;
    let disposition = match format {
        Format::Html => format!("inline; filename=\"{}\"", r.file_name),
        Format::Csv => format!("attachment; filename=\"{}\"", r.file_name),
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(format.content_type())),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("inline")),
            ),
        ],
        r.body,
    )
        .into_response();
    if let Ok(csp) = HeaderValue::from_str(&render::content_security_policy()) {
        response.extensions_mut().insert(OwnCsp(csp));
    }
    Ok(response)
}
