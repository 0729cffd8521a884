//! Column lists shared by both backends, so that row decoders and queries agree.

pub(crate) const USER_COLS: &str =
    "id, org_id, username, display_name, role, active, password_hash, must_change_password, created_at";

/// Session columns; a joined user row starts at [`SESSION_COL_COUNT`].
pub(crate) const SESSION_COLS: &str =
    "id, user_id, token_hash, state, created_at, last_activity_at, expires_at, revoked_at, mfa_at, ip, user_agent";

pub(crate) const SESSION_COL_COUNT: usize = 11;

pub(crate) const CONVERSATION_COLS: &str =
    "id, kind, title, created_by, created_at, last_seq, member_count, owner_count, org_id, patient_ref";

/// Conversation columns; a joined row's next columns start here.
pub(crate) const CONVERSATION_COL_COUNT: usize = 10;

pub(crate) const MEMBER_COLS: &str = "conversation_id, user_id, role, delivered_seq, read_seq, joined_at";

pub(crate) const MESSAGE_COLS: &str = "id, conversation_id, seq, sender_id, client_txn_id, body, priority, reply_to, \
     created_at, revision, edited_at, recalled_at, recalled_by, event_id, request_hash, acknowledged";

pub(crate) const MESSAGE_COLS_M: &str = "m.id, m.conversation_id, m.seq, m.sender_id, m.client_txn_id, m.body, \
     m.priority, m.reply_to, m.created_at, m.revision, m.edited_at, m.recalled_at, m.recalled_by, m.event_id, \
     m.request_hash, m.acknowledged";

pub(crate) const ACK_COLS: &str = "message_id, user_id, response, minutes, at";

/// `cols` with every column qualified by `alias`.
pub(crate) fn prefixed(cols: &str, alias: &str) -> String {
    cols.split(", ").map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

/// The event columns in the order `EventRow` decoders read them, followed by the superseded
/// revision body (16) and the message columns (17..33).
pub(crate) const EVENT_SELECT: &str = "SELECT e.id, e.conversation_id, e.kind, e.at, e.actor_id, e.message_id, e.seq,
        e.revision, e.subject_user_id, e.role, e.delivered_seq, e.read_seq, e.ack_response, e.ack_minutes, e.title,
        e.conv_kind, r.body, ";

/// Joins that bring in what message events render from.
pub(crate) const EVENT_JOINS: &str = " FROM events e
     LEFT JOIN messages m ON m.id = e.message_id AND e.kind IN ('message.created', 'message.edited')
     LEFT JOIN message_revisions r ON r.message_id = e.message_id AND r.revision = e.revision
           AND e.kind IN ('message.created', 'message.edited')";

/// Audit record columns in the order the row decoders read them; `seq` and `leaf_hash`
/// follow at [`AUDIT_COL_COUNT`].
pub(crate) const AUDIT_COLS: &str = "id, at, actor_id, session_id, action, target, outcome, reason, ip, version, org_id, \
     device, object_type, object_id, patient_ref, node, region";

pub(crate) const AUDIT_COL_COUNT: usize = 17;
