//! Domain records: organizations, users, conversations, members, messages and acknowledgements.

use jiff::Timestamp;

use crate::ids::{ClientTxnId, ConversationId, EventId, MessageId, OrgId, Seq, UserId};
use crate::patient::PatientRef;

/// How urgent a message is. Urgent and critical messages ask for an acknowledgement.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Priority {
    Routine,
    Urgent,
    Critical,
}

impl Priority {
    /// Whether recipients are asked for an explicit, typed acknowledgement.
    pub fn requires_ack(self) -> bool {
        !matches!(self, Priority::Routine)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Routine => "routine",
            Priority::Urgent => "urgent",
            Priority::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "routine" => Priority::Routine,
            "urgent" => Priority::Urgent,
            "critical" => Priority::Critical,
            _ => return None,
        })
    }
}

/// The shape of a conversation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ConversationKind {
    /// Exactly two people; at most one direct conversation per pair.
    Direct,
    /// A small, invitation-only group.
    Group,
    /// A large, broadcast-style conversation (a ward, a department, a whole hospital).
    Channel,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
            ConversationKind::Channel => "channel",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "direct" => ConversationKind::Direct,
            "group" => ConversationKind::Group,
            "channel" => ConversationKind::Channel,
            _ => return None,
        })
    }
}

/// A member's role inside one conversation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemberRole {
    /// Manages members and can recall any message.
    Owner,
    /// Reads and writes.
    Member,
    /// Reads only (for example a broadcast channel's audience).
    ReadOnly,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Owner => "owner",
            MemberRole::Member => "member",
            MemberRole::ReadOnly => "read_only",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "owner" => MemberRole::Owner,
            "member" => MemberRole::Member,
            "read_only" => MemberRole::ReadOnly,
            _ => return None,
        })
    }
}

/// A user's organization-wide role. Fine-grained clinical roles arrive with the identity issue.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SystemRole {
    /// Manages users and conversations.
    Admin,
    /// A regular user.
    User,
}

impl SystemRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SystemRole::Admin => "admin",
            SystemRole::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => SystemRole::Admin,
            "user" => SystemRole::User,
            _ => return None,
        })
    }
}

/// An organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub created_at: Timestamp,
    /// Sessions without user activity for this long end (15 minutes unless chosen).
    pub idle_timeout: jiff::SignedDuration,
}

impl Org {
    /// Whether `name` names this organization: names are unique whatever the letter case
    /// (and the store enforces it with a unique index on `lower(name)`).
    pub fn is_named(&self, name: &str) -> bool {
        self.name.to_lowercase() == name.trim().to_lowercase()
    }
}

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub org: OrgId,
    pub username: String,
    pub display_name: String,
    pub role: SystemRole,
    pub active: bool,
    pub created_at: Timestamp,
}

/// A conversation's current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub title: Option<String>,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    /// Sequence number of the newest message (0 when empty).
    pub last_seq: Seq,
    pub member_count: u32,
    /// Number of members with the owner role (the last owner cannot leave).
    pub owner_count: u32,
    /// The organization (tenant) it belongs to: only its users can be members.
    pub org: OrgId,
    /// The patient it is about, if any: the patient's care team may read it too.
    pub patient: Option<PatientRef>,
}

/// One member of a conversation, with its receipt watermarks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub conversation: ConversationId,
    pub user: UserId,
    pub role: MemberRole,
    /// Every message up to this sequence number reached one of the member's devices.
    pub delivered_seq: Seq,
    /// The member has seen every message up to this sequence number.
    pub read_seq: Seq,
    pub joined_at: Timestamp,
}

/// A recall: the message is hidden from members but kept for audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recall {
    pub by: Option<UserId>,
    pub at: Timestamp,
}

/// Why a message's content was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalCause {
    /// Its retention ended (the expiry job).
    Retention,
    /// Its sender's personal data was erased (GDPR art. 17).
    Erasure,
}

impl RemovalCause {
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalCause::Retention => "retention",
            RemovalCause::Erasure => "erasure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [RemovalCause::Retention, RemovalCause::Erasure].into_iter().find(|c| c.as_str() == s)
    }
}

/// A removal: the message stays as a tombstone (id, conversation, sender, sequence, times,
/// acknowledgements) so that history stays coherent; its text and earlier revisions are gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    pub at: Timestamp,
    pub cause: RemovalCause,
}

/// A message as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub seq: Seq,
    pub sender: UserId,
    pub client_txn_id: ClientTxnId,
    pub body: String,
    pub priority: Priority,
    pub reply_to: Option<MessageId>,
    pub created_at: Timestamp,
    /// 0 for the original text; each edit adds one.
    pub revision: u32,
    pub edited_at: Option<Timestamp>,
    pub recall: Option<Recall>,
    /// The event that created the message; members at that event are its recipients.
    pub event: EventId,
    /// Fingerprint of the send request, to tell an honest resend from a reused key.
    pub request_hash: [u8; 32],
    /// Whether any recipient has acknowledged it (edits are refused after that).
    pub acknowledged: bool,
    /// Set when the content was removed (retention or erasure); `body` is then empty.
    pub removal: Option<Removal>,
    /// When the sender's erasure was requested, for content that is kept anyway (clinical
    /// content under retention, or content under a legal hold).
    pub erasure_requested_at: Option<Timestamp>,
}

/// A typed acknowledgement response to an urgent or critical message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckResponse {
    /// "I'm on it."
    Accept,
    /// "I can't take this": the sender (or escalation) must find someone else.
    Decline,
    /// "I'll call you back within N minutes" (1..=1440).
    CallBack { minutes: u16 },
    /// "Done."
    Done,
}

impl AckResponse {
    pub fn kind_str(self) -> &'static str {
        match self {
            AckResponse::Accept => "accept",
            AckResponse::Decline => "decline",
            AckResponse::CallBack { .. } => "call_back",
            AckResponse::Done => "done",
        }
    }

    /// Rebuilds a response from its stored parts.
    pub fn from_parts(kind: &str, minutes: Option<u16>) -> Option<Self> {
        Some(match (kind, minutes) {
            ("accept", _) => AckResponse::Accept,
            ("decline", _) => AckResponse::Decline,
            ("done", _) => AckResponse::Done,
            ("call_back", Some(minutes)) => AckResponse::CallBack { minutes },
            _ => return None,
        })
    }

    pub fn minutes(self) -> Option<u16> {
        match self {
            AckResponse::CallBack { minutes } => Some(minutes),
            _ => None,
        }
    }
}

/// A recipient's latest acknowledgement of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub message: MessageId,
    pub user: UserId,
    pub response: AckResponse,
    pub at: Timestamp,
}

/// Where a message stands for one recipient, as the sender sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeliveryState {
    Sent,
    Delivered,
    Read,
    Acknowledged,
}

/// Derives one recipient's state from its watermarks and acknowledgement.
pub fn delivery_state(seq: Seq, member_delivered: Seq, member_read: Seq, acked: bool) -> DeliveryState {
    if acked {
        DeliveryState::Acknowledged
    } else if member_read >= seq {
        DeliveryState::Read
    } else if member_delivered >= seq {
        DeliveryState::Delivered
    } else {
        DeliveryState::Sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_their_names() {
        for p in [Priority::Routine, Priority::Urgent, Priority::Critical] {
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        for k in [ConversationKind::Direct, ConversationKind::Group, ConversationKind::Channel] {
            assert_eq!(ConversationKind::parse(k.as_str()), Some(k));
        }
        for r in [MemberRole::Owner, MemberRole::Member, MemberRole::ReadOnly] {
            assert_eq!(MemberRole::parse(r.as_str()), Some(r));
        }
        for a in [AckResponse::Accept, AckResponse::Decline, AckResponse::Done, AckResponse::CallBack { minutes: 15 }] {
            assert_eq!(AckResponse::from_parts(a.kind_str(), a.minutes()), Some(a));
        }
        assert_eq!(Priority::parse("URGENT"), None);
        assert_eq!(AckResponse::from_parts("call_back", None), None);
    }

    #[test]
    fn only_urgent_and_critical_need_acks() {
        assert!(!Priority::Routine.requires_ack());
        assert!(Priority::Urgent.requires_ack());
        assert!(Priority::Critical.requires_ack());
    }

    #[test]
    fn delivery_state_climbs_sent_delivered_read_acknowledged() {
        let s = Seq::new(5);
        assert_eq!(delivery_state(s, Seq::new(4), Seq::new(0), false), DeliveryState::Sent);
        assert_eq!(delivery_state(s, Seq::new(5), Seq::new(0), false), DeliveryState::Delivered);
        assert_eq!(delivery_state(s, Seq::new(5), Seq::new(9), false), DeliveryState::Read);
        // A read watermark implies delivery even if the delivered receipt never arrived.
        assert_eq!(delivery_state(s, Seq::new(0), Seq::new(5), false), DeliveryState::Read);
        assert_eq!(delivery_state(s, Seq::new(0), Seq::new(0), true), DeliveryState::Acknowledged);
    }
}

/// What a session may do. Only `Active` reaches patient data; the other states reach just
/// the routes of their next step (see `medhub_core::session`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Fully signed in: password and second factor.
    Active,
    /// Signed in with a one-time password: only the password change is allowed.
    PasswordChangeRequired,
    /// The account has no second factor yet: only enrolment is allowed.
    MfaEnrollmentRequired,
    /// The password was right; the second factor is still to be proven.
    MfaRequired,
}

impl SessionState {
    pub const ALL: [SessionState; 4] = [
        SessionState::Active,
        SessionState::PasswordChangeRequired,
        SessionState::MfaEnrollmentRequired,
        SessionState::MfaRequired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Active => "active",
            SessionState::PasswordChangeRequired => "password_change_required",
            SessionState::MfaEnrollmentRequired => "mfa_enrollment_required",
            SessionState::MfaRequired => "mfa_required",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A sign-in session. The bearer token itself is never stored, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: crate::ids::SessionId,
    pub user: UserId,
    pub token_hash: [u8; 32],
    pub state: SessionState,
    pub created_at: Timestamp,
    /// The last user action (heartbeats and automatic refreshes do not count).
    pub last_activity_at: Timestamp,
    /// The absolute end of the session, whatever its activity.
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// When the second factor was last proven in this session (sign-in or step-up).
    pub mfa_at: Option<Timestamp>,
    /// The client's address at sign-in.
    pub ip: Option<String>,
    /// The client's `User-Agent` at sign-in, shortened.
    pub user_agent: Option<String>,
}
