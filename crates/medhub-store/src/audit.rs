//! Verifying the audit log as stored: the streaming check behind `medhub audit verify`
//! (docs/audit.md). It reads the records in `seq` order, a page at a time, and hands them to
//! the core's [`LogVerifier`]; memory stays O(log n) however long the log is.

use medhub_core::audit::{LogFault, LogVerifier, TreeHead};
use medhub_core::merkle::Hash;

use crate::{Store, StoreError};

/// Records read per query.
const PAGE: u32 = 10_000;

/// A log that verified: its size and root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub size: u64,
    pub root: Hash,
}

/// What verifying found: the whole log good, or the first fault and how far the check got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Good(Verified),
    Bad { fault: LogFault, checked: u64 },
}

/// Checks the whole log against its head and against `exported` tree heads (their signatures
/// already checked by the caller): at each head's size the records must give that head's
/// root, and the log may not end before the largest one. `progress(done, total)` is called
/// after each page.
pub async fn verify_log(
    store: &(impl Store + ?Sized),
    exported: &[TreeHead],
    mut progress: impl FnMut(u64, u64),
) -> Result<Verdict, StoreError> {
    let head = store.audit_head().await?;
    let head_root = head.tree()?.root();
    let mut heads: Vec<&TreeHead> = exported.iter().collect();
    heads.sort_by_key(|h| h.size);
    let mut next = heads.iter().peekable();
    let mut verifier = LogVerifier::new();
    loop {
        // Every exported head whose size the check has reached.
        while let Some(h) = next.next_if(|h| h.size <= verifier.size()) {
            if let Err(fault) = verifier.check_root(&h.root) {
                return Ok(Verdict::Bad { fault, checked: verifier.size() });
            }
        }
        let want = next.peek().map_or(PAGE, |h| u32::try_from(h.size - verifier.size()).unwrap_or(PAGE).min(PAGE));
        let page = store.audit_log(verifier.size(), want).await?;
        if page.is_empty() {
            break;
        }
        for e in &page {
            if let Err(fault) = verifier.push(e.seq, &e.record, &e.leaf_hash) {
                return Ok(Verdict::Bad { fault, checked: verifier.size() });
            }
        }
        progress(verifier.size(), head.size);
    }
    if let Some(h) = next.next() {
        let fault = LogFault::Truncated { size: verifier.size(), head: h.size };
        return Ok(Verdict::Bad { fault, checked: verifier.size() });
    }
    Ok(match verifier.finish(head.size, &head_root) {
        Ok(()) => Verdict::Good(Verified { size: verifier.size(), root: verifier.root() }),
        Err(fault) => Verdict::Bad { fault, checked: verifier.size() },
    })
}

/// A search of the audit log: one organization's records, newest first, filtered by any of
/// the fields. Every filter has an index that starts with the organization and ends with
/// `(at, seq)` (migration 0013), and the page continues strictly after `before`, so a page
/// costs the same on the millionth record as on the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    pub org: medhub_core::OrgId,
    pub actor: Option<medhub_core::UserId>,
    pub patient_ref: Option<String>,
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub outcome: Option<medhub_core::audit::Outcome>,
    /// Records at or after this instant.
    pub since: Option<jiff::Timestamp>,
    /// Records before this instant.
    pub until: Option<jiff::Timestamp>,
    /// The `(at, seq)` of the last record of the previous page.
    pub before: Option<(jiff::Timestamp, u64)>,
    pub limit: u32,
}

impl AuditQuery {
    /// Every record of `org`, newest first, `limit` at a time.
    pub fn org(org: medhub_core::OrgId, limit: u32) -> Self {
        AuditQuery {
            org,
            actor: None,
            patient_ref: None,
            action: None,
            object_type: None,
            object_id: None,
            outcome: None,
            since: None,
            until: None,
            before: None,
            limit,
        }
    }
}

/// A value bound into an audit search; each backend turns it into its own parameter type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Uuid(uuid::Uuid),
    Text(String),
    Int(i64),
}

/// The statement of an audit search and its parameters, numbered from 1 with `mark` (`?` for
/// SQLite, `$` for PostgreSQL). Public so that a test can ask each database for its plan.
pub fn search_sql(q: &AuditQuery, mark: char) -> (String, Vec<Param>) {
    let (clause, params) = search_clause(q, mark);
    (format!("SELECT {}, seq, leaf_hash FROM audit_events {clause}", crate::sql::AUDIT_COLS), params)
}

/// The `WHERE … ORDER BY … LIMIT` of an audit search and its parameters.
fn search_clause(q: &AuditQuery, mark: char) -> (String, Vec<Param>) {
    let mut params = vec![Param::Uuid(q.org.as_uuid())];
    let mut sql = format!("WHERE org_id = {mark}1");
    let mut add = |sql: &mut String, cond: &str, p: Param| {
        params.push(p);
        let n = params.len();
        sql.push_str(&cond.replace('#', &format!("{mark}{n}")));
    };
    if let Some(a) = q.actor {
        add(&mut sql, " AND actor_id = #", Param::Uuid(a.as_uuid()));
    }
    if let Some(p) = &q.patient_ref {
        add(&mut sql, " AND patient_ref = #", Param::Text(p.clone()));
    }
    if let Some(a) = &q.action {
        add(&mut sql, " AND action = #", Param::Text(a.clone()));
    }
    if let Some(t) = &q.object_type {
        add(&mut sql, " AND object_type = #", Param::Text(t.clone()));
    }
    if let Some(t) = &q.object_id {
        add(&mut sql, " AND object_id = #", Param::Text(t.clone()));
    }
    if let Some(o) = q.outcome {
        add(&mut sql, " AND outcome = #", Param::Text(o.as_str().to_owned()));
    }
    if let Some(t) = q.since {
        add(&mut sql, " AND at >= #", Param::Int(t.as_microsecond()));
    }
    if let Some(t) = q.until {
        add(&mut sql, " AND at < #", Param::Int(t.as_microsecond()));
    }
    if let Some((at, seq)) = q.before {
        // `at <= x` bounds the index range; the rest breaks ties on `seq`.
        add(&mut sql, " AND at <= #", Param::Int(at.as_microsecond()));
        add(&mut sql, " AND (at < #", Param::Int(at.as_microsecond()));
        add(&mut sql, " OR seq < #)", Param::Int(i64::try_from(seq).unwrap_or(i64::MAX)));
    }
    add(&mut sql, " ORDER BY at DESC, seq DESC LIMIT #", Param::Int(i64::from(q.limit)));
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_binds_every_filter_and_never_splices_values() {
        let org = medhub_core::OrgId::from_uuid(uuid::Uuid::from_u128(1));
        let mut q = AuditQuery::org(org, 50);
        q.patient_ref = Some("x' OR 1=1 --".into());
        q.before = Some((jiff::Timestamp::from_second(100).unwrap(), 7));
        let (sql, params) = search_clause(&q, '$');
        assert_eq!(
            sql,
            "WHERE org_id = $1 AND patient_ref = $2 AND at <= $3 AND (at < $4 OR seq < $5) \
             ORDER BY at DESC, seq DESC LIMIT $6"
        );
        assert_eq!(params.len(), 6);
        assert_eq!(params[1], Param::Text("x' OR 1=1 --".into()));
        assert_eq!(params[4], Param::Int(7));
    }
}
