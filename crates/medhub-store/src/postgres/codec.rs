//! Row decoding for PostgreSQL: native UUIDs, BIGINT microseconds, text enums.

use medhub_core::clock::from_micros;
use medhub_core::model::{
    Ack, AckResponse, Conversation, ConversationKind, Member, MemberRole, Message, Priority, Recall, Removal,
    RemovalCause, Session, SessionState, SystemRole, User,
};
use medhub_core::patient::PatientRef;
use medhub_core::{ClientTxnId, ConversationId, EventId, MessageId, OrgId, Seq, SessionId, UserId};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::UserRecord;
use crate::{EventRow, StoreError};

type R<T> = Result<T, StoreError>;

fn bad(i: usize, what: &str) -> StoreError {
    StoreError::Corrupt(format!("column {i}: {what}"))
}

pub(super) fn uuid(row: &Row, i: usize) -> R<Uuid> {
    Ok(row.try_get::<_, Uuid>(i)?)
}

pub(super) fn opt_uuid(row: &Row, i: usize) -> R<Option<Uuid>> {
    Ok(row.try_get::<_, Option<Uuid>>(i)?)
}

pub(super) fn user_id(row: &Row, i: usize) -> R<UserId> {
    uuid(row, i).map(UserId::from_uuid)
}

pub(super) fn conversation_id(row: &Row, i: usize) -> R<ConversationId> {
    uuid(row, i).map(ConversationId::from_uuid)
}

pub(super) fn message_id(row: &Row, i: usize) -> R<MessageId> {
    uuid(row, i).map(MessageId::from_uuid)
}

pub(super) fn ts(row: &Row, i: usize) -> R<jiff::Timestamp> {
    Ok(from_micros(row.try_get(i)?))
}

pub(super) fn opt_ts(row: &Row, i: usize) -> R<Option<jiff::Timestamp>> {
    Ok(row.try_get::<_, Option<i64>>(i)?.map(from_micros))
}

pub(super) fn patient_ref(row: &Row, i: usize) -> R<Option<PatientRef>> {
    match row.try_get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(s) => PatientRef::parse(&s).map(Some).map_err(|_| bad(i, "bad patient_ref")),
    }
}

pub(super) fn seq(row: &Row, i: usize) -> R<Seq> {
    Ok(Seq::new(row.try_get::<_, i64>(i)?.max(0) as u64))
}

pub(super) fn opt_seq(row: &Row, i: usize) -> R<Option<Seq>> {
    Ok(row.try_get::<_, Option<i64>>(i)?.map(|v| Seq::new(v.max(0) as u64)))
}

pub(super) fn event_id(row: &Row, i: usize) -> R<EventId> {
    Ok(EventId::new(row.try_get::<_, i64>(i)?.max(0) as u64))
}

pub(super) fn parse<T>(row: &Row, i: usize, f: fn(&str) -> Option<T>) -> R<T> {
    f(row.try_get::<_, &str>(i)?).ok_or_else(|| bad(i, "unknown enum value"))
}

pub(super) fn opt_parse<T>(row: &Row, i: usize, f: fn(&str) -> Option<T>) -> R<Option<T>> {
    match row.try_get::<_, Option<&str>>(i)? {
        None => Ok(None),
        Some(s) => f(s).map(Some).ok_or_else(|| bad(i, "unknown enum value")),
    }
}

pub(super) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn u32_of(row: &Row, i: usize) -> R<u32> {
    u32::try_from(row.try_get::<_, i32>(i)?).map_err(|_| bad(i, "negative count"))
}

pub(super) fn user_record(row: &Row, o: usize) -> R<UserRecord> {
    Ok(UserRecord {
        user: User {
            id: user_id(row, o)?,
            org: OrgId::from_uuid(uuid(row, o + 1)?),
            username: row.try_get(o + 2)?,
            display_name: row.try_get(o + 3)?,
            role: parse(row, o + 4, SystemRole::parse)?,
            active: row.try_get(o + 5)?,
            created_at: ts(row, o + 8)?,
        },
        password_hash: row.try_get(o + 6)?,
        must_change_password: row.try_get(o + 7)?,
    })
}

pub(super) fn session(row: &Row, o: usize) -> R<Session> {
    let hash: &[u8] = row.try_get(o + 2)?;
    Ok(Session {
        id: SessionId::from_uuid(uuid(row, o)?),
        user: user_id(row, o + 1)?,
        token_hash: hash.try_into().map_err(|_| bad(o + 2, "bad token hash"))?,
        state: parse(row, o + 3, SessionState::parse)?,
        created_at: ts(row, o + 4)?,
        last_activity_at: ts(row, o + 5)?,
        expires_at: ts(row, o + 6)?,
        revoked_at: opt_ts(row, o + 7)?,
        mfa_at: opt_ts(row, o + 8)?,
        ip: row.try_get(o + 9)?,
        user_agent: row.try_get(o + 10)?,
    })
}

pub(super) fn conversation(row: &Row, o: usize) -> R<Conversation> {
    Ok(Conversation {
        id: conversation_id(row, o)?,
        kind: parse(row, o + 1, ConversationKind::parse)?,
        title: row.try_get(o + 2)?,
        created_by: opt_uuid(row, o + 3)?.map(UserId::from_uuid),
        created_at: ts(row, o + 4)?,
        last_seq: seq(row, o + 5)?,
        member_count: u32_of(row, o + 6)?,
        owner_count: u32_of(row, o + 7)?,
        org: OrgId::from_uuid(uuid(row, o + 8)?),
        patient: patient_ref(row, o + 9)?,
    })
}

pub(super) fn member(row: &Row, o: usize) -> R<Member> {
    Ok(Member {
        conversation: conversation_id(row, o)?,
        user: user_id(row, o + 1)?,
        role: parse(row, o + 2, MemberRole::parse)?,
        delivered_seq: seq(row, o + 3)?,
        read_seq: seq(row, o + 4)?,
        joined_at: ts(row, o + 5)?,
    })
}

pub(super) fn message(row: &Row, o: usize) -> R<Message> {
    let txn: &str = row.try_get(o + 4)?;
    let hash: &[u8] = row.try_get(o + 14)?;
    let recalled_at = opt_ts(row, o + 11)?;
    Ok(Message {
        id: message_id(row, o)?,
        conversation: conversation_id(row, o + 1)?,
        seq: seq(row, o + 2)?,
        sender: user_id(row, o + 3)?,
        client_txn_id: ClientTxnId::parse(txn).map_err(|_| bad(o + 4, "bad client txn id"))?,
        body: row.try_get(o + 5)?,
        priority: parse(row, o + 6, Priority::parse)?,
        reply_to: opt_uuid(row, o + 7)?.map(MessageId::from_uuid),
        created_at: ts(row, o + 8)?,
        revision: u32_of(row, o + 9)?,
        edited_at: opt_ts(row, o + 10)?,
        recall: match recalled_at {
            Some(at) => Some(Recall { at, by: opt_uuid(row, o + 12)?.map(UserId::from_uuid) }),
            None => None,
        },
        event: event_id(row, o + 13)?,
        request_hash: hash.try_into().map_err(|_| bad(o + 14, "bad request hash"))?,
        acknowledged: row.try_get(o + 15)?,
        removal: match opt_ts(row, o + 16)? {
            Some(at) => {
                let cause = row.try_get::<_, Option<String>>(o + 17)?;
                let cause =
                    cause.as_deref().and_then(RemovalCause::parse).ok_or_else(|| bad(o + 17, "bad removal cause"))?;
                Some(Removal { at, cause })
            }
            None => None,
        },
        erasure_requested_at: opt_ts(row, o + 18)?,
    })
}

pub(super) fn ack_response(row: &Row, o: usize) -> R<Option<AckResponse>> {
    let Some(kind) = row.try_get::<_, Option<&str>>(o)? else { return Ok(None) };
    let minutes = row.try_get::<_, Option<i32>>(o + 1)?.and_then(|m| u16::try_from(m).ok());
    AckResponse::from_parts(kind, minutes).map(Some).ok_or_else(|| bad(o, "bad ack response"))
}

pub(super) fn ack(row: &Row, o: usize) -> R<Ack> {
    Ok(Ack {
        message: message_id(row, o)?,
        user: user_id(row, o + 1)?,
        response: ack_response(row, o + 2)?.ok_or_else(|| bad(o + 2, "missing ack response"))?,
        at: ts(row, o + 4)?,
    })
}

/// Decodes a row of `EVENT_SELECT` + message columns.
pub(super) fn event_row(r: &Row) -> R<EventRow> {
    let has_message = opt_uuid(r, 17)?.is_some();
    Ok(EventRow {
        id: event_id(r, 0)?,
        conversation: conversation_id(r, 1)?,
        kind: r.try_get(2)?,
        at: ts(r, 3)?,
        actor: opt_uuid(r, 4)?.map(UserId::from_uuid),
        message_id: opt_uuid(r, 5)?.map(MessageId::from_uuid),
        seq: opt_seq(r, 6)?,
        revision: r.try_get::<_, Option<i32>>(7)?.and_then(|v| u32::try_from(v).ok()),
        subject: opt_uuid(r, 8)?.map(UserId::from_uuid),
        role: opt_parse(r, 9, MemberRole::parse)?,
        delivered: opt_seq(r, 10)?,
        read: opt_seq(r, 11)?,
        ack: ack_response(r, 12)?,
        title: r.try_get(14)?,
        conv_kind: opt_parse(r, 15, ConversationKind::parse)?,
        superseded_body: r.try_get(16)?,
        message: if has_message { Some(message(r, 17)?) } else { None },
    })
}

/// A timestamp as stored: microseconds since the Unix epoch.
pub(super) fn us(t: jiff::Timestamp) -> i64 {
    t.as_microsecond()
}
