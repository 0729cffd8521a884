//! Stored events: the durable, ordered log that clients follow with a cursor.
//!
//! Every change a member must learn about is one event, written in the same transaction as the
//! change. Ephemeral signals (typing, presence) are not events and never reach the log.

use jiff::Timestamp;

use crate::ids::{ConversationId, EventId, MessageId, Seq, UserId};
use crate::model::{AckResponse, ConversationKind, MemberRole, Message};

/// One entry of the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Gap-free position in the log; the client's cursor.
    pub id: EventId,
    pub conversation: ConversationId,
    pub at: Timestamp,
    /// Who caused it; `None` for the operator.
    pub actor: Option<UserId>,
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    ConversationCreated {
        kind: ConversationKind,
        title: Option<String>,
        members: Vec<(UserId, MemberRole)>,
    },
    ConversationUpdated {
        title: Option<String>,
    },
    MemberAdded {
        user: UserId,
        role: MemberRole,
    },
    MemberRemoved {
        user: UserId,
    },
    MemberRoleChanged {
        user: UserId,
        role: MemberRole,
    },
    /// A new message. When replayed after a recall, the message carries its recall and the
    /// wire layer hides its body.
    MessageCreated {
        message: Box<Message>,
    },
    /// A new revision of a message's body. `body` is `None` when the message has since been
    /// recalled.
    MessageEdited {
        message: MessageId,
        seq: Seq,
        revision: u32,
        body: Option<String>,
        edited_at: Timestamp,
    },
    MessageRecalled {
        message: MessageId,
        seq: Seq,
    },
    MessageAcknowledged {
        message: MessageId,
        seq: Seq,
        user: UserId,
        response: AckResponse,
    },
    /// A member's receipt watermarks moved. Sent to the member's own devices and to the
    /// senders of the messages the move covers, not to the whole conversation.
    ReceiptUpdated {
        user: UserId,
        delivered_seq: Seq,
        read_seq: Seq,
        targets: Vec<UserId>,
    },
}

impl EventKind {
    /// Stable name, used on the wire and as the stored discriminant.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ConversationCreated { .. } => "conversation.created",
            EventKind::ConversationUpdated { .. } => "conversation.updated",
            EventKind::MemberAdded { .. } => "member.added",
            EventKind::MemberRemoved { .. } => "member.removed",
            EventKind::MemberRoleChanged { .. } => "member.role_changed",
            EventKind::MessageCreated { .. } => "message.created",
            EventKind::MessageEdited { .. } => "message.edited",
            EventKind::MessageRecalled { .. } => "message.recalled",
            EventKind::MessageAcknowledged { .. } => "message.acknowledged",
            EventKind::ReceiptUpdated { .. } => "receipt.updated",
        }
    }
}
