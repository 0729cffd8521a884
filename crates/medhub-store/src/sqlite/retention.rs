//! Retention policies, legal holds, expiry and erasure in SQLite (see `crate::retention`).
//! The single writer connection serializes every write with the commit pipeline's batches,
//! so a batch never writes back a body the expiry job has just removed.

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::model::ConversationKind;
use medhub_core::patient::PatientRef;
use medhub_core::retention::{ActiveHold, ContentFacts, HoldScope, RetentionClass, RetentionPolicy};
use medhub_core::{LegalHoldId, OrgId, SessionId, UserId};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::codec::us;
use super::identity::append_leaves;
use super::{SqliteStore, codec};
use crate::StoreError;
use crate::retention::{
    Candidate, CandidateCursor, ChangeCount, ContentChange, ErasedAccount, HoldLift, LegalHold, RetentionState,
    RetentionStore, StoredPolicy,
};

const HOLD_COLS: &str = "id, org_id, scope, conversation_id, patient_ref, user_id, reason, created_by, created_at, \
     lifted_by, lifted_at, lift_reason";

/// The facts columns of a candidate: message, conversation, sender, created_at, event, kind,
/// patient.
const CANDIDATE_COLS: &str = "m.id, m.conversation_id, m.sender_id, m.created_at, m.event_id, c.kind, c.patient_ref";

fn scope(r: &rusqlite::Row<'_>, o: usize) -> rusqlite::Result<HoldScope> {
    let kind: String = r.get(o)?;
    Ok(match kind.as_str() {
        "conversation" => HoldScope::Conversation(codec::conversation_id(r, o + 1)?),
        "patient" => {
            HoldScope::Patient(codec::patient_ref(r, o + 2)?.ok_or_else(|| codec::corrupt(o + 2, "no patient"))?)
        }
        "user" => HoldScope::User(codec::user_id(r, o + 3)?),
        _ => return Err(codec::corrupt(o, "unknown hold scope")),
    })
}

fn hold(r: &rusqlite::Row<'_>) -> rusqlite::Result<LegalHold> {
    let lifted = match codec::opt_ts(r, 10)? {
        Some(at) => Some(HoldLift {
            by: codec::user_id(r, 9)?,
            at,
            reason: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(LegalHold {
        id: codec::id(r, 0, LegalHoldId::from_slice)?,
        org: codec::id(r, 1, OrgId::from_slice)?,
        scope: scope(r, 2)?,
        reason: r.get(6)?,
        created_by: codec::user_id(r, 7)?,
        created_at: codec::ts(r, 8)?,
        lifted,
    })
}

/// The scope's three columns: conversation, patient, user.
fn scope_columns(s: &HoldScope) -> (Option<[u8; 16]>, Option<String>, Option<[u8; 16]>) {
    match s {
        HoldScope::Conversation(c) => (Some(c.to_bytes()), None, None),
        HoldScope::Patient(p) => (None, Some(p.as_str().to_owned()), None),
        HoldScope::User(u) => (None, None, Some(u.to_bytes())),
    }
}

fn bump_version(tx: &Transaction<'_>, org: OrgId) -> Result<(), StoreError> {
    tx.execute("UPDATE orgs SET retention_version = retention_version + 1 WHERE id = ?1", [org.to_bytes()])?;
    Ok(())
}

fn check_version(tx: &Transaction<'_>, org: OrgId, version: i64) -> Result<(), StoreError> {
    let now: Option<i64> =
        tx.query_row("SELECT retention_version FROM orgs WHERE id = ?1", [org.to_bytes()], |r| r.get(0)).optional()?;
    if now != Some(version) {
        return Err(StoreError::Conflict("the organization's retention policies or legal holds changed"));
    }
    Ok(())
}

/// One candidate row, without its audience yet: (message, facts, event id).
fn candidate_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Candidate, i64)> {
    let kind = codec::parse(r, 5, ConversationKind::parse)?;
    let patient: Option<PatientRef> = codec::patient_ref(r, 6)?;
    Ok((
        Candidate {
            message: codec::message_id(r, 0)?,
            facts: ContentFacts {
                class: RetentionClass::of(kind, patient.is_some()),
                conversation: codec::conversation_id(r, 1)?,
                patient,
                sender: codec::user_id(r, 2)?,
                held_audience: Vec::new(),
                created_at: codec::ts(r, 3)?,
            },
        },
        r.get(4)?,
    ))
}

/// Fills each candidate's `held_audience`: the held users who were members of its
/// conversation at the event that created it (membership periods are inclusive).
fn fill_audience(
    c: &rusqlite::Connection,
    rows: Vec<(Candidate, i64)>,
    held: &[UserId],
) -> Result<Vec<Candidate>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT 1 FROM member_periods WHERE user_id = ?1 AND conversation_id = ?2 AND from_event <= ?3
           AND (to_event IS NULL OR to_event >= ?3) LIMIT 1",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (mut cand, event) in rows {
        for u in held {
            let saw = st
                .query_row(params![u.to_bytes(), cand.facts.conversation.to_bytes(), event], |_| Ok(()))
                .optional()?
                .is_some();
            if saw {
                cand.facts.held_audience.push(*u);
            }
        }
        out.push(cand);
    }
    Ok(out)
}

fn cursor(after: Option<CandidateCursor>) -> (i64, [u8; 16]) {
    after.map_or((i64::MIN, [0; 16]), |(t, id)| (us(t), id.to_bytes()))
}

#[async_trait]
impl RetentionStore for SqliteStore {
    async fn retention_state(&self, org: OrgId) -> Result<RetentionState, StoreError> {
        self.read(move |c| {
            let version: i64 = c
                .query_row("SELECT retention_version FROM orgs WHERE id = ?1", [org.to_bytes()], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            let policies = {
                let mut st = c.prepare_cached(
                    "SELECT class, days, set_by, set_at FROM retention_policies WHERE org_id = ?1 ORDER BY class",
                )?;
                let rows = st.query_map([org.to_bytes()], |r| {
                    let class = codec::parse(r, 0, RetentionClass::parse)?;
                    let days: i64 = r.get(1)?;
                    let policy =
                        RetentionPolicy::new(class, days).map_err(|_| codec::corrupt(1, "retention out of bounds"))?;
                    Ok(StoredPolicy {
                        policy,
                        set_by: codec::opt_id(r, 2, UserId::from_slice)?,
                        set_at: codec::ts(r, 3)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let holds = {
                let mut st = c.prepare_cached(
                    "SELECT id, scope, conversation_id, patient_ref, user_id FROM legal_holds
                     WHERE org_id = ?1 AND lifted_at IS NULL ORDER BY created_at, id",
                )?;
                let rows = st.query_map([org.to_bytes()], |r| {
                    Ok(ActiveHold { id: codec::id(r, 0, LegalHoldId::from_slice)?, scope: scope(r, 1)? })
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            Ok(RetentionState { version, policies, holds })
        })
        .await
    }

    async fn set_retention_policy(
        &self,
        org: OrgId,
        class: RetentionClass,
        days: Option<u32>,
        by: Option<UserId>,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let audit = audit.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            match days {
                Some(d) => tx.execute(
                    "INSERT INTO retention_policies (org_id, class, days, set_by, set_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (org_id, class) DO UPDATE SET days = excluded.days, set_by = excluded.set_by,
                       set_at = excluded.set_at",
                    params![org.to_bytes(), class.as_str(), d, by.map(|u| u.to_bytes()), us(now)],
                )?,
                None => tx.execute(
                    "DELETE FROM retention_policies WHERE org_id = ?1 AND class = ?2",
                    params![org.to_bytes(), class.as_str()],
                )?,
            };
            bump_version(&tx, org)?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn legal_holds(&self, org: OrgId, include_lifted: bool) -> Result<Vec<LegalHold>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {HOLD_COLS} FROM legal_holds WHERE org_id = ?1 AND (?2 OR lifted_at IS NULL)
                 ORDER BY created_at DESC, id DESC"
            ))?;
            let rows = st.query_map(params![org.to_bytes(), include_lifted], hold)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn create_legal_hold(&self, h: &LegalHold, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let (h, audit) = (h.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (conv, patient, user) = scope_columns(&h.scope);
            tx.execute(
                &format!("INSERT INTO legal_holds ({HOLD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL, NULL)"),
                params![
                    h.id.to_bytes(),
                    h.org.to_bytes(),
                    h.scope.kind_str(),
                    conv,
                    patient,
                    user,
                    h.reason,
                    h.created_by.to_bytes(),
                    us(h.created_at)
                ],
            )?;
            bump_version(&tx, h.org)?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn lift_legal_hold(
        &self,
        org: OrgId,
        id: LegalHoldId,
        lift: &HoldLift,
        audit: &[AuditRecord],
    ) -> Result<Option<LegalHold>, StoreError> {
        let (lift, audit) = (lift.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let lifted = tx
                .prepare_cached(&format!(
                    "UPDATE legal_holds SET lifted_by = ?3, lifted_at = ?4, lift_reason = ?5
                     WHERE id = ?1 AND org_id = ?2 AND lifted_at IS NULL RETURNING {HOLD_COLS}"
                ))?
                .query_row(params![id.to_bytes(), org.to_bytes(), lift.by.to_bytes(), us(lift.at), lift.reason], hold)
                .optional()?;
            let Some(lifted) = lifted else {
                return Ok(None);
            };
            bump_version(&tx, org)?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(Some(lifted))
        })
        .await
    }

    async fn expiry_candidates(
        &self,
        org: OrgId,
        class: RetentionClass,
        before: Timestamp,
        after: Option<CandidateCursor>,
        limit: u32,
        held_users: &[UserId],
    ) -> Result<Vec<Candidate>, StoreError> {
        let held = held_users.to_vec();
        let (after_at, after_id) = cursor(after);
        self.read(move |c| {
            let rows = {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {CANDIDATE_COLS} FROM messages m JOIN conversations c ON c.id = m.conversation_id
                     WHERE m.removed_at IS NULL AND m.created_at < ?2
                       AND (m.created_at > ?4 OR (m.created_at = ?4 AND m.id > ?5))
                       AND c.org_id = ?1
                       AND CASE WHEN ?3 = 'clinical' THEN c.patient_ref IS NOT NULL
                                ELSE c.patient_ref IS NULL AND c.kind = ?3 END
                     ORDER BY m.created_at, m.id LIMIT ?6"
                ))?;
                let rows = st.query_map(
                    params![org.to_bytes(), us(before), class.as_str(), after_at, after_id, limit],
                    candidate_row,
                )?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            fill_audience(c, rows, &held)
        })
        .await
    }

    async fn erasure_candidates(
        &self,
        sender: UserId,
        after: Option<CandidateCursor>,
        limit: u32,
        held_users: &[UserId],
    ) -> Result<Vec<Candidate>, StoreError> {
        let held = held_users.to_vec();
        let (after_at, after_id) = cursor(after);
        self.read(move |c| {
            let rows = {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {CANDIDATE_COLS} FROM messages m JOIN conversations c ON c.id = m.conversation_id
                     WHERE m.sender_id = ?1 AND m.removed_at IS NULL AND m.erasure_requested_at IS NULL
                       AND (m.created_at > ?2 OR (m.created_at = ?2 AND m.id > ?3))
                     ORDER BY m.created_at, m.id LIMIT ?4"
                ))?;
                let rows = st.query_map(params![sender.to_bytes(), after_at, after_id, limit], candidate_row)?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            fill_audience(c, rows, &held)
        })
        .await
    }

    async fn apply_content_change(
        &self,
        org: OrgId,
        version: i64,
        change: &ContentChange,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<ChangeCount, StoreError> {
        let (change, audit) = (change.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_version(&tx, org, version)?;
            let mut count = ChangeCount::default();
            {
                let mut remove = tx.prepare_cached(
                    "UPDATE messages SET body = '', request_hash = zeroblob(32), removed_at = ?3, removed_cause = ?4
                     WHERE id = ?1 AND removed_at IS NULL
                       AND conversation_id IN (SELECT id FROM conversations WHERE org_id = ?2)",
                )?;
                let mut revisions = tx.prepare_cached("DELETE FROM message_revisions WHERE message_id = ?1")?;
                for id in &change.remove {
                    if remove.execute(params![id.to_bytes(), org.to_bytes(), us(now), change.cause.as_str()])? != 1 {
                        return Err(StoreError::Conflict("a message changed while retention was deciding"));
                    }
                    count.removed += 1;
                    count.revisions += revisions.execute([id.to_bytes()])? as u64;
                }
                let mut flag = tx.prepare_cached(
                    "UPDATE messages SET erasure_requested_at = ?3
                     WHERE id = ?1 AND removed_at IS NULL AND erasure_requested_at IS NULL
                       AND conversation_id IN (SELECT id FROM conversations WHERE org_id = ?2)",
                )?;
                for id in &change.flag {
                    if flag.execute(params![id.to_bytes(), org.to_bytes(), us(now)])? != 1 {
                        return Err(StoreError::Conflict("a message changed while retention was deciding"));
                    }
                    count.flagged += 1;
                }
            }
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(count)
        })
        .await
    }

    async fn erase_account(
        &self,
        org: OrgId,
        version: i64,
        user: UserId,
        pseudonym: (&str, &str),
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<Option<ErasedAccount>, StoreError> {
        let (username, display) = (pseudonym.0.to_owned(), pseudonym.1.to_owned());
        let audit = audit.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_version(&tx, org, version)?;
            let found: Option<(String, Option<i64>)> = tx
                .query_row(
                    "SELECT username, erased_at FROM users WHERE id = ?1 AND org_id = ?2",
                    params![user.to_bytes(), org.to_bytes()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((old_username, erased_at)) = found else {
                return Ok(None);
            };
            let u = user.to_bytes();
            let ended_sessions = {
                let mut st = tx.prepare_cached(
                    "UPDATE sessions SET revoked_at = ?2, end_reason = 'erased' WHERE user_id = ?1 AND revoked_at IS NULL
                     RETURNING id",
                )?;
                let rows = st.query_map(params![u, us(now)], |r| codec::id(r, 0, SessionId::from_slice))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            tx.execute("UPDATE sessions SET ip = NULL, user_agent = NULL WHERE user_id = ?1", [u])?;
            tx.execute(
                "DELETE FROM ws_tickets WHERE session_id IN (SELECT id FROM sessions WHERE user_id = ?1)",
                [u],
            )?;
            tx.execute(
                "UPDATE users SET username = ?2, display_name = ?3, password_hash = NULL, must_change_password = 0,
                   active = 0, erased_at = COALESCE(erased_at, ?4)
                 WHERE id = ?1",
                params![u, username, display, us(now)],
            )?;
            for table in
                ["totp", "recovery_codes", "passkeys", "sso_identities", "invitations", "user_roles", "care_team", "contact_points", "push_subscriptions"]
            {
                tx.execute(&format!("DELETE FROM {table} WHERE user_id = ?1"), [u])?;
            }
            // Throttles are keyed `<kind>:acct:<username or user id>`.
            for account in [old_username, user.to_string()] {
                tx.execute(
                    "DELETE FROM throttle WHERE substr(key, -(length(?1) + 6)) = ':acct:' || ?1",
                    [account],
                )?;
            }
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(Some(ErasedAccount { ended_sessions, first_time: erased_at.is_none() }))
        })
        .await
    }

    async fn unfinished_erasures(&self, org: OrgId) -> Result<Vec<UserId>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT u.id FROM users u WHERE u.org_id = ?1 AND u.erased_at IS NOT NULL
                   AND EXISTS (SELECT 1 FROM messages m WHERE m.sender_id = u.id AND m.removed_at IS NULL
                                 AND m.erasure_requested_at IS NULL)
                 ORDER BY u.erased_at",
            )?;
            let rows = st.query_map([org.to_bytes()], |r| codec::user_id(r, 0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
