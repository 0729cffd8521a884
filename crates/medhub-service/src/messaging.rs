//! Conversations and messages: the operations handlers call, with visibility checks on reads.
//!
//! Writes become commands for the pipeline; the planner decides them. Reads check access
//! here: members, and for a patient's conversation its care team and break-glass grants
//! (read only, each read audited). Everyone else is answered exactly as for ids that do not
//! exist.

use std::sync::Arc;

use medhub_core::model::{Ack, AckResponse, Conversation, ConversationKind, Member, MemberRole, Message, Priority};
use medhub_core::patient::{Access, PatientRef};
use medhub_core::plan::{Command, CreateConversation, Outcome, Revision, SendMessage};
use medhub_core::policy::Actor;
use medhub_core::{ClientTxnId, ConversationId, DomainError, EventId, MessageId, Seq, UserId};
use medhub_store::{ConversationView, DynStore, HistoryPage, RecipientRow};
use medhub_wire::ServerFrame;

use crate::hub::{Hub, frame_bytes};
use crate::patients::Patients;
use crate::pipeline::Pipeline;
use crate::{Principal, ServiceError};

/// Most messages in one history page.
pub const MAX_PAGE: u32 = 200;
/// Typing indicators are not sent in conversations larger than this (channels are excluded
/// outright): in a ward-wide channel they are noise, and their fan-out is not free.
pub const TYPING_MAX_MEMBERS: usize = 256;

/// Conversation and message operations.
#[derive(Clone)]
pub struct Messaging {
    store: DynStore,
    pipeline: Pipeline,
    hub: Arc<Hub>,
    patients: Patients,
    audit: crate::AuditSink,
    /// Wakes the escalation timer worker when an urgent or critical message commits (its first
    /// timer is due at once).
    escalation_waker: Option<Arc<tokio::sync::Notify>>,
}

fn unexpected(outcome: Outcome) -> ServiceError {
    tracing::error!(?outcome, "planner returned an unexpected outcome");
    ServiceError::InvalidRequest("unexpected outcome".into())
}

impl Messaging {
    pub fn new(
        store: DynStore,
        pipeline: Pipeline,
        hub: Arc<Hub>,
        patients: Patients,
        audit: crate::AuditSink,
    ) -> Self {
        Self { store, pipeline, hub, patients, audit, escalation_waker: None }
    }

    /// Wakes the escalation timer worker after urgent and critical sends.
    pub(crate) fn with_escalation_waker(mut self, waker: Arc<tokio::sync::Notify>) -> Self {
        self.escalation_waker = Some(waker);
        self
    }

    /// Sends a message; returns it and whether it was a resend of an earlier one.
    pub async fn send(
        &self,
        p: &Principal,
        conversation: ConversationId,
        client_txn_id: &str,
        body: String,
        priority: Priority,
        reply_to: Option<MessageId>,
    ) -> Result<(Message, bool), ServiceError> {
        p.require_active()?;
        let cmd = Command::SendMessage(SendMessage {
            id: MessageId::new_v7(),
            actor: p.user_id(),
            conversation,
            client_txn_id: ClientTxnId::parse(client_txn_id)?,
            body,
            priority,
            reply_to,
        });
        match self.pipeline.submit_audited(cmd, Some(self.template(p))).await? {
            Outcome::MessageSent { message, duplicate } => {
                if !duplicate
                    && medhub_core::escalation::escalates(&message)
                    && let Some(w) = &self.escalation_waker
                {
                    w.notify_one();
                }
                Ok((message, duplicate))
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn edit(&self, p: &Principal, message: MessageId, body: String) -> Result<Message, ServiceError> {
        p.require_active()?;
        let cmd = Command::EditMessage { actor: p.user_id(), message, body };
        match self.pipeline.submit_audited(cmd, Some(self.template(p))).await? {
            Outcome::MessageChanged { message, .. } => Ok(message),
            other => Err(unexpected(other)),
        }
    }

    pub async fn recall(
        &self,
        actor: Actor,
        p: Option<&Principal>,
        message: MessageId,
    ) -> Result<Message, ServiceError> {
        if let Some(p) = p {
            p.require_active()?;
        }
        let template = p.map(|p| self.template(p));
        match self.pipeline.submit_audited(Command::RecallMessage { actor, message }, template).await? {
            Outcome::MessageChanged { message, .. } => Ok(message),
            other => Err(unexpected(other)),
        }
    }

    /// Moves the caller's watermarks; returns them as they now stand.
    pub async fn receipt(
        &self,
        p: &Principal,
        conversation: ConversationId,
        delivered: Option<Seq>,
        read: Option<Seq>,
    ) -> Result<(Seq, Seq), ServiceError> {
        p.require_active()?;
        match self.pipeline.submit(Command::UpdateReceipt { actor: p.user_id(), conversation, delivered, read }).await?
        {
            Outcome::Receipt { delivered_seq, read_seq, .. } => Ok((delivered_seq, read_seq)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn ack(&self, p: &Principal, message: MessageId, response: AckResponse) -> Result<Ack, ServiceError> {
        p.require_active()?;
        let cmd = Command::Acknowledge { actor: p.user_id(), message, response };
        match self.pipeline.submit_audited(cmd, Some(self.template(p))).await? {
            Outcome::Acknowledged { ack, .. } => Ok(ack),
            other => Err(unexpected(other)),
        }
    }

    /// [`create_conversation`](Self::create_conversation) by a signed-in user: a new
    /// conversation linked to a patient commits with its `conversation.create` record.
    pub async fn create_conversation_by(
        &self,
        p: &Principal,
        kind: ConversationKind,
        title: Option<String>,
        members: Vec<(UserId, MemberRole)>,
        patient: Option<PatientRef>,
    ) -> Result<(Conversation, bool), ServiceError> {
        let cmd = Command::CreateConversation(CreateConversation {
            id: ConversationId::new_v7(),
            actor: Actor::User(p.user_id()),
            kind,
            title,
            members,
            patient,
        });
        match self.pipeline.submit_audited(cmd, Some(self.template(p))).await? {
            Outcome::Conversation { conversation, created, .. } => Ok((conversation, created)),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a conversation (or returns the existing direct one); `true` if created.
    pub async fn create_conversation(
        &self,
        actor: Actor,
        kind: ConversationKind,
        title: Option<String>,
        members: Vec<(UserId, MemberRole)>,
        patient: Option<PatientRef>,
    ) -> Result<(Conversation, bool), ServiceError> {
        let cmd = Command::CreateConversation(CreateConversation {
            id: ConversationId::new_v7(),
            actor,
            kind,
            title,
            members,
            patient,
        });
        match self.pipeline.submit(cmd).await? {
            Outcome::Conversation { conversation, created, .. } => Ok((conversation, created)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn update_conversation(
        &self,
        actor: Actor,
        conversation: ConversationId,
        title: Option<String>,
    ) -> Result<Conversation, ServiceError> {
        match self.pipeline.submit(Command::UpdateConversation { actor, conversation, title }).await? {
            Outcome::Conversation { conversation, .. } => Ok(conversation),
            other => Err(unexpected(other)),
        }
    }

    /// Adds, removes or re-roles a member; returns the event it produced, if any. With `p`,
    /// a change to a patient's conversation commits with its record.
    pub async fn change_membership(&self, cmd: Command) -> Result<Option<EventId>, ServiceError> {
        self.change_membership_by(None, cmd).await
    }

    /// [`change_membership`](Self::change_membership) by a signed-in user, audited.
    pub async fn change_membership_by(
        &self,
        p: Option<&Principal>,
        cmd: Command,
    ) -> Result<Option<EventId>, ServiceError> {
        match self.pipeline.submit_audited(cmd, p.map(|p| self.template(p))).await? {
            Outcome::Membership { event } => Ok(event),
            other => Err(unexpected(other)),
        }
    }

    /// The template of a write's audit record by `p`: the pipeline keeps it only if the write
    /// concerns a patient's conversation, and names the action and object then.
    fn template(&self, p: &Principal) -> medhub_core::audit::AuditRecord {
        self.audit.by(p, "write", medhub_core::audit::Outcome::Success)
    }

    /// The caller's conversations.
    pub async fn conversations(&self, p: &Principal) -> Result<Vec<ConversationView>, ServiceError> {
        p.require_active()?;
        Ok(self.store.conversations_for_user(p.user_id()).await?)
    }

    /// The conversation and the caller's membership, or not found.
    async fn visible(&self, user: UserId, id: ConversationId) -> Result<(Conversation, Member), ServiceError> {
        let member = self.store.member(id, user).await?.ok_or(DomainError::ConversationNotFound)?;
        let conv = self.store.conversation(id).await?.ok_or(DomainError::ConversationNotFound)?;
        Ok((conv, member))
    }

    /// The conversation, the caller's membership if a member, and why the caller may read
    /// it; `not_found` when it may not (or the id does not exist). Every read of a patient's
    /// conversation, a member's too, is in the audit log before the answer.
    async fn readable(
        &self,
        p: &Principal,
        id: ConversationId,
    ) -> Result<(Conversation, Option<Member>, Access), ServiceError> {
        let conv = self.store.conversation(id).await?.ok_or(DomainError::ConversationNotFound)?;
        if let Some(m) = self.store.member(id, p.user_id()).await? {
            self.patients.member_read(p, &conv).await?;
            return Ok((conv, Some(m), Access::Member));
        }
        match self.patients.reader_access(p, &conv).await? {
            Some(access) => Ok((conv, None, access)),
            None => Err(DomainError::ConversationNotFound.into()),
        }
    }

    /// A conversation with its members, the caller's membership (`None` for a reader who is
    /// not a member) and the caller's access.
    pub async fn conversation(
        &self,
        p: &Principal,
        id: ConversationId,
    ) -> Result<(Conversation, Option<Member>, Access, Vec<Member>), ServiceError> {
        p.require_active()?;
        let (conv, me, access) = self.readable(p, id).await?;
        let members = self.store.members(id).await?;
        Ok((conv, me, access, members))
    }

    /// A page of history and whether more lies beyond it.
    pub async fn history(
        &self,
        p: &Principal,
        id: ConversationId,
        page: HistoryPage,
        limit: u32,
    ) -> Result<(Vec<Message>, bool), ServiceError> {
        p.require_active()?;
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::InvalidRequest(format!("limit must be between 1 and {MAX_PAGE}")));
        }
        self.readable(p, id).await?;
        let mut messages = self.store.messages(id, page, limit + 1).await?;
        let has_more = messages.len() > limit as usize;
        if has_more {
            match page {
                // Pages toward the past drop the oldest extra; toward the future, the newest.
                HistoryPage::Latest | HistoryPage::Before(_) => {
                    messages.remove(0);
                }
                HistoryPage::After(_) => {
                    messages.pop();
                }
            }
        }
        Ok((messages, has_more))
    }

    /// A message the caller can see, with the caller's membership (`None` for a reader who
    /// is not a member).
    pub async fn message(&self, p: &Principal, id: MessageId) -> Result<(Message, Option<Member>), ServiceError> {
        p.require_active()?;
        let message = self.store.message(id).await?.ok_or(DomainError::MessageNotFound)?;
        match self.readable(p, message.conversation).await {
            Ok((_, member, _)) => Ok((message, member)),
            Err(ServiceError::Domain(DomainError::ConversationNotFound)) => Err(DomainError::MessageNotFound.into()),
            Err(e) => Err(e),
        }
    }

    /// Every revision of a message's text, oldest first, the current one last. Hidden once
    /// recalled.
    pub async fn revisions(&self, p: &Principal, id: MessageId) -> Result<Vec<Revision>, ServiceError> {
        let (message, _) = self.message(p, id).await?;
        if message.recall.is_some() {
            return Err(DomainError::MessageRecalled.into());
        }
        if message.removal.is_some() {
            return Err(DomainError::MessageRemoved.into());
        }
        let mut revisions = self.store.revisions(id).await?;
        revisions.push(Revision {
            message: id,
            revision: message.revision,
            body: message.body.clone(),
            at: message.edited_at.unwrap_or(message.created_at),
        });
        Ok(revisions)
    }

    /// The sender's live view of a message: one row per recipient. The sender and the
    /// conversation's owners may look.
    pub async fn status(&self, p: &Principal, id: MessageId) -> Result<(Message, Vec<RecipientRow>), ServiceError> {
        let (message, me) = self.message(p, id).await?;
        if message.sender != p.user_id() && me.is_none_or(|m| m.role != MemberRole::Owner) {
            return Err(DomainError::Forbidden.into());
        }
        let rows = self.store.recipients(&message).await?;
        Ok((message, rows))
    }

    /// Relays "typing" to the other members' connections (not to the typist's own devices).
    /// Ephemeral: never stored.
    pub async fn typing(&self, p: &Principal, conn_id: u64, id: ConversationId) -> Result<(), ServiceError> {
        p.require_active()?;
        let (conv, _) = self.visible(p.user_id(), id).await?;
        if conv.kind == ConversationKind::Channel || conv.member_count as usize > TYPING_MAX_MEMBERS {
            return Ok(());
        }
        let me = p.user_id();
        let members: Vec<UserId> = match self.hub.cached_members(id) {
            Some(m) => m.iter().copied().filter(|u| *u != me).collect(),
            None => self.store.members(id).await?.into_iter().map(|m| m.user).filter(|u| *u != me).collect(),
        };
        let frame = frame_bytes(&ServerFrame::Typing { conversation_id: id.as_uuid(), user_id: p.user_id().as_uuid() });
        self.hub.send_ephemeral(members, Some(conn_id), frame);
        Ok(())
    }
}
