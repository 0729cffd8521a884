//! Retention policies, legal holds, expiry and erasure in PostgreSQL (see `crate::retention`).
//!
//! Writes that change messages take the event-log advisory lock first, as the commit
//! pipeline's batches do, so a batch never writes back a body the expiry job has just
//! removed. Every write that depends on, or changes, the organization's policies and holds
//! locks its `orgs` row, which orders them: the lock order is event-log lock, `orgs` row,
//! audit head.

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::model::ConversationKind;
use medhub_core::retention::{ActiveHold, ContentFacts, HoldScope, RetentionClass, RetentionPolicy};
use medhub_core::{LegalHoldId, OrgId, SessionId, UserId};
use tokio_postgres::Row;
use uuid::Uuid;

use super::codec::us;
use super::identity::append_leaves;
use super::{EVENT_LOG_LOCK, PgStore, codec};
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

fn scope(r: &Row, o: usize) -> Result<HoldScope, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("legal hold: {what}"));
    Ok(match r.try_get::<_, &str>(o)? {
        "conversation" => HoldScope::Conversation(codec::conversation_id(r, o + 1)?),
        "patient" => HoldScope::Patient(codec::patient_ref(r, o + 2)?.ok_or_else(|| corrupt("no patient"))?),
        "user" => HoldScope::User(codec::user_id(r, o + 3)?),
        _ => return Err(corrupt("unknown scope")),
    })
}

fn hold(r: &Row) -> Result<LegalHold, StoreError> {
    let lifted = match codec::opt_ts(r, 10)? {
        Some(at) => Some(HoldLift {
            by: codec::user_id(r, 9)?,
            at,
            reason: r.try_get::<_, Option<String>>(11)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(LegalHold {
        id: LegalHoldId::from_uuid(codec::uuid(r, 0)?),
        org: OrgId::from_uuid(codec::uuid(r, 1)?),
        scope: scope(r, 2)?,
        reason: r.try_get(6)?,
        created_by: codec::user_id(r, 7)?,
        created_at: codec::ts(r, 8)?,
        lifted,
    })
}

/// The scope's three columns: conversation, patient, user.
fn scope_columns(s: &HoldScope) -> (Option<Uuid>, Option<String>, Option<Uuid>) {
    match s {
        HoldScope::Conversation(c) => (Some(c.as_uuid()), None, None),
        HoldScope::Patient(p) => (None, Some(p.as_str().to_owned()), None),
        HoldScope::User(u) => (None, None, Some(u.as_uuid())),
    }
}

async fn bump_version(tx: &tokio_postgres::Transaction<'_>, org: OrgId) -> Result<(), StoreError> {
    tx.execute("UPDATE orgs SET retention_version = retention_version + 1 WHERE id = $1", &[&org.as_uuid()]).await?;
    Ok(())
}

/// Locks the organization's row (ordering this write with policy and hold changes) and checks
/// that the retention version is still the one the decisions were made at.
async fn check_version(tx: &tokio_postgres::Transaction<'_>, org: OrgId, version: i64) -> Result<(), StoreError> {
    let row = tx.query_opt("SELECT retention_version FROM orgs WHERE id = $1 FOR UPDATE", &[&org.as_uuid()]).await?;
    let now: Option<i64> = row.map(|r| r.try_get(0)).transpose()?;
    if now != Some(version) {
        return Err(StoreError::Conflict("the organization's retention policies or legal holds changed"));
    }
    Ok(())
}

fn candidate(r: &Row) -> Result<(Candidate, i64), StoreError> {
    let kind = codec::parse(r, 5, ConversationKind::parse)?;
    let patient = codec::patient_ref(r, 6)?;
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
        r.try_get(4)?,
    ))
}

/// Fills each candidate's `held_audience` with one query: the held users who were members of
/// its conversation at the event that created it (membership periods are inclusive).
async fn fill_audience(
    c: &tokio_postgres::Client,
    rows: Vec<(Candidate, i64)>,
    held: &[UserId],
) -> Result<Vec<Candidate>, StoreError> {
    let mut out: Vec<Candidate> = rows.into_iter().map(|(c, _)| c).collect();
    if held.is_empty() || out.is_empty() {
        return Ok(out);
    }
    let ids: Vec<Uuid> = out.iter().map(|c| c.message.as_uuid()).collect();
    let users: Vec<Uuid> = held.iter().map(|u| u.as_uuid()).collect();
    let seen = c
        .query(
            "SELECT m.id, mp.user_id FROM messages m
               JOIN member_periods mp ON mp.conversation_id = m.conversation_id AND mp.from_event <= m.event_id
                AND (mp.to_event IS NULL OR mp.to_event >= m.event_id)
              WHERE m.id = ANY($1) AND mp.user_id = ANY($2)",
            &[&ids, &users],
        )
        .await?;
    for r in &seen {
        let (id, user) = (codec::message_id(r, 0)?, codec::user_id(r, 1)?);
        if let Some(cand) = out.iter_mut().find(|c| c.message == id)
            && !cand.facts.held_audience.contains(&user)
        {
            cand.facts.held_audience.push(user);
        }
    }
    Ok(out)
}

fn cursor(after: Option<CandidateCursor>) -> (i64, Uuid) {
    after.map_or((i64::MIN, Uuid::nil()), |(t, id)| (us(t), id.as_uuid()))
}

#[async_trait]
impl RetentionStore for PgStore {
    async fn retention_state(&self, org: OrgId) -> Result<RetentionState, StoreError> {
        let c = self.pool.get().await?;
        let o = org.as_uuid();
        let version = c.query_opt("SELECT retention_version FROM orgs WHERE id = $1", &[&o]).await?;
        let version: i64 = version.map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
        let policies = c
            .query("SELECT class, days, set_by, set_at FROM retention_policies WHERE org_id = $1 ORDER BY class", &[&o])
            .await?
            .iter()
            .map(|r| {
                let class = codec::parse(r, 0, RetentionClass::parse)?;
                let policy = RetentionPolicy::new(class, r.try_get(1)?)
                    .map_err(|_| StoreError::Corrupt("retention out of bounds".into()))?;
                Ok(StoredPolicy {
                    policy,
                    set_by: codec::opt_uuid(r, 2)?.map(UserId::from_uuid),
                    set_at: codec::ts(r, 3)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let holds = c
            .query(
                "SELECT id, scope, conversation_id, patient_ref, user_id FROM legal_holds
                 WHERE org_id = $1 AND lifted_at IS NULL ORDER BY created_at, id",
                &[&o],
            )
            .await?
            .iter()
            .map(|r| Ok(ActiveHold { id: LegalHoldId::from_uuid(codec::uuid(r, 0)?), scope: scope(r, 1)? }))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(RetentionState { version, policies, holds })
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
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let o = org.as_uuid();
        match days {
            Some(d) => {
                tx.execute(
                    "INSERT INTO retention_policies (org_id, class, days, set_by, set_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (org_id, class) DO UPDATE SET days = excluded.days, set_by = excluded.set_by,
                       set_at = excluded.set_at",
                    &[&o, &class.as_str(), &i64::from(d), &by.map(|u| u.as_uuid()), &us(now)],
                )
                .await?
            }
            None => {
                tx.execute("DELETE FROM retention_policies WHERE org_id = $1 AND class = $2", &[&o, &class.as_str()])
                    .await?
            }
        };
        bump_version(&tx, org).await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn legal_holds(&self, org: OrgId, include_lifted: bool) -> Result<Vec<LegalHold>, StoreError> {
        let c = self.pool.get().await?;
        c.query(
            &format!(
                "SELECT {HOLD_COLS} FROM legal_holds WHERE org_id = $1 AND ($2 OR lifted_at IS NULL)
                 ORDER BY created_at DESC, id DESC"
            ),
            &[&org.as_uuid(), &include_lifted],
        )
        .await?
        .iter()
        .map(hold)
        .collect()
    }

    async fn create_legal_hold(&self, h: &LegalHold, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let (conv, patient, user) = scope_columns(&h.scope);
        tx.execute(
            &format!(
                "INSERT INTO legal_holds ({HOLD_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, NULL)"
            ),
            &[
                &h.id.as_uuid(),
                &h.org.as_uuid(),
                &h.scope.kind_str(),
                &conv,
                &patient,
                &user,
                &h.reason,
                &h.created_by.as_uuid(),
                &us(h.created_at),
            ],
        )
        .await?;
        bump_version(&tx, h.org).await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn lift_legal_hold(
        &self,
        org: OrgId,
        id: LegalHoldId,
        lift: &HoldLift,
        audit: &[AuditRecord],
    ) -> Result<Option<LegalHold>, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE legal_holds SET lifted_by = $3, lifted_at = $4, lift_reason = $5
                     WHERE id = $1 AND org_id = $2 AND lifted_at IS NULL RETURNING {HOLD_COLS}"
                ),
                &[&id.as_uuid(), &org.as_uuid(), &lift.by.as_uuid(), &us(lift.at), &lift.reason],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let lifted = hold(&row)?;
        bump_version(&tx, org).await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(Some(lifted))
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
        let c = self.pool.get().await?;
        let (after_at, after_id) = cursor(after);
        let rows = c
            .query(
                &format!(
                    "SELECT {CANDIDATE_COLS} FROM messages m JOIN conversations c ON c.id = m.conversation_id
                     WHERE m.removed_at IS NULL AND m.created_at < $2
                       AND (m.created_at, m.id) > ($4, $5)
                       AND c.org_id = $1
                       AND CASE WHEN $3 = 'clinical' THEN c.patient_ref IS NOT NULL
                                ELSE c.patient_ref IS NULL AND c.kind = $3 END
                     ORDER BY m.created_at, m.id LIMIT $6"
                ),
                &[&org.as_uuid(), &us(before), &class.as_str(), &after_at, &after_id, &i64::from(limit)],
            )
            .await?
            .iter()
            .map(candidate)
            .collect::<Result<Vec<_>, _>>()?;
        fill_audience(&c, rows, held_users).await
    }

    async fn erasure_candidates(
        &self,
        sender: UserId,
        after: Option<CandidateCursor>,
        limit: u32,
        held_users: &[UserId],
    ) -> Result<Vec<Candidate>, StoreError> {
        let c = self.pool.get().await?;
        let (after_at, after_id) = cursor(after);
        let rows = c
            .query(
                &format!(
                    "SELECT {CANDIDATE_COLS} FROM messages m JOIN conversations c ON c.id = m.conversation_id
                     WHERE m.sender_id = $1 AND m.removed_at IS NULL AND m.erasure_requested_at IS NULL
                       AND (m.created_at, m.id) > ($2, $3)
                     ORDER BY m.created_at, m.id LIMIT $4"
                ),
                &[&sender.as_uuid(), &after_at, &after_id, &i64::from(limit)],
            )
            .await?
            .iter()
            .map(candidate)
            .collect::<Result<Vec<_>, _>>()?;
        fill_audience(&c, rows, held_users).await
    }

    async fn apply_content_change(
        &self,
        org: OrgId,
        version: i64,
        change: &ContentChange,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<ChangeCount, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENT_LOG_LOCK]).await?;
        check_version(&tx, org, version).await?;
        let o = org.as_uuid();
        let changed = || StoreError::Conflict("a message changed while retention was deciding");
        let remove: Vec<Uuid> = change.remove.iter().map(|m| m.as_uuid()).collect();
        let flag: Vec<Uuid> = change.flag.iter().map(|m| m.as_uuid()).collect();
        let zero: &[u8] = &[0; 32];
        let removed = tx
            .execute(
                "UPDATE messages SET body = '', request_hash = $5, removed_at = $3, removed_cause = $4
                 WHERE id = ANY($1) AND removed_at IS NULL
                   AND conversation_id IN (SELECT id FROM conversations WHERE org_id = $2)",
                &[&remove, &o, &us(now), &change.cause.as_str(), &zero],
            )
            .await?;
        if removed != remove.len() as u64 {
            return Err(changed());
        }
        let revisions = tx.execute("DELETE FROM message_revisions WHERE message_id = ANY($1)", &[&remove]).await?;
        let flagged = tx
            .execute(
                "UPDATE messages SET erasure_requested_at = $3
                 WHERE id = ANY($1) AND removed_at IS NULL AND erasure_requested_at IS NULL
                   AND conversation_id IN (SELECT id FROM conversations WHERE org_id = $2)",
                &[&flag, &o, &us(now)],
            )
            .await?;
        if flagged != flag.len() as u64 {
            return Err(changed());
        }
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(ChangeCount { removed, revisions, flagged })
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
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        check_version(&tx, org, version).await?;
        let u = user.as_uuid();
        let found = tx
            .query_opt(
                "SELECT username, erased_at FROM users WHERE id = $1 AND org_id = $2 FOR UPDATE",
                &[&u, &org.as_uuid()],
            )
            .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        let old_username: String = found.try_get(0)?;
        let erased_at: Option<i64> = found.try_get(1)?;
        let ended_sessions = tx
            .query(
                "UPDATE sessions SET revoked_at = $2, end_reason = 'erased' WHERE user_id = $1 AND revoked_at IS NULL
                 RETURNING id",
                &[&u, &us(now)],
            )
            .await?
            .iter()
            .map(|r| codec::uuid(r, 0).map(SessionId::from_uuid))
            .collect::<Result<Vec<_>, _>>()?;
        tx.execute("UPDATE sessions SET ip = NULL, user_agent = NULL WHERE user_id = $1", &[&u]).await?;
        tx.execute("DELETE FROM ws_tickets WHERE session_id IN (SELECT id FROM sessions WHERE user_id = $1)", &[&u])
            .await?;
        tx.execute(
            "UPDATE users SET username = $2, display_name = $3, password_hash = NULL, must_change_password = false,
               active = false, erased_at = COALESCE(erased_at, $4)
             WHERE id = $1",
            &[&u, &pseudonym.0, &pseudonym.1, &us(now)],
        )
        .await?;
        for table in [
            "totp",
            "recovery_codes",
            "passkeys",
            "sso_identities",
            "invitations",
            "user_roles",
            "care_team",
            "contact_points",
            "push_subscriptions",
        ] {
            tx.execute(&format!("DELETE FROM {table} WHERE user_id = $1"), &[&u]).await?;
        }
        // Throttles are keyed `<kind>:acct:<username or user id>`.
        for account in [old_username, user.to_string()] {
            tx.execute("DELETE FROM throttle WHERE right(key, length($1) + 6) = ':acct:' || $1", &[&account]).await?;
        }
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(Some(ErasedAccount { ended_sessions, first_time: erased_at.is_none() }))
    }

    async fn unfinished_erasures(&self, org: OrgId) -> Result<Vec<UserId>, StoreError> {
        let c = self.pool.get().await?;
        c.query(
            "SELECT u.id FROM users u WHERE u.org_id = $1 AND u.erased_at IS NOT NULL
               AND EXISTS (SELECT 1 FROM messages m WHERE m.sender_id = u.id AND m.removed_at IS NULL
                             AND m.erasure_requested_at IS NULL)
             ORDER BY u.erased_at",
            &[&org.as_uuid()],
        )
        .await?
        .iter()
        .map(|r| codec::user_id(r, 0))
        .collect()
    }
}
