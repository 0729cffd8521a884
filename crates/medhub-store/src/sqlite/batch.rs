//! SQLite writes: the batch transaction (load, plan, write, commit) and account writes.

use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::model::{Org, Session};
use medhub_core::plan::{self, Command, Effects, Limits, Needs, PeriodOp, Plan, Snapshot};
use medhub_core::{Event, UserId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::codec::{self, i};
use crate::{StoreError, UserRecord};

/// Runs one batch as one `BEGIN IMMEDIATE` transaction and commits it durably.
pub(super) fn apply(
    conn: &mut Connection,
    cmds: &[Command],
    audit: &[Option<medhub_core::audit::AuditRecord>],
    now: Timestamp,
    limits: &Limits,
) -> Result<Plan, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut snap = Snapshot { last_event: codec_last_event(&tx)?, ..Snapshot::default() };
    load(&tx, &plan::first_needs(cmds), &mut snap)?;
    let second = plan::second_needs(cmds, &snap);
    if !second.is_empty() {
        load(&tx, &second, &mut snap)?;
    }
    let links = plan::audit::PatientLinks::of(&snap);
    let plan = plan::plan(cmds, snap, now, limits);
    write(&tx, &plan.effects)?;
    super::escalation::on_commit(&tx, &plan.effects)?;
    let records = plan::audit::records(cmds, &plan.results, audit, &links);
    if !records.is_empty() {
        super::identity::append_leaves(&tx, &records)?;
    }
    tx.commit()?;
    Ok(plan)
}

fn codec_last_event(tx: &Transaction<'_>) -> Result<medhub_core::EventId, StoreError> {
    Ok(tx.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| codec::event_id(r, 0))?)
}

fn load(tx: &Transaction<'_>, n: &Needs, s: &mut Snapshot) -> Result<(), StoreError> {
    if !n.conversations.is_empty() {
        let mut st =
            tx.prepare_cached(&format!("SELECT {} FROM conversations WHERE id = ?1", codec::CONVERSATION_COLS))?;
        for id in &n.conversations {
            if let Some(c) = st.query_row([id.to_bytes()], |r| codec::conversation(r, 0)).optional()? {
                s.conversations.insert(*id, c);
            }
        }
    }
    if !n.members.is_empty() {
        let mut st = tx.prepare_cached(&format!(
            "SELECT {} FROM members WHERE conversation_id = ?1 AND user_id = ?2",
            codec::MEMBER_COLS
        ))?;
        for (c, u) in &n.members {
            if let Some(m) = st.query_row([c.to_bytes(), u.to_bytes()], |r| codec::member(r, 0)).optional()? {
                s.members.insert((*c, *u), m);
            }
        }
    }
    if !n.messages.is_empty() {
        let mut st = tx.prepare_cached(&format!("SELECT {} FROM messages WHERE id = ?1", codec::MESSAGE_COLS))?;
        for id in &n.messages {
            if let Some(m) = st.query_row([id.to_bytes()], |r| codec::message(r, 0)).optional()? {
                s.insert_message(m);
            }
        }
    }
    if !n.txns.is_empty() {
        let mut st = tx.prepare_cached(&format!(
            "SELECT {} FROM messages WHERE sender_id = ?1 AND client_txn_id = ?2",
            codec::MESSAGE_COLS
        ))?;
        for (u, t) in &n.txns {
            if let Some(m) = st.query_row(params![u.to_bytes(), t.as_str()], |r| codec::message(r, 0)).optional()? {
                s.insert_message(m);
            }
        }
    }
    if !n.users.is_empty() {
        let mut st = tx.prepare_cached(&format!("SELECT {} FROM users WHERE id = ?1", codec::USER_COLS))?;
        for id in &n.users {
            if let Some(r) = st.query_row([id.to_bytes()], |r| codec::user_record(r, 0)).optional()? {
                s.users.insert(*id, r.user);
            }
        }
    }
    if !n.direct.is_empty() {
        let mut st = tx.prepare_cached("SELECT id FROM conversations WHERE direct_key = ?1")?;
        for (a, b) in &n.direct {
            if let Some(id) = st.query_row([direct_key(*a, *b)], |r| codec::conversation_id(r, 0)).optional()? {
                s.direct.insert((*a, *b), id);
            }
        }
    }
    if !n.acks.is_empty() {
        let mut st =
            tx.prepare_cached(&format!("SELECT {} FROM acks WHERE message_id = ?1 AND user_id = ?2", codec::ACK_COLS))?;
        for (m, u) in &n.acks {
            if let Some(a) = st.query_row([m.to_bytes(), u.to_bytes()], |r| codec::ack(r, 0)).optional()? {
                s.acks.insert((*m, *u), a);
            }
        }
    }
    if !n.receipt_targets.is_empty() {
        // Senders (still members, not the reader) of the messages the receipt newly covers.
        let mut st = tx.prepare_cached(
            "SELECT DISTINCT m.sender_id FROM members r
             JOIN messages m ON m.conversation_id = r.conversation_id
              AND ((m.seq > r.delivered_seq AND m.seq <= ?3) OR (m.seq > r.read_seq AND m.seq <= ?4))
             JOIN members s ON s.conversation_id = m.conversation_id AND s.user_id = m.sender_id
             WHERE r.conversation_id = ?1 AND r.user_id = ?2 AND m.sender_id <> r.user_id",
        )?;
        for key @ (c, u, d, r) in &n.receipt_targets {
            let senders = st
                .query_map(params![c.to_bytes(), u.to_bytes(), i(d.get()), i(r.get())], |row| codec::user_id(row, 0))?
                .collect::<Result<Vec<_>, _>>()?;
            s.receipt_targets.insert(*key, senders);
        }
    }
    Ok(())
}

fn direct_key(a: UserId, b: UserId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&a.to_bytes());
    k[16..].copy_from_slice(&b.to_bytes());
    k
}

fn write(tx: &Transaction<'_>, e: &Effects) -> Result<(), StoreError> {
    for c in &e.conversations_new {
        let direct = e.direct_new.iter().find(|(_, _, id)| *id == c.id).map(|(a, b, _)| direct_key(*a, *b));
        tx.prepare_cached(
            "INSERT INTO conversations
               (id, kind, title, created_by, created_at, last_seq, member_count, owner_count, direct_key, org_id, patient_ref)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            c.id.to_bytes(),
            c.kind.as_str(),
            c.title,
            c.created_by.map(|u| u.to_bytes()),
            c.created_at.as_microsecond(),
            i(c.last_seq.get()),
            c.member_count,
            c.owner_count,
            direct,
            c.org.to_bytes(),
            c.patient.as_ref().map(|p| p.as_str()),
        ])?;
    }
    for c in &e.conversations_changed {
        tx.prepare_cached(
            "UPDATE conversations SET title = ?2, last_seq = ?3, member_count = ?4, owner_count = ?5 WHERE id = ?1",
        )?
        .execute(params![c.id.to_bytes(), c.title, i(c.last_seq.get()), c.member_count, c.owner_count])?;
    }
    for (c, u) in &e.members_deleted {
        tx.prepare_cached("DELETE FROM members WHERE conversation_id = ?1 AND user_id = ?2")?
            .execute([c.to_bytes(), u.to_bytes()])?;
    }
    for m in &e.members_upserted {
        tx.prepare_cached(
            "INSERT INTO members (conversation_id, user_id, role, delivered_seq, read_seq, joined_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (conversation_id, user_id) DO UPDATE SET
               role = excluded.role, delivered_seq = excluded.delivered_seq, read_seq = excluded.read_seq",
        )?
        .execute(params![
            m.conversation.to_bytes(),
            m.user.to_bytes(),
            m.role.as_str(),
            i(m.delivered_seq.get()),
            i(m.read_seq.get()),
            m.joined_at.as_microsecond(),
        ])?;
    }
    for p in &e.periods {
        match p {
            PeriodOp::Open { conversation, user, from } => {
                let role = crate::columns::opening_role(e, *user, *from)?;
                tx.prepare_cached(
                    "INSERT INTO member_periods (user_id, conversation_id, from_event, to_event, role) VALUES (?1, ?2, ?3, NULL, ?4)",
                )?
                .execute(params![user.to_bytes(), conversation.to_bytes(), i(from.get()), role.as_str()])?;
            }
            PeriodOp::Close { conversation, user, to } => {
                tx.prepare_cached(
                    "UPDATE member_periods SET to_event = ?3 WHERE user_id = ?1 AND conversation_id = ?2 AND to_event IS NULL",
                )?
                .execute(params![user.to_bytes(), conversation.to_bytes(), i(to.get())])?;
            }
        }
    }
    for m in &e.messages_new {
        tx.prepare_cached(&format!(
            "INSERT INTO messages ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            codec::MESSAGE_COLS
        ))?
        .execute(params![
            m.id.to_bytes(),
            m.conversation.to_bytes(),
            i(m.seq.get()),
            m.sender.to_bytes(),
            m.client_txn_id.as_str(),
            m.body,
            m.priority.as_str(),
            m.reply_to.map(|r| r.to_bytes()),
            m.created_at.as_microsecond(),
            m.revision,
            m.edited_at.map(|t| t.as_microsecond()),
            m.recall.map(|r| r.at.as_microsecond()),
            m.recall.and_then(|r| r.by).map(|u| u.to_bytes()),
            i(m.event.get()),
            m.request_hash,
            m.acknowledged,
            m.removal.map(|r| r.at.as_microsecond()),
            m.removal.map(|r| r.cause.as_str()),
            m.erasure_requested_at.map(|t| t.as_microsecond()),
        ])?;
    }
    for m in &e.messages_changed {
        tx.prepare_cached(
            "UPDATE messages SET body = ?2, revision = ?3, edited_at = ?4, recalled_at = ?5, recalled_by = ?6, acknowledged = ?7
             WHERE id = ?1",
        )?
        .execute(params![
            m.id.to_bytes(),
            m.body,
            m.revision,
            m.edited_at.map(|t| t.as_microsecond()),
            m.recall.map(|r| r.at.as_microsecond()),
            m.recall.and_then(|r| r.by).map(|u| u.to_bytes()),
            m.acknowledged,
        ])?;
    }
    for r in &e.revisions {
        tx.prepare_cached(
            "INSERT INTO message_revisions (message_id, revision, body, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![r.message.to_bytes(), r.revision, r.body, r.at.as_microsecond()])?;
    }
    for a in &e.acks {
        tx.prepare_cached(
            "INSERT INTO acks (message_id, user_id, response, minutes, at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (message_id, user_id) DO UPDATE SET response = excluded.response, minutes = excluded.minutes, at = excluded.at",
        )?
        .execute(params![
            a.message.to_bytes(),
            a.user.to_bytes(),
            a.response.kind_str(),
            a.response.minutes(),
            a.at.as_microsecond()
        ])?;
    }
    for ev in &e.events {
        insert_event(tx, ev)?;
    }
    Ok(())
}

fn insert_event(tx: &Transaction<'_>, ev: &Event) -> Result<(), StoreError> {
    let c = crate::EventColumns::of(ev);
    tx.prepare_cached(
        "INSERT INTO events (id, conversation_id, kind, at, actor_id, message_id, seq, revision, subject_user_id, role,
                             delivered_seq, read_seq, ack_response, ack_minutes, title, conv_kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        i(ev.id.get()),
        ev.conversation.to_bytes(),
        ev.kind.name(),
        ev.at.as_microsecond(),
        ev.actor.map(|u| u.to_bytes()),
        c.message.map(|m| m.to_bytes()),
        c.seq.map(|s| i(s.get())),
        c.revision,
        c.subject.map(|u| u.to_bytes()),
        c.role.map(|r| r.as_str()),
        c.delivered.map(|s| i(s.get())),
        c.read.map(|s| i(s.get())),
        c.ack.map(|a| a.kind_str()),
        c.ack.and_then(|a| a.minutes()),
        c.title,
        c.conv_kind.map(|k| k.as_str()),
    ])?;
    for u in c.targets {
        tx.prepare_cached("INSERT INTO event_targets (user_id, event_id) VALUES (?1, ?2)")?
            .execute(params![u.to_bytes(), i(ev.id.get())])?;
    }
    Ok(())
}

pub(super) fn bootstrap(conn: &mut Connection, org: &Org, admin: &UserRecord) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let exists: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM orgs)", [], |r| r.get(0))?;
    if exists {
        return Ok(false);
    }
    insert_org(&tx, org)?;
    insert_user(&tx, admin)?;
    tx.commit()?;
    Ok(true)
}

pub(super) fn create_org(
    conn: &mut Connection,
    org: &Org,
    admin: &UserRecord,
    audit: &[AuditRecord],
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    insert_org(&tx, org)?;
    insert_user(&tx, admin)?;
    super::identity::append_leaves(&tx, audit)?;
    tx.commit()?;
    Ok(())
}

fn insert_org(tx: &Transaction<'_>, org: &Org) -> Result<(), StoreError> {
    let res = tx.execute(
        "INSERT INTO orgs (id, name, created_at, idle_timeout_s) VALUES (?1, ?2, ?3, ?4)",
        params![org.id.to_bytes(), org.name, org.created_at.as_microsecond(), org.idle_timeout.as_secs()],
    );
    match res {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
            Err(StoreError::Conflict("an organization with this name exists"))
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn insert_user(tx: &Transaction<'_>, r: &UserRecord) -> Result<(), StoreError> {
    let u = &r.user;
    let res = tx.execute(
        &format!("INSERT INTO users ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)", codec::USER_COLS),
        params![
            u.id.to_bytes(),
            u.org.to_bytes(),
            u.username,
            u.display_name,
            u.role.as_str(),
            u.active,
            r.password_hash,
            r.must_change_password,
            u.created_at.as_microsecond()
        ],
    );
    match res {
        Ok(_) => {
            tx.execute(
                "INSERT INTO user_roles (user_id, role_id, granted_by, granted_at)
                 VALUES (?1, (SELECT id FROM roles WHERE org_id IS NULL AND key = ?2), NULL, ?3)",
                params![u.id.to_bytes(), u.role.default_role_key(), u.created_at.as_microsecond()],
            )?;
            Ok(())
        }
        Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
            if e.code == rusqlite::ErrorCode::ConstraintViolation && msg.contains("users.username") =>
        {
            Err(StoreError::UsernameTaken)
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn create_user(conn: &mut Connection, user: &UserRecord) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    insert_user(&tx, user)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn set_password(
    conn: &mut Connection,
    id: UserId,
    hash: &str,
    must_change: bool,
    audit: &[AuditRecord],
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE users SET password_hash = ?2, must_change_password = ?3 WHERE id = ?1",
        params![id.to_bytes(), hash, must_change],
    )?;
    super::identity::append_leaves(&tx, audit)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn set_user_active(
    conn: &mut Connection,
    id: UserId,
    active: bool,
    now: Timestamp,
    audit: &[AuditRecord],
    session_end: Option<&AuditRecord>,
) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let changed = tx.execute("UPDATE users SET active = ?2 WHERE id = ?1", params![id.to_bytes(), active])? > 0;
    if !changed {
        return Ok(false);
    }
    if !active {
        let ended = {
            let mut st = tx.prepare_cached(
                "UPDATE sessions SET revoked_at = ?2, end_reason = 'deactivated'
                 WHERE user_id = ?1 AND revoked_at IS NULL RETURNING id, user_id",
            )?;
            super::identity::ended(
                st.query_map(params![id.to_bytes(), now.as_microsecond()], super::identity::session_user)?,
            )?
        };
        super::identity::append_session_ends(&tx, session_end, &ended)?;
    }
    super::identity::append_leaves(&tx, audit)?;
    tx.commit()?;
    Ok(true)
}

pub(super) fn create_session(
    conn: &mut Connection,
    s: &Session,
    audit: &[medhub_core::audit::AuditRecord],
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        &format!(
            "INSERT INTO sessions ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            codec::SESSION_COLS
        ),
        params![
            s.id.to_bytes(),
            s.user.to_bytes(),
            s.token_hash,
            s.state.as_str(),
            s.created_at.as_microsecond(),
            s.last_activity_at.as_microsecond(),
            s.expires_at.as_microsecond(),
            s.revoked_at.map(|t| t.as_microsecond()),
            s.mfa_at.map(|t| t.as_microsecond()),
            s.ip,
            s.user_agent,
        ],
    )?;
    super::identity::append_leaves(&tx, audit)?;
    tx.commit()?;
    Ok(())
}
