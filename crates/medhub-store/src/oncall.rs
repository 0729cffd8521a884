//! Storage of on-call schedules (issue "Clinical workflows", sections 2 and 3): on-call roles
//! and teams, their schedules with overrides, coverage, the conversation between a sender and
//! a role, and the record of who each message addressed to a role went to. Both backends
//! implement [`OnCallStore`]; the rules are pure functions in `medhub_core::schedule`, and
//! docs/clinical.md describes the design.
//!
//! Every write takes the audit records of the change and appends them in its own
//! transaction: if the records cannot be stored, nothing changes. A change that turns out to
//! change nothing writes no record.
//!
//! Checks that span rows (overlapping overrides, coverage cycles) are made by the core on what
//! the service read. So a schedule has a **version**, raised by every change to it or its
//! overrides, and an organization's coverages have one too: a write names the version its
//! decision was made at and is not applied if the version moved (the service reads again and
//! decides again). Two concurrent overrides can therefore never both pass the overlap check.

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::schedule::{Coverage, Override, Target};
use medhub_core::{ConversationId, CoverageId, MessageId, OnCallRoleId, OrgId, OverrideId, ScheduleId, UserId};

use crate::StoreError;

/// Whether an on-call address names a role (one person's duty) or a team.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OnCallKind {
    Role,
    Team,
}

impl OnCallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OnCallKind::Role => "role",
            OnCallKind::Team => "team",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [OnCallKind::Role, OnCallKind::Team].into_iter().find(|k| k.as_str() == s)
    }
}

/// An on-call role or team of an organization: what schedules staff and what messages are
/// addressed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnCallRole {
    pub id: OnCallRoleId,
    pub org: OrgId,
    /// The stable address, unique in the organization (`cardiology-oncall`).
    pub key: String,
    /// What people read ("Cardiology on-call").
    pub name: String,
    pub kind: OnCallKind,
    /// The department, for reports and metrics.
    pub department: Option<String>,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
}

impl OnCallRole {
    /// The core's name for what a schedule is for.
    pub fn target(&self) -> Target {
        match self.kind {
            OnCallKind::Role => Target::Role(self.name.clone()),
            OnCallKind::Team => Target::Team(self.name.clone()),
        }
    }
}

/// A schedule as stored. The rotations are medhub-wire's canonical JSON, which the service
/// writes only after the core validated it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSchedule {
    pub id: ScheduleId,
    pub org: OrgId,
    pub role: OnCallRoleId,
    pub name: String,
    /// The IANA zone name.
    pub zone: String,
    /// The rotations (layers) as JSON.
    pub rotations: String,
    /// Raised by every change to the schedule or its overrides.
    pub version: i64,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Where an override came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OverrideSource {
    /// Added by someone who keeps the rota.
    Manual,
    /// One half of a swap of two shifts.
    Swap,
    /// An event of an imported calendar (replaced by the next import of the same window).
    Import,
}

impl OverrideSource {
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideSource::Manual => "manual",
            OverrideSource::Swap => "swap",
            OverrideSource::Import => "import",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [OverrideSource::Manual, OverrideSource::Swap, OverrideSource::Import].into_iter().find(|k| k.as_str() == s)
    }
}

/// An override of a schedule, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOverride {
    pub id: OverrideId,
    pub schedule: ScheduleId,
    pub user: UserId,
    pub replaces: Option<UserId>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub source: OverrideSource,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
}

impl StoredOverride {
    /// The core's override.
    pub fn rule(&self) -> Override {
        Override { id: self.id, user: self.user, start: self.start, end: self.end, replaces: self.replaces }
    }
}

/// A coverage as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCoverage {
    pub id: CoverageId,
    pub org: OrgId,
    pub covered: UserId,
    pub by: UserId,
    pub start: Timestamp,
    pub end: Timestamp,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
}

impl StoredCoverage {
    /// The core's coverage.
    pub fn rule(&self) -> Coverage {
        Coverage { covered: self.covered, by: self.by, start: self.start, end: self.end }
    }
}

/// An organization's coverages that had not ended at a given instant, at one version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoverageState {
    pub version: i64,
    pub coverages: Vec<StoredCoverage>,
}

/// Why a message addressed to a role went to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResolutionKind {
    /// Resolved when it was sent.
    Send,
    /// Followed the role to a new holder while it was still open.
    Handover,
}

impl ResolutionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionKind::Send => "send",
            ResolutionKind::Handover => "handover",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [ResolutionKind::Send, ResolutionKind::Handover].into_iter().find(|k| k.as_str() == s)
    }
}

/// One resolution of a message addressed to a role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleResolution {
    pub id: uuid::Uuid,
    pub org: OrgId,
    pub role: OnCallRoleId,
    pub message: MessageId,
    pub conversation: ConversationId,
    pub kind: ResolutionKind,
    pub at: Timestamp,
    /// The holders and why, as medhub-wire's JSON (ids only).
    pub holders: String,
    /// What makes the record unique: a retry or another node recording the same resolution
    /// writes nothing.
    pub dedupe: String,
}

/// An urgent or critical message in a role's conversation that nobody has taken yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenItem {
    pub org: OrgId,
    pub role: OnCallRoleId,
    pub conversation: ConversationId,
    pub message: MessageId,
    pub sender: UserId,
    pub created_at: Timestamp,
}

#[async_trait]
pub trait OnCallStore: Send + Sync {
    /// Creates an on-call role, with `audit` in the same transaction. Fails with
    /// [`StoreError::Conflict`] when the organization has a role with this key.
    async fn create_oncall_role(&self, role: &OnCallRole, audit: &[AuditRecord]) -> Result<(), StoreError>;
    /// Changes a role's name, kind and department; false (and no record) when the
    /// organization has no such role.
    async fn update_oncall_role(&self, role: &OnCallRole, audit: &[AuditRecord]) -> Result<bool, StoreError>;
    /// The organization's roles, by key.
    async fn oncall_roles(&self, org: OrgId) -> Result<Vec<OnCallRole>, StoreError>;
    /// The organization's role with this key.
    async fn oncall_role(&self, org: OrgId, key: &str) -> Result<Option<OnCallRole>, StoreError>;
    /// A role by id, whatever its organization (for the hand-over job).
    async fn oncall_role_by_id(&self, id: OnCallRoleId) -> Result<Option<OnCallRole>, StoreError>;

    /// Stores a new schedule (its version as given, normally 0) with `audit`.
    async fn create_schedule(&self, schedule: &StoredSchedule, audit: &[AuditRecord]) -> Result<(), StoreError>;
    /// Replaces a schedule's name, zone and rotations if it is the organization's and still at
    /// `expected_version`; its version then rises by one. False when it moved or is gone
    /// (nothing written).
    async fn update_schedule(
        &self,
        schedule: &StoredSchedule,
        expected_version: i64,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError>;
    /// Deletes one of the organization's schedules and its overrides; false if there was none.
    async fn delete_schedule(&self, org: OrgId, id: ScheduleId, audit: &[AuditRecord]) -> Result<bool, StoreError>;
    /// The organization's schedules (of one role, if given), oldest first.
    async fn schedules(&self, org: OrgId, role: Option<OnCallRoleId>) -> Result<Vec<StoredSchedule>, StoreError>;
    /// The overrides of these schedules, by schedule and start.
    async fn overrides(&self, schedules: &[ScheduleId]) -> Result<Vec<StoredOverride>, StoreError>;
    /// Removes the overrides `remove` and adds `add` to one of the organization's schedules,
    /// raising its version, if the schedule is still at `expected_version` (`None`: whatever
    /// it is, for changes that cannot break a rule, such as removing). `None` when it moved or
    /// is not the organization's (nothing written); else how many overrides were removed.
    /// `audit` is appended when something changed.
    async fn change_overrides(
        &self,
        org: OrgId,
        schedule: ScheduleId,
        expected_version: Option<i64>,
        remove: &[OverrideId],
        add: &[StoredOverride],
        audit: &[AuditRecord],
    ) -> Result<Option<usize>, StoreError>;

    /// The organization's coverages that end after `ending_after`, and their version.
    async fn coverage_state(&self, org: OrgId, ending_after: Timestamp) -> Result<CoverageState, StoreError>;
    /// Adds a coverage if the organization's coverages are still at `expected_version`
    /// (raising it); false when they moved (nothing written).
    async fn add_coverage(
        &self,
        coverage: &StoredCoverage,
        expected_version: i64,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError>;
    /// Removes one of the organization's coverages; `None` if there was none.
    async fn remove_coverage(
        &self,
        org: OrgId,
        id: CoverageId,
        audit: &[AuditRecord],
    ) -> Result<Option<StoredCoverage>, StoreError>;

    /// The conversation between `sender` and the role, if one was linked.
    async fn role_conversation(&self, role: OnCallRoleId, sender: UserId)
    -> Result<Option<ConversationId>, StoreError>;
    /// Links `conversation` as the one between `sender` and the role, unless one is linked
    /// already (then that one is kept), or in place of `replacing` when that is the one
    /// linked. Returns the conversation linked after the call.
    async fn link_role_conversation(
        &self,
        org: OrgId,
        role: OnCallRoleId,
        sender: UserId,
        conversation: ConversationId,
        replacing: Option<ConversationId>,
        now: Timestamp,
    ) -> Result<ConversationId, StoreError>;
    /// The role a conversation is linked to, if any.
    async fn conversation_role(&self, conversation: ConversationId) -> Result<Option<OnCallRoleId>, StoreError>;

    /// Records a resolution with `audit`, unless one with the same `dedupe` exists (then
    /// nothing is written and the answer is false).
    async fn record_resolution(&self, resolution: &RoleResolution, audit: &[AuditRecord]) -> Result<bool, StoreError>;
    /// A message's resolutions, oldest first.
    async fn resolutions(&self, message: MessageId) -> Result<Vec<RoleResolution>, StoreError>;
    /// Urgent and critical messages in role conversations, sent at or after `since`, neither
    /// recalled nor removed, that no recipient has taken (no `accept`, `call_back` or `done`
    /// acknowledgement; a `decline` leaves it open). In `(created_at, message)` order after
    /// `after`, at most `limit`.
    async fn open_role_items(
        &self,
        since: Timestamp,
        after: Option<(Timestamp, MessageId)>,
        limit: u32,
    ) -> Result<Vec<OpenItem>, StoreError>;
}
