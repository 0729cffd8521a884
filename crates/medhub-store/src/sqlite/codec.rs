//! Row decoding for SQLite: ids are 16-byte blobs, times are microseconds, enums are text.

use medhub_core::clock::from_micros;
use medhub_core::model::{
    Ack, AckResponse, Conversation, ConversationKind, Member, MemberRole, Message, Priority, Recall, Removal,
    RemovalCause, Session, SessionState, SystemRole, User,
};
use medhub_core::patient::PatientRef;
use medhub_core::{ClientTxnId, ConversationId, EventId, MessageId, OrgId, Seq, SessionId, UserId};
use rusqlite::Row;
use rusqlite::types::{FromSqlError, Type};

use crate::UserRecord;
pub(super) use crate::sql::{
    ACK_COLS, CONVERSATION_COLS, MEMBER_COLS, MESSAGE_COLS, MESSAGE_COLS_M, SESSION_COLS, USER_COLS,
};

pub(super) fn corrupt(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, Type::Blob, Box::new(FromSqlError::Other(what.to_owned().into())))
}

pub(super) fn id<T>(row: &Row<'_>, i: usize, parse: fn(&[u8]) -> Option<T>) -> rusqlite::Result<T> {
    parse(row.get_ref(i)?.as_blob()?).ok_or_else(|| corrupt(i, "bad uuid"))
}

pub(super) fn opt_id<T>(row: &Row<'_>, i: usize, parse: fn(&[u8]) -> Option<T>) -> rusqlite::Result<Option<T>> {
    match row.get_ref(i)?.as_blob_or_null()? {
        None => Ok(None),
        Some(b) => parse(b).map(Some).ok_or_else(|| corrupt(i, "bad uuid")),
    }
}

pub(super) fn user_id(row: &Row<'_>, i: usize) -> rusqlite::Result<UserId> {
    id(row, i, UserId::from_slice)
}

pub(super) fn conversation_id(row: &Row<'_>, i: usize) -> rusqlite::Result<ConversationId> {
    id(row, i, ConversationId::from_slice)
}

pub(super) fn message_id(row: &Row<'_>, i: usize) -> rusqlite::Result<MessageId> {
    id(row, i, MessageId::from_slice)
}

pub(super) fn ts(row: &Row<'_>, i: usize) -> rusqlite::Result<jiff::Timestamp> {
    Ok(from_micros(row.get(i)?))
}

pub(super) fn opt_ts(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<jiff::Timestamp>> {
    Ok(row.get::<_, Option<i64>>(i)?.map(from_micros))
}

pub(super) fn patient_ref(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<PatientRef>> {
    match row.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(s) => PatientRef::parse(&s).map(Some).map_err(|_| corrupt(i, "bad patient_ref")),
    }
}

pub(super) fn seq(row: &Row<'_>, i: usize) -> rusqlite::Result<Seq> {
    Ok(Seq::new(row.get::<_, i64>(i)?.max(0) as u64))
}

pub(super) fn event_id(row: &Row<'_>, i: usize) -> rusqlite::Result<EventId> {
    Ok(EventId::new(row.get::<_, i64>(i)?.max(0) as u64))
}

pub(super) fn parse<T>(row: &Row<'_>, i: usize, f: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    f(row.get_ref(i)?.as_str()?).ok_or_else(|| corrupt(i, "unknown enum value"))
}

pub(super) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn user_record(row: &Row<'_>, o: usize) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user: User {
            id: user_id(row, o)?,
            org: id(row, o + 1, OrgId::from_slice)?,
            username: row.get(o + 2)?,
            display_name: row.get(o + 3)?,
            role: parse(row, o + 4, SystemRole::parse)?,
            active: row.get(o + 5)?,
            created_at: ts(row, o + 8)?,
        },
        password_hash: row.get(o + 6)?,
        must_change_password: row.get(o + 7)?,
    })
}

pub(super) fn session(row: &Row<'_>, o: usize) -> rusqlite::Result<Session> {
    let hash = row.get_ref(o + 2)?.as_blob()?;
    Ok(Session {
        id: id(row, o, SessionId::from_slice)?,
        user: user_id(row, o + 1)?,
        token_hash: hash.try_into().map_err(|_| corrupt(o + 2, "bad token hash"))?,
        state: parse(row, o + 3, SessionState::parse)?,
        created_at: ts(row, o + 4)?,
        last_activity_at: ts(row, o + 5)?,
        expires_at: ts(row, o + 6)?,
        revoked_at: opt_ts(row, o + 7)?,
        mfa_at: opt_ts(row, o + 8)?,
        ip: row.get(o + 9)?,
        user_agent: row.get(o + 10)?,
    })
}

pub(super) fn conversation(row: &Row<'_>, o: usize) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: conversation_id(row, o)?,
        kind: parse(row, o + 1, ConversationKind::parse)?,
        title: row.get(o + 2)?,
        created_by: opt_id(row, o + 3, UserId::from_slice)?,
        created_at: ts(row, o + 4)?,
        last_seq: seq(row, o + 5)?,
        member_count: row.get(o + 6)?,
        owner_count: row.get(o + 7)?,
        org: id(row, o + 8, OrgId::from_slice)?,
        patient: patient_ref(row, o + 9)?,
    })
}

pub(super) fn member(row: &Row<'_>, o: usize) -> rusqlite::Result<Member> {
    Ok(Member {
        conversation: conversation_id(row, o)?,
        user: user_id(row, o + 1)?,
        role: parse(row, o + 2, MemberRole::parse)?,
        delivered_seq: seq(row, o + 3)?,
        read_seq: seq(row, o + 4)?,
        joined_at: ts(row, o + 5)?,
    })
}

pub(super) fn message(row: &Row<'_>, o: usize) -> rusqlite::Result<Message> {
    let txn: String = row.get(o + 4)?;
    let hash = row.get_ref(o + 14)?.as_blob()?;
    let recalled_at = opt_ts(row, o + 11)?;
    Ok(Message {
        id: message_id(row, o)?,
        conversation: conversation_id(row, o + 1)?,
        seq: seq(row, o + 2)?,
        sender: user_id(row, o + 3)?,
        client_txn_id: ClientTxnId::parse(&txn).map_err(|_| corrupt(o + 4, "bad client txn id"))?,
        body: row.get(o + 5)?,
        priority: parse(row, o + 6, Priority::parse)?,
        reply_to: opt_id(row, o + 7, MessageId::from_slice)?,
        created_at: ts(row, o + 8)?,
        revision: row.get(o + 9)?,
        edited_at: opt_ts(row, o + 10)?,
        recall: match recalled_at {
            Some(at) => Some(Recall { at, by: opt_id(row, o + 12, UserId::from_slice)? }),
            None => None,
        },
        event: event_id(row, o + 13)?,
        request_hash: hash.try_into().map_err(|_| corrupt(o + 14, "bad request hash"))?,
        acknowledged: row.get(o + 15)?,
        removal: match opt_ts(row, o + 16)? {
            Some(at) => {
                let cause = row.get::<_, Option<String>>(o + 17)?;
                let cause = cause
                    .as_deref()
                    .and_then(RemovalCause::parse)
                    .ok_or_else(|| corrupt(o + 17, "bad removal cause"))?;
                Some(Removal { at, cause })
            }
            None => None,
        },
        erasure_requested_at: opt_ts(row, o + 18)?,
    })
}

pub(super) fn ack_response(row: &Row<'_>, o: usize) -> rusqlite::Result<Option<AckResponse>> {
    let Some(kind) = row.get_ref(o)?.as_str_or_null()? else { return Ok(None) };
    let minutes: Option<u16> = row.get(o + 1)?;
    AckResponse::from_parts(kind, minutes).map(Some).ok_or_else(|| corrupt(o, "bad ack response"))
}

pub(super) fn ack(row: &Row<'_>, o: usize) -> rusqlite::Result<Ack> {
    Ok(Ack {
        message: message_id(row, o)?,
        user: user_id(row, o + 1)?,
        response: ack_response(row, o + 2)?.ok_or_else(|| corrupt(o + 2, "missing ack response"))?,
        at: ts(row, o + 4)?,
    })
}

/// A timestamp as stored: microseconds since the Unix epoch.
pub(super) fn us(t: jiff::Timestamp) -> i64 {
    t.as_microsecond()
}
