//! Shift handoff (issue 5 §4): the outgoing clinician gives an I-PASS handoff, the incoming
//! one accepts it with a synthesis, and only then does the shift's work move to them: they
//! join the handed-over conversations (open urgent and critical items included) and the
//! patients' care teams.
//!
//! The rules are pure (`medhub_core::handoff`). Every step is audited: giving, accepting and
//! cancelling commit with their records (one per patient, so the patient access report
//! finds them), and every read of a note is recorded before it is shown (a note is patient
//! data). Listings carry no patient data (counts only), so they are not reads.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::handoff::{self as rules, Draft, Handoff, HandoffState};
use medhub_core::model::MemberRole;
use medhub_core::patient::PatientRef;
use medhub_core::plan::Command;
use medhub_core::policy::Actor;
use medhub_core::{Clock, DomainError, HandoffId};
use medhub_store::DynStore;

use crate::{AuditSink, Messaging, Principal, ServiceError};

/// How far back "my handoffs" looks: the last week of shifts.
pub const HANDOFF_LIST_WINDOW: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Shift handoffs.
#[derive(Clone)]
pub struct Handoffs {
    store: DynStore,
    clock: Arc<dyn Clock>,
    audit: AuditSink,
    messaging: Messaging,
}

impl Handoffs {
    pub fn new(store: DynStore, clock: Arc<dyn Clock>, audit: AuditSink, messaging: Messaging) -> Self {
        Self { store, clock, audit, messaging }
    }

    /// The records of one step: one per patient (with the patient), or one without a patient
    /// for a handoff of conversations only.
    fn records(&self, p: &Principal, action: &str, h: &Handoff) -> Vec<AuditRecord> {
        let base = self.audit.by(p, action, Outcome::Success).object("handoff", h.id).target(format!(
            "from={} to={} patients={} conversations={}",
            h.from,
            h.to,
            h.patients.len(),
            h.conversations.len()
        ));
        if h.patients.is_empty() {
            return vec![base];
        }
        h.patients.iter().map(|n| base.clone().patient(n.patient.as_str())).collect()
    }

    /// Gives a handoff. The receiver must be an active user of the caller's organization;
    /// the caller must be a member of every conversation and on the care team of every
    /// patient it hands over (one cannot hand over what one does not have).
    pub async fn give(&self, p: &Principal, draft: Draft) -> Result<Handoff, ServiceError> {
        p.require(medhub_core::authz::Permission::ConversationWrite)?;
        let receiver = self.store.user(draft.to).await?;
        if !receiver.is_some_and(|u| u.active && u.org == p.user.org) {
            return Err(DomainError::UserNotFound.into());
        }
        for c in &draft.conversations {
            if self.store.member(*c, p.user.id).await?.is_none() {
                return Err(DomainError::ConversationNotFound.into());
            }
        }
        for n in &draft.patients {
            if !self.store.on_care_team(p.user.org, &n.patient, p.user.id).await? {
                return Err(DomainError::InvalidHandoff {
                    reason: "you can hand over only patients whose care team you are on",
                }
                .into());
            }
        }
        let h = rules::give(HandoffId::new_v7(), p.user.org, p.user.id, draft, self.now())?;
        self.store.create_handoff(&h, &self.records(p, "handoff.give", &h)).await?;
        tracing::info!(target: "medhub::handoff", handoff = %h.id, from = %h.from, to = %h.to,
            patients = h.patients.len(), conversations = h.conversations.len(), "handoff given");
        Ok(h)
    }

    /// A handoff its giver or receiver may see, or not found. Not recorded: see [`Self::get`].
    async fn visible(&self, p: &Principal, id: HandoffId) -> Result<Handoff, ServiceError> {
        p.require_active()?;
        let h = self.store.handoff(id).await?.filter(|h| h.org == p.user.org && h.involves(p.user.id));
        h.ok_or_else(|| DomainError::HandoffNotFound.into())
    }

    /// One handoff with its notes, for its giver or receiver. The read is recorded (one
    /// record per patient) before the notes are returned; if it cannot be, nothing is shown.
    pub async fn get(&self, p: &Principal, id: HandoffId) -> Result<Handoff, ServiceError> {
        let h = self.visible(p, id).await?;
        if !h.patients.is_empty() {
            self.audit.write(self.records(p, "handoff.read", &h)).await?;
        }
        Ok(h)
    }

    /// The caller's handoffs of the last week, given and received, newest first, without
    /// their notes.
    pub async fn list(&self, p: &Principal, limit: u32) -> Result<Vec<Handoff>, ServiceError> {
        p.require_active()?;
        let since = self.now().saturating_sub(HANDOFF_LIST_WINDOW).unwrap_or(self.now());
        let mut out = self.store.handoffs_for(p.user.id, since, limit).await?;
        out.retain(|h| h.org == p.user.org);
        Ok(out)
    }

    /// The receiver accepts with a synthesis of every patient; then the work moves to them.
    /// Accepting an accepted handoff again re-applies the moves (they are idempotent), so a
    /// receiver whose first answer was lost can simply retry.
    pub async fn accept(
        &self,
        p: &Principal,
        id: HandoffId,
        synthesis: &[(PatientRef, String)],
    ) -> Result<Handoff, ServiceError> {
        p.require(medhub_core::authz::Permission::ConversationRead)?;
        let h = self.visible(p, id).await?;
        if h.state == HandoffState::Accepted && h.to == p.user.id {
            self.move_work(p, &h).await?;
            return Ok(h);
        }
        let accepted = rules::accept(&h, p.user.id, synthesis, self.now())?;
        if !self.store.close_handoff(&accepted, &self.records(p, "handoff.accept", &accepted)).await? {
            return Err(DomainError::HandoffClosed.into());
        }
        self.move_work(p, &accepted).await?;
        tracing::info!(target: "medhub::handoff", handoff = %id, "handoff accepted");
        Ok(accepted)
    }

    /// The giver withdraws a handoff that is still waiting.
    pub async fn cancel(&self, p: &Principal, id: HandoffId) -> Result<Handoff, ServiceError> {
        let h = self.visible(p, id).await?;
        let cancelled = rules::cancel(&h, p.user.id, self.now())?;
        if !self.store.close_handoff(&cancelled, &self.records(p, "handoff.cancel", &cancelled)).await? {
            return Err(DomainError::HandoffClosed.into());
        }
        tracing::info!(target: "medhub::handoff", handoff = %id, "handoff cancelled");
        Ok(cancelled)
    }

    /// The receiver joins the handed-over conversations (through the commit pipeline, by the
    /// server on the handoff's behalf, audited for patients' conversations) and the patients'
    /// care teams (each with its `care_team.add` record). Both are idempotent; a conversation
    /// that no longer exists is skipped.
    async fn move_work(&self, p: &Principal, h: &Handoff) -> Result<(), ServiceError> {
        for c in &h.conversations {
            let cmd =
                Command::AddMember { actor: Actor::System, conversation: *c, user: h.to, role: MemberRole::Member };
            match self.messaging.change_membership_by(Some(p), cmd).await {
                Ok(_) => {}
                Err(ServiceError::Domain(DomainError::AlreadyMember | DomainError::ConversationNotFound)) => {}
                Err(e) => return Err(e),
            }
        }
        for n in &h.patients {
            let r = self
                .audit
                .by(p, "care_team.add", Outcome::Success)
                .patient(n.patient.as_str())
                .object("user", h.to)
                .reason("handoff");
            self.store.add_to_care_team(h.org, &n.patient, h.to, h.from, self.now(), &[r]).await?;
        }
        Ok(())
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
