//! The production store: PostgreSQL, shared by several `medhub serve` nodes.
//!
//! Batches load and write with set-based statements (arrays and `UNNEST`), pipelined on one
//! connection, so a batch of hundreds of commands costs a handful of round trips. Commits run
//! with `synchronous_commit = on`. A transaction-scoped advisory lock serializes event-log
//! writers across nodes, which keeps event ids gap-free and in commit order, and each commit
//! sends a `NOTIFY` so other nodes pick up new events at once.

mod batch;
mod codec;
mod escalation;
mod handoff;
mod identity;
mod oncall;
mod patients;
mod presence;
mod read;
mod retention;
mod tls;

use async_trait::async_trait;
use deadpool_postgres::{Config, ManagerConfig, Pool, PoolConfig, RecyclingMethod, Runtime};
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::model::{Conversation, Member, Message, Org, Session, User};
use medhub_core::plan::{Command, Limits, Plan, Revision};
use medhub_core::{ConversationId, Event, EventId, MessageId, OrgId, SessionId, UserId};
use tokio_postgres::NoTls;

use crate::{Backend, ConversationView, HistoryPage, RecipientRow, Store, StoreError, UserRecord};

/// Advisory lock that serializes writers of the event log (and migrations) across nodes.
pub(crate) const EVENT_LOG_LOCK: i64 = 0x6d65_6468_7562;
/// Channel on which each commit announces its last event id.
pub const NOTIFY_CHANNEL: &str = "medhub_events";

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_sessions_revoked_index.sql")),
    (3, include_str!("../../migrations/postgres/0003_identity.sql")),
    (4, include_str!("../../migrations/postgres/0004_sso.sql")),
    (5, include_str!("../../migrations/postgres/0005_roles.sql")),
    (6, include_str!("../../migrations/postgres/0006_audit.sql")),
    (7, include_str!("../../migrations/postgres/0007_passkeys.sql")),
    (8, include_str!("../../migrations/postgres/0008_saml.sql")),
    (9, include_str!("../../migrations/postgres/0009_patient_scope.sql")),
    (10, include_str!("../../migrations/postgres/0010_orgs.sql")),
    (11, include_str!("../../migrations/postgres/0011_org_roles.sql")),
    (12, include_str!("../../migrations/postgres/0012_audit_log.sql")),
    (13, include_str!("../../migrations/postgres/0013_audit_fields.sql")),
    (14, include_str!("../../migrations/postgres/0014_retention.sql")),
    (15, include_str!("../../migrations/postgres/0015_oncall.sql")),
    (16, include_str!("../../migrations/postgres/0016_escalation.sql")),
    (17, include_str!("../../migrations/postgres/0017_handoff.sql")),
    (18, include_str!("../../migrations/postgres/0018_presence.sql")),
];

/// The PostgreSQL-backed store.
pub struct PgStore {
    pool: Pool,
    url: String,
}

impl PgStore {
    /// Connects a pool of `pool_size` connections (the batch writer takes one at a time).
    /// The URL's `sslmode` (`disable`, `require`, `verify-ca`, `verify-full`) and
    /// `sslrootcert` are libpq's; see [`tls`].
    pub async fn open(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let parsed = tls::parse(url)?;
        let mut cfg = Config::new();
        cfg.url = Some(parsed.url.clone());
        cfg.manager = Some(ManagerConfig { recycling_method: RecyclingMethod::Fast });
        cfg.pool = Some(PoolConfig::new(pool_size.max(2)));
        let pool = match tls::connector(&parsed)? {
            Some(tls) => cfg.create_pool(Some(Runtime::Tokio1), tls),
            None => cfg.create_pool(Some(Runtime::Tokio1), NoTls),
        }
        .map_err(|e| StoreError::Pool(e.to_string()))?;
        // Fail fast on a wrong URL instead of at the first request.
        drop(pool.get().await?);
        Ok(Self { pool, url: url.to_owned() })
    }

    /// The connection URL, for a dedicated `LISTEN` connection.
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENT_LOG_LOCK]).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let current: i64 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.try_get(0)?;
        let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if current > known {
            return Err(StoreError::SchemaTooNew { found: current, known });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[version, &Timestamp::now().as_microsecond()],
            )
            .await?;
            tracing::info!(version, "applied postgres migration");
        }
        // Records from before the audit log (0012) become its first leaves.
        identity::append_leaves(&*tx, &[]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    async fn apply_batch_audited(
        &self,
        cmds: Vec<Command>,
        audit: Vec<Option<AuditRecord>>,
        now: Timestamp,
        limits: Limits,
    ) -> Result<Plan, StoreError> {
        let mut client = self.pool.get().await?;
        batch::apply(&mut client, &cmds, &audit, now, &limits).await
    }

    async fn org(&self) -> Result<Option<Org>, StoreError> {
        read::org(&*self.pool.get().await?).await
    }

    async fn orgs(&self) -> Result<Vec<Org>, StoreError> {
        read::orgs(&*self.pool.get().await?).await
    }

    async fn bootstrap(&self, org: &Org, admin: &UserRecord) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        batch::bootstrap(&mut client, org, admin).await
    }

    async fn create_org(&self, org: &Org, admin: &UserRecord, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        batch::create_org(&mut client, org, admin, audit).await
    }

    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        batch::insert_user(&**self.pool.get().await?, user).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(read::user_record(&*self.pool.get().await?, id).await?.map(|r| r.user))
    }

    async fn user_record_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        read::user_record_by_username(&*self.pool.get().await?, username).await
    }

    async fn user_record(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        read::user_record(&*self.pool.get().await?, id).await
    }

    async fn users(&self, ids: &[UserId]) -> Result<Vec<User>, StoreError> {
        read::users(&*self.pool.get().await?, ids).await
    }

    async fn list_users(&self, org: OrgId, after: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError> {
        read::list_users(&*self.pool.get().await?, org, after, limit).await
    }

    async fn set_password(
        &self,
        id: UserId,
        hash: &str,
        must_change: bool,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "UPDATE users SET password_hash = $2, must_change_password = $3 WHERE id = $1",
            &[&id.as_uuid(), &hash, &must_change],
        )
        .await?;
        identity::append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_user_active(
        &self,
        id: UserId,
        active: bool,
        now: Timestamp,
        audit: &[AuditRecord],
        session_end: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        batch::set_user_active(&mut client, id, active, now, audit, session_end).await
    }

    async fn create_session(&self, session: &Session, audit: &[AuditRecord]) -> Result<(), StoreError> {
        batch::create_session(&mut *self.pool.get().await?, session, audit).await
    }

    async fn session_by_token_hash(&self, hash: &[u8; 32]) -> Result<Option<(Session, User)>, StoreError> {
        read::session_by_token_hash(&*self.pool.get().await?, hash).await
    }

    async fn revoked_sessions_since(&self, since: Timestamp) -> Result<Vec<SessionId>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id FROM sessions WHERE revoked_at IS NOT NULL AND revoked_at >= $1",
                &[&since.as_microsecond()],
            )
            .await?;
        rows.iter().map(|r| Ok(SessionId::from_uuid(codec::uuid(r, 0)?))).collect()
    }

    async fn last_event_id(&self) -> Result<EventId, StoreError> {
        let client = self.pool.get().await?;
        let row = client.query_one("SELECT COALESCE(MAX(id), 0) FROM events", &[]).await?;
        codec::event_id(&row, 0)
    }

    async fn events_range(&self, after: EventId, up_to: EventId, limit: u32) -> Result<Vec<Event>, StoreError> {
        read::events_range(&*self.pool.get().await?, after, up_to, limit).await
    }

    async fn events_for_user(
        &self,
        user: UserId,
        after: EventId,
        up_to: EventId,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        read::events_for_user(&*self.pool.get().await?, user, after, up_to, limit).await
    }

    async fn members_before(&self, conversation: ConversationId, at: EventId) -> Result<Vec<UserId>, StoreError> {
        read::members_before(&*self.pool.get().await?, conversation, at).await
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>, StoreError> {
        read::conversation(&*self.pool.get().await?, id).await
    }

    async fn member(&self, conversation: ConversationId, user: UserId) -> Result<Option<Member>, StoreError> {
        read::member(&*self.pool.get().await?, conversation, user).await
    }

    async fn members(&self, conversation: ConversationId) -> Result<Vec<Member>, StoreError> {
        read::members(&*self.pool.get().await?, conversation).await
    }

    async fn conversations_for_user(&self, user: UserId) -> Result<Vec<ConversationView>, StoreError> {
        read::conversations_for_user(&*self.pool.get().await?, user).await
    }

    async fn messages(
        &self,
        conversation: ConversationId,
        page: HistoryPage,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        read::messages(&*self.pool.get().await?, conversation, page, limit).await
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        read::message(&*self.pool.get().await?, id).await
    }

    async fn revisions(&self, id: MessageId) -> Result<Vec<Revision>, StoreError> {
        read::revisions(&*self.pool.get().await?, id).await
    }

    async fn recipients(&self, message: &Message) -> Result<Vec<RecipientRow>, StoreError> {
        read::recipients(&*self.pool.get().await?, message).await
    }
}
