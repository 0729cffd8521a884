//! PostgreSQL reads, including event rendering for resume and gap fill.

use deadpool_postgres::ClientWrapper;
use medhub_core::model::{Ack, Conversation, Member, MemberRole, Message, Org, Session, User};
use medhub_core::plan::Revision;
use medhub_core::{ConversationId, Event, EventId, MessageId, OrgId, UserId};
use tokio_postgres::Row;
use uuid::Uuid;

use super::codec::{self, i};
use crate::sql::{
    CONVERSATION_COL_COUNT, CONVERSATION_COLS, EVENT_JOINS, EVENT_SELECT, MEMBER_COLS, MESSAGE_COLS, MESSAGE_COLS_M,
    SESSION_COLS, USER_COLS, prefixed,
};
use crate::{ConversationView, HistoryPage, RecipientRow, StoreError, UserRecord};

type R<T> = Result<T, StoreError>;

async fn query(c: &ClientWrapper, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> R<Vec<Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, params).await?)
}

const ORG_COLS: &str = "id, name, created_at, idle_timeout_s";

fn org_row(r: &tokio_postgres::Row) -> R<Org> {
    Ok(Org {
        id: OrgId::from_uuid(codec::uuid(r, 0)?),
        name: r.try_get(1)?,
        created_at: codec::ts(r, 2)?,
        idle_timeout: jiff::SignedDuration::from_secs(r.try_get(3)?),
    })
}

pub(super) async fn org(c: &ClientWrapper) -> R<Option<Org>> {
    let rows = query(c, &format!("SELECT {ORG_COLS} FROM orgs ORDER BY created_at, id LIMIT 1"), &[]).await?;
    rows.first().map(org_row).transpose()
}

pub(super) async fn orgs(c: &ClientWrapper) -> R<Vec<Org>> {
    let rows = query(c, &format!("SELECT {ORG_COLS} FROM orgs ORDER BY created_at, id"), &[]).await?;
    rows.iter().map(org_row).collect()
}

pub(super) async fn user_record(c: &ClientWrapper, id: UserId) -> R<Option<UserRecord>> {
    let rows = query(c, &format!("SELECT {USER_COLS} FROM users WHERE id = $1"), &[&id.as_uuid()]).await?;
    rows.first().map(|r| codec::user_record(r, 0)).transpose()
}

pub(super) async fn user_record_by_username(c: &ClientWrapper, username: &str) -> R<Option<UserRecord>> {
    let rows = query(c, &format!("SELECT {USER_COLS} FROM users WHERE username = $1"), &[&username]).await?;
    rows.first().map(|r| codec::user_record(r, 0)).transpose()
}

pub(super) async fn users(c: &ClientWrapper, ids: &[UserId]) -> R<Vec<User>> {
    let ids: Vec<Uuid> = ids.iter().map(|u| u.as_uuid()).collect();
    let rows = query(c, &format!("SELECT {USER_COLS} FROM users WHERE id = ANY($1)"), &[&ids]).await?;
    rows.iter().map(|r| codec::user_record(r, 0).map(|u| u.user)).collect()
}

pub(super) async fn list_users(c: &ClientWrapper, org: OrgId, after: Option<&str>, limit: u32) -> R<Vec<User>> {
    let rows = query(
        c,
        &format!("SELECT {USER_COLS} FROM users WHERE org_id = $1 AND username > $2 ORDER BY username LIMIT $3"),
        &[&org.as_uuid(), &after.unwrap_or(""), &i64::from(limit)],
    )
    .await?;
    rows.iter().map(|r| codec::user_record(r, 0).map(|u| u.user)).collect()
}

pub(super) async fn session_by_token_hash(c: &ClientWrapper, hash: &[u8; 32]) -> R<Option<(Session, User)>> {
    let sql = format!(
        "SELECT {}, {} FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND u.active",
        prefixed(SESSION_COLS, "s"),
        prefixed(USER_COLS, "u")
    );
    let rows = query(c, &sql, &[&&hash[..]]).await?;
    rows.first()
        .map(|r| Ok((codec::session(r, 0)?, codec::user_record(r, crate::sql::SESSION_COL_COUNT)?.user)))
        .transpose()
}

async fn finish_events(c: &ClientWrapper, rows: Vec<Row>) -> R<Vec<Event>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let row = codec::event_row(r)?;
        let targets = if row.needs_targets() {
            let t =
                query(c, "SELECT user_id FROM event_targets WHERE event_id = $1 ORDER BY user_id", &[&i(row.id.get())])
                    .await?;
            t.iter().map(|r| codec::user_id(r, 0)).collect::<R<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let initial = if row.needs_initial_members() {
            let t = query(
                c,
                "SELECT user_id, role FROM member_periods WHERE conversation_id = $1 AND from_event = $2 ORDER BY user_id",
                &[&row.conversation.as_uuid(), &i(row.id.get())],
            )
            .await?;
            t.iter()
                .map(|r| Ok((codec::user_id(r, 0)?, codec::parse(r, 1, MemberRole::parse)?)))
                .collect::<R<Vec<_>>>()?
        } else {
            Vec::new()
        };
        out.push(row.into_event(targets, initial)?);
    }
    Ok(out)
}

pub(super) async fn events_range(c: &ClientWrapper, after: EventId, up_to: EventId, limit: u32) -> R<Vec<Event>> {
    let sql =
        format!("{EVENT_SELECT}{MESSAGE_COLS_M}{EVENT_JOINS} WHERE e.id > $1 AND e.id <= $2 ORDER BY e.id LIMIT $3");
    let rows = query(c, &sql, &[&i(after.get()), &i(up_to.get()), &i64::from(limit)]).await?;
    finish_events(c, rows).await
}

/// The resume query: see the SQLite twin for the rule.
pub(super) async fn events_for_user(
    c: &ClientWrapper,
    user: UserId,
    after: EventId,
    up_to: EventId,
    limit: u32,
) -> R<Vec<Event>> {
    let sql = format!(
        "WITH ids(id) AS (
            (SELECT e.id FROM member_periods p
              JOIN events e ON e.conversation_id = p.conversation_id
               AND e.id >= p.from_event AND (p.to_event IS NULL OR e.id <= p.to_event)
             WHERE p.user_id = $1 AND e.id > $2 AND e.id <= $3 AND e.kind <> 'receipt.updated'
               AND (p.to_event IS NULL OR p.to_event > $2)
            UNION ALL
            SELECT t.event_id FROM event_targets t WHERE t.user_id = $1 AND t.event_id > $2 AND t.event_id <= $3)
            ORDER BY 1 LIMIT $4)
         {EVENT_SELECT}{MESSAGE_COLS_M}{EVENT_JOINS} JOIN ids ON ids.id = e.id ORDER BY e.id"
    );
    let rows = query(c, &sql, &[&user.as_uuid(), &i(after.get()), &i(up_to.get()), &i64::from(limit)]).await?;
    finish_events(c, rows).await
}

pub(super) async fn members_before(c: &ClientWrapper, conversation: ConversationId, at: EventId) -> R<Vec<UserId>> {
    let rows = query(
        c,
        "SELECT user_id FROM member_periods
         WHERE conversation_id = $1 AND from_event < $2 AND (to_event IS NULL OR to_event >= $2)",
        &[&conversation.as_uuid(), &i(at.get())],
    )
    .await?;
    rows.iter().map(|r| codec::user_id(r, 0)).collect()
}

pub(super) async fn conversation(c: &ClientWrapper, id: ConversationId) -> R<Option<Conversation>> {
    let rows =
        query(c, &format!("SELECT {CONVERSATION_COLS} FROM conversations WHERE id = $1"), &[&id.as_uuid()]).await?;
    rows.first().map(|r| codec::conversation(r, 0)).transpose()
}

pub(super) async fn member(c: &ClientWrapper, conversation: ConversationId, user: UserId) -> R<Option<Member>> {
    let rows = query(
        c,
        &format!("SELECT {MEMBER_COLS} FROM members WHERE conversation_id = $1 AND user_id = $2"),
        &[&conversation.as_uuid(), &user.as_uuid()],
    )
    .await?;
    rows.first().map(|r| codec::member(r, 0)).transpose()
}

pub(super) async fn members(c: &ClientWrapper, conversation: ConversationId) -> R<Vec<Member>> {
    let rows = query(
        c,
        &format!("SELECT {MEMBER_COLS} FROM members WHERE conversation_id = $1 ORDER BY joined_at, user_id"),
        &[&conversation.as_uuid()],
    )
    .await?;
    rows.iter().map(|r| codec::member(r, 0)).collect()
}

pub(super) async fn conversations_for_user(c: &ClientWrapper, user: UserId) -> R<Vec<ConversationView>> {
    let sql = format!(
        "SELECT {}, {},
           (SELECT COUNT(*) FROM messages x WHERE x.conversation_id = c.id AND x.seq > me.read_seq
              AND x.sender_id <> me.user_id AND x.recalled_at IS NULL)
         FROM members me JOIN conversations c ON c.id = me.conversation_id
         WHERE me.user_id = $1 ORDER BY c.id",
        prefixed(CONVERSATION_COLS, "c"),
        prefixed(MEMBER_COLS, "me"),
    );
    let rows = query(c, &sql, &[&user.as_uuid()]).await?;
    rows.iter()
        .map(|r| {
            Ok(ConversationView {
                conversation: codec::conversation(r, 0)?,
                me: codec::member(r, CONVERSATION_COL_COUNT)?,
                unread: r.try_get::<_, i64>(CONVERSATION_COL_COUNT + 6)?.max(0) as u64,
            })
        })
        .collect()
}

pub(super) async fn messages(
    c: &ClientWrapper,
    conversation: ConversationId,
    page: HistoryPage,
    limit: u32,
) -> R<Vec<Message>> {
    let limit = i64::from(limit);
    let conv = conversation.as_uuid();
    let (rows, descending) = match page {
        HistoryPage::Latest => (
            query(c, &format!("SELECT {MESSAGE_COLS} FROM messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2"), &[&conv, &limit]).await?,
            true,
        ),
        HistoryPage::Before(s) => (
            query(
                c,
                &format!("SELECT {MESSAGE_COLS} FROM messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"),
                &[&conv, &i(s.get()), &limit],
            )
            .await?,
            true,
        ),
        HistoryPage::After(s) => (
            query(
                c,
                &format!("SELECT {MESSAGE_COLS} FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"),
                &[&conv, &i(s.get()), &limit],
            )
            .await?,
            false,
        ),
    };
    let mut out = rows.iter().map(|r| codec::message(r, 0)).collect::<R<Vec<_>>>()?;
    if descending {
        out.reverse();
    }
    Ok(out)
}

pub(super) async fn message(c: &ClientWrapper, id: MessageId) -> R<Option<Message>> {
    let rows = query(c, &format!("SELECT {MESSAGE_COLS} FROM messages WHERE id = $1"), &[&id.as_uuid()]).await?;
    rows.first().map(|r| codec::message(r, 0)).transpose()
}

pub(super) async fn revisions(c: &ClientWrapper, id: MessageId) -> R<Vec<Revision>> {
    let rows = query(
        c,
        "SELECT message_id, revision, body, created_at FROM message_revisions WHERE message_id = $1 ORDER BY revision",
        &[&id.as_uuid()],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Revision {
                message: codec::message_id(r, 0)?,
                revision: codec::u32_of(r, 1)?,
                body: r.try_get(2)?,
                at: codec::ts(r, 3)?,
            })
        })
        .collect()
}

pub(super) async fn recipients(c: &ClientWrapper, message: &Message) -> R<Vec<RecipientRow>> {
    let sql = format!(
        "SELECT p.user_id, {}, a.response, a.minutes, a.at
         FROM member_periods p
         LEFT JOIN members m ON m.conversation_id = p.conversation_id AND m.user_id = p.user_id
         LEFT JOIN acks a ON a.message_id = $1 AND a.user_id = p.user_id
         WHERE p.conversation_id = $2 AND p.from_event <= $3 AND (p.to_event IS NULL OR p.to_event >= $3)
           AND p.user_id <> $4
         ORDER BY p.user_id",
        prefixed(MEMBER_COLS, "m"),
    );
    let rows = query(
        c,
        &sql,
        &[&message.id.as_uuid(), &message.conversation.as_uuid(), &i(message.event.get()), &message.sender.as_uuid()],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let user = codec::user_id(r, 0)?;
            let member = if codec::opt_uuid(r, 1)?.is_some() { Some(codec::member(r, 1)?) } else { None };
            let ack = match codec::ack_response(r, 7)? {
                Some(response) => Some(Ack { message: message.id, user, response, at: codec::ts(r, 9)? }),
                None => None,
            };
            Ok(RecipientRow { user, member, ack })
        })
        .collect()
}
