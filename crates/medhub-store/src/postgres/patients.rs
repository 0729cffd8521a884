//! Care teams and break-glass grants in PostgreSQL.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use medhub_core::clock::from_micros;
use medhub_core::patient::PatientRef;
use medhub_core::{ConversationId, OrgId, SessionId, UserId};
use tokio_postgres::Row;

use super::identity::append_leaves;
use super::{PgStore, codec};
use crate::StoreError;
use crate::patients::{BreakGlassGrant, CareTeamMember, PatientStore, grant_end_record};
use medhub_core::audit::AuditRecord;

const GRANT_COLS: &str =
    "id, org_id, user_id, session_id, conversation_id, patient_ref, reason, started_at, expires_at, ended_at";

fn grant(r: &Row) -> Result<BreakGlassGrant, StoreError> {
    Ok(BreakGlassGrant {
        id: codec::uuid(r, 0)?,
        org: OrgId::from_uuid(codec::uuid(r, 1)?),
        user: codec::user_id(r, 2)?,
        session: SessionId::from_uuid(codec::uuid(r, 3)?),
        conversation: codec::conversation_id(r, 4)?,
        patient: codec::patient_ref(r, 5)?.ok_or_else(|| StoreError::Corrupt("break_glass without patient".into()))?,
        reason: r.try_get(6)?,
        started_at: codec::ts(r, 7)?,
        expires_at: codec::ts(r, 8)?,
        ended_at: codec::opt_ts(r, 9)?,
    })
}

#[async_trait]
impl PatientStore for PgStore {
    async fn on_care_team(&self, org: OrgId, patient: &PatientRef, user: UserId) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT 1 FROM care_team WHERE org_id = $1 AND patient_ref = $2 AND user_id = $3",
                &[&org.as_uuid(), &patient.as_str(), &user.as_uuid()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn care_team(&self, org: OrgId, patient: &PatientRef) -> Result<Vec<CareTeamMember>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT user_id, added_by, added_at FROM care_team WHERE org_id = $1 AND patient_ref = $2
                 ORDER BY added_at, user_id",
                &[&org.as_uuid(), &patient.as_str()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CareTeamMember {
                    user: codec::user_id(r, 0)?,
                    added_by: codec::opt_uuid(r, 1)?.map(UserId::from_uuid),
                    added_at: codec::ts(r, 2)?,
                })
            })
            .collect()
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
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "INSERT INTO care_team (org_id, patient_ref, user_id, added_by, added_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
                &[&org.as_uuid(), &patient.as_str(), &user.as_uuid(), &by.as_uuid(), &now.as_microsecond()],
            )
            .await?;
        if n == 1 {
            append_leaves(&*tx, audit).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn remove_from_care_team(
        &self,
        org: OrgId,
        patient: &PatientRef,
        user: UserId,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM care_team WHERE org_id = $1 AND patient_ref = $2 AND user_id = $3",
                &[&org.as_uuid(), &patient.as_str(), &user.as_uuid()],
            )
            .await?;
        if n == 1 {
            append_leaves(&*tx, audit).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn create_break_glass(&self, g: &BreakGlassGrant, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute(
            &format!("INSERT INTO break_glass ({GRANT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
            &[
                &g.id,
                &g.org.as_uuid(),
                &g.user.as_uuid(),
                &g.session.as_uuid(),
                &g.conversation.as_uuid(),
                &g.patient.as_str(),
                &g.reason,
                &g.started_at.as_microsecond(),
                &g.expires_at.as_microsecond(),
                &g.ended_at.map(|t| t.as_microsecond()),
            ],
        )
        .await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn break_glass_until(
        &self,
        user: UserId,
        conversation: ConversationId,
    ) -> Result<Option<Timestamp>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_one(
                "SELECT MAX(expires_at) FROM break_glass WHERE user_id = $1 AND conversation_id = $2",
                &[&user.as_uuid(), &conversation.as_uuid()],
            )
            .await?;
        Ok(row.try_get::<_, Option<i64>>(0)?.map(from_micros))
    }

    async fn break_glass_grants(
        &self,
        org: OrgId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<BreakGlassGrant>, StoreError> {
        let c = self.pool.get().await?;
        let sql = format!(
            "SELECT {GRANT_COLS} FROM break_glass WHERE org_id = $1 AND ($2::int8 IS NULL OR started_at < $2)
             ORDER BY started_at DESC, id DESC LIMIT $3"
        );
        let rows = c.query(&sql, &[&org.as_uuid(), &before.map(|t| t.as_microsecond()), &i64::from(limit)]).await?;
        rows.iter().map(grant).collect()
    }

    async fn end_break_glass(
        &self,
        org: OrgId,
        id: uuid::Uuid,
        only_user: Option<UserId>,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<Option<BreakGlassGrant>, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let sql = format!(
            "UPDATE break_glass SET ended_at = $3, expires_at = LEAST(expires_at, $3)
             WHERE id = $1 AND org_id = $2 AND ended_at IS NULL AND expires_at > $3
               AND ($4::uuid IS NULL OR user_id = $4)
             RETURNING {GRANT_COLS}"
        );
        let rows =
            tx.query(&sql, &[&id, &org.as_uuid(), &now.as_microsecond(), &only_user.map(|u| u.as_uuid())]).await?;
        let ended = rows.first().map(grant).transpose()?;
        if let Some(g) = &ended {
            append_leaves(&*tx, &[grant_end_record(audit, g)]).await?;
        }
        tx.commit().await?;
        Ok(ended)
    }

    async fn end_expired_break_glass(
        &self,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<Vec<BreakGlassGrant>, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let sql = format!(
            "UPDATE break_glass SET ended_at = $1 WHERE ended_at IS NULL AND expires_at <= $1 RETURNING {GRANT_COLS}"
        );
        let rows = tx.query(&sql, &[&now.as_microsecond()]).await?;
        let ended = rows.iter().map(grant).collect::<Result<Vec<_>, _>>()?;
        let records: Vec<AuditRecord> = ended.iter().map(|g| grant_end_record(audit, g)).collect();
        append_leaves(&*tx, &records).await?;
        tx.commit().await?;
        Ok(ended)
    }

    async fn break_glass_duration(&self, org: OrgId) -> Result<SignedDuration, StoreError> {
        let c = self.pool.get().await?;
        let rows = c.query("SELECT break_glass_s FROM orgs WHERE id = $1", &[&org.as_uuid()]).await?;
        match rows.first() {
            Some(r) => Ok(SignedDuration::from_secs(r.try_get::<_, i64>(0)?)),
            None => Ok(medhub_core::patient::DEFAULT_BREAK_GLASS),
        }
    }

    async fn set_break_glass_duration(
        &self,
        org: OrgId,
        d: SignedDuration,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute("UPDATE orgs SET break_glass_s = $2 WHERE id = $1", &[&org.as_uuid(), &d.as_secs()]).await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn users_with_permission(&self, org: OrgId, permission: &str) -> Result<Vec<UserId>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT DISTINCT u.id FROM users u JOIN user_roles ur ON ur.user_id = u.id
                   JOIN roles r ON r.id = ur.role_id
                 WHERE u.org_id = $1 AND u.active AND $2 = ANY(string_to_array(r.permissions, ' '))
                 ORDER BY u.id",
                &[&org.as_uuid(), &permission],
            )
            .await?;
        rows.iter().map(|r| codec::user_id(r, 0)).collect()
    }
}
