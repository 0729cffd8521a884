//! Compliance reports (issue 4 §5, docs/audit-reports.md): patient access, user activity,
//! break-glass, failed sign-ins, permission changes and exports, as a printable HTML page and
//! CSV, on demand (REST, CLI) and on a schedule ([`schedule`]).
//!
//! The records come from the audit log through indexed, org-scoped searches only
//! ([`medhub_store::audit::AuditQuery`], one per action or patient or user, paged by
//! `(at, seq)`); break-glass grants come from their own table (index `(org, started_at)`).
//! Generating a report discloses what it shows, so it is audited (`audit.report`) and the
//! record is committed before the report is handed out.

mod build;
pub mod render;
pub mod schedule;

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::authz::Permission;
use medhub_core::patient::PatientRef;
use medhub_core::{Clock, DomainError, OrgId, UserId};
use medhub_store::DynStore;

use crate::{AuditSink, Principal, ServiceError};

pub use build::{MAX_ROWS, document};

/// The reports there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReportKind {
    /// Everyone who touched anything about one patient: the HIPAA accounting of disclosures
    /// and the GDPR Art. 15 access request.
    PatientAccess,
    /// One user's records.
    UserActivity,
    /// Break-glass grants with their reasons, ends and review status.
    BreakGlass,
    /// Failed sign-ins and second factors, and lockouts.
    FailedSignIns,
    /// Role, user, second-factor, SSO-role and care-team changes.
    PermissionChanges,
    /// Audit exports and reports.
    Exports,
}

impl ReportKind {
    pub const ALL: [ReportKind; 6] = [
        ReportKind::PatientAccess,
        ReportKind::UserActivity,
        ReportKind::BreakGlass,
        ReportKind::FailedSignIns,
        ReportKind::PermissionChanges,
        ReportKind::Exports,
    ];

    /// The organization-wide reports: the ones the schedule writes.
    pub const ORG_WIDE: [ReportKind; 4] =
        [ReportKind::BreakGlass, ReportKind::FailedSignIns, ReportKind::PermissionChanges, ReportKind::Exports];

    /// The name in URLs, commands and file names.
    pub fn slug(self) -> &'static str {
        match self {
            ReportKind::PatientAccess => "patient-access",
            ReportKind::UserActivity => "user-activity",
            ReportKind::BreakGlass => "break-glass",
            ReportKind::FailedSignIns => "failed-sign-ins",
            ReportKind::PermissionChanges => "permission-changes",
            ReportKind::Exports => "exports",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.slug() == s)
    }

    pub fn title(self) -> &'static str {
        match self {
            ReportKind::PatientAccess => "Patient access report",
            ReportKind::UserActivity => "User activity report",
            ReportKind::BreakGlass => "Break-glass report",
            ReportKind::FailedSignIns => "Failed sign-ins and lockouts",
            ReportKind::PermissionChanges => "Permission changes",
            ReportKind::Exports => "Data exports",
        }
    }

    /// The period asked for when none is given: six years for a patient's accounting of
    /// disclosures (HIPAA 45 CFR 164.528 covers six years), thirty days otherwise.
    pub fn default_period(self) -> SignedDuration {
        match self {
            ReportKind::PatientAccess => SignedDuration::from_hours(24 * (365 * 6 + 2)),
            _ => SignedDuration::from_hours(24 * 30),
        }
    }

    /// The audit actions the report reads (besides its patient or user filter).
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            ReportKind::PatientAccess | ReportKind::UserActivity => &[],
            ReportKind::BreakGlass => &["break_glass.start"],
            ReportKind::FailedSignIns => &["auth.sign_in", "auth.mfa"],
            ReportKind::PermissionChanges => &[
                "admin.role_create",
                "admin.role_grant",
                "admin.user_update",
                "admin.invite",
                "admin.mfa_reset",
                "sso.roles",
                "care_team.add",
                "care_team.remove",
                "org.create",
            ],
            ReportKind::Exports => &["audit.export", "audit.report"],
        }
    }
}

impl std::fmt::Display for ReportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.slug())
    }
}

/// HTML or CSV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "html" => Some(Format::Html),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Csv => "csv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8; header=present",
        }
    }
}

/// One report to make: its kind, organization, period and subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRequest {
    pub kind: ReportKind,
    pub org: OrgId,
    pub since: Timestamp,
    /// Exclusive.
    pub until: Timestamp,
    /// The patient of a patient access report.
    pub patient: Option<PatientRef>,
    /// The user of a user activity report.
    pub user: Option<UserId>,
}

/// A report as asked for over REST or the CLI, before it is checked.
#[derive(Clone, Debug, Default)]
pub struct ReportParams {
    pub since: Option<String>,
    pub until: Option<String>,
    pub patient: Option<String>,
    pub user: Option<String>,
}

impl ReportRequest {
    /// Checks what was asked: `since` and `until` are RFC 3339 times or dates (`2026-03-01`,
    /// midnight UTC; a date as `until` includes that day), `since` before `until`; a patient
    /// access report needs `patient`, a user activity report `user` (a user id), and the
    /// others take neither. Without `until` the period ends now; without `since` it is the
    /// kind's [`ReportKind::default_period`].
    pub fn from_params(kind: ReportKind, org: OrgId, p: &ReportParams, now: Timestamp) -> Result<Self, ServiceError> {
        let until = match p.until.as_deref() {
            Some(s) => {
                parse_time(s, true).ok_or_else(|| bad(format!("until: {s:?} is not an RFC 3339 time or a date")))?
            }
            None => now,
        };
        let since = match p.since.as_deref() {
            Some(s) => {
                parse_time(s, false).ok_or_else(|| bad(format!("since: {s:?} is not an RFC 3339 time or a date")))?
            }
            None => until.checked_sub(kind.default_period()).unwrap_or(Timestamp::MIN),
        };
        if since >= until {
            return Err(bad("since must be before until".into()));
        }
        let patient = match (kind, p.patient.as_deref()) {
            (ReportKind::PatientAccess, Some(s)) => Some(PatientRef::parse(s).map_err(ServiceError::from)?),
            (ReportKind::PatientAccess, None) => {
                return Err(bad("the patient-access report needs patient (the patient reference)".into()));
            }
            (_, Some(_)) => return Err(bad(format!("the {kind} report takes no patient"))),
            (_, None) => None,
        };
        let user = match (kind, p.user.as_deref()) {
            (ReportKind::UserActivity, Some(s)) => Some(
                s.parse::<uuid::Uuid>()
                    .map(UserId::from_uuid)
                    .map_err(|_| bad(format!("user: {s:?} is not a user id")))?,
            ),
            (ReportKind::UserActivity, None) => {
                return Err(bad("the user-activity report needs user (a user id)".into()));
            }
            (_, Some(_)) => return Err(bad(format!("the {kind} report takes no user"))),
            (_, None) => None,
        };
        Ok(ReportRequest { kind, org, since, until, patient, user })
    }

    /// The report's audit record: `audit.report`, object `report`, the kind and period in the
    /// target (`patient-access 2026-03-01T00:00:00Z/2026-03-08T00:00:00Z`, then ` user=<id>`
    /// for a user activity report), and the patient for a patient access report.
    pub fn audit_record(&self, base: AuditRecord, format: Format) -> AuditRecord {
        let mut target =
            format!("{} {}/{} {}", self.kind, render::time(self.since), render::time(self.until), format.extension());
        if let Some(u) = self.user {
            target.push_str(&format!(" user={u}"));
        }
        let mut r = AuditRecord { org: Some(self.org), ..base }.object("report", uuid::Uuid::now_v7()).target(target);
        if let Some(p) = &self.patient {
            r = r.patient(p.as_str());
        }
        r
    }
}

fn bad(why: String) -> ServiceError {
    ServiceError::InvalidRequest(why)
}

/// An RFC 3339 time, or a date meaning midnight UTC (the next midnight when `end`).
fn parse_time(s: &str, end: bool) -> Option<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    let d: jiff::civil::Date = s.parse().ok()?;
    let d = if end { d.tomorrow().ok()? } else { d };
    d.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// A rendered report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub format: Format,
    /// `patient-access_20260301T000000Z_20260308T000000Z.html`.
    pub file_name: String,
    pub body: String,
}

/// Renders a document in `format`.
pub fn render(doc: &render::Document, req: &ReportRequest, format: Format) -> Result<Rendered, ServiceError> {
    let body = match format {
        Format::Html => render::html(doc),
        Format::Csv => render::csv(&doc.table)?,
    };
    Ok(Rendered { format, file_name: file_name(req.kind, req.since, req.until, format), body })
}

/// `KIND_SINCE_UNTIL.EXT`, times compact and UTC: sortable, and safe on every file system.
pub fn file_name(kind: ReportKind, since: Timestamp, until: Timestamp, format: Format) -> String {
    let compact = |t: Timestamp| t.strftime("%Y%m%dT%H%M%SZ").to_string();
    format!("{kind}_{}_{}.{}", compact(since), compact(until), format.extension())
}

/// Reports on demand, for compliance officers (`audit.read`).
#[derive(Clone)]
pub struct Reports {
    store: DynStore,
    clock: Arc<dyn Clock>,
    audit: AuditSink,
}

impl Reports {
    pub fn new(store: DynStore, clock: Arc<dyn Clock>, audit: AuditSink) -> Self {
        Reports { store, clock, audit }
    }

    /// Makes a report of the caller's organization. A user id that is not one of its users is
    /// `not_found`, as if it did not exist. The `audit.report` record is committed before the
    /// report is returned; if it cannot be, there is no report.
    pub async fn report(
        &self,
        p: &Principal,
        kind: ReportKind,
        params: &ReportParams,
        format: Format,
    ) -> Result<Rendered, ServiceError> {
        p.require(Permission::AuditRead)?;
        let now = self.clock.now();
        let req = ReportRequest::from_params(kind, p.user.org, params, now)?;
        if let Some(u) = req.user {
            let in_org = self.store.user(u).await?.is_some_and(|x| x.org == p.user.org);
            if !in_org {
                return Err(DomainError::UserNotFound.into());
            }
        }
        let by = format!("{} ({})", p.user.display_name, p.user.username);
        let doc = document(&self.store, &req, now, by).await?;
        let rendered = render(&doc, &req, format)?;
        let record = req.audit_record(self.audit.by(p, "audit.report", Outcome::Success), format);
        self.audit.write(vec![record]).await?;
        Ok(rendered)
    }
}

/// A report for the operator (`medhub audit report`): the same document, recorded in the
/// audit log as made by the operator (no user, reason `operator`) before it is returned.
pub async fn operator_report(
    store: &DynStore,
    req: &ReportRequest,
    format: Format,
    now: Timestamp,
) -> Result<Rendered, ServiceError> {
    if let Some(u) = req.user
        && store.user(u).await?.is_none_or(|x| x.org != req.org)
    {
        return Err(DomainError::UserNotFound.into());
    }
    let doc = document(store, req, now, "the operator (medhub audit report)".into()).await?;
    let rendered = render(&doc, req, format)?;
    let record = req.audit_record(AuditRecord::new(now, "audit.report", Outcome::Success).reason("operator"), format);
    store.append_audit(&[record]).await?;
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn params(since: Option<&str>, until: Option<&str>, patient: Option<&str>, user: Option<&str>) -> ReportParams {
        ReportParams {
            since: since.map(Into::into),
            until: until.map(Into::into),
            patient: patient.map(Into::into),
            user: user.map(Into::into),
        }
    }

    #[test]
    fn periods_subjects_and_their_errors() {
        let org = OrgId::from_uuid(uuid::Uuid::from_u128(1));
        let now: Timestamp = "2026-03-10T12:00:00Z".parse().unwrap();
        let r = ReportRequest::from_params(
            ReportKind::PatientAccess,
            org,
            &params(Some("2026-03-01"), Some("2026-03-07"), Some("pat-42"), None),
            now,
        )
        .unwrap();
        assert_eq!(
            (r.since.to_string(), r.until.to_string()),
            ("2026-03-01T00:00:00Z".into(), "2026-03-08T00:00:00Z".into())
        );
        let r = ReportRequest::from_params(ReportKind::BreakGlass, org, &params(None, None, None, None), now).unwrap();
        assert_eq!((r.until, r.since), (now, now - SignedDuration::from_hours(720)));
        let r = ReportRequest::from_params(
            ReportKind::FailedSignIns,
            org,
            &params(Some("2026-03-01T06:30:00+01:00"), None, None, None),
            now,
        )
        .unwrap();
        assert_eq!(r.since.to_string(), "2026-03-01T05:30:00Z");

        let err = |kind, p: ReportParams| match ReportRequest::from_params(kind, org, &p, now) {
            Err(ServiceError::InvalidRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(ReportKind::PatientAccess, params(None, None, None, None)).contains("needs patient"));
        assert!(err(ReportKind::UserActivity, params(None, None, None, None)).contains("needs user"));
        assert!(err(ReportKind::UserActivity, params(None, None, None, Some("bob"))).contains("not a user id"));
        assert!(err(ReportKind::Exports, params(None, None, Some("p"), None)).contains("takes no patient"));
        assert!(err(ReportKind::Exports, params(Some("yesterday"), None, None, None)).contains("since"));
        assert!(
            err(ReportKind::Exports, params(Some("2026-03-05"), Some("2026-03-04T00:00:00Z"), None, None))
                .contains("before")
        );
        assert!(matches!(
            ReportRequest::from_params(ReportKind::PatientAccess, org, &params(None, None, Some(""), None), now),
            Err(ServiceError::Domain(_))
        ));
    }

    #[test]
    fn file_names_say_kind_and_period() {
        let since: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let until: Timestamp = "2026-03-02T00:00:00Z".parse().unwrap();
        assert_eq!(
            file_name(ReportKind::FailedSignIns, since, until, Format::Csv),
            "failed-sign-ins_20260301T000000Z_20260302T000000Z.csv"
        );
        assert!(ReportKind::ALL.iter().all(|k| ReportKind::parse(k.slug()) == Some(*k)));
    }
}
