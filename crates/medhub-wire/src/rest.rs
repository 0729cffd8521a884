//! REST request and response bodies under `/api/v1`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::frames::Token;
use crate::views::{
    AckResponseView, AckView, ConversationView, KindView, MemberView, MessageView, PriorityView, RecipientStatusView,
    RoleView, UserView,
};

/// `POST /api/v1/auth/login`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    #[schema(value_type = String, format = Password)]
    pub password: Token,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest").field("username", &self.username).finish_non_exhaustive()
    }
}

/// A new session.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// Opaque bearer token: send it as `Authorization: Bearer <token>`. WebSockets use a
    /// ticket from `POST /api/v1/auth/ws-ticket` instead.
    #[schema(value_type = String)]
    pub token: Token,
    pub session_id: Uuid,
    pub user: UserView,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// Signed in with a one-time password: only `POST /api/v1/auth/password` works until it
    /// is changed. (The same as `state == "password_change_required"`.)
    pub password_change_required: bool,
    /// The next step of sign-in; only `active` reaches conversations.
    pub state: crate::identity::SessionStateView,
    /// After single sign-on: the relative path given to `/api/v1/auth/oidc/start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to: Option<String>,
}

/// `POST /api/v1/auth/password`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password)]
    pub current_password: Token,
    #[schema(value_type = String, format = Password)]
    pub new_password: Token,
}

impl std::fmt::Debug for ChangePasswordRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangePasswordRequest { .. }")
    }
}

/// `GET /api/v1/me`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MeResponse {
    pub user: UserView,
    pub session_id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

/// One member to add at creation.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    pub user_id: Uuid,
    #[serde(default)]
    pub role: RoleView,
}

/// `POST /api/v1/conversations`. The caller joins as owner (as plain member of a direct
/// conversation).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversationRequest {
    pub kind: KindView,
    #[serde(default)]
    pub title: Option<String>,
    /// For a direct conversation: exactly the other person.
    pub members: Vec<MemberSpec>,
    /// The patient the conversation is about (groups only): the EHR's patient id, 1-64
    /// characters of `[A-Za-z0-9.-]`. The patient's care team may then read it.
    #[serde(default)]
    pub patient_ref: Option<String>,
}

/// `PATCH /api/v1/conversations/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConversationRequest {
    pub title: Option<String>,
}

/// A conversation with its members.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ConversationDetail {
    pub conversation: ConversationView,
    pub members: Vec<MemberView>,
}

/// `GET /api/v1/conversations`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ConversationList {
    pub conversations: Vec<ConversationView>,
}

/// `POST /api/v1/conversations/{id}/members`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub user_id: Uuid,
    #[serde(default)]
    pub role: RoleView,
}

/// `PATCH /api/v1/conversations/{id}/members/{user_id}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoleRequest {
    pub role: RoleView,
}

/// The event a change produced (absent when nothing changed).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ChangeResponse {
    pub cursor: Option<u64>,
}

/// `POST /api/v1/conversations/{id}/messages`: the same fields as the `send` frame.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    pub client_txn_id: String,
    pub body: String,
    #[serde(default)]
    pub priority: PriorityView,
    #[serde(default)]
    pub reply_to: Option<Uuid>,
}

/// Answer to a send.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SendMessageResponse {
    pub message: MessageView,
    pub duplicate: bool,
}

/// A page of history, in ascending sequence order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    pub messages: Vec<MessageView>,
    /// Whether more messages exist beyond this page in the direction asked.
    pub has_more: bool,
}

/// `PATCH /api/v1/messages/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessageRequest {
    pub body: String,
}

/// A message after an edit or recall.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageResponse {
    pub message: MessageView,
}

/// An earlier revision of a message's text.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RevisionView {
    pub revision: u32,
    pub body: String,
    #[schema(value_type = String, format = DateTime)]
    pub written_at: Timestamp,
}

/// `GET /api/v1/messages/{id}/revisions`: every revision, oldest first, current last.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RevisionList {
    pub revisions: Vec<RevisionView>,
}

/// `POST /api/v1/conversations/{id}/receipts`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequest {
    #[serde(default)]
    pub delivered_seq: Option<u64>,
    #[serde(default)]
    pub read_seq: Option<u64>,
}

/// The caller's watermarks after a receipt.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReceiptResponse {
    pub delivered_seq: u64,
    pub read_seq: u64,
}

/// `POST /api/v1/messages/{id}/ack`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub response: AckResponseView,
}

/// Answer to an acknowledgement.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AckResponseBody {
    pub ack: AckView,
}

/// `GET /api/v1/messages/{id}/status`: the sender's live view, one row per recipient.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageStatus {
    pub message_id: Uuid,
    pub seq: u64,
    pub requires_ack: bool,
    pub recipients: Vec<RecipientStatusView>,
}

/// `GET /api/v1/events`: the long-polling transport.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EventsResponse {
    /// The same frames, in the same order, as the WebSocket would deliver: `event` frames
    /// and ephemeral `typing`/`presence` frames.
    pub frames: Vec<crate::ServerFrame>,
    /// Pass this as `cursor` on the next poll.
    pub cursor: u64,
}

/// `GET /api/v1/users`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

/// Health probes.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}
