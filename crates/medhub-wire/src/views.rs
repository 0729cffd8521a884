//! Wire views of domain objects, and the explicit conversions that build them.
//!
//! A recalled message's text never appears in a view: `body` is `null`.

use jiff::Timestamp;
use medhub_core::event::{Event, EventKind};
use medhub_core::model::{
    self, Ack, AckResponse, Conversation, ConversationKind, DeliveryState, Member, MemberRole, Message, Priority, User,
};
use medhub_core::patient::Access;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Message priority. Urgent and critical messages ask recipients for an acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum PriorityView {
    #[default]
    Routine,
    Urgent,
    Critical,
}

impl From<Priority> for PriorityView {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Routine => PriorityView::Routine,
            Priority::Urgent => PriorityView::Urgent,
            Priority::Critical => PriorityView::Critical,
        }
    }
}

impl From<PriorityView> for Priority {
    fn from(p: PriorityView) -> Self {
        match p {
            PriorityView::Routine => Priority::Routine,
            PriorityView::Urgent => Priority::Urgent,
            PriorityView::Critical => Priority::Critical,
        }
    }
}

/// Conversation kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindView {
    Direct,
    Group,
    Channel,
}

impl From<ConversationKind> for KindView {
    fn from(k: ConversationKind) -> Self {
        match k {
            ConversationKind::Direct => KindView::Direct,
            ConversationKind::Group => KindView::Group,
            ConversationKind::Channel => KindView::Channel,
        }
    }
}

impl From<KindView> for ConversationKind {
    fn from(k: KindView) -> Self {
        match k {
            KindView::Direct => ConversationKind::Direct,
            KindView::Group => ConversationKind::Group,
            KindView::Channel => ConversationKind::Channel,
        }
    }
}

/// A member's role in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum RoleView {
    Owner,
    #[default]
    Member,
    ReadOnly,
}

impl From<MemberRole> for RoleView {
    fn from(r: MemberRole) -> Self {
        match r {
            MemberRole::Owner => RoleView::Owner,
            MemberRole::Member => RoleView::Member,
            MemberRole::ReadOnly => RoleView::ReadOnly,
        }
    }
}

impl From<RoleView> for MemberRole {
    fn from(r: RoleView) -> Self {
        match r {
            RoleView::Owner => MemberRole::Owner,
            RoleView::Member => MemberRole::Member,
            RoleView::ReadOnly => MemberRole::ReadOnly,
        }
    }
}

/// A typed acknowledgement response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AckResponseView {
    /// "I'm on it."
    Accept,
    /// "I can't take this."
    Decline,
    /// "I'll call you back within `minutes` (1-1440)."
    CallBack { minutes: u16 },
    /// "Done."
    Done,
}

impl From<AckResponse> for AckResponseView {
    fn from(a: AckResponse) -> Self {
        match a {
            AckResponse::Accept => AckResponseView::Accept,
            AckResponse::Decline => AckResponseView::Decline,
            AckResponse::CallBack { minutes } => AckResponseView::CallBack { minutes },
            AckResponse::Done => AckResponseView::Done,
        }
    }
}

impl From<AckResponseView> for AckResponse {
    fn from(a: AckResponseView) -> Self {
        match a {
            AckResponseView::Accept => AckResponse::Accept,
            AckResponseView::Decline => AckResponse::Decline,
            AckResponseView::CallBack { minutes } => AckResponse::CallBack { minutes },
            AckResponseView::Done => AckResponse::Done,
        }
    }
}

/// Who recalled a message, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecallView {
    /// `null` when an administrator recalled it.
    pub by: Option<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

/// Why and when a message's content was removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RemovalView {
    /// `retention` (the organization's retention policy) or `erasure` (the sender's GDPR
    /// erasure).
    pub cause: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

/// A message as members see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    /// Gap-free position in the conversation, starting at 1.
    pub seq: u64,
    pub sender_id: Uuid,
    /// The sender's idempotency key for this message.
    pub client_txn_id: String,
    /// The text (plain text with the Markdown subset); `null` once recalled or removed.
    pub body: Option<String>,
    pub priority: PriorityView,
    pub reply_to: Option<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// 0 for the original text, +1 per edit.
    pub revision: u32,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub edited_at: Option<Timestamp>,
    pub recalled: Option<RecallView>,
    /// Whether recipients are asked to acknowledge (urgent and critical).
    pub requires_ack: bool,
    /// Set once the content was removed (retention or erasure); the message stays as a
    /// tombstone so that the conversation's history and acknowledgements stay coherent.
    #[serde(default)]
    pub removed: Option<RemovalView>,
    /// When the sender's GDPR erasure was requested, for content kept anyway (clinical content
    /// under retention, or content under a legal hold).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub erasure_requested_at: Option<Timestamp>,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        MessageView {
            id: m.id.as_uuid(),
            conversation_id: m.conversation.as_uuid(),
            seq: m.seq.get(),
            sender_id: m.sender.as_uuid(),
            client_txn_id: m.client_txn_id.as_str().to_owned(),
            body: if m.recall.is_some() || m.removal.is_some() { None } else { Some(m.body.clone()) },
            priority: m.priority.into(),
            reply_to: m.reply_to.map(|r| r.as_uuid()),
            created_at: m.created_at,
            revision: m.revision,
            edited_at: m.edited_at,
            recalled: m.recall.map(|r| RecallView { by: r.by.map(|u| u.as_uuid()), at: r.at }),
            requires_ack: m.priority.requires_ack(),
            removed: m.removal.map(|r| RemovalView { cause: r.cause.as_str().to_owned(), at: r.at }),
            erasure_requested_at: m.erasure_requested_at,
        }
    }
}

/// A user as other users see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    /// `admin` or `user`.
    pub role: String,
    pub active: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.as_uuid(),
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            role: u.role.as_str().to_owned(),
            active: u.active,
        }
    }
}

/// A member and its receipt watermarks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub user_id: Uuid,
    pub role: RoleView,
    pub delivered_seq: u64,
    pub read_seq: u64,
    #[schema(value_type = String, format = DateTime)]
    pub joined_at: Timestamp,
}

impl From<&Member> for MemberView {
    fn from(m: &Member) -> Self {
        MemberView {
            user_id: m.user.as_uuid(),
            role: m.role.into(),
            delivered_seq: m.delivered_seq.get(),
            read_seq: m.read_seq.get(),
            joined_at: m.joined_at,
        }
    }
}

/// A conversation, as seen by one of its members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConversationView {
    pub id: Uuid,
    pub kind: KindView,
    pub title: Option<String>,
    pub created_by: Option<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Sequence number of the newest message (0 when empty).
    pub last_seq: u64,
    pub member_count: u32,
    /// The caller's role.
    pub role: RoleView,
    /// The caller's watermarks.
    pub delivered_seq: u64,
    pub read_seq: u64,
    /// Messages from others after the caller's read watermark, recalled ones excluded.
    pub unread: u64,
    /// The patient the conversation is about (the EHR's patient id), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_ref: Option<String>,
    /// Why the caller can read it. Only members can write.
    pub access: AccessView,
}

/// Why a caller can read a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessView {
    /// A member.
    Member,
    /// On the linked patient's care team (read only).
    CareTeam,
    /// Break-glass emergency access, until it expires (read only).
    BreakGlass,
}

impl From<Access> for AccessView {
    fn from(a: Access) -> Self {
        match a {
            Access::Member => AccessView::Member,
            Access::CareTeam => AccessView::CareTeam,
            Access::BreakGlass => AccessView::BreakGlass,
        }
    }
}

impl ConversationView {
    /// The view of a reader who is not a member (care team, break-glass): read only, with no
    /// watermarks of its own.
    pub fn for_reader(c: &Conversation, access: Access) -> Self {
        Self::of(c, MemberRole::ReadOnly, medhub_core::Seq::ZERO, medhub_core::Seq::ZERO, 0, access)
    }

    /// The view of a member.
    pub fn new(c: &Conversation, me: &Member, unread: u64) -> Self {
        Self::of(c, me.role, me.delivered_seq, me.read_seq, unread, Access::Member)
    }

    fn of(
        c: &Conversation,
        role: MemberRole,
        delivered: medhub_core::Seq,
        read: medhub_core::Seq,
        unread: u64,
        access: Access,
    ) -> Self {
        ConversationView {
            id: c.id.as_uuid(),
            kind: c.kind.into(),
            title: c.title.clone(),
            created_by: c.created_by.map(|u| u.as_uuid()),
            created_at: c.created_at,
            last_seq: c.last_seq.get(),
            member_count: c.member_count,
            role: role.into(),
            delivered_seq: delivered.get(),
            read_seq: read.get(),
            unread,
            patient_ref: c.patient.as_ref().map(|p| p.as_str().to_owned()),
            access: access.into(),
        }
    }
}

/// A user and role, as listed in `conversation.created`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberRef {
    pub user_id: Uuid,
    pub role: RoleView,
}

/// A recipient's acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AckView {
    pub message_id: Uuid,
    pub user_id: Uuid,
    pub response: AckResponseView,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

impl From<&Ack> for AckView {
    fn from(a: &Ack) -> Self {
        AckView { message_id: a.message.as_uuid(), user_id: a.user.as_uuid(), response: a.response.into(), at: a.at }
    }
}

/// Where a message stands for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStateView {
    Sent,
    Delivered,
    Read,
    Acknowledged,
}

impl From<DeliveryState> for DeliveryStateView {
    fn from(s: DeliveryState) -> Self {
        match s {
            DeliveryState::Sent => DeliveryStateView::Sent,
            DeliveryState::Delivered => DeliveryStateView::Delivered,
            DeliveryState::Read => DeliveryStateView::Read,
            DeliveryState::Acknowledged => DeliveryStateView::Acknowledged,
        }
    }
}

/// What happened, by kind. Each kind's fields are listed in `docs/protocol.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind")]
pub enum EventData {
    #[serde(rename = "conversation.created")]
    ConversationCreated { conversation_kind: KindView, title: Option<String>, members: Vec<MemberRef> },
    #[serde(rename = "conversation.updated")]
    ConversationUpdated { title: Option<String> },
    #[serde(rename = "member.added")]
    MemberAdded { user_id: Uuid, role: RoleView },
    #[serde(rename = "member.removed")]
    MemberRemoved { user_id: Uuid },
    #[serde(rename = "member.role_changed")]
    MemberRoleChanged { user_id: Uuid, role: RoleView },
    #[serde(rename = "message.created")]
    MessageCreated { message: Box<MessageView> },
    #[serde(rename = "message.edited")]
    MessageEdited {
        message_id: Uuid,
        seq: u64,
        revision: u32,
        /// `null` if the message has since been recalled or its content removed.
        body: Option<String>,
        #[schema(value_type = String, format = DateTime)]
        edited_at: Timestamp,
    },
    #[serde(rename = "message.recalled")]
    MessageRecalled { message_id: Uuid, seq: u64 },
    #[serde(rename = "message.acknowledged")]
    MessageAcknowledged { message_id: Uuid, seq: u64, user_id: Uuid, response: AckResponseView },
    #[serde(rename = "receipt.updated")]
    ReceiptUpdated { user_id: Uuid, delivered_seq: u64, read_seq: u64 },
}

/// A stored event: its position in the log (the cursor) and what happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// The event's position; store it and resume from it.
    pub cursor: u64,
    pub conversation_id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Who caused it; `null` for an administrator acting outside the conversation.
    pub actor_id: Option<Uuid>,
    #[serde(flatten)]
    pub data: EventData,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        let data = match &e.kind {
            EventKind::ConversationCreated { kind, title, members } => EventData::ConversationCreated {
                conversation_kind: (*kind).into(),
                title: title.clone(),
                members: members.iter().map(|(u, r)| MemberRef { user_id: u.as_uuid(), role: (*r).into() }).collect(),
            },
            EventKind::ConversationUpdated { title } => EventData::ConversationUpdated { title: title.clone() },
            EventKind::MemberAdded { user, role } => {
                EventData::MemberAdded { user_id: user.as_uuid(), role: (*role).into() }
            }
            EventKind::MemberRemoved { user } => EventData::MemberRemoved { user_id: user.as_uuid() },
            EventKind::MemberRoleChanged { user, role } => {
                EventData::MemberRoleChanged { user_id: user.as_uuid(), role: (*role).into() }
            }
            EventKind::MessageCreated { message } => {
                EventData::MessageCreated { message: Box::new(MessageView::from(&**message)) }
            }
            EventKind::MessageEdited { message, seq, revision, body, edited_at } => EventData::MessageEdited {
                message_id: message.as_uuid(),
                seq: seq.get(),
                revision: *revision,
                body: body.clone(),
                edited_at: *edited_at,
            },
            EventKind::MessageRecalled { message, seq } => {
                EventData::MessageRecalled { message_id: message.as_uuid(), seq: seq.get() }
            }
            EventKind::MessageAcknowledged { message, seq, user, response } => EventData::MessageAcknowledged {
                message_id: message.as_uuid(),
                seq: seq.get(),
                user_id: user.as_uuid(),
                response: (*response).into(),
            },
            EventKind::ReceiptUpdated { user, delivered_seq, read_seq, .. } => EventData::ReceiptUpdated {
                user_id: user.as_uuid(),
                delivered_seq: delivered_seq.get(),
                read_seq: read_seq.get(),
            },
        };
        EventView {
            cursor: e.id.get(),
            conversation_id: e.conversation.as_uuid(),
            at: e.at,
            actor_id: e.actor.map(|u| u.as_uuid()),
            data,
        }
    }
}

/// A recipient's status for the sender's view of one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecipientStatusView {
    pub user_id: Uuid,
    pub state: DeliveryStateView,
    /// The latest acknowledgement, if any.
    pub ack: Option<AckView>,
    /// The recipient has since left the conversation; its watermarks are no longer known.
    pub left: bool,
}

impl RecipientStatusView {
    pub fn new(seq: medhub_core::Seq, user: medhub_core::UserId, member: Option<&Member>, ack: Option<&Ack>) -> Self {
        let (delivered, read) = member.map(|m| (m.delivered_seq, m.read_seq)).unwrap_or_default();
        RecipientStatusView {
            user_id: user.as_uuid(),
            state: model::delivery_state(seq, delivered, read, ack.is_some()).into(),
            ack: ack.map(AckView::from),
            left: member.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medhub_core::model::Recall;
    use medhub_core::{ClientTxnId, ConversationId, EventId, MessageId, Seq, UserId};

    fn message() -> Message {
        Message {
            id: MessageId::new_v7(),
            conversation: ConversationId::new_v7(),
            seq: Seq::new(7),
            sender: UserId::new_v7(),
            client_txn_id: ClientTxnId::parse("t-1").unwrap(),
            body: "BP 80/40, please come".into(),
            priority: Priority::Critical,
            reply_to: None,
            created_at: Timestamp::from_second(1_800_000_000).unwrap(),
            revision: 0,
            edited_at: None,
            recall: None,
            event: EventId::new(3),
            request_hash: [0; 32],
            acknowledged: false,
            removal: None,
            erasure_requested_at: None,
        }
    }

    #[test]
    fn removed_messages_have_no_body_on_the_wire() {
        let mut m = message();
        // The store empties the body; the view must not show even what is left.
        m.removal =
            Some(medhub_core::model::Removal { at: m.created_at, cause: medhub_core::model::RemovalCause::Retention });
        let v = MessageView::from(&m);
        assert_eq!(v.body, None);
        assert_eq!(v.removed.as_ref().map(|r| r.cause.as_str()), Some("retention"));
        let json = serde_json::to_string(&v).unwrap();
        assert!(!json.contains("BP 80/40"), "{json}");
    }

    #[test]
    fn recalled_messages_have_no_body_on_the_wire() {
        let mut m = message();
        assert_eq!(MessageView::from(&m).body.as_deref(), Some("BP 80/40, please come"));
        m.recall = Some(Recall { by: None, at: m.created_at });
        let v = MessageView::from(&m);
        assert_eq!(v.body, None);
        let json = serde_json::to_string(&v).unwrap();
        assert!(!json.contains("BP 80/40"), "{json}");
    }

    #[test]
    fn event_view_serializes_flat_with_its_kind() {
        let m = message();
        let e = Event {
            id: EventId::new(42),
            conversation: m.conversation,
            at: m.created_at,
            actor: Some(m.sender),
            kind: EventKind::MessageCreated { message: Box::new(m.clone()) },
        };
        let v = EventView::from(&e);
        let json: serde_json::Value = serde_json::to_value(&v).unwrap();
        assert_eq!(json["cursor"], 42);
        assert_eq!(json["kind"], "message.created");
        assert_eq!(json["message"]["seq"], 7);
        assert_eq!(json["message"]["priority"], "critical");
        assert_eq!(json["message"]["requires_ack"], true);
        let back: EventView = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn ack_responses_are_tagged() {
        let v = AckResponseView::CallBack { minutes: 10 };
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"kind":"call_back","minutes":10}"#);
        assert_eq!(serde_json::from_str::<AckResponseView>(r#"{"kind":"done"}"#).unwrap(), AckResponseView::Done);
        assert!(serde_json::from_str::<AckResponseView>(r#"{"kind":"maybe"}"#).is_err());
    }
}
