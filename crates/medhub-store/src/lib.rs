//! medhub storage: one [`Store`] interface with an embedded SQLite and a PostgreSQL
//! implementation.
//!
//! The write path is a single entry point, [`Store::apply_batch`]: it loads what a batch of
//! commands needs, lets the pure planner (`medhub_core::plan`) decide, writes the effects and
//! commits once. Event ids are assigned under the store's write lock (SQLite's single writer,
//! a PostgreSQL advisory lock), so they are gap-free and in commit order.
//!
//! Users and sessions are written directly: they are not part of the conversation event log.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::model::{Ack, Conversation, Member, Message, Org, Session, User};
use medhub_core::plan::{Command, Limits, Plan, Revision};
use medhub_core::{ConversationId, Event, EventId, MessageId, OrgId, Seq, SessionId, UserId};

pub mod audit;
mod columns;
mod error;
pub mod escalation;
pub mod handoff;
pub mod identity;
pub mod oncall;
pub mod patients;
pub mod postgres;
pub mod presence;
pub mod retention;
mod sql;
pub mod sqlite;
pub mod testdb;

pub use error::StoreError;
pub use escalation::{
    AttemptResult, Closed, ContactPoints, DeliveryJob, DueTimer, Escalation, EscalationStore, FireInput, Fired,
    PushSubscriptionRow, StoredEscalationPolicy, TimerKind, TraceRow,
};
pub use handoff::HandoffStore;
pub use identity::{
    AuditEntry, AuditHead, AuthFlow, Ended, IdentityStore, PasskeyDeletion, PasskeyRecord, StoredTreeHead, TotpRecord,
};
pub use oncall::{
    CoverageState, OnCallKind, OnCallRole, OnCallStore, OpenItem, OverrideSource, ResolutionKind, RoleResolution,
    StoredCoverage, StoredOverride, StoredSchedule,
};
pub use patients::{BreakGlassGrant, CareTeamMember, PatientStore};
pub use presence::PresenceStore;
pub use retention::{
    Candidate, CandidateCursor, ChangeCount, ContentChange, ErasedAccount, HoldLift, LegalHold, RetentionState,
    RetentionStore, StoredPolicy,
};

pub(crate) use columns::{EventColumns, EventRow};

/// Shared handle to whichever store is configured.
pub type DynStore = Arc<dyn Store>;

/// Which database backs the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the data lives.
#[derive(Clone, Debug)]
pub enum Location {
    /// The embedded default: `medhub.db` inside this directory.
    Sqlite { data_dir: PathBuf },
    /// A PostgreSQL connection URL and the size of the read pool.
    Postgres { url: String, pool_size: usize },
}

/// Opens the store. Does not migrate: call [`Store::migrate`].
pub async fn open(location: &Location) -> Result<DynStore, StoreError> {
    Ok(match location {
        Location::Sqlite { data_dir } => Arc::new(sqlite::SqliteStore::open(data_dir).await?),
        Location::Postgres { url, pool_size } => Arc::new(postgres::PgStore::open(url, *pool_size).await?),
    })
}

/// A user row with its credentials. Only the auth service sees this.
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub user: User,
    /// Argon2id PHC string; `None` for accounts that cannot sign in with a password.
    pub password_hash: Option<String>,
    pub must_change_password: bool,
}

/// A conversation as one member sees it in its list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationView {
    pub conversation: Conversation,
    pub me: Member,
    /// Messages from others after the member's read watermark, recalled ones excluded.
    pub unread: u64,
}

/// Which page of history to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryPage {
    /// The newest messages.
    Latest,
    /// Messages with a sequence number below this one, newest first in storage order.
    Before(Seq),
    /// Messages with a sequence number above this one.
    After(Seq),
}

/// One recipient of a message, for the sender's status view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientRow {
    pub user: UserId,
    /// The current membership, or `None` if the recipient has since left.
    pub member: Option<Member>,
    pub ack: Option<Ack>,
}

/// The storage interface. Every method is one transaction.
#[async_trait]
pub trait Store:
    IdentityStore
    + PatientStore
    + RetentionStore
    + OnCallStore
    + EscalationStore
    + HandoffStore
    + PresenceStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;

    /// Applies pending schema migrations. Safe to run concurrently from several nodes.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    // --- the event-logged write path -------------------------------------------------------

    /// Plans and commits a batch of commands in one durable transaction. The returned plan's
    /// effects hold the committed events, in order.
    async fn apply_batch(&self, cmds: Vec<Command>, now: Timestamp, limits: Limits) -> Result<Plan, StoreError> {
        let none = vec![None; cmds.len()];
        self.apply_batch_audited(cmds, none, now, limits).await
    }

    /// [`apply_batch`](Store::apply_batch), where `audit[i]` is the record template of
    /// command `i`: the records of the batch's writes of patient data
    /// (`medhub_core::plan::audit::records`) are appended in the same transaction.
    async fn apply_batch_audited(
        &self,
        cmds: Vec<Command>,
        audit: Vec<Option<AuditRecord>>,
        now: Timestamp,
        limits: Limits,
    ) -> Result<Plan, StoreError>;

    // --- organization, users, sessions -----------------------------------------------------

    /// The first organization (bootstrap's), if bootstrap has run.
    async fn org(&self) -> Result<Option<Org>, StoreError>;
    /// Every organization, oldest first.
    async fn orgs(&self) -> Result<Vec<Org>, StoreError>;
    /// Creates a further organization and its first administrator, in one transaction. Fails
    /// with [`StoreError::Conflict`] when an organization has this name (letter case aside),
    /// and with [`StoreError::UsernameTaken`] when the username exists. `audit` is appended in
    /// the same transaction.
    async fn create_org(&self, org: &Org, admin: &UserRecord, audit: &[AuditRecord]) -> Result<(), StoreError>;

    /// Creates the organization and its first administrator, only if no organization exists
    /// yet. Returns `false` (and writes nothing) when another node bootstrapped first.
    async fn bootstrap(&self, org: &Org, admin: &UserRecord) -> Result<bool, StoreError>;

    /// Creates a user. Fails with [`StoreError::UsernameTaken`] on a duplicate username.
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;
    async fn user_record_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_record(&self, id: UserId) -> Result<Option<UserRecord>, StoreError>;
    async fn users(&self, ids: &[UserId]) -> Result<Vec<User>, StoreError>;
    /// An organization's users ordered by username, after `after` (for paging), at most `limit`.
    async fn list_users(&self, org: OrgId, after: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError>;
    /// Sets a user's password hash, with `audit` in the same transaction.
    async fn set_password(
        &self,
        id: UserId,
        hash: &str,
        must_change: bool,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;
    /// Activates or deactivates a user; deactivation also ends every session, each with its
    /// record from the `session_end` template. `audit` is appended in the same transaction
    /// when the user exists.
    async fn set_user_active(
        &self,
        id: UserId,
        active: bool,
        now: Timestamp,
        audit: &[AuditRecord],
        session_end: Option<&AuditRecord>,
    ) -> Result<bool, StoreError>;

    async fn create_session(&self, session: &Session, audit: &[AuditRecord]) -> Result<(), StoreError>;
    /// The unrevoked session with this token hash, with its active user. Expiry is the
    /// caller's decision (it knows the idle timeout and recent activity).
    async fn session_by_token_hash(&self, hash: &[u8; 32]) -> Result<Option<(Session, User)>, StoreError>;
    /// Sessions revoked at or after `since` (sign-out, deactivation), for closing their
    /// live connections on every node.
    async fn revoked_sessions_since(&self, since: Timestamp) -> Result<Vec<SessionId>, StoreError>;

    // --- reads ------------------------------------------------------------------------------

    /// The newest committed event id.
    async fn last_event_id(&self) -> Result<EventId, StoreError>;
    /// Every event with `after < id <= up_to`, in order, at most `limit` (publisher gap fill).
    async fn events_range(&self, after: EventId, up_to: EventId, limit: u32) -> Result<Vec<Event>, StoreError>;
    /// The events `user` must receive with `after < id <= up_to`, in order, at most `limit`
    /// (resume). Implements the rule of `medhub_core::recipients` in SQL.
    async fn events_for_user(
        &self,
        user: UserId,
        after: EventId,
        up_to: EventId,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;
    /// The members of a conversation right before event `at`: the state the event applies to.
    async fn members_before(&self, conversation: ConversationId, at: EventId) -> Result<Vec<UserId>, StoreError>;

    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>, StoreError>;
    async fn member(&self, conversation: ConversationId, user: UserId) -> Result<Option<Member>, StoreError>;
    async fn members(&self, conversation: ConversationId) -> Result<Vec<Member>, StoreError>;
    async fn conversations_for_user(&self, user: UserId) -> Result<Vec<ConversationView>, StoreError>;
    /// A page of history in ascending sequence order.
    async fn messages(
        &self,
        conversation: ConversationId,
        page: HistoryPage,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError>;
    async fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError>;
    /// Earlier revisions of a message body, oldest first.
    async fn revisions(&self, id: MessageId) -> Result<Vec<Revision>, StoreError>;
    /// The message's recipients (members at its creation, sender excluded) with their state.
    async fn recipients(&self, message: &Message) -> Result<Vec<RecipientRow>, StoreError>;
}
