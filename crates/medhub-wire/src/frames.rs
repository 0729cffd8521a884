//! Real-time frames: every frame type, declared once.
//!
//! Client frames that expect an answer carry an optional `id` (1-64 characters, chosen by the
//! client); the answer echoes it. [`ClientFrame::reply`] is the request/response table.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::WireError;
use crate::views::{AckResponseView, AckView, EventView, MessageView, PriorityView};

/// A bearer token. Its `Debug` output is redacted so that it can never reach a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Frames a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// First frame on every connection: authenticate with a ticket from
    /// `POST /api/v1/auth/ws-ticket`, and resume after `cursor` if given. (`token`, the
    /// session's bearer token, is accepted only where the operator allowed it.)
    Hello {
        #[serde(default)]
        #[schema(value_type = Option<String>)]
        ticket: Option<Token>,
        #[serde(default)]
        #[schema(value_type = Option<String>)]
        token: Option<Token>,
        /// The last event cursor the client processed; omit on a fresh start.
        #[serde(default)]
        cursor: Option<u64>,
    },
    /// Send a message. Answered by `sent` once durably committed.
    Send {
        #[serde(default)]
        id: Option<String>,
        conversation_id: Uuid,
        client_txn_id: String,
        body: String,
        #[serde(default)]
        priority: PriorityView,
        #[serde(default)]
        reply_to: Option<Uuid>,
    },
    /// Replace a message's text (sender only). Answered by `edited`.
    Edit {
        #[serde(default)]
        id: Option<String>,
        message_id: Uuid,
        body: String,
    },
    /// Hide a message from members (sender or owner). Answered by `recalled`.
    Recall {
        #[serde(default)]
        id: Option<String>,
        message_id: Uuid,
    },
    /// Move the caller's delivered and/or read watermark. Answered by `receipt_saved`.
    Receipt {
        #[serde(default)]
        id: Option<String>,
        conversation_id: Uuid,
        #[serde(default)]
        delivered_seq: Option<u64>,
        #[serde(default)]
        read_seq: Option<u64>,
    },
    /// Acknowledge an urgent or critical message. Answered by `acked`.
    Ack {
        #[serde(default)]
        id: Option<String>,
        message_id: Uuid,
        response: AckResponseView,
    },
    /// "I am typing" in a conversation. Ephemeral, never stored, no answer.
    Typing { conversation_id: Uuid },
    /// Follow the online state of these users (replaces the previous set; at most 500).
    /// Answered by `presence_state`, then `presence` frames on changes.
    PresenceSubscribe {
        #[serde(default)]
        id: Option<String>,
        user_ids: Vec<Uuid>,
    },
    /// Application-level heartbeat for clients that cannot send WebSocket pings. Answered by
    /// `pong`.
    Ping {
        #[serde(default)]
        id: Option<String>,
    },
}

impl ClientFrame {
    /// The `type` of the frame that answers this one, if any: the request/response table.
    pub fn reply(&self) -> Option<&'static str> {
        Some(match self {
            ClientFrame::Hello { .. } => "ready",
            ClientFrame::Send { .. } => "sent",
            ClientFrame::Edit { .. } => "edited",
            ClientFrame::Recall { .. } => "recalled",
            ClientFrame::Receipt { .. } => "receipt_saved",
            ClientFrame::Ack { .. } => "acked",
            ClientFrame::Typing { .. } => return None,
            ClientFrame::PresenceSubscribe { .. } => "presence_state",
            ClientFrame::Ping { .. } => "pong",
        })
    }

    /// Whether the frame is a user action, which restarts the session's idle timeout.
    /// Heartbeats, presence subscriptions and automatic delivery receipts are not.
    pub fn is_user_action(&self) -> bool {
        match self {
            ClientFrame::Send { .. }
            | ClientFrame::Edit { .. }
            | ClientFrame::Recall { .. }
            | ClientFrame::Ack { .. }
            | ClientFrame::Typing { .. } => true,
            ClientFrame::Receipt { read_seq, .. } => read_seq.is_some(),
            ClientFrame::Hello { .. } | ClientFrame::PresenceSubscribe { .. } | ClientFrame::Ping { .. } => false,
        }
    }

    /// The client's request id, if the frame carries one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientFrame::Send { id, .. }
            | ClientFrame::Edit { id, .. }
            | ClientFrame::Recall { id, .. }
            | ClientFrame::Receipt { id, .. }
            | ClientFrame::Ack { id, .. }
            | ClientFrame::PresenceSubscribe { id, .. }
            | ClientFrame::Ping { id } => id.as_deref(),
            ClientFrame::Hello { .. } | ClientFrame::Typing { .. } => None,
        }
    }
}

/// Online state of a user, as far as this server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Offline,
}

/// Whether a clinician can be reached now (docs/clinical.md "Presence").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStateView {
    Available,
    Busy,
    /// Do not disturb.
    InProcedure,
    OffShift,
    Offline,
}

/// One user's presence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PresenceView {
    pub user_id: Uuid,
    /// `online` while the user has a live connection to this server.
    pub status: PresenceStatus,
    /// Derived from the user's override, connections and schedules.
    pub state: PresenceStateView,
    /// When the user's override ends, if an override decides `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub until: Option<jiff::Timestamp>,
    /// On call now for some on-call role.
    #[serde(default)]
    pub on_call: bool,
}

/// The limits a connection works under, announced in `ready`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitsView {
    /// Largest message body in bytes.
    pub max_message_bytes: usize,
    /// Largest WebSocket frame or message in bytes; larger closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Sustained client frames per second.
    pub frames_per_second: u32,
    /// Burst of client frames allowed above the sustained rate.
    pub frame_burst: u32,
    /// Server-to-client frames queued for this connection before it is closed as too slow.
    pub queue_frames: usize,
    /// Requests (sends, edits, ...) awaiting their answer at once; more are read only when
    /// earlier ones are answered.
    pub max_in_flight: usize,
}

/// Frames the server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to `hello`: authenticated; replay (if a cursor was given) follows.
    Ready {
        protocol: u32,
        user_id: Uuid,
        session_id: Uuid,
        /// The newest event when the connection became live. Without a resume cursor, store
        /// this and load current state over REST; events after it arrive on this connection.
        cursor: u64,
        heartbeat_interval_ms: u64,
        limits: LimitsView,
    },
    /// A stored event, in log order. Each appears exactly once per connection.
    Event(EventView),
    /// Answer to `send`: durably committed (or, with `duplicate`, committed earlier).
    Sent {
        id: Option<String>,
        message: MessageView,
        /// `true` when this `client_txn_id` was already committed: nothing new was created.
        duplicate: bool,
    },
    /// Answer to `edit`.
    Edited { id: Option<String>, message: MessageView },
    /// Answer to `recall`.
    Recalled { id: Option<String>, message: MessageView },
    /// Answer to `receipt`: the caller's watermarks now.
    ReceiptSaved { id: Option<String>, conversation_id: Uuid, delivered_seq: u64, read_seq: u64 },
    /// Answer to `ack`.
    Acked { id: Option<String>, ack: AckView },
    /// Answer to `presence_subscribe`.
    PresenceState { id: Option<String>, users: Vec<PresenceView> },
    /// Someone is typing. Ephemeral.
    Typing { conversation_id: Uuid, user_id: Uuid },
    /// A followed user's presence changed (online or offline, an override set, cleared or
    /// expired). Ephemeral.
    Presence(PresenceView),
    /// To compliance officers (holders of `audit.read`) who are online: someone opened a
    /// patient's conversation with break-glass. Ids and times only; the reason is read with
    /// `GET /api/v1/break-glass`. Ephemeral: the grant itself is stored, and listed there.
    BreakGlass {
        grant_id: Uuid,
        user_id: Uuid,
        conversation_id: Uuid,
        #[schema(value_type = String, format = DateTime)]
        started_at: jiff::Timestamp,
        #[schema(value_type = String, format = DateTime)]
        expires_at: jiff::Timestamp,
    },
    /// To a person an urgent or critical message notifies (a recipient, or someone the
    /// escalation reached): an alert to show and sound until it is acknowledged. Ids only; the
    /// message itself arrives (or arrived) as its `message.created` event, if the person is a
    /// member. Ephemeral: the notification is in the message's delivery trace.
    Notice {
        message_id: Uuid,
        conversation_id: Uuid,
        sender_id: Uuid,
        priority: PriorityView,
        /// `new_message` (a recipient) or `escalated` (the escalation reached you).
        reason: String,
        /// The escalation step (from 1) and the repeat within it (0 first).
        step: u16,
        round: u32,
    },
    /// Answer to `ping`.
    Pong { id: Option<String> },
    /// A request failed; `id` names it when the failing frame carried one.
    Error { id: Option<String>, error: WireError },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn client_frames_parse_with_defaults() {
        let f: ClientFrame = serde_json::from_str(
            r#"{"type":"send","conversation_id":"0190f3c2-6a7b-7c3d-9e8f-0123456789ab","client_txn_id":"t1","body":"hi"}"#,
        )
        .unwrap();
        match f {
            ClientFrame::Send { id, priority, reply_to, .. } => {
                assert_eq!((id, priority, reply_to), (None, PriorityView::Routine, None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_client_frames_are_rejected() {
        for bad in [
            r#"{"type":"teleport"}"#,
            r#"{"body":"no type"}"#,
            r#"{"type":"ping","id":7}"#,
            r#"{"type":"ping","extra":true}"#,
            r#"{"type":"send","conversation_id":"not-a-uuid","client_txn_id":"t","body":"x"}"#,
            r#"{"type":"send","conversation_id":"0190f3c2-6a7b-7c3d-9e8f-0123456789ab","client_txn_id":"t","body":"x","priority":"whenever"}"#,
            r#"{"type":"receipt","conversation_id":"0190f3c2-6a7b-7c3d-9e8f-0123456789ab","read_seq":-1}"#,
            r#"[1,2,3]"#,
        ] {
            assert!(serde_json::from_str::<ClientFrame>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_never_appear_in_debug_output() {
        let f = ClientFrame::Hello { ticket: None, token: Some(Token("mh_secret".into())), cursor: Some(3) };
        assert!(!format!("{f:?}").contains("mh_secret"));
    }

    #[test]
    fn server_frames_round_trip() {
        let f = ServerFrame::Error { id: Some("r1".into()), error: WireError::new(ErrorCode::RateLimited) };
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.starts_with(r#"{"type":"error","id":"r1","error":{"code":"rate_limited""#), "{json}");
        assert_eq!(serde_json::from_str::<ServerFrame>(&json).unwrap(), f);
    }

    #[test]
    fn every_request_names_its_reply() {
        let hello = ClientFrame::Hello { ticket: Some(Token("t".into())), token: None, cursor: None };
        assert_eq!(hello.reply(), Some("ready"));
        assert_eq!(ClientFrame::Typing { conversation_id: Uuid::nil() }.reply(), None);
        assert_eq!(ClientFrame::Ping { id: Some("p".into()) }.request_id(), Some("p"));
    }
}
