//! How an event maps to the columns of the `events` table, and back. Shared by both backends
//! so the two stay identical.

use jiff::Timestamp;
use medhub_core::event::{Event, EventKind};
use medhub_core::model::{AckResponse, ConversationKind, MemberRole, Message};
use medhub_core::plan::Effects;
use medhub_core::{ConversationId, EventId, MessageId, Seq, UserId};

use crate::StoreError;

/// The kind-specific columns of one event row.
#[derive(Debug, Default)]
pub(crate) struct EventColumns<'a> {
    pub message: Option<MessageId>,
    pub seq: Option<Seq>,
    pub revision: Option<u32>,
    pub subject: Option<UserId>,
    pub role: Option<MemberRole>,
    pub delivered: Option<Seq>,
    pub read: Option<Seq>,
    pub ack: Option<AckResponse>,
    pub title: Option<&'a str>,
    pub conv_kind: Option<ConversationKind>,
    /// Rows for `event_targets`.
    pub targets: &'a [UserId],
}

impl<'a> EventColumns<'a> {
    pub fn of(ev: &'a Event) -> Self {
        let mut c = EventColumns::default();
        match &ev.kind {
            EventKind::ConversationCreated { kind, title, .. } => {
                c.conv_kind = Some(*kind);
                c.title = title.as_deref();
            }
            EventKind::ConversationUpdated { title } => c.title = title.as_deref(),
            EventKind::MemberAdded { user, role } | EventKind::MemberRoleChanged { user, role } => {
                c.subject = Some(*user);
                c.role = Some(*role);
            }
            EventKind::MemberRemoved { user } => c.subject = Some(*user),
            EventKind::MessageCreated { message } => {
                c.message = Some(message.id);
                c.seq = Some(message.seq);
                c.revision = Some(0);
            }
            EventKind::MessageEdited { message, seq, revision, .. } => {
                c.message = Some(*message);
                c.seq = Some(*seq);
                c.revision = Some(*revision);
            }
            EventKind::MessageRecalled { message, seq } => {
                c.message = Some(*message);
                c.seq = Some(*seq);
            }
            EventKind::MessageAcknowledged { message, seq, user, response } => {
                c.message = Some(*message);
                c.seq = Some(*seq);
                c.subject = Some(*user);
                c.ack = Some(*response);
            }
            EventKind::ReceiptUpdated { user, delivered_seq, read_seq, targets } => {
                c.subject = Some(*user);
                c.delivered = Some(*delivered_seq);
                c.read = Some(*read_seq);
                c.targets = targets;
            }
        }
        c
    }
}

/// An event row as read back, with what its kind needs joined in.
#[derive(Debug)]
pub(crate) struct EventRow {
    pub id: EventId,
    pub conversation: ConversationId,
    pub kind: String,
    pub at: Timestamp,
    pub actor: Option<UserId>,
    pub message_id: Option<MessageId>,
    pub seq: Option<Seq>,
    pub revision: Option<u32>,
    pub subject: Option<UserId>,
    pub role: Option<MemberRole>,
    pub delivered: Option<Seq>,
    pub read: Option<Seq>,
    pub ack: Option<AckResponse>,
    pub title: Option<String>,
    pub conv_kind: Option<ConversationKind>,
    /// The message's current state (created and edited events).
    pub message: Option<Message>,
    /// The body of the event's revision if it has been superseded (created and edited events).
    pub superseded_body: Option<String>,
}

impl EventRow {
    pub fn needs_targets(&self) -> bool {
        self.kind == "receipt.updated"
    }

    pub fn needs_initial_members(&self) -> bool {
        self.kind == "conversation.created"
    }

    /// Rebuilds the event. `targets` and `initial_members` are only read for the kinds that
    /// need them.
    pub fn into_event(
        self,
        targets: Vec<UserId>,
        initial_members: Vec<(UserId, MemberRole)>,
    ) -> Result<Event, StoreError> {
        let missing = |what: &str| StoreError::Corrupt(format!("event {} ({}) lacks {what}", self.id, self.kind));
        let kind = match self.kind.as_str() {
            "conversation.created" => EventKind::ConversationCreated {
                kind: self.conv_kind.ok_or_else(|| missing("conversation kind"))?,
                title: self.title.clone(),
                members: initial_members,
            },
            "conversation.updated" => EventKind::ConversationUpdated { title: self.title.clone() },
            "member.added" => EventKind::MemberAdded {
                user: self.subject.ok_or_else(|| missing("user"))?,
                role: self.role.ok_or_else(|| missing("role"))?,
            },
            "member.removed" => EventKind::MemberRemoved { user: self.subject.ok_or_else(|| missing("user"))? },
            "member.role_changed" => EventKind::MemberRoleChanged {
                user: self.subject.ok_or_else(|| missing("user"))?,
                role: self.role.ok_or_else(|| missing("role"))?,
            },
            "message.created" => {
                // The message as it was created: the original text, even if edited since
                // (the edits follow as their own events), but never a recalled text, nor a
                // removed one (retention or erasure: its revisions are gone too).
                let mut m = self.message.clone().ok_or_else(|| missing("message"))?;
                if m.revision > 0 {
                    if m.recall.is_none() && m.removal.is_none() {
                        m.body = self.superseded_body.clone().ok_or_else(|| missing("original body"))?;
                    }
                    m.revision = 0;
                    m.edited_at = None;
                }
                EventKind::MessageCreated { message: Box::new(m) }
            }
            "message.edited" => {
                let m = self.message.as_ref().ok_or_else(|| missing("message"))?;
                let revision = self.revision.ok_or_else(|| missing("revision"))?;
                // A recalled or removed message's text is never replayed, in any revision.
                let body = if m.recall.is_some() || m.removal.is_some() {
                    None
                } else if m.revision == revision {
                    Some(m.body.clone())
                } else {
                    Some(self.superseded_body.clone().ok_or_else(|| missing("revision body"))?)
                };
                EventKind::MessageEdited { message: m.id, seq: m.seq, revision, body, edited_at: self.at }
            }
            "message.recalled" => EventKind::MessageRecalled {
                message: self.message_id.ok_or_else(|| missing("message id"))?,
                seq: self.seq.ok_or_else(|| missing("seq"))?,
            },
            "message.acknowledged" => EventKind::MessageAcknowledged {
                message: self.message_id.ok_or_else(|| missing("message id"))?,
                seq: self.seq.ok_or_else(|| missing("seq"))?,
                user: self.subject.ok_or_else(|| missing("user"))?,
                response: self.ack.ok_or_else(|| missing("response"))?,
            },
            "receipt.updated" => EventKind::ReceiptUpdated {
                user: self.subject.ok_or_else(|| missing("user"))?,
                delivered_seq: self.delivered.ok_or_else(|| missing("delivered_seq"))?,
                read_seq: self.read.ok_or_else(|| missing("read_seq"))?,
                targets,
            },
            other => return Err(StoreError::Corrupt(format!("event {} has unknown kind {other}", self.id))),
        };
        Ok(Event { id: self.id, conversation: self.conversation, at: self.at, actor: self.actor, kind })
    }
}

/// The role a member joined with, read off the batch event that opened its period.
pub(crate) fn opening_role(e: &Effects, user: UserId, event: EventId) -> Result<MemberRole, StoreError> {
    e.events
        .iter()
        .find(|ev| ev.id == event)
        .and_then(|ev| match &ev.kind {
            EventKind::MemberAdded { role, .. } => Some(*role),
            EventKind::ConversationCreated { members, .. } => members.iter().find(|(u, _)| *u == user).map(|(_, r)| *r),
            _ => None,
        })
        .ok_or_else(|| StoreError::Corrupt("membership period without its event".into()))
}
