//! Shift handoffs in PostgreSQL.

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::handoff::{ActionItem, Handoff, HandoffState, PatientNote, Severity};
use medhub_core::{HandoffId, OrgId, UserId};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::codec::us;
use super::identity::append_leaves;
use super::{PgStore, codec};
use crate::StoreError;
use crate::handoff::{HandoffStore, MAX_HANDOFF_LIST};

fn ord(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

fn parsed<T>(v: &str, f: fn(&str) -> Option<T>, what: &str) -> Result<T, StoreError> {
    f(v).ok_or_else(|| StoreError::Corrupt(format!("{what} {v:?}")))
}

/// Reads one handoff with its notes, actions and conversations.
async fn load(c: &impl GenericClient, id: HandoffId) -> Result<Option<Handoff>, StoreError> {
    let heads = c
        .query(
            "SELECT org_id, from_user, to_user, created_at, state, closed_at FROM handoffs WHERE id = $1",
            &[&id.as_uuid()],
        )
        .await?;
    let Some(r) = heads.first() else { return Ok(None) };
    let state: String = r.try_get(4)?;
    let (org, from, to) = (OrgId::from_uuid(codec::uuid(r, 0)?), codec::user_id(r, 1)?, codec::user_id(r, 2)?);
    let (created_at, closed_at) = (codec::ts(r, 3)?, codec::opt_ts(r, 5)?);
    let state = parsed(&state, HandoffState::parse, "handoff state")?;
    let rows = c
        .query(
            "SELECT patient_ref, severity, summary, awareness, synthesis FROM handoff_patients
             WHERE handoff_id = $1 ORDER BY ord",
            &[&id.as_uuid()],
        )
        .await?;
    let mut patients = Vec::with_capacity(rows.len());
    for r in &rows {
        let severity: String = r.try_get(1)?;
        patients.push(PatientNote {
            patient: codec::patient_ref(r, 0)?
                .ok_or_else(|| StoreError::Corrupt("handoff note without patient".into()))?,
            severity: parsed(&severity, Severity::parse, "handoff severity")?,
            summary: r.try_get(2)?,
            actions: Vec::new(),
            awareness: r.try_get(3)?,
            synthesis: r.try_get(4)?,
        });
    }
    let rows = c
        .query(
            "SELECT patient_ord, text, done FROM handoff_actions WHERE handoff_id = $1 ORDER BY patient_ord, ord",
            &[&id.as_uuid()],
        )
        .await?;
    for r in &rows {
        let p: i32 = r.try_get(0)?;
        let note = usize::try_from(p).ok().and_then(|p| patients.get_mut(p));
        let note = note.ok_or_else(|| StoreError::Corrupt(format!("handoff action of patient {p}")))?;
        note.actions.push(ActionItem { text: r.try_get(1)?, done: r.try_get(2)? });
    }
    let rows = c
        .query("SELECT conversation_id FROM handoff_conversations WHERE handoff_id = $1 ORDER BY ord", &[&id.as_uuid()])
        .await?;
    let conversations = rows.iter().map(|r| codec::conversation_id(r, 0)).collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Handoff { id, org, from, to, created_at, patients, conversations, state, closed_at }))
}

#[async_trait]
impl HandoffStore for PgStore {
    async fn create_handoff(&self, h: &Handoff, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO handoffs (id, org_id, from_user, to_user, created_at, state, closed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &h.id.as_uuid(),
                &h.org.as_uuid(),
                &h.from.as_uuid(),
                &h.to.as_uuid(),
                &us(h.created_at),
                &h.state.as_str(),
                &h.closed_at.map(us),
            ],
        )
        .await?;
        for (i, p) in h.patients.iter().enumerate() {
            tx.execute(
                "INSERT INTO handoff_patients (handoff_id, ord, patient_ref, severity, summary, awareness, synthesis)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &h.id.as_uuid(),
                    &ord(i),
                    &p.patient.as_str(),
                    &p.severity.as_str(),
                    &p.summary,
                    &p.awareness,
                    &p.synthesis,
                ],
            )
            .await?;
            let texts: Vec<&str> = p.actions.iter().map(|a| a.text.as_str()).collect();
            let done: Vec<bool> = p.actions.iter().map(|a| a.done).collect();
            tx.execute(
                "INSERT INTO handoff_actions (handoff_id, patient_ord, ord, text, done)
                 SELECT $1, $2, (o - 1)::int, t, d FROM UNNEST($3::text[], $4::bool[]) WITH ORDINALITY AS a(t, d, o)",
                &[&h.id.as_uuid(), &ord(i), &texts, &done],
            )
            .await?;
        }
        let convs: Vec<Uuid> = h.conversations.iter().map(|c| c.as_uuid()).collect();
        tx.execute(
            "INSERT INTO handoff_conversations (handoff_id, ord, conversation_id)
             SELECT $1, (o - 1)::int, c FROM UNNEST($2::uuid[]) WITH ORDINALITY AS a(c, o)",
            &[&h.id.as_uuid(), &convs],
        )
        .await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn handoff(&self, id: HandoffId) -> Result<Option<Handoff>, StoreError> {
        load(&**self.pool.get().await?, id).await
    }

    async fn handoffs_for(&self, user: UserId, since: Timestamp, limit: u32) -> Result<Vec<Handoff>, StoreError> {
        let c = self.pool.get().await?;
        let limit = i64::from(limit.min(MAX_HANDOFF_LIST));
        let rows = c
            .query(
                "SELECT id, created_at FROM handoffs WHERE to_user = $1 AND created_at >= $2
                 UNION
                 SELECT id, created_at FROM handoffs WHERE from_user = $1 AND created_at >= $2
                 ORDER BY created_at DESC, id DESC LIMIT $3",
                &[&user.as_uuid(), &us(since), &limit],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.extend(load(&**c, HandoffId::from_uuid(codec::uuid(r, 0)?)).await?);
        }
        Ok(out)
    }

    async fn close_handoff(&self, closed: &Handoff, audit: &[AuditRecord]) -> Result<bool, StoreError> {
        let h = closed;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE handoffs SET state = $2, closed_at = $3 WHERE id = $1 AND state = 'given'",
                &[&h.id.as_uuid(), &h.state.as_str(), &h.closed_at.map(us)],
            )
            .await?;
        if n == 0 {
            return Ok(false);
        }
        for (i, p) in h.patients.iter().enumerate() {
            tx.execute(
                "UPDATE handoff_patients SET synthesis = $3 WHERE handoff_id = $1 AND ord = $2",
                &[&h.id.as_uuid(), &ord(i), &p.synthesis],
            )
            .await?;
        }
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}
