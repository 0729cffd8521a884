//! Storage of retention (issue 4 §6): policies per organization and class of conversation,
//! legal holds, the expiry job's and erasure's changes to messages, and the erasure of an
//! account's personal data. Both backends implement [`RetentionStore`]; the rules are pure
//! functions in `medhub_core::retention`, and docs/retention.md describes the design.
//!
//! Every write takes the audit records of the change and appends them in its own
//! transaction: if the records cannot be stored, nothing changes.
//!
//! Decisions are made outside the write (the service reads the state and candidates, the core
//! decides), so each organization has a **retention version**, bumped by every policy and
//! hold change. A write that applies decisions names the version they were made at and fails
//! with [`StoreError::Conflict`] if it moved, or if a message it names was changed meanwhile:
//! a hold set a moment before is never overtaken, and the audit record's counts are exact.

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::model::RemovalCause;
use medhub_core::retention::{ActiveHold, ContentFacts, HoldScope, RetentionClass, RetentionPolicy};
use medhub_core::{LegalHoldId, MessageId, OrgId, SessionId, UserId};

use crate::StoreError;

/// A policy with who set it and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPolicy {
    pub policy: RetentionPolicy,
    pub set_by: Option<UserId>,
    pub set_at: Timestamp,
}

/// How a hold was lifted. The reason is typed by a compliance officer: kept here only.
#[derive(Clone, PartialEq, Eq)]
pub struct HoldLift {
    pub by: UserId,
    pub at: Timestamp,
    pub reason: String,
}

/// A legal hold, active or lifted.
#[derive(Clone, PartialEq, Eq)]
pub struct LegalHold {
    pub id: LegalHoldId,
    pub org: OrgId,
    pub scope: HoldScope,
    /// Why (a matter or case reference), as typed: never logged, never in the audit log.
    pub reason: String,
    pub created_by: UserId,
    pub created_at: Timestamp,
    pub lifted: Option<HoldLift>,
}

impl std::fmt::Debug for LegalHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegalHold")
            .field("id", &self.id)
            .field("scope", &self.scope.kind_str())
            .field("created_at", &self.created_at)
            .field("lifted", &self.lifted.as_ref().map(|l| l.at))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for HoldLift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldLift").field("by", &self.by).field("at", &self.at).finish_non_exhaustive()
    }
}

/// What retention decisions are made from: an organization's policies and active holds, at
/// one version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionState {
    pub version: i64,
    pub policies: Vec<StoredPolicy>,
    pub holds: Vec<ActiveHold>,
}

impl RetentionState {
    pub fn policies(&self) -> Vec<RetentionPolicy> {
        self.policies.iter().map(|p| p.policy).collect()
    }

    /// The users under an active hold: the audience facts a candidate needs.
    pub fn held_users(&self) -> Vec<UserId> {
        self.holds
            .iter()
            .filter_map(|h| match h.scope {
                HoldScope::User(u) => Some(u),
                _ => None,
            })
            .collect()
    }
}

/// A message the rules must decide on, with its facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub message: MessageId,
    pub facts: ContentFacts,
}

/// Where a scan of candidates stopped: the next page starts after it.
pub type CandidateCursor = (Timestamp, MessageId);

/// What one write of decisions does: messages whose content goes, and messages flagged as
/// "erasure requested" (kept: clinical under retention, or held).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentChange {
    pub remove: Vec<MessageId>,
    pub cause: RemovalCause,
    pub flag: Vec<MessageId>,
}

/// What a write of decisions did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeCount {
    pub removed: u64,
    /// Earlier revisions deleted with the removed messages.
    pub revisions: u64,
    pub flagged: u64,
}

/// What erasing an account did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasedAccount {
    /// Sessions that were live and are now ended (their sockets must close).
    pub ended_sessions: Vec<SessionId>,
    /// False when the account had been erased before (the call only finished the work).
    pub first_time: bool,
}

#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// The organization's policies, active holds and retention version.
    async fn retention_state(&self, org: OrgId) -> Result<RetentionState, StoreError>;

    /// Sets (`Some(days)`) or removes (`None`: kept for ever) the policy of one class, bumps
    /// the version and appends `audit`, in one transaction.
    async fn set_retention_policy(
        &self,
        org: OrgId,
        class: RetentionClass,
        days: Option<u32>,
        by: Option<UserId>,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;

    /// The organization's holds, newest first; lifted ones too if `include_lifted`.
    async fn legal_holds(&self, org: OrgId, include_lifted: bool) -> Result<Vec<LegalHold>, StoreError>;

    /// Stores a new hold, bumps the version and appends `audit`, in one transaction.
    async fn create_legal_hold(&self, hold: &LegalHold, audit: &[AuditRecord]) -> Result<(), StoreError>;

    /// Lifts an active hold of the organization, bumps the version and appends `audit`, in one
    /// transaction. `None` (and nothing written) when there is no such active hold.
    async fn lift_legal_hold(
        &self,
        org: OrgId,
        id: LegalHoldId,
        lift: &HoldLift,
        audit: &[AuditRecord],
    ) -> Result<Option<LegalHold>, StoreError>;

    /// Messages of the organization's conversations of `class`, created before `before`,
    /// whose content is still there, oldest first, after `after`, at most `limit`. Each
    /// carries its facts; `held_audience` lists those of `held_users` who were members when it
    /// was sent.
    async fn expiry_candidates(
        &self,
        org: OrgId,
        class: RetentionClass,
        before: Timestamp,
        after: Option<CandidateCursor>,
        limit: u32,
        held_users: &[UserId],
    ) -> Result<Vec<Candidate>, StoreError>;

    /// The messages `sender` wrote whose content is still there and that are not flagged yet,
    /// oldest first, after `after`, at most `limit`, with their facts (as above).
    async fn erasure_candidates(
        &self,
        sender: UserId,
        after: Option<CandidateCursor>,
        limit: u32,
        held_users: &[UserId],
    ) -> Result<Vec<Candidate>, StoreError>;

    /// Applies decisions made at retention version `version` of the organization: empties the
    /// removed messages (body, earlier revisions, request fingerprint) leaving tombstones, flags
    /// the others, and appends `audit`, in one transaction. Fails with
    /// [`StoreError::Conflict`] (nothing written) if the version moved, or if a named message is
    /// not the organization's or was removed or flagged meanwhile.
    async fn apply_content_change(
        &self,
        org: OrgId,
        version: i64,
        change: &ContentChange,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<ChangeCount, StoreError>;

    /// Erases the non-clinical personal data of an account of the organization, at retention
    /// version `version` (so that a hold on the user set meanwhile is respected): pseudonymous
    /// username and display name, no password, deactivated, sessions ended with their address
    /// and user agent cleared, second factors, passkeys, SSO links, invitations, roles,
    /// care-team places and throttles deleted; `erased_at` set. Appends `audit`, in one
    /// transaction. `None` when the user is not the organization's; [`StoreError::Conflict`]
    /// if the version moved.
    async fn erase_account(
        &self,
        org: OrgId,
        version: i64,
        user: UserId,
        pseudonym: (&str, &str),
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<Option<ErasedAccount>, StoreError>;

    /// Users of the organization whose erasure has started (`erased_at` set) and who still
    /// have messages neither removed nor flagged: erasures interrupted by a crash, which the
    /// expiry job finishes.
    async fn unfinished_erasures(&self, org: OrgId) -> Result<Vec<UserId>, StoreError>;
}
