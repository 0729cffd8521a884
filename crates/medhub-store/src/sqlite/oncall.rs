//! On-call roles, schedules, overrides, coverage, role conversations and resolutions in
//! SQLite. The single writer connection makes every version check and its write atomic.

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::{ConversationId, CoverageId, MessageId, OnCallRoleId, OrgId, OverrideId, ScheduleId, UserId};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::identity::append_leaves;
use super::{SqliteStore, codec};
use crate::StoreError;
use crate::oncall::{
    CoverageState, OnCallKind, OnCallRole, OnCallStore, OpenItem, OverrideSource, ResolutionKind, RoleResolution,
    StoredCoverage, StoredOverride, StoredSchedule,
};

const ROLE_COLS: &str = "id, org_id, key, name, kind, department, created_by, created_at";
const SCHEDULE_COLS: &str = "id, org_id, role_id, name, zone, rotations, version, created_by, created_at, updated_at";
const OVERRIDE_COLS: &str = "id, schedule_id, user_id, replaces, start_at, end_at, source, created_by, created_at";
const COVERAGE_COLS: &str = "id, org_id, covered_id, by_id, start_at, end_at, created_by, created_at";
const RESOLUTION_COLS: &str = "id, org_id, role_id, message_id, conversation_id, kind, at, holders, dedupe";

fn role(r: &rusqlite::Row<'_>) -> rusqlite::Result<OnCallRole> {
    Ok(OnCallRole {
        id: codec::id(r, 0, OnCallRoleId::from_slice)?,
        org: codec::id(r, 1, OrgId::from_slice)?,
        key: r.get(2)?,
        name: r.get(3)?,
        kind: codec::parse(r, 4, OnCallKind::parse)?,
        department: r.get(5)?,
        created_by: codec::opt_id(r, 6, UserId::from_slice)?,
        created_at: codec::ts(r, 7)?,
    })
}

fn schedule(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSchedule> {
    Ok(StoredSchedule {
        id: codec::id(r, 0, ScheduleId::from_slice)?,
        org: codec::id(r, 1, OrgId::from_slice)?,
        role: codec::id(r, 2, OnCallRoleId::from_slice)?,
        name: r.get(3)?,
        zone: r.get(4)?,
        rotations: r.get(5)?,
        version: r.get(6)?,
        created_by: codec::opt_id(r, 7, UserId::from_slice)?,
        created_at: codec::ts(r, 8)?,
        updated_at: codec::ts(r, 9)?,
    })
}

fn override_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredOverride> {
    Ok(StoredOverride {
        id: codec::id(r, 0, OverrideId::from_slice)?,
        schedule: codec::id(r, 1, ScheduleId::from_slice)?,
        user: codec::user_id(r, 2)?,
        replaces: codec::opt_id(r, 3, UserId::from_slice)?,
        start: codec::ts(r, 4)?,
        end: codec::ts(r, 5)?,
        source: codec::parse(r, 6, OverrideSource::parse)?,
        created_by: codec::opt_id(r, 7, UserId::from_slice)?,
        created_at: codec::ts(r, 8)?,
    })
}

fn coverage(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCoverage> {
    Ok(StoredCoverage {
        id: codec::id(r, 0, CoverageId::from_slice)?,
        org: codec::id(r, 1, OrgId::from_slice)?,
        covered: codec::user_id(r, 2)?,
        by: codec::user_id(r, 3)?,
        start: codec::ts(r, 4)?,
        end: codec::ts(r, 5)?,
        created_by: codec::opt_id(r, 6, UserId::from_slice)?,
        created_at: codec::ts(r, 7)?,
    })
}

fn resolution(r: &rusqlite::Row<'_>) -> rusqlite::Result<RoleResolution> {
    Ok(RoleResolution {
        id: codec::id(r, 0, |b| uuid::Uuid::from_slice(b).ok())?,
        org: codec::id(r, 1, OrgId::from_slice)?,
        role: codec::id(r, 2, OnCallRoleId::from_slice)?,
        message: codec::message_id(r, 3)?,
        conversation: codec::conversation_id(r, 4)?,
        kind: codec::parse(r, 5, ResolutionKind::parse)?,
        at: codec::ts(r, 6)?,
        holders: r.get(7)?,
        dedupe: r.get(8)?,
    })
}

fn insert_override(tx: &Transaction<'_>, o: &StoredOverride) -> Result<(), StoreError> {
    tx.prepare_cached(&format!(
        "INSERT INTO oncall_overrides ({OVERRIDE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        o.id.to_bytes(),
        o.schedule.to_bytes(),
        o.user.to_bytes(),
        o.replaces.map(|u| u.to_bytes()),
        o.start.as_microsecond(),
        o.end.as_microsecond(),
        o.source.as_str(),
        o.created_by.map(|u| u.to_bytes()),
        o.created_at.as_microsecond(),
    ])?;
    Ok(())
}

#[async_trait]
impl OnCallStore for SqliteStore {
    async fn create_oncall_role(&self, role: &OnCallRole, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let (r, audit) = (role.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                &format!(
                    "INSERT INTO oncall_roles ({ROLE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING"
                ),
                params![
                    r.id.to_bytes(),
                    r.org.to_bytes(),
                    r.key,
                    r.name,
                    r.kind.as_str(),
                    r.department,
                    r.created_by.map(|u| u.to_bytes()),
                    r.created_at.as_microsecond(),
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict("an on-call role with this key exists"));
            }
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn update_oncall_role(&self, role: &OnCallRole, audit: &[AuditRecord]) -> Result<bool, StoreError> {
        let (r, audit) = (role.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE oncall_roles SET name = ?3, kind = ?4, department = ?5 WHERE id = ?1 AND org_id = ?2",
                params![r.id.to_bytes(), r.org.to_bytes(), r.name, r.kind.as_str(), r.department],
            )?;
            if n == 1 {
                append_leaves(&tx, &audit)?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn oncall_roles(&self, org: OrgId) -> Result<Vec<OnCallRole>, StoreError> {
        self.read(move |c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {ROLE_COLS} FROM oncall_roles WHERE org_id = ?1 ORDER BY key"))?;
            let rows = st.query_map([org.to_bytes()], role)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn oncall_role(&self, org: OrgId, key: &str) -> Result<Option<OnCallRole>, StoreError> {
        let key = key.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {ROLE_COLS} FROM oncall_roles WHERE org_id = ?1 AND key = ?2"))?
                .query_row(params![org.to_bytes(), key], role)
                .optional()?)
        })
        .await
    }

    async fn oncall_role_by_id(&self, id: OnCallRoleId) -> Result<Option<OnCallRole>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {ROLE_COLS} FROM oncall_roles WHERE id = ?1"))?
                .query_row([id.to_bytes()], role)
                .optional()?)
        })
        .await
    }

    async fn create_schedule(&self, schedule: &StoredSchedule, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let (s, audit) = (schedule.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                &format!(
                    "INSERT INTO oncall_schedules ({SCHEDULE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    s.id.to_bytes(),
                    s.org.to_bytes(),
                    s.role.to_bytes(),
                    s.name,
                    s.zone,
                    s.rotations,
                    s.version,
                    s.created_by.map(|u| u.to_bytes()),
                    s.created_at.as_microsecond(),
                    s.updated_at.as_microsecond(),
                ],
            )?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn update_schedule(
        &self,
        schedule: &StoredSchedule,
        expected_version: i64,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let (s, audit) = (schedule.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE oncall_schedules SET name = ?3, zone = ?4, rotations = ?5, updated_at = ?6, version = version + 1
                 WHERE id = ?1 AND org_id = ?2 AND version = ?7",
                params![
                    s.id.to_bytes(),
                    s.org.to_bytes(),
                    s.name,
                    s.zone,
                    s.rotations,
                    s.updated_at.as_microsecond(),
                    expected_version
                ],
            )?;
            if n == 1 {
                append_leaves(&tx, &audit)?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_schedule(&self, org: OrgId, id: ScheduleId, audit: &[AuditRecord]) -> Result<bool, StoreError> {
        let audit = audit.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "DELETE FROM oncall_schedules WHERE id = ?1 AND org_id = ?2",
                params![id.to_bytes(), org.to_bytes()],
            )?;
            if n == 1 {
                append_leaves(&tx, &audit)?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn schedules(&self, org: OrgId, role: Option<OnCallRoleId>) -> Result<Vec<StoredSchedule>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {SCHEDULE_COLS} FROM oncall_schedules WHERE org_id = ?1 AND (?2 IS NULL OR role_id = ?2)
                 ORDER BY created_at, id"
            ))?;
            let rows = st.query_map(params![org.to_bytes(), role.map(|r| r.to_bytes())], schedule)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn overrides(&self, schedules: &[ScheduleId]) -> Result<Vec<StoredOverride>, StoreError> {
        let ids = schedules.to_vec();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {OVERRIDE_COLS} FROM oncall_overrides WHERE schedule_id = ?1 ORDER BY start_at, id"
            ))?;
            let mut out = Vec::new();
            for id in ids {
                let rows = st.query_map([id.to_bytes()], override_row)?;
                for r in rows {
                    out.push(r?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn change_overrides(
        &self,
        org: OrgId,
        schedule: ScheduleId,
        expected_version: Option<i64>,
        remove: &[OverrideId],
        add: &[StoredOverride],
        audit: &[AuditRecord],
    ) -> Result<Option<usize>, StoreError> {
        let (remove, add, audit) = (remove.to_vec(), add.to_vec(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let bumped = tx.execute(
                "UPDATE oncall_schedules SET version = version + 1
                 WHERE id = ?1 AND org_id = ?2 AND (?3 IS NULL OR version = ?3)",
                params![schedule.to_bytes(), org.to_bytes(), expected_version],
            )?;
            if bumped == 0 {
                return Ok(None);
            }
            let mut removed = 0;
            {
                let mut st = tx.prepare_cached("DELETE FROM oncall_overrides WHERE id = ?1 AND schedule_id = ?2")?;
                for id in &remove {
                    removed += st.execute(params![id.to_bytes(), schedule.to_bytes()])?;
                }
            }
            for o in &add {
                insert_override(&tx, &StoredOverride { schedule, ..o.clone() })?;
            }
            if removed == 0 && add.is_empty() {
                // Nothing changed: no record, and the version stays where it was.
                return Ok(Some(0));
            }
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(Some(removed))
        })
        .await
    }

    async fn coverage_state(&self, org: OrgId, ending_after: Timestamp) -> Result<CoverageState, StoreError> {
        self.read(move |c| {
            // One read transaction: the version and the rows it stands for.
            let tx = c.transaction()?;
            let version: i64 = tx
                .prepare_cached("SELECT version FROM oncall_coverage_versions WHERE org_id = ?1")?
                .query_row([org.to_bytes()], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            let coverages = {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {COVERAGE_COLS} FROM oncall_coverages WHERE org_id = ?1 AND end_at > ?2
                     ORDER BY start_at, id"
                ))?;
                let rows = st.query_map(params![org.to_bytes(), ending_after.as_microsecond()], coverage)?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            Ok(CoverageState { version, coverages })
        })
        .await
    }

    async fn add_coverage(
        &self,
        cov: &StoredCoverage,
        expected_version: i64,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let (cov, audit) = (cov.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: i64 = tx
                .prepare_cached("SELECT version FROM oncall_coverage_versions WHERE org_id = ?1")?
                .query_row([cov.org.to_bytes()], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            if current != expected_version {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO oncall_coverage_versions (org_id, version) VALUES (?1, 1)
                 ON CONFLICT (org_id) DO UPDATE SET version = version + 1",
                [cov.org.to_bytes()],
            )?;
            tx.execute(
                &format!("INSERT INTO oncall_coverages ({COVERAGE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                params![
                    cov.id.to_bytes(),
                    cov.org.to_bytes(),
                    cov.covered.to_bytes(),
                    cov.by.to_bytes(),
                    cov.start.as_microsecond(),
                    cov.end.as_microsecond(),
                    cov.created_by.map(|u| u.to_bytes()),
                    cov.created_at.as_microsecond(),
                ],
            )?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn remove_coverage(
        &self,
        org: OrgId,
        id: CoverageId,
        audit: &[AuditRecord],
    ) -> Result<Option<StoredCoverage>, StoreError> {
        let audit = audit.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let removed = tx
                .prepare_cached(&format!(
                    "DELETE FROM oncall_coverages WHERE id = ?1 AND org_id = ?2 RETURNING {COVERAGE_COLS}"
                ))?
                .query_row(params![id.to_bytes(), org.to_bytes()], coverage)
                .optional()?;
            if removed.is_some() {
                append_leaves(&tx, &audit)?;
            }
            tx.commit()?;
            Ok(removed)
        })
        .await
    }

    async fn role_conversation(
        &self,
        role: OnCallRoleId,
        sender: UserId,
    ) -> Result<Option<ConversationId>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT conversation_id FROM oncall_conversations WHERE role_id = ?1 AND sender_id = ?2",
            )?
            .query_row([role.to_bytes(), sender.to_bytes()], |r| codec::conversation_id(r, 0))
            .optional()?)
        })
        .await
    }

    async fn link_role_conversation(
        &self,
        org: OrgId,
        role: OnCallRoleId,
        sender: UserId,
        conversation: ConversationId,
        replacing: Option<ConversationId>,
        now: Timestamp,
    ) -> Result<ConversationId, StoreError> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO oncall_conversations (role_id, sender_id, conversation_id, org_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (role_id, sender_id) DO UPDATE SET conversation_id = excluded.conversation_id,
                   created_at = excluded.created_at
                 WHERE oncall_conversations.conversation_id = ?6",
                params![
                    role.to_bytes(),
                    sender.to_bytes(),
                    conversation.to_bytes(),
                    org.to_bytes(),
                    now.as_microsecond(),
                    replacing.map(|r| r.to_bytes()),
                ],
            )?;
            let linked = tx
                .prepare_cached(
                    "SELECT conversation_id FROM oncall_conversations WHERE role_id = ?1 AND sender_id = ?2",
                )?
                .query_row([role.to_bytes(), sender.to_bytes()], |r| codec::conversation_id(r, 0))?;
            tx.commit()?;
            Ok(linked)
        })
        .await
    }

    async fn conversation_role(&self, conversation: ConversationId) -> Result<Option<OnCallRoleId>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT role_id FROM oncall_conversations WHERE conversation_id = ?1 LIMIT 1")?
                .query_row([conversation.to_bytes()], |r| codec::id(r, 0, OnCallRoleId::from_slice))
                .optional()?)
        })
        .await
    }

    async fn record_resolution(&self, res: &RoleResolution, audit: &[AuditRecord]) -> Result<bool, StoreError> {
        let (r, audit) = (res.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                &format!(
                    "INSERT INTO role_resolutions ({RESOLUTION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (dedupe) DO NOTHING"
                ),
                params![
                    r.id.as_bytes().to_vec(),
                    r.org.to_bytes(),
                    r.role.to_bytes(),
                    r.message.to_bytes(),
                    r.conversation.to_bytes(),
                    r.kind.as_str(),
                    r.at.as_microsecond(),
                    r.holders,
                    r.dedupe,
                ],
            )?;
            if n == 1 {
                append_leaves(&tx, &audit)?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn resolutions(&self, message: MessageId) -> Result<Vec<RoleResolution>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {RESOLUTION_COLS} FROM role_resolutions WHERE message_id = ?1 ORDER BY at, id"
            ))?;
            let rows = st.query_map([message.to_bytes()], resolution)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn open_role_items(
        &self,
        since: Timestamp,
        after: Option<(Timestamp, MessageId)>,
        limit: u32,
    ) -> Result<Vec<OpenItem>, StoreError> {
        let (after_at, after_id) = match after {
            Some((t, m)) => (Some(t.as_microsecond()), Some(m.to_bytes())),
            None => (None, None),
        };
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT oc.org_id, oc.role_id, m.conversation_id, m.id, m.sender_id, m.created_at
                 FROM oncall_conversations oc
                 JOIN messages m ON m.conversation_id = oc.conversation_id
                   AND m.priority <> 'routine' AND m.recalled_at IS NULL AND m.created_at >= ?1
                 WHERE m.removed_at IS NULL
                   AND (?2 IS NULL OR m.created_at > ?2 OR (m.created_at = ?2 AND m.id > ?3))
                   AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.message_id = m.id
                                    AND a.response IN ('accept', 'call_back', 'done'))
                 ORDER BY m.created_at, m.id LIMIT ?4",
            )?;
            let rows = st.query_map(params![since.as_microsecond(), after_at, after_id, i64::from(limit)], |r| {
                Ok(OpenItem {
                    org: codec::id(r, 0, OrgId::from_slice)?,
                    role: codec::id(r, 1, OnCallRoleId::from_slice)?,
                    conversation: codec::conversation_id(r, 2)?,
                    message: codec::message_id(r, 3)?,
                    sender: codec::user_id(r, 4)?,
                    created_at: codec::ts(r, 5)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
