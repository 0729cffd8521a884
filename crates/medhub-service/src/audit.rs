//! The audit interface: every access decision (allow and deny), every security event and
//! every access to patient data produces an [`AuditRecord`] built here, stamped with the
//! organization, session, device and writing node (docs/audit.md).
//!
//! Nothing is queued in memory where a crash could lose it (fail closed):
//! - a change and its records are written in one store transaction (the store's write
//!   methods take the records);
//! - a decision or a read that changes nothing is written by [`AuditSink::write`], which
//!   returns once the records are committed; the caller answers only then, and refuses the
//!   action if they could not be stored. Concurrent writes share one transaction (group
//!   commit), so a burst of requests costs a few commits, not one each.

use std::sync::Arc;

use medhub_core::Clock;
use medhub_core::audit::{AuditRecord, Outcome, device_hash};
use medhub_core::model::{Session, User};
use medhub_store::DynStore;
use tokio::sync::{mpsc, oneshot};

use crate::{Principal, ServiceError};

/// Writes waiting for the writer before callers wait for room (each holds a caller).
const QUEUE: usize = 8_192;
/// Most records per store transaction.
const BATCH: usize = 2_000;

/// Which server writes the records: `server.node` and `server.region`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub node: Option<String>,
    pub region: Option<String>,
}

struct Pending {
    records: Vec<AuditRecord>,
    /// `Err((correlation id, database unavailable))`.
    done: oneshot::Sender<Result<(), (String, bool)>>,
}

/// A handle for building and writing audit records; cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Pending>,
    clock: Arc<dyn Clock>,
    origin: Arc<Origin>,
}

impl AuditSink {
    /// The sink and its writer task (run it on the runtime).
    pub fn new(
        store: DynStore,
        clock: Arc<dyn Clock>,
        origin: Origin,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (AuditSink { tx, clock, origin: Arc::new(origin) }, write(store, rx))
    }

    /// A record of `action` now, by nobody yet (a failed sign-in, the system), on this node.
    pub fn event(&self, action: &str, outcome: Outcome) -> AuditRecord {
        AuditRecord {
            node: self.origin.node.clone(),
            region: self.origin.region.clone(),
            ..AuditRecord::new(self.clock.now(), action, outcome)
        }
    }

    /// A record of `action` now by `p`: its organization, user, session and device.
    pub fn by(&self, p: &Principal, action: &str, outcome: Outcome) -> AuditRecord {
        self.in_session(&p.user, &p.session, action, outcome)
    }

    /// A record of `action` now by `user` in `session` (also one being opened, which has no
    /// principal yet): the organization, user, session, device and address.
    pub fn in_session(&self, user: &User, session: &Session, action: &str, outcome: Outcome) -> AuditRecord {
        AuditRecord {
            org: Some(user.org),
            actor: Some(user.id),
            session: Some(session.id),
            device: session.user_agent.as_deref().map(device_hash),
            ip: session.ip.clone(),
            ..self.event(action, outcome)
        }
    }

    /// Writes `records` to the audit log and returns once they are committed. An error means
    /// they are not stored: the caller refuses the action (fail closed).
    pub async fn write(&self, records: Vec<AuditRecord>) -> Result<(), ServiceError> {
        if records.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.tx.send(Pending { records, done }).await.map_err(|_| ServiceError::PipelineStopped)?;
        match wait.await.map_err(|_| ServiceError::PipelineStopped)? {
            Ok(()) => Ok(()),
            Err((correlation, unavailable)) => Err(ServiceError::CommitFailed { correlation, unavailable }),
        }
    }
}

/// Group commit: takes every write waiting, appends their records in one transaction, and
/// answers each. A failed transaction fails every write in it; their callers refuse.
async fn write(store: DynStore, mut rx: mpsc::Receiver<Pending>) {
    let mut waiting: Vec<Pending> = Vec::new();
    loop {
        if rx.recv_many(&mut waiting, BATCH).await == 0 {
            return;
        }
        while !waiting.is_empty() {
            // Whole writes only, up to BATCH records (one write larger than that goes alone).
            let mut take = 0;
            let mut records = 0;
            while take < waiting.len() && (take == 0 || records + waiting[take].records.len() <= BATCH) {
                records += waiting[take].records.len();
                take += 1;
            }
            let group: Vec<Pending> = waiting.drain(..take).collect();
            let all: Vec<AuditRecord> = group.iter().flat_map(|p| p.records.iter().cloned()).collect();
            let result = store.append_audit(&all).await.map_err(|e| {
                let correlation = crate::correlation_id();
                let detail = e.to_string();
                let unavailable = matches!(ServiceError::from(e), ServiceError::Unavailable(_));
                tracing::error!(
                    target: "medhub::audit",
                    correlation = %correlation,
                    error = %detail,
                    records = all.len(),
                    unavailable,
                    "audit records not stored: their actions are refused"
                );
                (correlation, unavailable)
            });
            for p in group {
                // A caller that went away needs no answer; its records are in or out with the rest.
                let _ = p.done.send(result.clone());
            }
        }
    }
}

/// Most records in one search page.
pub const MAX_SEARCH_PAGE: u32 = 500;

/// Searches the audit log of the caller's organization (compliance officers, `audit.read`),
/// newest first. `q.org` is replaced by the caller's: nobody searches another tenant. The
/// search is itself recorded (`audit.search`, with the patient when it names one) before
/// the answer, so "who looked at this patient's access history" has an answer too.
pub async fn search(
    store: &DynStore,
    sink: &AuditSink,
    p: &Principal,
    mut q: medhub_store::audit::AuditQuery,
) -> Result<Vec<medhub_store::AuditEntry>, ServiceError> {
    p.require(medhub_core::authz::Permission::AuditRead)?;
    check_search(&q)?;
    q.org = p.user.org;
    let mut r = sink.by(p, "audit.search", Outcome::Success).object("audit_log", p.user.org).target(search_summary(&q));
    if let Some(patient) = &q.patient_ref {
        r = r.patient(patient);
    }
    let found = store.search_audit(&q).await?;
    // Recorded before the answer, after the query, so that a search does not find itself.
    sink.write(vec![r]).await?;
    Ok(found)
}

/// Refuses a search that cannot be answered well: a page size out of range, an empty period.
pub fn check_search(q: &medhub_store::audit::AuditQuery) -> Result<(), ServiceError> {
    if q.limit == 0 || q.limit > MAX_SEARCH_PAGE {
        return Err(ServiceError::InvalidRequest(format!("limit must be between 1 and {MAX_SEARCH_PAGE}")));
    }
    if let (Some(since), Some(until)) = (q.since, q.until)
        && since >= until
    {
        return Err(ServiceError::InvalidRequest("since must be before until".into()));
    }
    Ok(())
}

/// Which filters a search used, for its own audit record: names and ids, never free text
/// beyond the action and object names the log itself holds.
pub fn search_summary(q: &medhub_store::audit::AuditQuery) -> String {
    let mut parts = Vec::new();
    if let Some(a) = q.actor {
        parts.push(format!("actor={a}"));
    }
    if q.patient_ref.is_some() {
        parts.push("patient".to_owned());
    }
    for (name, v) in [("action", &q.action), ("object_type", &q.object_type), ("object_id", &q.object_id)] {
        if let Some(v) = v {
            parts.push(format!("{name}={v}"));
        }
    }
    if let Some(o) = q.outcome {
        parts.push(format!("outcome={}", o.as_str()));
    }
    if let Some(t) = q.since {
        parts.push(format!("since={t}"));
    }
    if let Some(t) = q.until {
        parts.push(format!("until={t}"));
    }
    if parts.is_empty() { "all".to_owned() } else { parts.join(" ") }
}

/// The opaque cursor of the page after `last`: `<at in µs>.<seq>`.
pub fn search_cursor(last: &medhub_store::AuditEntry) -> String {
    format!("{}.{}", last.record.at.as_microsecond(), last.seq)
}

/// Reads a cursor made by [`search_cursor`].
pub fn parse_search_cursor(s: &str) -> Result<(jiff::Timestamp, u64), ServiceError> {
    let bad = || ServiceError::InvalidRequest("before must be a cursor from a previous page".into());
    let (at, seq) = s.split_once('.').ok_or_else(bad)?;
    let at = at.parse::<i64>().ok().and_then(|us| jiff::Timestamp::from_microsecond(us).ok()).ok_or_else(bad)?;
    Ok((at, seq.parse().map_err(|_| bad())?))
}
