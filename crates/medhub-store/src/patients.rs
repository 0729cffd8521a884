//! Storage of patient scope: care teams and break-glass grants (issue 3). Both backends
//! implement [`PatientStore`]; the rules that use these rows are pure functions in
//! `medhub_core::patient`.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::AuditRecord;
use medhub_core::patient::PatientRef;
use medhub_core::{ConversationId, OrgId, SessionId, UserId};

use crate::StoreError;

/// One person on a patient's care team.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CareTeamMember {
    pub user: UserId,
    pub added_by: Option<UserId>,
    pub added_at: Timestamp,
}

/// One emergency access grant. The reason is what compliance officers review; it is kept
/// here and never written to the server log.
#[derive(Clone, PartialEq, Eq)]
pub struct BreakGlassGrant {
    pub id: uuid::Uuid,
    pub org: OrgId,
    pub user: UserId,
    pub session: SessionId,
    pub conversation: ConversationId,
    pub patient: PatientRef,
    pub reason: String,
    pub started_at: Timestamp,
    pub expires_at: Timestamp,
    /// When the end was recorded (the sweeper sets it once the grant has expired).
    pub ended_at: Option<Timestamp>,
}

/// The audit record of a grant's end: `template` (its action, outcome, reason, node) with the
/// grant's organization, patient, grant id and conversation, and, when the template names no
/// actor (the expiry sweeper), the grantee and their session.
pub fn grant_end_record(template: &AuditRecord, g: &BreakGlassGrant) -> AuditRecord {
    let mut r = template.clone().object("grant", g.id).patient(g.patient.as_str());
    r.org = Some(g.org);
    r.target = Some(format!("conversation:{}", g.conversation));
    if r.actor.is_none() {
        r.actor = Some(g.user);
        r.session = Some(g.session);
    }
    r
}

impl std::fmt::Debug for BreakGlassGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakGlassGrant")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("conversation", &self.conversation)
            .field("started_at", &self.started_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait PatientStore: Send + Sync {
    /// Whether the user is on the patient's care team in the organization.
    async fn on_care_team(&self, org: OrgId, patient: &PatientRef, user: UserId) -> Result<bool, StoreError>;
    /// The patient's care team, in the order people were added.
    async fn care_team(&self, org: OrgId, patient: &PatientRef) -> Result<Vec<CareTeamMember>, StoreError>;
    /// Puts a user on the care team; false if already on it. `audit` is appended in the same
    /// transaction when the user was added.
    async fn add_to_care_team(
        &self,
        org: OrgId,
        patient: &PatientRef,
        user: UserId,
        by: UserId,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError>;
    /// Takes a user off the care team; false if not on it. `audit` is appended in the same
    /// transaction when the user was removed.
    async fn remove_from_care_team(
        &self,
        org: OrgId,
        patient: &PatientRef,
        user: UserId,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError>;

    /// Records a grant, and `audit` in the same transaction.
    async fn create_break_glass(&self, grant: &BreakGlassGrant, audit: &[AuditRecord]) -> Result<(), StoreError>;
    /// When the user's latest grant on the conversation ends (it may have ended already).
    async fn break_glass_until(
        &self,
        user: UserId,
        conversation: ConversationId,
    ) -> Result<Option<Timestamp>, StoreError>;
    /// The organization's grants, newest first, started before `before` if given.
    async fn break_glass_grants(
        &self,
        org: OrgId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<BreakGlassGrant>, StoreError>;
    /// Ends one open grant of the organization at `now` (its access stops at once), only if
    /// `only_user` is unset or is the grantee. Returns the grant, or `None` when there was no
    /// such open grant.
    /// The end's audit record, [`grant_end_record`] of `audit`, is appended in the same
    /// transaction.
    async fn end_break_glass(
        &self,
        org: OrgId,
        id: uuid::Uuid,
        only_user: Option<UserId>,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<Option<BreakGlassGrant>, StoreError>;
    /// Marks every grant that has expired by `now` and was not yet marked, and returns them:
    /// each grant is returned once, on one node, and its end is recorded once, with
    /// [`grant_end_record`] of `audit`, in the same transaction.
    async fn end_expired_break_glass(
        &self,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<Vec<BreakGlassGrant>, StoreError>;
    /// How long break-glass access lasts in the organization.
    async fn break_glass_duration(&self, org: OrgId) -> Result<SignedDuration, StoreError>;
    /// Sets it, and appends `audit` in the same transaction.
    async fn set_break_glass_duration(
        &self,
        org: OrgId,
        d: SignedDuration,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;
    /// The active users of the organization who hold a role granting `permission` (by its
    /// stored name): whom to alert.
    async fn users_with_permission(&self, org: OrgId, permission: &str) -> Result<Vec<UserId>, StoreError>;
}
