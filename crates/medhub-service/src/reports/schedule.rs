//! Scheduled reports: after each period (a UTC day, an ISO week from Monday, or a number of
//! hours counted from the Unix epoch), every organization's organization-wide reports for
//! that period are written into `audit.report_dir` as `ORG/KIND_SINCE_UNTIL.{html,csv}`.
//!
//! A period's file is written once: a file that exists is left alone, and a file appears
//! whole or not at all (written to a temporary name, synced, then renamed). Each report is
//! recorded in the audit log (`audit.report`, reason `scheduled`) before its files appear.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use medhub_core::Clock;
use medhub_core::audit::Outcome;
use medhub_store::DynStore;

use super::{Format, ReportKind, ReportRequest, document, file_name};
use crate::{AuditSink, ServiceError};

/// How long each scheduled period is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    /// UTC days, midnight to midnight.
    Day,
    /// ISO weeks, Monday 00:00 UTC to the next Monday.
    Week,
    /// Periods of this many hours, counted from 1970-01-01T00:00:00Z (1 to 168).
    Hours(u32),
}

impl Every {
    /// `daily`, `weekly`, or `Nh` (N from 1 to 168).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(Every::Day),
            "weekly" => Some(Every::Week),
            _ => {
                let n: u32 = s.strip_suffix('h')?.parse().ok()?;
                (1..=168).contains(&n).then_some(Every::Hours(n))
            }
        }
    }

    /// The last whole period that ended at or before `now`.
    pub fn previous(self, now: Timestamp) -> (Timestamp, Timestamp) {
        let secs = now.as_second();
        let (len, offset) = match self {
            Every::Day => (86_400, 0),
            // 1970-01-01 was a Thursday: Mondays are 4 days after an epoch-aligned week start.
            Every::Week => (7 * 86_400, 4 * 86_400),
            Every::Hours(h) => (i64::from(h) * 3_600, 0),
        };
        let end = (secs - offset).div_euclid(len) * len + offset;
        let at = |s: i64| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
        (at(end - len), at(end))
    }
}

/// Where and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub dir: PathBuf,
    pub every: Every,
}

/// How often the scheduler looks whether a period has ended.
pub const CHECK_EVERY: Duration = Duration::from_secs(300);

/// Writes the reports of the period that ended last, for every organization, unless their
/// files exist. Returns the files written.
pub async fn write_due(
    store: &DynStore,
    audit: &AuditSink,
    clock: &dyn Clock,
    schedule: &Schedule,
) -> Result<Vec<PathBuf>, ServiceError> {
    let now = clock.now();
    let (since, until) = schedule.every.previous(now);
    let mut written = Vec::new();
    for org in store.orgs().await? {
        let dir = schedule.dir.join(org_dir(&org.name, org.id));
        for kind in ReportKind::ORG_WIDE {
            let paths = [Format::Html, Format::Csv].map(|f| (f, dir.join(file_name(kind, since, until, f))));
            if paths.iter().all(|(_, p)| p.exists()) {
                continue;
            }
            let req = ReportRequest { kind, org: org.id, since, until, patient: None, user: None };
            let doc = document(store, &req, now, "the schedule".into()).await?;
            let mut files = Vec::new();
            for (format, path) in &paths {
                if !path.exists() {
                    files.push((path.clone(), super::render(&doc, &req, *format)?.body, *format));
                }
            }
            let records = files
                .iter()
                .map(|(_, _, f)| {
                    req.audit_record(audit.event("audit.report", Outcome::Success).reason("scheduled"), *f)
                })
                .collect();
            audit.write(records).await?;
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            for (path, body, _) in files {
                write_whole(&path, body.as_bytes())?;
                written.push(path);
            }
        }
    }
    Ok(written)
}

/// Writes due reports every [`CHECK_EVERY`], until the task is aborted.
pub async fn run(store: DynStore, audit: AuditSink, clock: Arc<dyn Clock>, schedule: Schedule) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match write_due(&store, &audit, clock.as_ref(), &schedule).await {
            Ok(files) if !files.is_empty() => {
                tracing::info!(target: "medhub::audit", files = files.len(), dir = %schedule.dir.display(), "scheduled compliance reports written");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(target: "medhub::audit", error = %e, "scheduled compliance reports failed; retrying")
            }
        }
    }
}

/// The organization's directory: its name made safe for file systems, and the start of its
/// id (names may differ only in characters the safe form drops).
fn org_dir(name: &str, id: medhub_core::OrgId) -> String {
    let mut safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    safe.truncate(48);
    if safe.is_empty() {
        safe.push_str("org");
    }
    let id = id.to_string();
    format!("{safe}-{}", &id[..8.min(id.len())])
}

fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), ServiceError> {
    use std::io::Write;
    let tmp = path.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

fn io(path: &Path, e: std::io::Error) -> ServiceError {
    ServiceError::AuditExport(format!("writing the report {}: {e}", path.display()))
}

/// Midnight UTC of the day `t` falls on (for tests and docs: periods start there).
pub fn midnight(t: Timestamp) -> Timestamp {
    let z = t.to_zoned(TimeZone::UTC);
    z.start_of_day().map(|d| d.timestamp()).unwrap_or(t)
}

/// One period's length.
pub fn length(every: Every) -> SignedDuration {
    match every {
        Every::Day => SignedDuration::from_hours(24),
        Every::Week => SignedDuration::from_hours(24 * 7),
        Every::Hours(h) => SignedDuration::from_hours(i64::from(h)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_previous_period_is_the_last_whole_one() {
        let now = ts("2026-03-04T10:30:00Z"); // a Wednesday
        let p = |e: Every| {
            let (a, b) = e.previous(now);
            (a.to_string(), b.to_string())
        };
        assert_eq!(p(Every::Day), ("2026-03-03T00:00:00Z".into(), "2026-03-04T00:00:00Z".into()));
        assert_eq!(p(Every::Week), ("2026-02-23T00:00:00Z".into(), "2026-03-02T00:00:00Z".into()));
        assert_eq!(p(Every::Hours(6)), ("2026-03-04T00:00:00Z".into(), "2026-03-04T06:00:00Z".into()));
        // At the very end of a period, that period is the previous one.
        assert_eq!(Every::Day.previous(ts("2026-03-04T00:00:00Z")).1, ts("2026-03-04T00:00:00Z"));
        assert_eq!(Every::Week.previous(ts("2026-03-02T00:00:00Z")).1, ts("2026-03-02T00:00:00Z"));
        for e in [Every::Day, Every::Week, Every::Hours(5)] {
            let (a, b) = e.previous(now);
            assert_eq!(b.duration_since(a), length(e));
        }
        assert_eq!(midnight(now), ts("2026-03-04T00:00:00Z"));
    }

    #[test]
    fn intervals_parse() {
        assert_eq!(Every::parse("daily"), Some(Every::Day));
        assert_eq!(Every::parse("weekly"), Some(Every::Week));
        assert_eq!(Every::parse("6h"), Some(Every::Hours(6)));
        for bad in ["0h", "169h", "6", "hourly", ""] {
            assert_eq!(Every::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn organization_directories_are_safe_names() {
        let id = medhub_core::OrgId::from_uuid(uuid::Uuid::from_u128(0xabcdef12_0000_0000_0000_000000000000));
        assert_eq!(org_dir("St. Mary's / ../Hospital", id), "st-mary-s-hospital-abcdef12");
        assert_eq!(org_dir("../..", id), "org-abcdef12");
    }
}
