//! On-call roles, schedules, overrides, coverage, role conversations and resolutions in
//! PostgreSQL. A version check is an `UPDATE … WHERE version = $n`: a concurrent writer waits
//! for the row lock and then finds the version moved, so only one of two racing changes
//! applies.

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::{ConversationId, CoverageId, MessageId, OnCallRoleId, OrgId, OverrideId, ScheduleId, UserId};
use tokio_postgres::Row;
use uuid::Uuid;

use super::codec::us;
use super::identity::append_leaves;
use super::{PgStore, codec};
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

fn opt_user(u: Option<UserId>) -> Option<Uuid> {
    u.map(|u| u.as_uuid())
}

fn role(r: &Row) -> Result<OnCallRole, StoreError> {
    Ok(OnCallRole {
        id: OnCallRoleId::from_uuid(codec::uuid(r, 0)?),
        org: OrgId::from_uuid(codec::uuid(r, 1)?),
        key: r.try_get(2)?,
        name: r.try_get(3)?,
        kind: codec::parse(r, 4, OnCallKind::parse)?,
        department: r.try_get(5)?,
        created_by: codec::opt_uuid(r, 6)?.map(UserId::from_uuid),
        created_at: codec::ts(r, 7)?,
    })
}

fn schedule(r: &Row) -> Result<StoredSchedule, StoreError> {
    Ok(StoredSchedule {
        id: ScheduleId::from_uuid(codec::uuid(r, 0)?),
        org: OrgId::from_uuid(codec::uuid(r, 1)?),
        role: OnCallRoleId::from_uuid(codec::uuid(r, 2)?),
        name: r.try_get(3)?,
        zone: r.try_get(4)?,
        rotations: r.try_get(5)?,
        version: r.try_get(6)?,
        created_by: codec::opt_uuid(r, 7)?.map(UserId::from_uuid),
        created_at: codec::ts(r, 8)?,
        updated_at: codec::ts(r, 9)?,
    })
}

fn override_row(r: &Row) -> Result<StoredOverride, StoreError> {
    Ok(StoredOverride {
        id: OverrideId::from_uuid(codec::uuid(r, 0)?),
        schedule: ScheduleId::from_uuid(codec::uuid(r, 1)?),
        user: codec::user_id(r, 2)?,
        replaces: codec::opt_uuid(r, 3)?.map(UserId::from_uuid),
        start: codec::ts(r, 4)?,
        end: codec::ts(r, 5)?,
        source: codec::parse(r, 6, OverrideSource::parse)?,
        created_by: codec::opt_uuid(r, 7)?.map(UserId::from_uuid),
        created_at: codec::ts(r, 8)?,
    })
}

fn coverage(r: &Row) -> Result<StoredCoverage, StoreError> {
    Ok(StoredCoverage {
        id: CoverageId::from_uuid(codec::uuid(r, 0)?),
        org: OrgId::from_uuid(codec::uuid(r, 1)?),
        covered: codec::user_id(r, 2)?,
        by: codec::user_id(r, 3)?,
        start: codec::ts(r, 4)?,
        end: codec::ts(r, 5)?,
        created_by: codec::opt_uuid(r, 6)?.map(UserId::from_uuid),
        created_at: codec::ts(r, 7)?,
    })
}

fn resolution(r: &Row) -> Result<RoleResolution, StoreError> {
    Ok(RoleResolution {
        id: codec::uuid(r, 0)?,
        org: OrgId::from_uuid(codec::uuid(r, 1)?),
        role: OnCallRoleId::from_uuid(codec::uuid(r, 2)?),
        message: codec::message_id(r, 3)?,
        conversation: codec::conversation_id(r, 4)?,
        kind: codec::parse(r, 5, ResolutionKind::parse)?,
        at: codec::ts(r, 6)?,
        holders: r.try_get(7)?,
        dedupe: r.try_get(8)?,
    })
}

#[async_trait]
impl OnCallStore for PgStore {
    async fn create_oncall_role(&self, r: &OnCallRole, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                &format!(
                    "INSERT INTO oncall_roles ({ROLE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
                ),
                &[
                    &r.id.as_uuid(),
                    &r.org.as_uuid(),
                    &r.key,
                    &r.name,
                    &r.kind.as_str(),
                    &r.department,
                    &opt_user(r.created_by),
                    &us(r.created_at),
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict("an on-call role with this key exists"));
        }
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_oncall_role(&self, r: &OnCallRole, audit: &[AuditRecord]) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE oncall_roles SET name = $3, kind = $4, department = $5 WHERE id = $1 AND org_id = $2",
                &[&r.id.as_uuid(), &r.org.as_uuid(), &r.name, &r.kind.as_str(), &r.department],
            )
            .await?;
        if n == 1 {
            append_leaves(&*tx, audit).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn oncall_roles(&self, org: OrgId) -> Result<Vec<OnCallRole>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(&format!("SELECT {ROLE_COLS} FROM oncall_roles WHERE org_id = $1 ORDER BY key"), &[&org.as_uuid()])
            .await?;
        rows.iter().map(role).collect()
    }

    async fn oncall_role(&self, org: OrgId, key: &str) -> Result<Option<OnCallRole>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                &format!("SELECT {ROLE_COLS} FROM oncall_roles WHERE org_id = $1 AND key = $2"),
                &[&org.as_uuid(), &key],
            )
            .await?;
        row.as_ref().map(role).transpose()
    }

    async fn oncall_role_by_id(&self, id: OnCallRoleId) -> Result<Option<OnCallRole>, StoreError> {
        let c = self.pool.get().await?;
        let row = c.query_opt(&format!("SELECT {ROLE_COLS} FROM oncall_roles WHERE id = $1"), &[&id.as_uuid()]).await?;
        row.as_ref().map(role).transpose()
    }

    async fn create_schedule(&self, s: &StoredSchedule, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute(
            &format!("INSERT INTO oncall_schedules ({SCHEDULE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
            &[
                &s.id.as_uuid(),
                &s.org.as_uuid(),
                &s.role.as_uuid(),
                &s.name,
                &s.zone,
                &s.rotations,
                &s.version,
                &opt_user(s.created_by),
                &us(s.created_at),
                &us(s.updated_at),
            ],
        )
        .await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_schedule(
        &self,
        s: &StoredSchedule,
        expected_version: i64,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE oncall_schedules SET name = $3, zone = $4, rotations = $5, updated_at = $6, version = version + 1
                 WHERE id = $1 AND org_id = $2 AND version = $7",
                &[&s.id.as_uuid(), &s.org.as_uuid(), &s.name, &s.zone, &s.rotations, &us(s.updated_at), &expected_version],
            )
            .await?;
        if n == 1 {
            append_leaves(&*tx, audit).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn delete_schedule(&self, org: OrgId, id: ScheduleId, audit: &[AuditRecord]) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute("DELETE FROM oncall_schedules WHERE id = $1 AND org_id = $2", &[&id.as_uuid(), &org.as_uuid()])
            .await?;
        if n == 1 {
            append_leaves(&*tx, audit).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn schedules(&self, org: OrgId, role: Option<OnCallRoleId>) -> Result<Vec<StoredSchedule>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {SCHEDULE_COLS} FROM oncall_schedules WHERE org_id = $1 AND ($2::uuid IS NULL OR role_id = $2)
                     ORDER BY created_at, id"
                ),
                &[&org.as_uuid(), &role.map(|r| r.as_uuid())],
            )
            .await?;
        rows.iter().map(schedule).collect()
    }

    async fn overrides(&self, schedules: &[ScheduleId]) -> Result<Vec<StoredOverride>, StoreError> {
        let c = self.pool.get().await?;
        let ids: Vec<Uuid> = schedules.iter().map(|s| s.as_uuid()).collect();
        let rows = c
            .query(
                &format!(
                    "SELECT {OVERRIDE_COLS} FROM oncall_overrides WHERE schedule_id = ANY($1)
                     ORDER BY schedule_id, start_at, id"
                ),
                &[&ids],
            )
            .await?;
        let mut out = rows.iter().map(override_row).collect::<Result<Vec<_>, _>>()?;
        // In the order the schedules were asked for, as SQLite answers.
        out.sort_by_key(|o| (schedules.iter().position(|s| *s == o.schedule), o.start, o.id));
        Ok(out)
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
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let bumped = tx
            .execute(
                "UPDATE oncall_schedules SET version = version + 1
                 WHERE id = $1 AND org_id = $2 AND ($3::bigint IS NULL OR version = $3)",
                &[&schedule.as_uuid(), &org.as_uuid(), &expected_version],
            )
            .await?;
        if bumped == 0 {
            return Ok(None);
        }
        let remove: Vec<Uuid> = remove.iter().map(|o| o.as_uuid()).collect();
        let removed = tx
            .execute(
                "DELETE FROM oncall_overrides WHERE id = ANY($1) AND schedule_id = $2",
                &[&remove, &schedule.as_uuid()],
            )
            .await?;
        if !add.is_empty() {
            let ids: Vec<Uuid> = add.iter().map(|o| o.id.as_uuid()).collect();
            let users: Vec<Uuid> = add.iter().map(|o| o.user.as_uuid()).collect();
            let replaces: Vec<Option<Uuid>> = add.iter().map(|o| opt_user(o.replaces)).collect();
            let starts: Vec<i64> = add.iter().map(|o| us(o.start)).collect();
            let ends: Vec<i64> = add.iter().map(|o| us(o.end)).collect();
            let sources: Vec<&str> = add.iter().map(|o| o.source.as_str()).collect();
            let by: Vec<Option<Uuid>> = add.iter().map(|o| opt_user(o.created_by)).collect();
            let at: Vec<i64> = add.iter().map(|o| us(o.created_at)).collect();
            tx.execute(
                &format!(
                    "INSERT INTO oncall_overrides ({OVERRIDE_COLS})
                     SELECT i, $2, u, r, s, e, src, b, a
                     FROM UNNEST($1::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::bigint[], $7::text[],
                                 $8::uuid[], $9::bigint[]) AS t(i, u, r, s, e, src, b, a)"
                ),
                &[&ids, &schedule.as_uuid(), &users, &replaces, &starts, &ends, &sources, &by, &at],
            )
            .await?;
        }
        if removed == 0 && add.is_empty() {
            // Nothing changed: no record, and the version stays where it was (rolled back).
            return Ok(Some(0));
        }
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(Some(usize::try_from(removed).unwrap_or(usize::MAX)))
    }

    async fn coverage_state(&self, org: OrgId, ending_after: Timestamp) -> Result<CoverageState, StoreError> {
        let mut c = self.pool.get().await?;
        // One snapshot: the version and the rows it stands for.
        let tx = c.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).start().await?;
        let version: i64 = tx
            .query_opt("SELECT version FROM oncall_coverage_versions WHERE org_id = $1", &[&org.as_uuid()])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
        let rows = tx
            .query(
                &format!(
                    "SELECT {COVERAGE_COLS} FROM oncall_coverages WHERE org_id = $1 AND end_at > $2 ORDER BY start_at, id"
                ),
                &[&org.as_uuid(), &us(ending_after)],
            )
            .await?;
        let coverages = rows.iter().map(coverage).collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        Ok(CoverageState { version, coverages })
    }

    async fn add_coverage(
        &self,
        cov: &StoredCoverage,
        expected_version: i64,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Raises the version from the expected one, or creates it at 1 from none (0). A racing
        // writer waits on the row (or the key) and then finds the version moved.
        let n = tx
            .execute(
                "INSERT INTO oncall_coverage_versions AS v (org_id, version)
                 SELECT $1, 1 WHERE $2::bigint = 0
                 ON CONFLICT (org_id) DO UPDATE SET version = v.version + 1 WHERE v.version = $2::bigint",
                &[&cov.org.as_uuid(), &expected_version],
            )
            .await?;
        let n = if n == 0 && expected_version != 0 {
            tx.execute(
                "UPDATE oncall_coverage_versions SET version = version + 1 WHERE org_id = $1 AND version = $2",
                &[&cov.org.as_uuid(), &expected_version],
            )
            .await?
        } else {
            n
        };
        if n == 0 {
            return Ok(false);
        }
        tx.execute(
            &format!("INSERT INTO oncall_coverages ({COVERAGE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            &[
                &cov.id.as_uuid(),
                &cov.org.as_uuid(),
                &cov.covered.as_uuid(),
                &cov.by.as_uuid(),
                &us(cov.start),
                &us(cov.end),
                &opt_user(cov.created_by),
                &us(cov.created_at),
            ],
        )
        .await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn remove_coverage(
        &self,
        org: OrgId,
        id: CoverageId,
        audit: &[AuditRecord],
    ) -> Result<Option<StoredCoverage>, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                &format!("DELETE FROM oncall_coverages WHERE id = $1 AND org_id = $2 RETURNING {COVERAGE_COLS}"),
                &[&id.as_uuid(), &org.as_uuid()],
            )
            .await?;
        let removed = row.as_ref().map(coverage).transpose()?;
        if removed.is_some() {
            append_leaves(&*tx, audit).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn role_conversation(
        &self,
        role: OnCallRoleId,
        sender: UserId,
    ) -> Result<Option<ConversationId>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT conversation_id FROM oncall_conversations WHERE role_id = $1 AND sender_id = $2",
                &[&role.as_uuid(), &sender.as_uuid()],
            )
            .await?;
        row.as_ref().map(|r| codec::conversation_id(r, 0)).transpose()
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
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO oncall_conversations AS oc (role_id, sender_id, conversation_id, org_id, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (role_id, sender_id) DO UPDATE SET conversation_id = excluded.conversation_id,
               created_at = excluded.created_at
             WHERE oc.conversation_id = $6",
            &[
                &role.as_uuid(),
                &sender.as_uuid(),
                &conversation.as_uuid(),
                &org.as_uuid(),
                &us(now),
                &replacing.map(|r| r.as_uuid()),
            ],
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT conversation_id FROM oncall_conversations WHERE role_id = $1 AND sender_id = $2",
                &[&role.as_uuid(), &sender.as_uuid()],
            )
            .await?;
        let linked = codec::conversation_id(&row, 0)?;
        tx.commit().await?;
        Ok(linked)
    }

    async fn conversation_role(&self, conversation: ConversationId) -> Result<Option<OnCallRoleId>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT role_id FROM oncall_conversations WHERE conversation_id = $1 LIMIT 1",
                &[&conversation.as_uuid()],
            )
            .await?;
        row.as_ref().map(|r| codec::uuid(r, 0).map(OnCallRoleId::from_uuid)).transpose()
    }

    async fn record_resolution(&self, r: &RoleResolution, audit: &[AuditRecord]) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                &format!(
                    "INSERT INTO role_resolutions ({RESOLUTION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (dedupe) DO NOTHING"
                ),
                &[
                    &r.id,
                    &r.org.as_uuid(),
                    &r.role.as_uuid(),
                    &r.message.as_uuid(),
                    &r.conversation.as_uuid(),
                    &r.kind.as_str(),
                    &us(r.at),
                    &r.holders,
                    &r.dedupe,
                ],
            )
            .await?;
        if n == 1 {
            append_leaves(&*tx, audit).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn resolutions(&self, message: MessageId) -> Result<Vec<RoleResolution>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!("SELECT {RESOLUTION_COLS} FROM role_resolutions WHERE message_id = $1 ORDER BY at, id"),
                &[&message.as_uuid()],
            )
            .await?;
        rows.iter().map(resolution).collect()
    }

    async fn open_role_items(
        &self,
        since: Timestamp,
        after: Option<(Timestamp, MessageId)>,
        limit: u32,
    ) -> Result<Vec<OpenItem>, StoreError> {
        let c = self.pool.get().await?;
        let (after_at, after_id) = match after {
            Some((t, m)) => (Some(us(t)), Some(m.as_uuid())),
            None => (None, None),
        };
        let rows = c
            .query(
                "SELECT oc.org_id, oc.role_id, m.conversation_id, m.id, m.sender_id, m.created_at
                 FROM oncall_conversations oc
                 JOIN messages m ON m.conversation_id = oc.conversation_id
                   AND m.priority <> 'routine' AND m.recalled_at IS NULL AND m.created_at >= $1
                 WHERE m.removed_at IS NULL
                   AND ($2::bigint IS NULL OR m.created_at > $2 OR (m.created_at = $2 AND m.id > $3::uuid))
                   AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.message_id = m.id
                                    AND a.response IN ('accept', 'call_back', 'done'))
                 ORDER BY m.created_at, m.id LIMIT $4",
                &[&us(since), &after_at, &after_id, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(OpenItem {
                    org: OrgId::from_uuid(codec::uuid(r, 0)?),
                    role: OnCallRoleId::from_uuid(codec::uuid(r, 1)?),
                    conversation: codec::conversation_id(r, 2)?,
                    message: codec::message_id(r, 3)?,
                    sender: codec::user_id(r, 4)?,
                    created_at: codec::ts(r, 5)?,
                })
            })
            .collect()
    }
}
