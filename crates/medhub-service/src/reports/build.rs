//! What each report shows: the records and grants it reads (indexed, org-scoped queries
//! only) and the [`Document`] it makes of them, with names from the directory.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::model::User;
use medhub_core::{OrgId, UserId};
use medhub_store::audit::AuditQuery;
use medhub_store::{AuditEntry, BreakGlassGrant, DynStore};

use super::render::{Chart, Document, Table, by_category, over_time, time};
use super::{ReportKind, ReportRequest};
use crate::ServiceError;

/// Most records or grants one report holds. A larger one is refused with a message to ask
/// for a shorter period: a truncated accounting of disclosures would be wrong, not short.
pub const MAX_ROWS: usize = 100_000;
/// Records or grants read per query.
const PAGE: u32 = 1_000;
/// Users looked up per query.
const USERS_PAGE: usize = 500;

/// Gathers and lays out the report `req` asks for, as of `now`, made by `generated_by`.
pub async fn document(
    store: &DynStore,
    req: &ReportRequest,
    now: Timestamp,
    generated_by: String,
) -> Result<Document, ServiceError> {
    let org = store.orgs().await?.into_iter().find(|o| o.id == req.org);
    let org_name = org.map_or_else(|| req.org.to_string(), |o| o.name);
    let mut doc = Document {
        title: req.kind.title().to_owned(),
        org: org_name,
        subject: None,
        since: req.since,
        until: req.until,
        generated_at: now,
        generated_by,
        selection: String::new(),
        notes: Vec::new(),
        charts: Vec::new(),
        summaries: Vec::new(),
        table: Table::default(),
        sections: Vec::new(),
    };
    match req.kind {
        ReportKind::BreakGlass => break_glass(store, req, now, &mut doc).await?,
        _ => records(store, req, &mut doc).await?,
    }
    Ok(doc)
}

/// Every record of one search over the period, oldest first.
async fn search_all(store: &DynStore, mut q: AuditQuery, out: &mut Vec<AuditEntry>) -> Result<(), ServiceError> {
    q.limit = PAGE;
    loop {
        let page = store.search_audit(&q).await?;
        let full = page.len() == PAGE as usize;
        q.before = page.last().map(|e| (e.record.at, e.seq));
        out.extend(page);
        if out.len() > MAX_ROWS {
            return Err(too_many());
        }
        if !full {
            return Ok(());
        }
    }
}

fn too_many() -> ServiceError {
    ServiceError::InvalidRequest(format!("the report would hold more than {MAX_ROWS} rows: ask for a shorter period"))
}

fn query(req: &ReportRequest) -> AuditQuery {
    let mut q = AuditQuery::org(req.org, PAGE);
    q.since = Some(req.since);
    q.until = Some(req.until);
    q
}

/// The records of a report made of audit records, in order, one search per filter.
async fn entries(store: &DynStore, req: &ReportRequest) -> Result<Vec<AuditEntry>, ServiceError> {
    let mut out = Vec::new();
    match req.kind {
        ReportKind::PatientAccess => {
            let mut q = query(req);
            q.patient_ref = req.patient.as_ref().map(|p| p.as_str().to_owned());
            search_all(store, q, &mut out).await?;
        }
        ReportKind::UserActivity => {
            let mut q = query(req);
            q.actor = req.user;
            search_all(store, q, &mut out).await?;
        }
        kind => {
            for action in kind.actions() {
                let mut q = query(req);
                q.action = Some((*action).to_owned());
                if kind == ReportKind::FailedSignIns {
                    q.outcome = Some(Outcome::Failure);
                }
                search_all(store, q, &mut out).await?;
            }
        }
    }
    out.sort_by_key(|e| (e.record.at, e.seq));
    Ok(out)
}

/// The directory: the named users of the organization, by id.
struct Directory(HashMap<UserId, User>);

impl Directory {
    async fn load(store: &DynStore, org: OrgId, ids: HashSet<UserId>) -> Result<Self, ServiceError> {
        let ids: Vec<UserId> = ids.into_iter().collect();
        let mut users = HashMap::new();
        for chunk in ids.chunks(USERS_PAGE) {
            for u in store.users(chunk).await? {
                // Another organization's user is never named in this one's report.
                if u.org == org {
                    users.insert(u.id, u);
                }
            }
        }
        Ok(Directory(users))
    }

    /// Name, username and id; a user not in the directory shows as its id only.
    fn person(&self, id: Option<UserId>) -> [String; 3] {
        match id {
            None => ["(no user)".into(), String::new(), String::new()],
            Some(id) => match self.0.get(&id) {
                Some(u) => [u.display_name.clone(), u.username.clone(), id.to_string()],
                None => ["(unknown user)".into(), String::new(), id.to_string()],
            },
        }
    }

    /// `Name (username)`, for charts and summaries.
    fn label(&self, id: Option<UserId>) -> String {
        match id {
            None => "(no user)".into(),
            Some(id) => match self.0.get(&id) {
                Some(u) => format!("{} ({})", u.display_name, u.username),
                None => id.to_string(),
            },
        }
    }
}

/// The user a record is about, when it is about one: its object, or the user id that opens
/// the target of administrative records (`<id> roles=…`).
fn concerning(r: &AuditRecord) -> Option<UserId> {
    if r.object_type.as_deref() == Some("user") {
        return r.object_id.as_deref().and_then(|s| s.parse::<uuid::Uuid>().ok()).map(UserId::from_uuid);
    }
    if !r.action.starts_with("admin.") && r.action != "sso.roles" {
        return None;
    }
    let first = r.target.as_deref()?.split_whitespace().next()?;
    first.parse::<uuid::Uuid>().ok().map(UserId::from_uuid)
}

/// The record in words.
fn what(r: &AuditRecord) -> String {
    let target = r.target.as_deref().unwrap_or("");
    let object = || format!("{} {}", r.object_type.as_deref().unwrap_or(""), r.object_id.as_deref().unwrap_or(""));
    match r.action.as_str() {
        "http" => format!("request {target}"),
        "ws.frame" => format!("real-time request {target}"),
        "patient.read" => format!("read of the patient's {}", object().trim()),
        "care_team.add" => "added to the patient's care team".into(),
        "care_team.remove" => "removed from the patient's care team".into(),
        "break_glass.start" if r.outcome == Outcome::Success => "break-glass access opened".into(),
        "break_glass.start" => "break-glass access refused".into(),
        "break_glass.end" => "break-glass access ended".into(),
        "auth.sign_in" if r.reason.as_deref() == Some("rate_limited") => "sign-in refused: locked out".into(),
        "auth.sign_in" => format!("sign-in ({})", if target.is_empty() { "password" } else { target }),
        "auth.mfa" => format!("second factor ({target})"),
        "audit.report" => format!("report {target}"),
        "audit.export" => format!("audit export {target}"),
        "admin.role_grant" | "sso.roles" => {
            format!("roles set to {}", target.split_once("roles=").map_or("", |(_, r)| r))
        }
        "admin.role_create" => format!("role created: {target}"),
        "admin.user_update" => format!("user changed: {}", target.split_once(' ').map_or(target, |(_, rest)| rest)),
        "admin.mfa_reset" => "second factors reset".into(),
        "admin.invite" => "invited".into(),
        "org.create" => format!("organization created: {target}"),
        _ if target.is_empty() => object().trim().to_owned(),
        _ => target.to_owned(),
    }
}

const RECORD_COLUMNS: [&str; 16] = [
    "time (UTC)",
    "seq",
    "user",
    "username",
    "user id",
    "action",
    "what",
    "concerning",
    "object",
    "patient",
    "outcome",
    "basis or reason",
    "address",
    "device",
    "session",
    "node",
];

fn record_row(e: &AuditEntry, dir: &Directory) -> Vec<String> {
    let r = &e.record;
    let [name, username, id] = dir.person(r.actor);
    let concerning = concerning(r).map(|u| dir.label(Some(u))).unwrap_or_default();
    let object = match (&r.object_type, &r.object_id) {
        (Some(t), Some(i)) => format!("{t} {i}"),
        (Some(t), None) => t.clone(),
        _ => String::new(),
    };
    vec![
        time(r.at),
        e.seq.to_string(),
        name,
        username,
        id,
        r.action.clone(),
        what(r),
        concerning,
        object,
        r.patient_ref.clone().unwrap_or_default(),
        r.outcome.as_str().to_owned(),
        r.reason.clone().unwrap_or_default(),
        r.ip.clone().unwrap_or_default(),
        r.device.clone().unwrap_or_default(),
        r.session.map(|s| s.to_string()).unwrap_or_default(),
        r.node.clone().unwrap_or_default(),
    ]
}

fn columns(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| (*c).to_owned()).collect()
}

/// One group of a summary: records, records of a second count, first and last time.
type Group = (u64, u64, Timestamp, Timestamp);
/// Groups by their key (the first cells of a summary row).
type Groups = BTreeMap<Vec<String>, Group>;

/// A summary table of counts by a key, largest first, with first and last times.
fn summary(title: &str, key: &[&str], groups: Groups, second: &str) -> Table {
    let mut rows: Vec<(Vec<String>, Group)> = groups.into_iter().collect();
    rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    let mut cols = columns(key);
    cols.push("records".into());
    if !second.is_empty() {
        cols.push(second.into());
    }
    cols.push("first (UTC)".into());
    cols.push("last (UTC)".into());
    Table {
        title: title.into(),
        columns: cols,
        rows: rows
            .into_iter()
            .map(|(mut k, (n, m, first, last))| {
                k.push(n.to_string());
                if !second.is_empty() {
                    k.push(m.to_string());
                }
                k.push(time(first));
                k.push(time(last));
                k
            })
            .collect(),
        empty: "Nothing in this period.".into(),
    }
}

fn group<'a>(
    entries: &'a [AuditEntry],
    key: impl Fn(&'a AuditEntry) -> Option<Vec<String>>,
    counts: impl Fn(&AuditRecord) -> bool,
) -> Groups {
    let mut out: Groups = BTreeMap::new();
    for e in entries {
        let Some(k) = key(e) else { continue };
        let at = e.record.at;
        let g = out.entry(k).or_insert((0, 0, at, at));
        g.0 += 1;
        g.1 += u64::from(counts(&e.record));
        g.2 = g.2.min(at);
        g.3 = g.3.max(at);
    }
    out
}

async fn records(store: &DynStore, req: &ReportRequest, doc: &mut Document) -> Result<(), ServiceError> {
    let entries = entries(store, req).await?;
    let mut ids: HashSet<UserId> = entries.iter().filter_map(|e| e.record.actor).collect();
    ids.extend(entries.iter().filter_map(|e| concerning(&e.record)));
    ids.extend(req.user);
    let dir = Directory::load(store, req.org, ids).await?;
    let times = || entries.iter().map(|e| e.record.at);
    let per_day = |title: &str| Chart::OverTime { title: title.into(), bars: over_time(req.since, req.until, times()) };
    let by = |title: &str, f: &dyn Fn(&AuditRecord) -> Option<String>| Chart::ByCategory {
        title: title.into(),
        bars: by_category(entries.iter().filter_map(|e| f(&e.record))),
    };
    let user_key = |e: &AuditEntry| {
        let [n, u, i] = dir.person(e.record.actor);
        Some(vec![n, u, i])
    };
    let kind = req.kind;
    match kind {
        ReportKind::PatientAccess => {
            let patient = req.patient.as_ref().map_or("", |p| p.as_str());
            doc.subject = Some(("Patient".into(), patient.to_owned()));
            doc.selection = format!(
                "Every audit record of the organization with patient reference \"{patient}\", by anyone, allowed \
                 or denied: reads of the patient's conversations (basis: member, care team or break-glass), \
                 requests on the patient's routes, care-team changes, break-glass and reports about the patient."
            );
            doc.notes.push(
                "Break-glass reasons are shown in the break-glass report (the audit log holds their SHA-256 only)."
                    .into(),
            );
            doc.charts = vec![
                per_day("Accesses per day"),
                by("Accesses by user", &|r| Some(dir.label(r.actor))),
                by("Accesses by outcome", &|r| Some(r.outcome.as_str().to_owned())),
            ];
            doc.summaries.push(summary(
                "Per user",
                &["user", "username", "user id"],
                group(&entries, user_key, |r| r.outcome == Outcome::Deny),
                "denied",
            ));
            doc.summaries.push(summary(
                "Per kind of access",
                &["action", "basis or reason"],
                group(
                    &entries,
                    |e| Some(vec![e.record.action.clone(), e.record.reason.clone().unwrap_or_default()]),
                    |_| false,
                ),
                "",
            ));
        }
        ReportKind::UserActivity => {
            doc.subject = Some(("User".into(), dir.label(req.user)));
            doc.selection = "Every audit record of the organization made by this user (as the actor) in the period, \
                             allowed or denied."
                .into();
            doc.charts = vec![
                per_day("Actions per day"),
                by("Actions by kind", &|r| Some(r.action.clone())),
                by("Actions by outcome", &|r| Some(r.outcome.as_str().to_owned())),
            ];
            doc.summaries.push(summary(
                "Patients whose data the user touched",
                &["patient"],
                group(&entries, |e| e.record.patient_ref.clone().map(|p| vec![p]), |r| r.outcome == Outcome::Deny),
                "denied",
            ));
            doc.summaries.push(summary(
                "Per action",
                &["action", "outcome"],
                group(&entries, |e| Some(vec![e.record.action.clone(), e.record.outcome.as_str().into()]), |_| false),
                "",
            ));
        }
        ReportKind::FailedSignIns => {
            doc.selection = "Audit records of the organization with action auth.sign_in or auth.mfa and outcome \
                             failure: wrong passwords (invalid_credentials), lockouts (rate_limited), refused \
                             single sign-ons and wrong second-factor codes."
                .into();
            doc.notes.push(
                "A sign-in with a user name that names no user of any organization belongs to none and is not in \
                 this report."
                    .into(),
            );
            doc.charts = vec![
                per_day("Failures per day"),
                by("Failures by user", &|r| Some(dir.label(r.actor))),
                by("Failures by address", &|r| Some(r.ip.clone().unwrap_or_else(|| "(unknown)".into()))),
                by("Failures by reason", &|r| Some(r.reason.clone().unwrap_or_default())),
            ];
            let locked = |r: &AuditRecord| r.reason.as_deref() == Some("rate_limited");
            doc.summaries.push(summary(
                "Per user",
                &["user", "username", "user id"],
                group(&entries, user_key, locked),
                "lockouts",
            ));
            doc.summaries.push(summary(
                "Per address",
                &["address"],
                group(&entries, |e| Some(vec![e.record.ip.clone().unwrap_or_default()]), locked),
                "lockouts",
            ));
        }
        ReportKind::PermissionChanges => {
            doc.selection = format!(
                "Audit records of the organization with action {}: roles created and granted (by administrators \
                 and by identity-provider groups), users changed, invited and their second factors reset, and \
                 care-team changes, which open a patient's conversations.",
                kind.actions().join(", ")
            );
            doc.charts = vec![
                per_day("Changes per day"),
                by("Changes by who made them", &|r| Some(dir.label(r.actor))),
                by("Changes by kind", &|r| Some(r.action.clone())),
            ];
            doc.summaries.push(summary(
                "Per user changed",
                &["user changed"],
                group(&entries, |e| concerning(&e.record).map(|u| vec![dir.label(Some(u))]), |_| false),
                "",
            ));
        }
        ReportKind::Exports => {
            doc.selection = format!(
                "Audit records of the organization with action {}: exports of the audit log and compliance \
                 reports (by users, the operator's CLI and the schedule).",
                kind.actions().join(", ")
            );
            doc.charts = vec![
                per_day("Exports per day"),
                by("Exports by user", &|r| Some(dir.label(r.actor))),
                by("Exports by kind", &|r| {
                    Some(format!(
                        "{} {}",
                        r.action,
                        r.target.as_deref().and_then(|t| t.split_whitespace().next()).unwrap_or("")
                    ))
                }),
            ];
            doc.summaries.push(summary(
                "Per user",
                &["user", "username", "user id"],
                group(&entries, user_key, |_| false),
                "",
            ));
        }
        ReportKind::BreakGlass => {}
    }
    doc.table = Table {
        title: "Records".into(),
        columns: columns(&RECORD_COLUMNS),
        rows: entries.iter().map(|e| record_row(e, &dir)).collect(),
        empty: "No records in this period.".into(),
    };
    Ok(())
}

/// How a grant ended and whether it was reviewed.
struct End {
    how: &'static str,
    by: Option<UserId>,
    at: Option<Timestamp>,
    reviewed: bool,
}

/// A grant's end from its `break_glass.end` record. Review status: a grant is reviewed when
/// a compliance officer ended it on review (`revoked`); every other grant awaits review
/// (docs/audit-reports.md).
fn end_of(g: &BreakGlassGrant, end: Option<&AuditRecord>, now: Timestamp) -> End {
    match end {
        Some(r) => {
            let how = match r.reason.as_deref() {
                Some("revoked") => "ended early by a compliance officer",
                Some("ended_by_user") => "ended by the user",
                Some("expired") => "expired",
                _ => "ended",
            };
            let reviewed = r.reason.as_deref() == Some("revoked");
            End { how, by: r.actor, at: Some(r.at), reviewed }
        }
        None if g.ended_at.is_none() && g.expires_at > now => {
            End { how: "active", by: None, at: None, reviewed: false }
        }
        None => End { how: "expired", by: None, at: g.ended_at.or(Some(g.expires_at)), reviewed: false },
    }
}

async fn break_glass(
    store: &DynStore,
    req: &ReportRequest,
    now: Timestamp,
    doc: &mut Document,
) -> Result<(), ServiceError> {
    // Grants that started in the period, newest first from the index (org, started_at).
    let mut grants: Vec<BreakGlassGrant> = Vec::new();
    let mut seen: HashSet<uuid::Uuid> = HashSet::new();
    // `before` is exclusive: step 1 µs past the last start so that grants sharing it are
    // read again (and skipped as seen) rather than lost.
    let mut before = req.until;
    'pages: loop {
        let page = store.break_glass_grants(req.org, Some(before), PAGE).await?;
        let full = page.len() == PAGE as usize;
        let mut fresh = false;
        for g in page {
            if g.started_at < req.since {
                break 'pages;
            }
            before = g.started_at.checked_add(SignedDuration::from_micros(1)).unwrap_or(g.started_at);
            if seen.insert(g.id) {
                fresh = true;
                grants.push(g);
            }
        }
        if grants.len() > MAX_ROWS {
            return Err(too_many());
        }
        if !full || !fresh {
            break;
        }
    }
    grants.sort_by_key(|g| (g.started_at, g.id));
    // Each grant's end, from the audit log (index (org, object_type, object_id, at)).
    let mut ends: HashMap<uuid::Uuid, AuditRecord> = HashMap::new();
    for g in &grants {
        let mut q = AuditQuery::org(req.org, 10);
        q.object_type = Some("grant".into());
        q.object_id = Some(g.id.to_string());
        q.action = Some("break_glass.end".into());
        if let Some(e) = store.search_audit(&q).await?.into_iter().last() {
            ends.insert(g.id, e.record);
        }
    }
    // Refused attempts (no permission to the conversation, no step-up) in the period.
    let mut attempts = Vec::new();
    let mut q = query(req);
    q.action = Some("break_glass.start".into());
    q.outcome = Some(Outcome::Deny);
    search_all(store, q, &mut attempts).await?;
    attempts.sort_by_key(|e| (e.record.at, e.seq));

    let mut ids: HashSet<UserId> = grants.iter().map(|g| g.user).collect();
    ids.extend(ends.values().filter_map(|r| r.actor));
    ids.extend(attempts.iter().filter_map(|e| e.record.actor));
    let dir = Directory::load(store, req.org, ids).await?;

    doc.selection = "Break-glass grants of the organization that started in the period (from the grants table, \
                     which keeps the reason as typed), each with its end from the audit log; then the refused \
                     attempts (audit records break_glass.start with outcome deny)."
        .into();
    doc.notes.push(
        "Review status: a grant counts as reviewed when a compliance officer ended it on review (revoked); every \
         other grant, active, expired or ended by its user, is listed as awaiting review."
            .into(),
    );
    let ended: Vec<End> = grants.iter().map(|g| end_of(g, ends.get(&g.id), now)).collect();
    doc.charts = vec![
        Chart::OverTime {
            title: "Grants per day".into(),
            bars: over_time(req.since, req.until, grants.iter().map(|g| g.started_at)),
        },
        Chart::ByCategory {
            title: "Grants by user".into(),
            bars: by_category(grants.iter().map(|g| dir.label(Some(g.user)))),
        },
        Chart::ByCategory {
            title: "Grants by review status".into(),
            bars: by_category(
                ended.iter().map(|e| (if e.reviewed { "reviewed" } else { "awaiting review" }).to_owned()),
            ),
        },
        Chart::ByCategory {
            title: "Grants by patient".into(),
            bars: by_category(grants.iter().map(|g| g.patient.as_str().to_owned())),
        },
    ];
    let awaiting = ended.iter().filter(|e| !e.reviewed).count();
    doc.summaries.push(Table {
        title: "Summary".into(),
        columns: columns(&["grants", "reviewed", "awaiting review", "refused attempts"]),
        rows: vec![vec![
            grants.len().to_string(),
            (grants.len() - awaiting).to_string(),
            awaiting.to_string(),
            attempts.len().to_string(),
        ]],
        empty: String::new(),
    });
    doc.table = Table {
        title: "Grants".into(),
        columns: columns(&[
            "started (UTC)",
            "grant id",
            "user",
            "username",
            "user id",
            "patient",
            "conversation",
            "reason",
            "expires (UTC)",
            "ended (UTC)",
            "how it ended",
            "ended by",
            "review status",
            "reviewed by",
            "reviewed at (UTC)",
        ]),
        rows: grants
            .iter()
            .zip(&ended)
            .map(|(g, e)| {
                let [name, username, id] = dir.person(Some(g.user));
                vec![
                    time(g.started_at),
                    g.id.to_string(),
                    name,
                    username,
                    id,
                    g.patient.as_str().to_owned(),
                    g.conversation.to_string(),
                    g.reason.clone(),
                    time(g.expires_at),
                    e.at.map(time).unwrap_or_default(),
                    e.how.to_owned(),
                    e.by.map(|u| dir.label(Some(u))).unwrap_or_default(),
                    (if e.reviewed { "reviewed" } else { "awaiting review" }).to_owned(),
                    if e.reviewed { e.by.map(|u| dir.label(Some(u))).unwrap_or_default() } else { String::new() },
                    if e.reviewed { e.at.map(time).unwrap_or_default() } else { String::new() },
                ]
            })
            .collect(),
        empty: "No break-glass grants in this period.".into(),
    };
    doc.sections.push(Table {
        title: "Refused attempts".into(),
        columns: columns(&RECORD_COLUMNS),
        rows: attempts.iter().map(|e| record_row(e, &dir)).collect(),
        empty: "No refused attempts in this period.".into(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn administrative_records_name_the_user_they_concern() {
        let u = uuid::Uuid::now_v7();
        let at = Timestamp::UNIX_EPOCH;
        let grant =
            AuditRecord::new(at, "admin.role_grant", Outcome::Success).target(format!("{u} roles=nurse,pharmacist"));
        assert_eq!(concerning(&grant), Some(UserId::from_uuid(u)));
        assert_eq!(what(&grant), "roles set to nurse,pharmacist");
        let add = AuditRecord::new(at, "care_team.add", Outcome::Success).object("user", u);
        assert_eq!(concerning(&add), Some(UserId::from_uuid(u)));
        // A route is not a user, even if it starts with an id.
        let http = AuditRecord::new(at, "http", Outcome::Allow).target(format!("{u} GET /x"));
        assert_eq!(concerning(&http), None);
    }
}
