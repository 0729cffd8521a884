//! `medhub audit report`: a compliance report from the operator's shell (docs/audit-reports.md),
//! the same page or CSV the REST route gives, recorded in the audit log as the operator's.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use medhub_core::{Clock, SystemClock};
use medhub_service::reports::{Format, ReportKind, ReportParams, ReportRequest, operator_report};
use medhub_store::DynStore;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// patient-access, user-activity, break-glass, failed-sign-ins, permission-changes or exports.
    pub kind: String,
    /// The organization, by name.
    #[arg(long)]
    pub org: String,
    /// Start of the period: an RFC 3339 time or a date (midnight UTC). Default: six years
    /// before `until` for patient-access, 30 days otherwise.
    #[arg(long)]
    pub since: Option<String>,
    /// End of the period, excluded: an RFC 3339 time, or a date (that day included). Default: now.
    #[arg(long)]
    pub until: Option<String>,
    /// The patient reference (patient-access).
    #[arg(long)]
    pub patient: Option<String>,
    /// The user, by username or id (user-activity).
    #[arg(long)]
    pub user: Option<String>,
    /// html (a printable page) or csv.
    #[arg(long, default_value = "html")]
    pub format: String,
    /// Write the report to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn run(store: &DynStore, a: ReportArgs) -> Result<()> {
    let kinds: Vec<&str> = ReportKind::ALL.iter().map(|k| k.slug()).collect();
    let kind = ReportKind::parse(&a.kind)
        .ok_or_else(|| anyhow!("unknown report {:?}: one of {}", a.kind, kinds.join(", ")))?;
    let format = Format::parse(&a.format).ok_or_else(|| anyhow!("--format must be html or csv, not {:?}", a.format))?;
    let org = store
        .orgs()
        .await?
        .into_iter()
        .find(|o| o.is_named(&a.org))
        .ok_or_else(|| anyhow!("no organization is named {:?}", a.org))?;
    let user = match a.user.as_deref() {
        None => None,
        Some(u) if u.parse::<uuid::Uuid>().is_ok() => Some(u.to_owned()),
        Some(name) => match store.user_record_by_username(&name.trim().to_ascii_lowercase()).await? {
            Some(r) if r.user.org == org.id => Some(r.user.id.to_string()),
            _ => bail!("{name:?} is not a user of {}", org.name),
        },
    };
    let params = ReportParams { since: a.since, until: a.until, patient: a.patient, user };
    let now = SystemClock.now();
    let req = ReportRequest::from_params(kind, org.id, &params, now)?;
    let report = operator_report(store, &req, format, now).await.map_err(|e| match e {
        medhub_service::ServiceError::Domain(medhub_core::DomainError::UserNotFound) => {
            anyhow!("that user is not one of {}'s", org.name)
        }
        other => other.into(),
    })?;
    match a.out {
        Some(path) => {
            std::fs::write(&path, report.body.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("medhub: {} written to {}", kind.title(), path.display());
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(report.body.as_bytes()).context("writing the report")?;
        }
    }
    Ok(())
}
