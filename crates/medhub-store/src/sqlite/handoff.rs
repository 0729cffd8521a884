//! Shift handoffs in SQLite.

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::handoff::{ActionItem, Handoff, HandoffState, PatientNote, Severity};
use medhub_core::{ConversationId, HandoffId, OrgId, UserId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::codec::us;
use super::identity::append_leaves;
use super::{SqliteStore, codec};
use crate::StoreError;
use crate::handoff::{HandoffStore, MAX_HANDOFF_LIST};

fn ord(i: usize) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

/// Reads one handoff with its notes, actions and conversations.
fn load(c: &Connection, id: HandoffId) -> Result<Option<Handoff>, StoreError> {
    let head = c
        .prepare_cached("SELECT org_id, from_user, to_user, created_at, state, closed_at FROM handoffs WHERE id = ?1")?
        .query_row([id.to_bytes()], |r| {
            Ok((
                codec::id(r, 0, OrgId::from_slice)?,
                codec::user_id(r, 1)?,
                codec::user_id(r, 2)?,
                codec::ts(r, 3)?,
                codec::parse(r, 4, HandoffState::parse)?,
                codec::opt_ts(r, 5)?,
            ))
        })
        .optional()?;
    let Some((org, from, to, created_at, state, closed_at)) = head else { return Ok(None) };
    let mut patients: Vec<PatientNote> = c
        .prepare_cached(
            "SELECT patient_ref, severity, summary, awareness, synthesis FROM handoff_patients
             WHERE handoff_id = ?1 ORDER BY ord",
        )?
        .query_map([id.to_bytes()], |r| {
            Ok(PatientNote {
                patient: codec::patient_ref(r, 0)?.ok_or_else(|| codec::corrupt(0, "no patient_ref"))?,
                severity: codec::parse(r, 1, Severity::parse)?,
                summary: r.get(2)?,
                actions: Vec::new(),
                awareness: r.get(3)?,
                synthesis: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut st = c.prepare_cached(
        "SELECT patient_ord, text, done FROM handoff_actions WHERE handoff_id = ?1 ORDER BY patient_ord, ord",
    )?;
    let actions =
        st.query_map([id.to_bytes()], |r| Ok((r.get::<_, i64>(0)?, ActionItem { text: r.get(1)?, done: r.get(2)? })))?;
    for a in actions {
        let (p, item) = a?;
        let note = usize::try_from(p).ok().and_then(|p| patients.get_mut(p));
        note.ok_or_else(|| StoreError::Corrupt(format!("handoff action of patient {p}")))?.actions.push(item);
    }
    let conversations = c
        .prepare_cached("SELECT conversation_id FROM handoff_conversations WHERE handoff_id = ?1 ORDER BY ord")?
        .query_map([id.to_bytes()], |r| codec::conversation_id(r, 0))?
        .collect::<Result<Vec<ConversationId>, _>>()?;
    Ok(Some(Handoff { id, org, from, to, created_at, patients, conversations, state, closed_at }))
}

#[async_trait]
impl HandoffStore for SqliteStore {
    async fn create_handoff(&self, h: &Handoff, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let (h, audit) = (h.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO handoffs (id, org_id, from_user, to_user, created_at, state, closed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    h.id.to_bytes(),
                    h.org.to_bytes(),
                    h.from.to_bytes(),
                    h.to.to_bytes(),
                    us(h.created_at),
                    h.state.as_str(),
                    h.closed_at.map(us)
                ],
            )?;
            {
                let mut note = tx.prepare_cached(
                    "INSERT INTO handoff_patients (handoff_id, ord, patient_ref, severity, summary, awareness, synthesis)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                let mut action = tx.prepare_cached(
                    "INSERT INTO handoff_actions (handoff_id, patient_ord, ord, text, done) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (i, p) in h.patients.iter().enumerate() {
                    note.execute(params![
                        h.id.to_bytes(),
                        ord(i),
                        p.patient.as_str(),
                        p.severity.as_str(),
                        p.summary,
                        p.awareness,
                        p.synthesis
                    ])?;
                    for (j, a) in p.actions.iter().enumerate() {
                        action.execute(params![h.id.to_bytes(), ord(i), ord(j), a.text, a.done])?;
                    }
                }
                let mut conv = tx.prepare_cached(
                    "INSERT INTO handoff_conversations (handoff_id, ord, conversation_id) VALUES (?1, ?2, ?3)",
                )?;
                for (i, cid) in h.conversations.iter().enumerate() {
                    conv.execute(params![h.id.to_bytes(), ord(i), cid.to_bytes()])?;
                }
            }
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn handoff(&self, id: HandoffId) -> Result<Option<Handoff>, StoreError> {
        self.read(move |c| load(c, id)).await
    }

    async fn handoffs_for(&self, user: UserId, since: Timestamp, limit: u32) -> Result<Vec<Handoff>, StoreError> {
        let limit = i64::from(limit.min(MAX_HANDOFF_LIST));
        self.read(move |c| {
            let ids = c
                .prepare_cached(
                    "SELECT id, created_at FROM (
                         SELECT id, created_at FROM handoffs WHERE to_user = ?1 AND created_at >= ?2
                         UNION
                         SELECT id, created_at FROM handoffs WHERE from_user = ?1 AND created_at >= ?2)
                     ORDER BY created_at DESC, id DESC LIMIT ?3",
                )?
                .query_map(params![user.to_bytes(), us(since), limit], |r| codec::id(r, 0, HandoffId::from_slice))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(load(c, id)?);
            }
            Ok(out)
        })
        .await
    }

    async fn close_handoff(&self, closed: &Handoff, audit: &[AuditRecord]) -> Result<bool, StoreError> {
        let (h, audit) = (closed.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE handoffs SET state = ?2, closed_at = ?3 WHERE id = ?1 AND state = 'given'",
                params![h.id.to_bytes(), h.state.as_str(), h.closed_at.map(us)],
            )?;
            if n == 0 {
                return Ok(false);
            }
            {
                let mut st =
                    tx.prepare_cached("UPDATE handoff_patients SET synthesis = ?3 WHERE handoff_id = ?1 AND ord = ?2")?;
                for (i, p) in h.patients.iter().enumerate() {
                    st.execute(params![h.id.to_bytes(), ord(i), p.synthesis])?;
                }
            }
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}
