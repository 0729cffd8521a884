//! Patient scope: care teams, who may read a patient's conversation, and break-glass
//! (HIPAA 164.312(a)(2)(ii)).
//!
//! The decisions are pure functions in `medhub_core::patient`; this service gathers their
//! facts, records grants durably, reports every read that is not a member's to the audit
//! interface, alerts compliance officers, and records the end of each grant when it expires.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::authz::Permission;
use medhub_core::model::Conversation;
use medhub_core::patient::{self as rules, Access, AccessFacts, PatientRef};
use medhub_core::{Clock, ConversationId, DomainError, UserId};
use medhub_store::{BreakGlassGrant, CareTeamMember, DynStore};
use medhub_wire::ServerFrame;

use crate::hub::{Hub, frame_bytes};
use crate::{AuditSink, Principal, ServiceError};

/// Most grants listed in one page.
pub const MAX_GRANTS_PAGE: u32 = 500;

/// Care teams and break-glass.
#[derive(Clone)]
pub struct Patients {
    store: DynStore,
    clock: Arc<dyn Clock>,
    audit: AuditSink,
    hub: Arc<Hub>,
}

impl Patients {
    pub fn new(store: DynStore, clock: Arc<dyn Clock>, audit: AuditSink, hub: Arc<Hub>) -> Self {
        Self { store, clock, audit, hub }
    }

    /// A record of `action` by `p` about `patient`.
    fn record(&self, p: &Principal, action: &str, patient: &PatientRef, outcome: Outcome) -> AuditRecord {
        self.audit.by(p, action, outcome).patient(patient.as_str())
    }

    /// Why a user who is not a member may read the conversation, if at all. Every read it
    /// allows is in the audit log, with its basis, before this answers: if the record cannot
    /// be stored, the read is refused (fail closed). The caller answers `None` as "not found".
    pub async fn reader_access(&self, p: &Principal, conv: &Conversation) -> Result<Option<Access>, ServiceError> {
        let Some(patient) = conv.patient.as_ref().filter(|_| conv.org == p.user.org) else {
            return Ok(None);
        };
        let on_care_team = self.store.on_care_team(conv.org, patient, p.user.id).await?;
        let break_glass_until =
            if on_care_team { None } else { self.store.break_glass_until(p.user.id, conv.id).await? };
        let facts = AccessFacts { member: false, patient_linked: true, on_care_team, break_glass_until };
        let access = rules::access(facts, self.clock.now());
        if let Some(a) = access {
            let read = self.record(p, "patient.read", patient, Outcome::Allow).object("conversation", conv.id);
            self.audit.write(vec![read.reason(a.as_str())]).await?;
        }
        Ok(access)
    }

    /// Records a member's read of a conversation linked to a patient, before the answer:
    /// the patient access report lists every reader, members included.
    pub async fn member_read(&self, p: &Principal, conv: &Conversation) -> Result<(), ServiceError> {
        let Some(patient) = conv.patient.as_ref() else { return Ok(()) };
        let read = self.record(p, "patient.read", patient, Outcome::Allow).object("conversation", conv.id);
        self.audit.write(vec![read.reason(Access::Member.as_str())]).await
    }

    /// The patient's care team.
    pub async fn care_team(&self, p: &Principal, patient: &str) -> Result<Vec<CareTeamMember>, ServiceError> {
        p.require_active()?;
        let patient = PatientRef::parse(patient)?;
        Ok(self.store.care_team(p.user.org, &patient).await?)
    }

    /// Puts a user of the caller's organization on the patient's care team. Answers whether
    /// they were added (false: already on it).
    pub async fn add_to_care_team(&self, p: &Principal, patient: &str, user: UserId) -> Result<bool, ServiceError> {
        p.require(Permission::CareTeamAdmin)?;
        let patient = PatientRef::parse(patient)?;
        let target = self.store.user(user).await?;
        if !target.is_some_and(|u| u.active && u.org == p.user.org) {
            return Err(DomainError::UserNotFound.into());
        }
        let r = self.record(p, "care_team.add", &patient, Outcome::Success).object("user", user);
        let added = self.store.add_to_care_team(p.user.org, &patient, user, p.user.id, self.clock.now(), &[r]).await?;
        Ok(added)
    }

    /// Takes a user off the patient's care team; `not_found` if they were not on it.
    pub async fn remove_from_care_team(&self, p: &Principal, patient: &str, user: UserId) -> Result<(), ServiceError> {
        p.require(Permission::CareTeamAdmin)?;
        let patient = PatientRef::parse(patient)?;
        let r = self.record(p, "care_team.remove", &patient, Outcome::Success).object("user", user);
        if !self.store.remove_from_care_team(p.user.org, &patient, user, &[r]).await? {
            return Err(DomainError::UserNotFound.into());
        }
        Ok(())
    }

    /// Opens a patient's conversation the caller is not in, for the organization's
    /// break-glass duration. Needs the permission, a reason and a step-up within the last
    /// 5 minutes. A conversation that is not linked to a patient, or not the caller's
    /// organization's, is `not_found`, as if it did not exist.
    pub async fn break_glass(
        &self,
        p: &Principal,
        conversation: ConversationId,
        reason: &str,
    ) -> Result<BreakGlassGrant, ServiceError> {
        p.require(Permission::BreakGlass)?;
        if let Err(e) = p.require_step_up(self.clock.now()) {
            let r = self.audit.by(p, "break_glass.start", Outcome::Deny).object("conversation", conversation);
            self.audit.write(vec![r.reason("step_up_required")]).await?;
            return Err(e);
        }
        let reason = rules::break_glass_reason(reason)?;
        let conv = self.store.conversation(conversation).await?.filter(|c| c.org == p.user.org);
        let Some((conv, patient)) = conv.and_then(|c| c.patient.clone().map(|pt| (c, pt))) else {
            return Err(DomainError::ConversationNotFound.into());
        };
        let member = self.store.member(conv.id, p.user.id).await?.is_some();
        if member || self.store.on_care_team(conv.org, &patient, p.user.id).await? {
            return Err(DomainError::BreakGlassNotNeeded.into());
        }
        let now = self.clock.now();
        let duration = self.store.break_glass_duration(conv.org).await?;
        let grant = BreakGlassGrant {
            id: uuid::Uuid::now_v7(),
            org: conv.org,
            user: p.user.id,
            session: p.session.id,
            conversation: conv.id,
            patient,
            reason,
            started_at: now,
            expires_at: now.checked_add(duration).unwrap_or(Timestamp::MAX),
            ended_at: None,
        };
        // The reason typed by the user stays in the grant; the record holds its hash. Both are
        // stored, in one transaction, before access is granted.
        let r = self.record(p, "break_glass.start", &grant.patient, Outcome::Success).object("grant", grant.id);
        let r = r.target(format!("conversation:{}", conv.id)).reason(reason_hash(&grant.reason));
        self.store.create_break_glass(&grant, &[r]).await?;
        tracing::warn!(
            target: "medhub::audit",
            grant = %grant.id,
            user = %p.user.id,
            conversation = %conv.id,
            "break-glass access opened"
        );
        self.alert_compliance(&grant).await?;
        Ok(grant)
    }

    /// Tells the organization's compliance officers who are online.
    async fn alert_compliance(&self, g: &BreakGlassGrant) -> Result<(), ServiceError> {
        let officers = self.store.users_with_permission(g.org, Permission::AuditRead.as_str()).await?;
        let frame = frame_bytes(&ServerFrame::BreakGlass {
            grant_id: g.id,
            user_id: g.user.as_uuid(),
            conversation_id: g.conversation.as_uuid(),
            started_at: g.started_at,
            expires_at: g.expires_at,
        });
        self.hub.send_ephemeral(officers, None, frame);
        Ok(())
    }

    /// Ends an open grant before it expires: the grantee's access stops at once. The grantee
    /// may end their own grant ("done"); a compliance officer (`audit.read`) may end any grant
    /// of the organization, on review. Anything else, and a grant that has ended already, is
    /// `not_found`.
    pub async fn end_break_glass(&self, p: &Principal, id: uuid::Uuid) -> Result<BreakGlassGrant, ServiceError> {
        p.require_active()?;
        let officer = p.permissions.contains(Permission::AuditRead);
        let now = self.clock.now();
        // The end and its record commit together, so its reason is chosen before: the
        // caller's own grant first ("ended_by_user"), then, for an officer, anyone's ("revoked").
        let own = self.audit.by(p, "break_glass.end", Outcome::Success).reason("ended_by_user");
        let mut ended =
            self.store.end_break_glass(p.user.org, id, Some(p.user.id), now, &own).await?.map(|g| (g, "ended_by_user"));
        if ended.is_none() && officer {
            let review = self.audit.by(p, "break_glass.end", Outcome::Success).reason("revoked");
            ended = self.store.end_break_glass(p.user.org, id, None, now, &review).await?.map(|g| (g, "revoked"));
        }
        let Some((g, why)) = ended else {
            return Err(DomainError::GrantNotFound.into());
        };
        tracing::warn!(target: "medhub::audit", grant = %g.id, by = %p.user.id, reason = why, "break-glass access ended early");
        Ok(g)
    }

    /// The organization's break-glass grants, newest first, for review.
    pub async fn grants(
        &self,
        p: &Principal,
        before: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<BreakGlassGrant>, ServiceError> {
        p.require(Permission::AuditRead)?;
        if limit == 0 || limit > MAX_GRANTS_PAGE {
            return Err(ServiceError::InvalidRequest(format!("limit must be between 1 and {MAX_GRANTS_PAGE}")));
        }
        Ok(self.store.break_glass_grants(p.user.org, before, limit).await?)
    }

    /// The organization's break-glass duration, in minutes.
    pub async fn break_glass_minutes(&self, p: &Principal) -> Result<i64, ServiceError> {
        Ok(self.store.break_glass_duration(p.user.org).await?.as_mins())
    }

    /// Sets the organization's break-glass duration (needs a step-up).
    pub async fn set_break_glass_minutes(&self, p: &Principal, minutes: i64) -> Result<(), ServiceError> {
        p.require(Permission::OrgSettings)?;
        p.require_step_up(self.clock.now())?;
        let d = rules::break_glass_duration(minutes)?;
        let r = self.audit.by(p, "admin.settings", Outcome::Success).object("org", p.user.org);
        self.store
            .set_break_glass_duration(p.user.org, d, &[r.target(format!("break_glass_minutes={minutes}"))])
            .await?;
        Ok(())
    }

    /// Records the end of every grant that expired: one audit record each, once.
    pub async fn end_expired(&self) -> Result<usize, ServiceError> {
        let template = self.audit.event("break_glass.end", Outcome::Success).reason("expired");
        let ended = self.store.end_expired_break_glass(self.clock.now(), &template).await?;
        Ok(ended.len())
    }

    /// Records expired grants every `interval`, until the task is aborted.
    pub async fn run_sweeper(self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.end_expired().await {
                tracing::warn!(error = %e, "recording the end of break-glass grants failed; retrying");
            }
        }
    }
}

/// The SHA-256 of a typed reason, in hex: what an audit record holds instead of the text.
fn reason_hash(reason: &str) -> String {
    use sha2::Digest;
    crate::tree_heads::hex(&sha2::Sha256::digest(reason.as_bytes()))
}
