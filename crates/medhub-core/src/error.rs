//! The domain's error type: every reason the core can refuse a command.
//!
//! The wire crate maps each variant to a stable wire code and HTTP status in one table.

/// Why the domain refused a command. Each variant is one cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The conversation does not exist, or the caller is not a member. The two are
    /// deliberately indistinguishable so that ids leak nothing.
    #[error("conversation not found")]
    ConversationNotFound,
    /// The message does not exist, or the caller cannot see it.
    #[error("message not found")]
    MessageNotFound,
    /// The user does not exist or is deactivated.
    #[error("user not found")]
    UserNotFound,
    /// The session does not exist, has ended, or is not the caller's.
    #[error("session not found")]
    SessionNotFound,
    /// The break-glass grant does not exist, has ended, or the caller may not end it.
    #[error("break-glass grant not found")]
    GrantNotFound,
    /// The caller is a member but its role does not allow this action.
    #[error("not allowed for your role in this conversation")]
    Forbidden,
    /// Message body is empty (after trimming white space).
    #[error("message body is empty")]
    EmptyBody,
    /// Message body exceeds the configured maximum size in bytes.
    #[error("message body is larger than {max} bytes")]
    BodyTooLarge { max: usize },
    /// Message body contains a control character other than tab, line feed or carriage return.
    #[error("message body contains a control character")]
    BodyControlCharacter,
    /// Client transaction id is not 1-64 characters of `[A-Za-z0-9_.:-]`.
    #[error("client_txn_id must be 1-64 characters of [A-Za-z0-9_.:-]")]
    InvalidClientTxnId,
    /// The client transaction id was already used by this sender for a different message.
    #[error("client_txn_id was already used for a different message")]
    IdempotencyKeyReused,
    /// `reply_to` names a message that is not in this conversation.
    #[error("reply_to must name a message in the same conversation")]
    InvalidReplyTo,
    /// The message was recalled; it can no longer be edited, acknowledged or replied to.
    #[error("message was recalled")]
    MessageRecalled,
    /// Only the sender may edit a message.
    #[error("only the sender may edit a message")]
    NotSender,
    /// A message that has been acknowledged can no longer be edited: send a new one.
    #[error("message was already acknowledged and can no longer be edited")]
    MessageAcknowledged,
    /// Only urgent and critical messages take acknowledgements.
    #[error("only urgent and critical messages can be acknowledged")]
    AckNotRequired,
    /// The sender cannot acknowledge its own message.
    #[error("the sender cannot acknowledge its own message")]
    AckBySender,
    /// `call_back` minutes outside 1..=1440.
    #[error("call_back minutes must be between 1 and 1440")]
    InvalidCallBackMinutes,
    /// A receipt names a sequence number beyond the conversation's last message.
    #[error("receipt sequence is beyond the last message")]
    ReceiptBeyondLastMessage,
    /// A receipt without delivered_seq or read_seq.
    #[error("receipt needs delivered_seq or read_seq")]
    EmptyReceipt,
    /// Conversation title is longer than allowed or has control characters.
    #[error("title must be at most {max} characters without control characters")]
    InvalidTitle { max: usize },
    /// A direct conversation has exactly two distinct members.
    #[error("a direct conversation has exactly two distinct members")]
    DirectNeedsTwoMembers,
    /// Members of a direct conversation cannot be changed.
    #[error("members of a direct conversation cannot be changed")]
    DirectMembersFixed,
    /// The conversation would exceed its member limit.
    #[error("conversation would exceed {max} members")]
    TooManyMembers { max: usize },
    /// The user is already a member.
    #[error("user is already a member")]
    AlreadyMember,
    /// The user is not a member.
    #[error("user is not a member")]
    NotMember,
    /// The last owner of a group or channel cannot leave or be demoted.
    #[error("the last owner cannot leave or be demoted")]
    LastOwner,
    /// A username is not 1-64 characters of `[a-z0-9._-]`.
    #[error("username must be 1-64 characters of [a-z0-9._-]")]
    InvalidUsername,
    /// A display name is empty, too long or has control characters.
    #[error("display name must be 1-128 characters without control characters")]
    InvalidDisplayName,
    /// The username is taken.
    #[error("username is already taken")]
    UsernameTaken,
    /// Password shorter or longer than the configured bounds.
    #[error("password must be between {min} and {max} characters")]
    PasswordLength { min: usize, max: usize },
    /// A conversation needs at least one member.
    #[error("a conversation needs at least one member")]
    NoMembers,
    /// A patient reference is not 1-64 characters of `[A-Za-z0-9.-]`.
    #[error("patient_ref must be 1-64 characters of [A-Za-z0-9.-]")]
    InvalidPatientRef,
    /// Only group conversations can be linked to a patient.
    #[error("only group conversations can be linked to a patient")]
    PatientLinkNotAllowed,
    /// A break-glass reason is too short, too long or has control characters.
    #[error("the reason must be {min} to {max} characters, saying why access is needed")]
    InvalidReason { min: usize, max: usize },
    /// A break-glass duration outside the allowed bounds.
    #[error("break-glass access must last between {min} and {max} minutes")]
    InvalidBreakGlassDuration { min: i64, max: i64 },
    /// The caller can already read the conversation (member or care team): no emergency
    /// access is needed, and none is recorded.
    #[error("you can already read this conversation; break-glass is not needed")]
    BreakGlassNotNeeded,
    /// The message's content was removed (retention expiry or erasure): it can no longer be
    /// edited or acknowledged.
    #[error("the message's content was removed under the retention policy or an erasure")]
    MessageRemoved,
    /// The legal hold does not exist, is another organization's, or was lifted already.
    #[error("legal hold not found")]
    HoldNotFound,
    /// A retention period outside the bounds allowed for its kind of conversation.
    #[error("retention for {class} conversations must be between {min} and {max} days")]
    InvalidRetention { class: &'static str, min: u32, max: u32 },
    /// A legal hold's reason (or the reason for lifting it) is too short, too long or has
    /// control characters.
    #[error("the reason must be {min} to {max} characters (a matter or case reference and why)")]
    InvalidHoldReason { min: usize, max: usize },
    /// The user is under a legal hold: their data cannot be erased until it is lifted.
    #[error("the user is under a legal hold; lift it before erasing their personal data")]
    UnderLegalHold,
    /// The handoff does not exist, or the caller is neither its giver nor its receiver.
    #[error("handoff not found")]
    HandoffNotFound,
    /// A handoff draft or acceptance that breaks a rule (the reason says which).
    #[error("invalid handoff: {reason}")]
    InvalidHandoff { reason: &'static str },
    /// The handoff was accepted, cancelled or has expired.
    #[error("the handoff was already accepted, cancelled or has expired")]
    HandoffClosed,
    /// A presence override that breaks a rule (the reason says which).
    #[error("invalid presence: {reason}")]
    InvalidPresence { reason: &'static str },
    /// Notification preferences that break a rule (the reason says which).
    #[error("invalid notification preferences: {reason}")]
    InvalidPreferences { reason: &'static str },
    /// The caller has no push subscription with this endpoint.
    #[error("push subscription not found")]
    PushSubscriptionNotFound,
    /// An escalation policy outside its bounds.
    #[error("invalid escalation policy: {0}")]
    InvalidEscalationPolicy(crate::escalation::PolicyError),
    /// A contact point (e-mail, phone, pager, push subscription) that cannot be used; the text
    /// says which and why, and never repeats the value.
    #[error("{0}")]
    InvalidContactPoint(&'static str),
}
