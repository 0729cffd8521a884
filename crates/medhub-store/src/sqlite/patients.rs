//! Care teams and break-glass grants in SQLite.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use medhub_core::patient::PatientRef;
use medhub_core::{ConversationId, OrgId, SessionId, UserId};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::identity::append_leaves;
use super::{SqliteStore, codec};
use crate::StoreError;
use crate::patients::{BreakGlassGrant, CareTeamMember, PatientStore, grant_end_record};
use medhub_core::audit::AuditRecord;

const GRANT_COLS: &str =
    "id, org_id, user_id, session_id, conversation_id, patient_ref, reason, started_at, expires_at, ended_at";

fn grant(r: &rusqlite::Row<'_>) -> rusqlite::Result<BreakGlassGrant> {
    Ok(BreakGlassGrant {
        id: codec::id(r, 0, |b| uuid::Uuid::from_slice(b).ok())?,
        org: codec::id(r, 1, OrgId::from_slice)?,
        user: codec::user_id(r, 2)?,
        session: codec::id(r, 3, SessionId::from_slice)?,
        conversation: codec::conversation_id(r, 4)?,
        patient: codec::patient_ref(r, 5)?.ok_or_else(|| codec::corrupt(5, "no patient_ref"))?,
        reason: r.get(6)?,
        started_at: codec::ts(r, 7)?,
        expires_at: codec::ts(r, 8)?,
        ended_at: codec::opt_ts(r, 9)?,
    })
}

#[async_trait]
impl PatientStore for SqliteStore {
    async fn on_care_team(&self, org: OrgId, patient: &PatientRef, user: UserId) -> Result<bool, StoreError> {
        let patient = patient.as_str().to_owned();
        self.read(move |c| {
            let found = c
                .prepare_cached("SELECT 1 FROM care_team WHERE org_id = ?1 AND patient_ref = ?2 AND user_id = ?3")?
                .query_row(params![org.to_bytes(), patient, user.to_bytes()], |_| Ok(()))
                .optional()?;
            Ok(found.is_some())
        })
        .await
    }

    async fn care_team(&self, org: OrgId, patient: &PatientRef) -> Result<Vec<CareTeamMember>, StoreError> {
        let patient = patient.as_str().to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT user_id, added_by, added_at FROM care_team WHERE org_id = ?1 AND patient_ref = ?2
                 ORDER BY added_at, user_id",
            )?;
            let rows = st.query_map(params![org.to_bytes(), patient], |r| {
                Ok(CareTeamMember {
                    user: codec::user_id(r, 0)?,
                    added_by: codec::opt_id(r, 1, UserId::from_slice)?,
                    added_at: codec::ts(r, 2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn add_to_care_team(
        &self,
        org: OrgId,
        patient: &PatientRef,
        user: UserId,
        by: UserId,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let (patient, audit) = (patient.as_str().to_owned(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "INSERT INTO care_team (org_id, patient_ref, user_id, added_by, added_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![org.to_bytes(), patient, user.to_bytes(), by.to_bytes(), now.as_microsecond()],
            )?;
            if n == 1 {
                append_leaves(&tx, &audit)?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn remove_from_care_team(
        &self,
        org: OrgId,
        patient: &PatientRef,
        user: UserId,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let (patient, audit) = (patient.as_str().to_owned(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "DELETE FROM care_team WHERE org_id = ?1 AND patient_ref = ?2 AND user_id = ?3",
                params![org.to_bytes(), patient, user.to_bytes()],
            )?;
            if n == 1 {
                append_leaves(&tx, &audit)?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn create_break_glass(&self, g: &BreakGlassGrant, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let (g, audit) = (g.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                &format!("INSERT INTO break_glass ({GRANT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    g.id.as_bytes().to_vec(),
                    g.org.to_bytes(),
                    g.user.to_bytes(),
                    g.session.to_bytes(),
                    g.conversation.to_bytes(),
                    g.patient.as_str(),
                    g.reason,
                    g.started_at.as_microsecond(),
                    g.expires_at.as_microsecond(),
                    g.ended_at.map(|t| t.as_microsecond()),
                ],
            )?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn break_glass_until(
        &self,
        user: UserId,
        conversation: ConversationId,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.read(move |c| {
            let until: Option<i64> = c
                .prepare_cached("SELECT MAX(expires_at) FROM break_glass WHERE user_id = ?1 AND conversation_id = ?2")?
                .query_row([user.to_bytes(), conversation.to_bytes()], |r| r.get(0))?;
            Ok(until.map(medhub_core::clock::from_micros))
        })
        .await
    }

    async fn break_glass_grants(
        &self,
        org: OrgId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<BreakGlassGrant>, StoreError> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {GRANT_COLS} FROM break_glass WHERE org_id = ?1 AND (?2 IS NULL OR started_at < ?2)
                 ORDER BY started_at DESC, id DESC LIMIT ?3"
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows =
                st.query_map(params![org.to_bytes(), before.map(|t| t.as_microsecond()), i64::from(limit)], grant)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn end_break_glass(
        &self,
        org: OrgId,
        id: uuid::Uuid,
        only_user: Option<UserId>,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<Option<BreakGlassGrant>, StoreError> {
        let template = audit.clone();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sql = format!(
                "UPDATE break_glass SET ended_at = ?3, expires_at = MIN(expires_at, ?3)
                 WHERE id = ?1 AND org_id = ?2 AND ended_at IS NULL AND expires_at > ?3
                   AND (?4 IS NULL OR user_id = ?4)
                 RETURNING {GRANT_COLS}"
            );
            let only = only_user.map(|u| u.to_bytes());
            let ended = tx
                .prepare_cached(&sql)?
                .query_row(params![id.as_bytes().to_vec(), org.to_bytes(), now.as_microsecond(), only], grant)
                .optional()?;
            if let Some(g) = &ended {
                append_leaves(&tx, &[grant_end_record(&template, g)])?;
            }
            tx.commit()?;
            Ok(ended)
        })
        .await
    }

    async fn end_expired_break_glass(
        &self,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<Vec<BreakGlassGrant>, StoreError> {
        let template = audit.clone();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ended = {
                let sql = format!(
                    "UPDATE break_glass SET ended_at = ?1 WHERE ended_at IS NULL AND expires_at <= ?1
                     RETURNING {GRANT_COLS}"
                );
                let mut st = tx.prepare_cached(&sql)?;
                let rows = st.query_map([now.as_microsecond()], grant)?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let records: Vec<AuditRecord> = ended.iter().map(|g| grant_end_record(&template, g)).collect();
            append_leaves(&tx, &records)?;
            tx.commit()?;
            Ok(ended)
        })
        .await
    }

    async fn break_glass_duration(&self, org: OrgId) -> Result<SignedDuration, StoreError> {
        self.read(move |c| {
            let s: Option<i64> = c
                .prepare_cached("SELECT break_glass_s FROM orgs WHERE id = ?1")?
                .query_row([org.to_bytes()], |r| r.get(0))
                .optional()?;
            Ok(s.map(SignedDuration::from_secs).unwrap_or(medhub_core::patient::DEFAULT_BREAK_GLASS))
        })
        .await
    }

    async fn set_break_glass_duration(
        &self,
        org: OrgId,
        d: SignedDuration,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let audit = audit.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("UPDATE orgs SET break_glass_s = ?2 WHERE id = ?1", params![org.to_bytes(), d.as_secs()])?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn users_with_permission(&self, org: OrgId, permission: &str) -> Result<Vec<UserId>, StoreError> {
        let needle = format!(" {permission} ");
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT u.id FROM users u JOIN user_roles ur ON ur.user_id = u.id
                   JOIN roles r ON r.id = ur.role_id
                 WHERE u.org_id = ?1 AND u.active = 1 AND instr(' ' || r.permissions || ' ', ?2) > 0
                 ORDER BY u.id",
            )?;
            let rows = st.query_map(params![org.to_bytes(), needle], |r| codec::user_id(r, 0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
