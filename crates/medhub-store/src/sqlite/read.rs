//! SQLite reads, including event rendering for resume and gap fill.

use jiff::Timestamp;
use medhub_core::model::{Conversation, Member, MemberRole, Message, Org, Session, User};
use medhub_core::plan::Revision;
use medhub_core::{ConversationId, Event, EventId, MessageId, OrgId, UserId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::codec::{self, i};
use crate::sql::{CONVERSATION_COL_COUNT, EVENT_JOINS, EVENT_SELECT, prefixed};
use crate::{ConversationView, EventRow, HistoryPage, RecipientRow, StoreError, UserRecord};

const ORG_COLS: &str = "id, name, created_at, idle_timeout_s";

fn org_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Org> {
    Ok(Org {
        id: codec::id(r, 0, OrgId::from_slice)?,
        name: r.get(1)?,
        created_at: codec::ts(r, 2)?,
        idle_timeout: jiff::SignedDuration::from_secs(r.get(3)?),
    })
}

pub(super) fn org(c: &mut Connection) -> Result<Option<Org>, StoreError> {
    Ok(c.query_row(&format!("SELECT {ORG_COLS} FROM orgs ORDER BY created_at, id LIMIT 1"), [], org_row).optional()?)
}

pub(super) fn orgs(c: &mut Connection) -> Result<Vec<Org>, StoreError> {
    let mut st = c.prepare_cached(&format!("SELECT {ORG_COLS} FROM orgs ORDER BY created_at, id"))?;
    Ok(st.query_map([], org_row)?.collect::<Result<_, _>>()?)
}

pub(super) fn user_record(c: &mut Connection, id: UserId) -> Result<Option<UserRecord>, StoreError> {
    let mut st = c.prepare_cached(&format!("SELECT {} FROM users WHERE id = ?1", codec::USER_COLS))?;
    Ok(st.query_row([id.to_bytes()], |r| codec::user_record(r, 0)).optional()?)
}

pub(super) fn user_record_by_username(c: &mut Connection, username: &str) -> Result<Option<UserRecord>, StoreError> {
    let mut st = c.prepare_cached(&format!("SELECT {} FROM users WHERE username = ?1", codec::USER_COLS))?;
    Ok(st.query_row([username], |r| codec::user_record(r, 0)).optional()?)
}

pub(super) fn users(c: &mut Connection, ids: &[UserId]) -> Result<Vec<User>, StoreError> {
    let mut st = c.prepare_cached(&format!("SELECT {} FROM users WHERE id = ?1", codec::USER_COLS))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = st.query_row([id.to_bytes()], |r| codec::user_record(r, 0)).optional()? {
            out.push(r.user);
        }
    }
    Ok(out)
}

pub(super) fn list_users(
    c: &mut Connection,
    org: OrgId,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<User>, StoreError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {} FROM users WHERE org_id = ?1 AND username > ?2 ORDER BY username LIMIT ?3",
        codec::USER_COLS
    ))?;
    let rows = st
        .query_map(params![org.to_bytes(), after.unwrap_or(""), limit], |r| codec::user_record(r, 0).map(|u| u.user))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn session_by_token_hash(
    c: &mut Connection,
    hash: &[u8; 32],
) -> Result<Option<(Session, User)>, StoreError> {
    let sql = format!(
        "SELECT {}, {} FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = ?1 AND s.revoked_at IS NULL AND u.active = 1",
        prefixed(codec::SESSION_COLS, "s"),
        prefixed(codec::USER_COLS, "u")
    );
    let mut st = c.prepare_cached(&sql)?;
    Ok(st
        .query_row(params![hash], |r| {
            Ok((codec::session(r, 0)?, codec::user_record(r, crate::sql::SESSION_COL_COUNT)?.user))
        })
        .optional()?)
}

pub(super) fn revoked_sessions_since(
    c: &mut Connection,
    since: Timestamp,
) -> Result<Vec<medhub_core::SessionId>, StoreError> {
    let mut st = c.prepare_cached("SELECT id FROM sessions WHERE revoked_at IS NOT NULL AND revoked_at >= ?1")?;
    let rows = st.query_map([since.as_microsecond()], |r| codec::id(r, 0, medhub_core::SessionId::from_slice))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn last_event_id(c: &mut Connection) -> Result<EventId, StoreError> {
    Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| codec::event_id(r, 0))?)
}

fn event_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    let has_message = r.get_ref(17)?.as_blob_or_null()?.is_some();
    Ok(EventRow {
        id: codec::event_id(r, 0)?,
        conversation: codec::conversation_id(r, 1)?,
        kind: r.get(2)?,
        at: codec::ts(r, 3)?,
        actor: codec::opt_id(r, 4, UserId::from_slice)?,
        message_id: codec::opt_id(r, 5, MessageId::from_slice)?,
        seq: r.get::<_, Option<i64>>(6)?.map(|v| medhub_core::Seq::new(v.max(0) as u64)),
        revision: r.get(7)?,
        subject: codec::opt_id(r, 8, UserId::from_slice)?,
        role: match r.get_ref(9)?.as_str_or_null()? {
            Some(s) => Some(MemberRole::parse(s).ok_or(rusqlite::Error::InvalidColumnType(
                9,
                "role".into(),
                rusqlite::types::Type::Text,
            ))?),
            None => None,
        },
        delivered: r.get::<_, Option<i64>>(10)?.map(|v| medhub_core::Seq::new(v.max(0) as u64)),
        read: r.get::<_, Option<i64>>(11)?.map(|v| medhub_core::Seq::new(v.max(0) as u64)),
        ack: codec::ack_response(r, 12)?,
        title: r.get(14)?,
        conv_kind: match r.get_ref(15)?.as_str_or_null()? {
            Some(s) => {
                Some(medhub_core::model::ConversationKind::parse(s).ok_or(rusqlite::Error::InvalidColumnType(
                    15,
                    "conv_kind".into(),
                    rusqlite::types::Type::Text,
                ))?)
            }
            None => None,
        },
        superseded_body: r.get(16)?,
        message: if has_message { Some(codec::message(r, 17)?) } else { None },
    })
}

fn finish_events(c: &Connection, rows: Vec<EventRow>) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let targets = if row.needs_targets() {
            let mut st = c.prepare_cached("SELECT user_id FROM event_targets WHERE event_id = ?1 ORDER BY user_id")?;
            st.query_map([i(row.id.get())], |r| codec::user_id(r, 0))?.collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let initial = if row.needs_initial_members() {
            let mut st = c.prepare_cached(
                "SELECT user_id, role FROM member_periods WHERE conversation_id = ?1 AND from_event = ?2 ORDER BY user_id",
            )?;
            st.query_map(params![row.conversation.to_bytes(), i(row.id.get())], |r| {
                Ok((codec::user_id(r, 0)?, codec::parse(r, 1, MemberRole::parse)?))
            })?
            .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        out.push(row.into_event(targets, initial)?);
    }
    Ok(out)
}

pub(super) fn events_range(
    c: &mut Connection,
    after: EventId,
    up_to: EventId,
    limit: u32,
) -> Result<Vec<Event>, StoreError> {
    let sql = format!(
        "{EVENT_SELECT}{}{EVENT_JOINS} WHERE e.id > ?1 AND e.id <= ?2 ORDER BY e.id LIMIT ?3",
        codec::MESSAGE_COLS_M
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows =
        st.query_map(params![i(after.get()), i(up_to.get()), limit], event_row)?.collect::<Result<Vec<_>, _>>()?;
    drop(st);
    finish_events(c, rows)
}

/// The resume query. The audience rule of `medhub_core::recipients`, in SQL: events of the
/// user's conversations during its membership periods (inclusive), except receipt updates,
/// which go to their stored targets only.
pub(super) fn events_for_user(
    c: &mut Connection,
    user: UserId,
    after: EventId,
    up_to: EventId,
    limit: u32,
) -> Result<Vec<Event>, StoreError> {
    let sql = format!(
        "WITH ids(id) AS (
            SELECT e.id FROM member_periods p
              JOIN events e ON e.conversation_id = p.conversation_id
               AND e.id >= p.from_event AND (p.to_event IS NULL OR e.id <= p.to_event)
             WHERE p.user_id = ?1 AND e.id > ?2 AND e.id <= ?3 AND e.kind <> 'receipt.updated'
                AND (p.to_event IS NULL OR p.to_event > ?2)
            UNION ALL
            SELECT t.event_id FROM event_targets t WHERE t.user_id = ?1 AND t.event_id > ?2 AND t.event_id <= ?3
            ORDER BY 1 LIMIT ?4)
         {EVENT_SELECT}{}{EVENT_JOINS} JOIN ids ON ids.id = e.id ORDER BY e.id",
        codec::MESSAGE_COLS_M
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows = st
        .query_map(params![user.to_bytes(), i(after.get()), i(up_to.get()), limit], event_row)?
        .collect::<Result<Vec<_>, _>>()?;
    drop(st);
    finish_events(c, rows)
}

pub(super) fn members_before(
    c: &mut Connection,
    conversation: ConversationId,
    at: EventId,
) -> Result<Vec<UserId>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT user_id FROM member_periods
         WHERE conversation_id = ?1 AND from_event < ?2 AND (to_event IS NULL OR to_event >= ?2)",
    )?;
    let rows = st.query_map(params![conversation.to_bytes(), i(at.get())], |r| codec::user_id(r, 0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn conversation(c: &mut Connection, id: ConversationId) -> Result<Option<Conversation>, StoreError> {
    let mut st = c.prepare_cached(&format!("SELECT {} FROM conversations WHERE id = ?1", codec::CONVERSATION_COLS))?;
    Ok(st.query_row([id.to_bytes()], |r| codec::conversation(r, 0)).optional()?)
}

pub(super) fn member(
    c: &mut Connection,
    conversation: ConversationId,
    user: UserId,
) -> Result<Option<Member>, StoreError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {} FROM members WHERE conversation_id = ?1 AND user_id = ?2",
        codec::MEMBER_COLS
    ))?;
    Ok(st.query_row([conversation.to_bytes(), user.to_bytes()], |r| codec::member(r, 0)).optional()?)
}

pub(super) fn members(c: &mut Connection, conversation: ConversationId) -> Result<Vec<Member>, StoreError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {} FROM members WHERE conversation_id = ?1 ORDER BY joined_at, user_id",
        codec::MEMBER_COLS
    ))?;
    let rows = st.query_map([conversation.to_bytes()], |r| codec::member(r, 0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn conversations_for_user(c: &mut Connection, user: UserId) -> Result<Vec<ConversationView>, StoreError> {
    let sql = format!(
        "SELECT {}, {},
           (SELECT COUNT(*) FROM messages x WHERE x.conversation_id = c.id AND x.seq > me.read_seq
              AND x.sender_id <> me.user_id AND x.recalled_at IS NULL)
         FROM members me JOIN conversations c ON c.id = me.conversation_id
         WHERE me.user_id = ?1 ORDER BY c.id",
        prefixed(codec::CONVERSATION_COLS, "c"),
        prefixed(codec::MEMBER_COLS, "me"),
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map([user.to_bytes()], |r| {
        Ok(ConversationView {
            conversation: codec::conversation(r, 0)?,
            me: codec::member(r, CONVERSATION_COL_COUNT)?,
            unread: r.get::<_, i64>(CONVERSATION_COL_COUNT + 6)?.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn messages(
    c: &mut Connection,
    conversation: ConversationId,
    page: HistoryPage,
    limit: u32,
) -> Result<Vec<Message>, StoreError> {
    let (cond, order, bound) = match page {
        HistoryPage::Latest => ("", "DESC", 0),
        HistoryPage::Before(s) => ("AND seq < ?2", "DESC", i(s.get())),
        HistoryPage::After(s) => ("AND seq > ?2", "ASC", i(s.get())),
    };
    let sql = format!(
        "SELECT {} FROM messages WHERE conversation_id = ?1 {cond} ORDER BY seq {order} LIMIT ?3",
        codec::MESSAGE_COLS
    );
    let mut st = c.prepare_cached(&sql)?;
    // ?2 is unused for `Latest`; SQLite accepts an unused numbered parameter only if bound.
    let rows = if cond.is_empty() {
        let sql2 = sql.replace("?3", "?2");
        drop(st);
        let mut st = c.prepare_cached(&sql2)?;
        st.query_map(params![conversation.to_bytes(), limit], |r| codec::message(r, 0))?
            .collect::<Result<Vec<_>, _>>()?
    } else {
        st.query_map(params![conversation.to_bytes(), bound, limit], |r| codec::message(r, 0))?
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut rows = rows;
    if order == "DESC" {
        rows.reverse();
    }
    Ok(rows)
}

pub(super) fn message(c: &mut Connection, id: MessageId) -> Result<Option<Message>, StoreError> {
    let mut st = c.prepare_cached(&format!("SELECT {} FROM messages WHERE id = ?1", codec::MESSAGE_COLS))?;
    Ok(st.query_row([id.to_bytes()], |r| codec::message(r, 0)).optional()?)
}

pub(super) fn revisions(c: &mut Connection, id: MessageId) -> Result<Vec<Revision>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT message_id, revision, body, created_at FROM message_revisions WHERE message_id = ?1 ORDER BY revision",
    )?;
    let rows = st.query_map([id.to_bytes()], |r| {
        Ok(Revision { message: codec::message_id(r, 0)?, revision: r.get(1)?, body: r.get(2)?, at: codec::ts(r, 3)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn recipients(
    c: &mut Connection,
    message: MessageId,
    conversation: ConversationId,
    sender: UserId,
    event: EventId,
) -> Result<Vec<RecipientRow>, StoreError> {
    let sql = format!(
        "SELECT p.user_id, {}, a.response, a.minutes, a.at
         FROM member_periods p
         LEFT JOIN members m ON m.conversation_id = p.conversation_id AND m.user_id = p.user_id
         LEFT JOIN acks a ON a.message_id = ?1 AND a.user_id = p.user_id
         WHERE p.conversation_id = ?2 AND p.from_event <= ?3 AND (p.to_event IS NULL OR p.to_event >= ?3)
           AND p.user_id <> ?4
         ORDER BY p.user_id",
        prefixed(codec::MEMBER_COLS, "m"),
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows =
        st.query_map(params![message.to_bytes(), conversation.to_bytes(), i(event.get()), sender.to_bytes()], |r| {
            let user = codec::user_id(r, 0)?;
            let member = if r.get_ref(1)?.as_blob_or_null()?.is_some() { Some(codec::member(r, 1)?) } else { None };
            let ack = match codec::ack_response(r, 7)? {
                Some(response) => Some(medhub_core::model::Ack { message, user, response, at: codec::ts(r, 9)? }),
                None => None,
            };
            Ok(RecipientRow { user, member, ack })
        })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
