//! Lean frame reading: the load generator shares two cores with the server, so it does not
//! parse whole JSON frames. It finds the few fields it needs by key.
//!
//! This works because the frames come from serde with compact output and the values read
//! are ids, numbers and fixed words without escapes; the body (which the benchmark chooses)
//! never contains a quote. The tests check the scanner against frames built with
//! `medhub-wire`'s own types, so a protocol change breaks them, not the measurements.

/// The string value of the first `"key":"…"` at or after `from`, and where it ends.
pub fn str_field<'a>(s: &'a str, key: &str, from: usize) -> Option<(&'a str, usize)> {
    let hay = s.get(from..)?;
    let pat_start = find_key(hay, key)?;
    let value_start = from + pat_start + key.len() + 3;
    let rest = s.get(value_start..)?;
    if !rest.starts_with('"') {
        return None;
    }
    let end = rest[1..].find('"')?;
    Some((&rest[1..1 + end], value_start + 1 + end + 1))
}

/// The unsigned integer value of the first `"key":123` at or after `from`.
pub fn num_field(s: &str, key: &str, from: usize) -> Option<(u64, usize)> {
    let hay = s.get(from..)?;
    let pat_start = find_key(hay, key)?;
    let value_start = from + pat_start + key.len() + 3;
    let rest = s.get(value_start..)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let v = rest.get(..digits)?.parse().ok()?;
    Some((v, value_start + digits))
}

/// Position of `"key":` in `hay`.
fn find_key(hay: &str, key: &str) -> Option<usize> {
    let bytes = hay.as_bytes();
    let mut from = 0;
    while let Some(i) = hay.get(from..)?.find(key) {
        let at = from + i;
        let before_quote = at > 0 && bytes[at - 1] == b'"';
        let after = at + key.len();
        if before_quote && bytes.get(after) == Some(&b'"') && bytes.get(after + 1) == Some(&b':') {
            return Some(at - 1);
        }
        from = at + key.len();
    }
    None
}

/// The `type` of a medhub server frame (always its first field).
pub fn frame_type(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("{\"type\":\"")?;
    rest.find('"').map(|e| &rest[..e])
}

/// The fields of a `message.created` event the benchmark uses.
#[derive(Debug, PartialEq, Eq)]
pub struct CreatedMessage<'a> {
    pub cursor: u64,
    pub conversation_id: &'a str,
    pub message_id: &'a str,
    pub seq: u64,
    pub client_txn_id: &'a str,
}

/// An `event` frame: its kind, and for `message.created` the message fields.
pub fn event(s: &str) -> Option<(&str, Option<CreatedMessage<'_>>)> {
    let (cursor, _) = num_field(s, "cursor", 0)?;
    let (kind, after_kind) = str_field(s, "kind", 0)?;
    if kind != "message.created" {
        return Some((kind, None));
    }
    let (conversation_id, _) = str_field(s, "conversation_id", 0)?;
    let message_at = find_key(&s[after_kind..], "message")? + after_kind;
    let (message_id, after_id) = str_field(s, "id", message_at)?;
    let (seq, after_seq) = num_field(s, "seq", after_id)?;
    let (client_txn_id, _) = str_field(s, "client_txn_id", after_seq)?;
    Some((kind, Some(CreatedMessage { cursor, conversation_id, message_id, seq, client_txn_id })))
}

/// A Socket.IO ack `43<id>[...]`: its id.
pub fn socketio_ack_id(s: &str) -> Option<u64> {
    let rest = s.strip_prefix("43")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest.get(..digits)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use medhub_wire::ServerFrame;
    use medhub_wire::views::{EventData, EventView, MessageView, PriorityView};
    use uuid::Uuid;

    fn message(txn: &str) -> MessageView {
        MessageView {
            id: Uuid::now_v7(),
            conversation_id: Uuid::now_v7(),
            seq: 42,
            sender_id: Uuid::now_v7(),
            client_txn_id: txn.to_owned(),
            body: Some("bench body with \"id\":\"x\" inside".to_owned()),
            priority: PriorityView::Routine,
            reply_to: None,
            created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            revision: 0,
            edited_at: None,
            recalled: None,
            requires_ack: false,
            removed: None,
            erasure_requested_at: None,
        }
    }

    #[test]
    fn event_frames_built_by_the_wire_crate_are_read() {
        let m = message("1.7.123456789.3");
        let frame = ServerFrame::Event(EventView {
            cursor: 99,
            conversation_id: m.conversation_id,
            at: m.created_at,
            actor_id: Some(m.sender_id),
            data: EventData::MessageCreated { message: Box::new(m.clone()) },
        });
        let json = serde_json::to_string(&frame).unwrap();
        assert_eq!(frame_type(&json), Some("event"));
        let (kind, msg) = event(&json).unwrap();
        assert_eq!(kind, "message.created");
        let msg = msg.unwrap();
        let conv = m.conversation_id.to_string();
        let id = m.id.to_string();
        assert_eq!(
            msg,
            CreatedMessage {
                cursor: 99,
                conversation_id: &conv,
                message_id: &id,
                seq: 42,
                client_txn_id: "1.7.123456789.3"
            }
        );
    }

    #[test]
    fn sent_and_error_frames_are_read() {
        let sent = ServerFrame::Sent { id: Some("1.2.3.4".into()), message: message("1.2.3.4"), duplicate: false };
        let json = serde_json::to_string(&sent).unwrap();
        assert_eq!(frame_type(&json), Some("sent"));
        assert_eq!(str_field(&json, "id", 0).map(|v| v.0), Some("1.2.3.4"));
        let err = ServerFrame::Error {
            id: Some("r1".into()),
            error: medhub_wire::WireError::new(medhub_wire::ErrorCode::RateLimited),
        };
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(frame_type(&json), Some("error"));
        assert_eq!(str_field(&json, "code", 0).map(|v| v.0), Some("rate_limited"));
        assert_eq!(str_field(&json, "id", 0).map(|v| v.0), Some("r1"));
    }

    #[test]
    fn other_event_kinds_are_named() {
        let frame = ServerFrame::Event(EventView {
            cursor: 5,
            conversation_id: Uuid::now_v7(),
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
            actor_id: None,
            data: EventData::MessageRecalled { message_id: Uuid::now_v7(), seq: 3 },
        });
        let json = serde_json::to_string(&frame).unwrap();
        assert_eq!(event(&json).map(|e| e.0), Some("message.recalled"));
    }

    #[test]
    fn keys_must_match_whole() {
        let s = r#"{"client_txn_id":"a","id":"b","xid":"c"}"#;
        assert_eq!(str_field(s, "id", 0).map(|v| v.0), Some("b"));
        assert_eq!(num_field(r#"{"seq":12,"x":1}"#, "seq", 0).map(|v| v.0), Some(12));
        assert_eq!(str_field(s, "nope", 0), None);
    }

    #[test]
    fn socketio_packets_are_read() {
        assert_eq!(socketio_ack_id(r#"4312[{"seq":1}]"#), Some(12));
        assert_eq!(socketio_ack_id(r#"42["message",{}]"#), None);
        let m = r#"42["message",{"from":1,"to_user":2,"body":"x","txn":"1.2.3.4","seq":1,"t":3}]"#;
        assert_eq!(str_field(m, "txn", 0).map(|v| v.0), Some("1.2.3.4"));
    }
}
