//! PostgreSQL writes: the batch transaction, set-based and pipelined, and account writes.

use deadpool_postgres::{ClientWrapper, Object, Transaction};
use futures_util::future::try_join_all;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::model::{MemberRole, Org, Session};
use medhub_core::plan::{self, Command, Effects, Limits, Needs, PeriodOp, Plan, Snapshot};
use medhub_core::{Seq, UserId};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::codec::{self, i};
use super::{EVENT_LOG_LOCK, NOTIFY_CHANNEL};
use crate::sql::{ACK_COLS, CONVERSATION_COLS, MEMBER_COLS, MESSAGE_COLS, USER_COLS, prefixed};
use crate::{StoreError, UserRecord};

type Param<'a> = &'a (dyn ToSql + Sync);

/// Runs one batch as one transaction: lock, load (two pipelined rounds), plan, write
/// (pipelined), notify, commit.
pub(super) async fn apply(
    client: &mut Object,
    cmds: &[Command],
    audit: &[Option<medhub_core::audit::AuditRecord>],
    now: Timestamp,
    limits: &Limits,
) -> Result<Plan, StoreError> {
    let tx = client.transaction().await?;
    // Pipelined: durability setting, the cross-node writer lock, then the log head.
    let (_, _, head) = futures_util::try_join!(
        tx.batch_execute("SET LOCAL synchronous_commit = on"),
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENT_LOG_LOCK]),
        tx.query_one("SELECT COALESCE(MAX(id), 0) FROM events", &[]),
    )?;
    let mut snap = Snapshot { last_event: codec::event_id(&head, 0)?, ..Snapshot::default() };
    load(&tx, &plan::first_needs(cmds), &mut snap).await?;
    let second = plan::second_needs(cmds, &snap);
    if !second.is_empty() {
        load(&tx, &second, &mut snap).await?;
    }
    let links = plan::audit::PatientLinks::of(&snap);
    let plan = plan::plan(cmds, snap, now, limits);
    write(&tx, &plan.effects).await?;
    super::escalation::on_commit(&tx, &plan.effects).await?;
    let records = plan::audit::records(cmds, &plan.results, audit, &links);
    if !records.is_empty() {
        super::identity::append_leaves(&*tx, &records).await?;
    }
    if let Some(last) = plan.effects.events.last() {
        tx.execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &last.id.get().to_string()]).await?;
    }
    tx.commit().await?;
    Ok(plan)
}

async fn rows(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Param<'_>],
    skip: bool,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    if skip {
        return Ok(Vec::new());
    }
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query(&st, params).await?)
}

async fn load(tx: &Transaction<'_>, n: &Needs, s: &mut Snapshot) -> Result<(), StoreError> {
    let conv_ids: Vec<Uuid> = n.conversations.iter().map(|c| c.as_uuid()).collect();
    let (mc, mu): (Vec<Uuid>, Vec<Uuid>) = n.members.iter().map(|(c, u)| (c.as_uuid(), u.as_uuid())).unzip();
    let msg_ids: Vec<Uuid> = n.messages.iter().map(|m| m.as_uuid()).collect();
    let (ts, tt): (Vec<Uuid>, Vec<&str>) = n.txns.iter().map(|(u, t)| (u.as_uuid(), t.as_str())).unzip();
    let user_ids: Vec<Uuid> = n.users.iter().map(|u| u.as_uuid()).collect();
    let direct: Vec<Vec<u8>> = n.direct.iter().map(|(a, b)| direct_key(*a, *b)).collect();
    let (am, au): (Vec<Uuid>, Vec<Uuid>) = n.acks.iter().map(|(m, u)| (m.as_uuid(), u.as_uuid())).unzip();
    let rk: Vec<_> = n.receipt_targets.iter().collect();
    let rc: Vec<Uuid> = rk.iter().map(|k| k.0.as_uuid()).collect();
    let ru: Vec<Uuid> = rk.iter().map(|k| k.1.as_uuid()).collect();
    let rd: Vec<i64> = rk.iter().map(|k| i(k.2.get())).collect();
    let rr: Vec<i64> = rk.iter().map(|k| i(k.3.get())).collect();

    let q_conv = format!("SELECT {CONVERSATION_COLS} FROM conversations WHERE id = ANY($1)");
    let q_mem = format!(
        "SELECT {} FROM members m JOIN UNNEST($1::uuid[], $2::uuid[]) AS k(c, u)
         ON m.conversation_id = k.c AND m.user_id = k.u",
        prefixed(MEMBER_COLS, "m")
    );
    let q_msg = format!("SELECT {MESSAGE_COLS} FROM messages WHERE id = ANY($1)");
    let q_txn = format!(
        "SELECT {} FROM messages m JOIN UNNEST($1::uuid[], $2::text[]) AS k(s, t)
         ON m.sender_id = k.s AND m.client_txn_id = k.t",
        prefixed(MESSAGE_COLS, "m")
    );
    let q_user = format!("SELECT {USER_COLS} FROM users WHERE id = ANY($1)");
    let q_direct = "SELECT direct_key, id FROM conversations WHERE direct_key = ANY($1)";
    let q_ack = format!(
        "SELECT {} FROM acks a JOIN UNNEST($1::uuid[], $2::uuid[]) AS k(m, u) ON a.message_id = k.m AND a.user_id = k.u",
        prefixed(ACK_COLS, "a")
    );
    // Senders (still members, not the reader) of the messages each receipt newly covers.
    let q_receipt = "SELECT DISTINCT k.c, k.u, k.d, k.r, m.sender_id
         FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::int8[]) AS k(c, u, d, r)
         JOIN members rm ON rm.conversation_id = k.c AND rm.user_id = k.u
         JOIN messages m ON m.conversation_id = k.c
          AND ((m.seq > rm.delivered_seq AND m.seq <= k.d) OR (m.seq > rm.read_seq AND m.seq <= k.r))
         JOIN members sm ON sm.conversation_id = m.conversation_id AND sm.user_id = m.sender_id
         WHERE m.sender_id <> k.u";

    let (p_conv, p_mem, p_msg, p_txn): ([Param<'_>; 1], [Param<'_>; 2], [Param<'_>; 1], [Param<'_>; 2]) =
        ([&conv_ids], [&mc, &mu], [&msg_ids], [&ts, &tt]);
    let (p_user, p_direct, p_ack, p_receipt): ([Param<'_>; 1], [Param<'_>; 1], [Param<'_>; 2], [Param<'_>; 4]) =
        ([&user_ids], [&direct], [&am, &au], [&rc, &ru, &rd, &rr]);
    // All eight queries are sent before the first answer is awaited.
    let (convs, members, msgs, txns, users, directs, acks, receipts) = futures_util::try_join!(
        rows(tx, &q_conv, &p_conv, conv_ids.is_empty()),
        rows(tx, &q_mem, &p_mem, mc.is_empty()),
        rows(tx, &q_msg, &p_msg, msg_ids.is_empty()),
        rows(tx, &q_txn, &p_txn, ts.is_empty()),
        rows(tx, &q_user, &p_user, user_ids.is_empty()),
        rows(tx, q_direct, &p_direct, direct.is_empty()),
        rows(tx, &q_ack, &p_ack, am.is_empty()),
        rows(tx, q_receipt, &p_receipt, rc.is_empty()),
    )?;
    for r in &convs {
        let c = codec::conversation(r, 0)?;
        s.conversations.insert(c.id, c);
    }
    for r in &members {
        let m = codec::member(r, 0)?;
        s.members.insert((m.conversation, m.user), m);
    }
    for r in msgs.iter().chain(&txns) {
        s.insert_message(codec::message(r, 0)?);
    }
    for r in &users {
        let u = codec::user_record(r, 0)?.user;
        s.users.insert(u.id, u);
    }
    for r in &directs {
        let key: &[u8] = r.try_get(0)?;
        let pair = n.direct.iter().find(|(a, b)| direct_key(*a, *b) == key);
        if let Some(pair) = pair {
            s.direct.insert(*pair, codec::conversation_id(r, 1)?);
        }
    }
    for r in &acks {
        let a = codec::ack(r, 0)?;
        s.acks.insert((a.message, a.user), a);
    }
    for key in n.receipt_targets.iter() {
        s.receipt_targets.insert(*key, Vec::new());
    }
    for r in &receipts {
        let key = (codec::conversation_id(r, 0)?, codec::user_id(r, 1)?, codec::seq(r, 2)?, codec::seq(r, 3)?);
        s.receipt_targets.entry(key).or_default().push(codec::user_id(r, 4)?);
    }
    Ok(())
}

fn direct_key(a: UserId, b: UserId) -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    k.extend_from_slice(&a.to_bytes());
    k.extend_from_slice(&b.to_bytes());
    k
}

/// Column arrays for every write of a batch, built before any statement runs so that the
/// statements can be pipelined.
#[derive(Default)]
struct Columns {
    // conversations_new
    cn_id: Vec<Uuid>,
    cn_kind: Vec<&'static str>,
    cn_title: Vec<Option<String>>,
    cn_by: Vec<Option<Uuid>>,
    cn_at: Vec<i64>,
    cn_seq: Vec<i64>,
    cn_mc: Vec<i32>,
    cn_oc: Vec<i32>,
    cn_org: Vec<Uuid>,
    cn_patient: Vec<Option<String>>,
    cn_direct: Vec<Option<Vec<u8>>>,
    // conversations_changed
    cc_id: Vec<Uuid>,
    cc_title: Vec<Option<String>>,
    cc_seq: Vec<i64>,
    cc_mc: Vec<i32>,
    cc_oc: Vec<i32>,
    // members_deleted
    md_c: Vec<Uuid>,
    md_u: Vec<Uuid>,
    // members_upserted
    mu_c: Vec<Uuid>,
    mu_u: Vec<Uuid>,
    mu_role: Vec<&'static str>,
    mu_d: Vec<i64>,
    mu_r: Vec<i64>,
    mu_at: Vec<i64>,
    // messages_new
    m_id: Vec<Uuid>,
    m_conv: Vec<Uuid>,
    m_seq: Vec<i64>,
    m_sender: Vec<Uuid>,
    m_txn: Vec<String>,
    m_body: Vec<String>,
    m_prio: Vec<&'static str>,
    m_reply: Vec<Option<Uuid>>,
    m_at: Vec<i64>,
    m_rev: Vec<i32>,
    m_edited: Vec<Option<i64>>,
    m_rec_at: Vec<Option<i64>>,
    m_rec_by: Vec<Option<Uuid>>,
    m_event: Vec<i64>,
    m_hash: Vec<Vec<u8>>,
    m_acked: Vec<bool>,
    // messages_changed
    mc_id: Vec<Uuid>,
    mc_body: Vec<String>,
    mc_rev: Vec<i32>,
    mc_edited: Vec<Option<i64>>,
    mc_rec_at: Vec<Option<i64>>,
    mc_rec_by: Vec<Option<Uuid>>,
    mc_acked: Vec<bool>,
    // revisions
    rv_m: Vec<Uuid>,
    rv_rev: Vec<i32>,
    rv_body: Vec<String>,
    rv_at: Vec<i64>,
    // acks
    a_m: Vec<Uuid>,
    a_u: Vec<Uuid>,
    a_resp: Vec<&'static str>,
    a_min: Vec<Option<i32>>,
    a_at: Vec<i64>,
    // events
    e_id: Vec<i64>,
    e_conv: Vec<Uuid>,
    e_kind: Vec<&'static str>,
    e_at: Vec<i64>,
    e_actor: Vec<Option<Uuid>>,
    e_msg: Vec<Option<Uuid>>,
    e_seq: Vec<Option<i64>>,
    e_rev: Vec<Option<i32>>,
    e_subj: Vec<Option<Uuid>>,
    e_role: Vec<Option<&'static str>>,
    e_del: Vec<Option<i64>>,
    e_read: Vec<Option<i64>>,
    e_ack: Vec<Option<&'static str>>,
    e_min: Vec<Option<i32>>,
    e_title: Vec<Option<String>>,
    e_ck: Vec<Option<&'static str>>,
    t_u: Vec<Uuid>,
    t_e: Vec<i64>,
}

fn opt_seq(s: Option<Seq>) -> Option<i64> {
    s.map(|s| i(s.get()))
}

impl Columns {
    fn of(e: &Effects) -> Self {
        let mut c = Columns::default();
        for x in &e.conversations_new {
            c.cn_id.push(x.id.as_uuid());
            c.cn_kind.push(x.kind.as_str());
            c.cn_title.push(x.title.clone());
            c.cn_by.push(x.created_by.map(|u| u.as_uuid()));
            c.cn_at.push(x.created_at.as_microsecond());
            c.cn_seq.push(i(x.last_seq.get()));
            c.cn_mc.push(x.member_count as i32);
            c.cn_oc.push(x.owner_count as i32);
            c.cn_org.push(x.org.as_uuid());
            c.cn_patient.push(x.patient.as_ref().map(|p| p.as_str().to_owned()));
            c.cn_direct.push(e.direct_new.iter().find(|(_, _, id)| *id == x.id).map(|(a, b, _)| direct_key(*a, *b)));
        }
        for x in &e.conversations_changed {
            c.cc_id.push(x.id.as_uuid());
            c.cc_title.push(x.title.clone());
            c.cc_seq.push(i(x.last_seq.get()));
            c.cc_mc.push(x.member_count as i32);
            c.cc_oc.push(x.owner_count as i32);
        }
        for (conv, user) in &e.members_deleted {
            c.md_c.push(conv.as_uuid());
            c.md_u.push(user.as_uuid());
        }
        for m in &e.members_upserted {
            c.mu_c.push(m.conversation.as_uuid());
            c.mu_u.push(m.user.as_uuid());
            c.mu_role.push(m.role.as_str());
            c.mu_d.push(i(m.delivered_seq.get()));
            c.mu_r.push(i(m.read_seq.get()));
            c.mu_at.push(m.joined_at.as_microsecond());
        }
        for m in &e.messages_new {
            c.m_id.push(m.id.as_uuid());
            c.m_conv.push(m.conversation.as_uuid());
            c.m_seq.push(i(m.seq.get()));
            c.m_sender.push(m.sender.as_uuid());
            c.m_txn.push(m.client_txn_id.as_str().to_owned());
            c.m_body.push(m.body.clone());
            c.m_prio.push(m.priority.as_str());
            c.m_reply.push(m.reply_to.map(|r| r.as_uuid()));
            c.m_at.push(m.created_at.as_microsecond());
            c.m_rev.push(m.revision as i32);
            c.m_edited.push(m.edited_at.map(|t| t.as_microsecond()));
            c.m_rec_at.push(m.recall.map(|r| r.at.as_microsecond()));
            c.m_rec_by.push(m.recall.and_then(|r| r.by).map(|u| u.as_uuid()));
            c.m_event.push(i(m.event.get()));
            c.m_hash.push(m.request_hash.to_vec());
            c.m_acked.push(m.acknowledged);
        }
        for m in &e.messages_changed {
            c.mc_id.push(m.id.as_uuid());
            c.mc_body.push(m.body.clone());
            c.mc_rev.push(m.revision as i32);
            c.mc_edited.push(m.edited_at.map(|t| t.as_microsecond()));
            c.mc_rec_at.push(m.recall.map(|r| r.at.as_microsecond()));
            c.mc_rec_by.push(m.recall.and_then(|r| r.by).map(|u| u.as_uuid()));
            c.mc_acked.push(m.acknowledged);
        }
        for r in &e.revisions {
            c.rv_m.push(r.message.as_uuid());
            c.rv_rev.push(r.revision as i32);
            c.rv_body.push(r.body.clone());
            c.rv_at.push(r.at.as_microsecond());
        }
        for a in &e.acks {
            c.a_m.push(a.message.as_uuid());
            c.a_u.push(a.user.as_uuid());
            c.a_resp.push(a.response.kind_str());
            c.a_min.push(a.response.minutes().map(i32::from));
            c.a_at.push(a.at.as_microsecond());
        }
        for ev in &e.events {
            let k = crate::EventColumns::of(ev);
            c.e_id.push(i(ev.id.get()));
            c.e_conv.push(ev.conversation.as_uuid());
            c.e_kind.push(ev.kind.name());
            c.e_at.push(ev.at.as_microsecond());
            c.e_actor.push(ev.actor.map(|u| u.as_uuid()));
            c.e_msg.push(k.message.map(|m| m.as_uuid()));
            c.e_seq.push(opt_seq(k.seq));
            c.e_rev.push(k.revision.map(|r| r as i32));
            c.e_subj.push(k.subject.map(|u| u.as_uuid()));
            c.e_role.push(k.role.map(MemberRole::as_str));
            c.e_del.push(opt_seq(k.delivered));
            c.e_read.push(opt_seq(k.read));
            c.e_ack.push(k.ack.map(|a| a.kind_str()));
            c.e_min.push(k.ack.and_then(|a| a.minutes()).map(i32::from));
            c.e_title.push(k.title.map(str::to_owned));
            c.e_ck.push(k.conv_kind.map(|k| k.as_str()));
            for u in k.targets {
                c.t_u.push(u.as_uuid());
                c.t_e.push(i(ev.id.get()));
            }
        }
        c
    }
}

const INSERT_CONVERSATIONS: &str = "INSERT INTO conversations
     (id, kind, title, created_by, created_at, last_seq, member_count, owner_count, direct_key, org_id, patient_ref)
     SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::int8[], $6::int8[], $7::int4[],
                          $8::int4[], $9::bytea[], $10::uuid[], $11::text[])";
const UPDATE_CONVERSATIONS: &str = "UPDATE conversations c
     SET title = k.title, last_seq = k.last_seq, member_count = k.mc, owner_count = k.oc
     FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int4[], $5::int4[]) AS k(id, title, last_seq, mc, oc)
     WHERE c.id = k.id";
const DELETE_MEMBERS: &str = "DELETE FROM members m USING UNNEST($1::uuid[], $2::uuid[]) AS k(c, u)
     WHERE m.conversation_id = k.c AND m.user_id = k.u";
const UPSERT_MEMBERS: &str = "INSERT INTO members (conversation_id, user_id, role, delivered_seq, read_seq, joined_at)
     SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::int8[], $6::int8[])
     ON CONFLICT (conversation_id, user_id) DO UPDATE SET
       role = excluded.role, delivered_seq = excluded.delivered_seq, read_seq = excluded.read_seq";
const INSERT_MESSAGES: &str = "INSERT INTO messages
     (id, conversation_id, seq, sender_id, client_txn_id, body, priority, reply_to, created_at, revision, edited_at,
      recalled_at, recalled_by, event_id, request_hash, acknowledged)
     SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::uuid[], $5::text[], $6::text[], $7::text[],
                          $8::uuid[], $9::int8[], $10::int4[], $11::int8[], $12::int8[], $13::uuid[], $14::int8[],
                          $15::bytea[], $16::bool[])";
const UPDATE_MESSAGES: &str = "UPDATE messages m
     SET body = k.body, revision = k.rev, edited_at = k.edited, recalled_at = k.rec_at, recalled_by = k.rec_by,
         acknowledged = k.acked
     FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::int8[], $5::int8[], $6::uuid[], $7::bool[])
          AS k(id, body, rev, edited, rec_at, rec_by, acked)
     WHERE m.id = k.id";
const INSERT_REVISIONS: &str = "INSERT INTO message_revisions (message_id, revision, body, created_at)
     SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::int8[])";
const UPSERT_ACKS: &str = "INSERT INTO acks (message_id, user_id, response, minutes, at)
     SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::int8[])
     ON CONFLICT (message_id, user_id) DO UPDATE SET
       response = excluded.response, minutes = excluded.minutes, at = excluded.at";
const INSERT_EVENTS: &str = "INSERT INTO events
     (id, conversation_id, kind, at, actor_id, message_id, seq, revision, subject_user_id, role, delivered_seq,
      read_seq, ack_response, ack_minutes, title, conv_kind)
     SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::text[], $4::int8[], $5::uuid[], $6::uuid[], $7::int8[],
                          $8::int4[], $9::uuid[], $10::text[], $11::int8[], $12::int8[], $13::text[], $14::int4[],
                          $15::text[], $16::text[])";
const INSERT_TARGETS: &str =
    "INSERT INTO event_targets (user_id, event_id) SELECT * FROM UNNEST($1::uuid[], $2::int8[])";
const OPEN_PERIOD: &str =
    "INSERT INTO member_periods (user_id, conversation_id, from_event, to_event, role) VALUES ($1, $2, $3, NULL, $4)";
const CLOSE_PERIOD: &str =
    "UPDATE member_periods SET to_event = $3 WHERE user_id = $1 AND conversation_id = $2 AND to_event IS NULL";

/// A period operation as bound parameters.
struct PeriodParams {
    open: bool,
    user: Uuid,
    conversation: Uuid,
    event: i64,
    role: &'static str,
}

fn period_params(e: &Effects) -> Result<Vec<PeriodParams>, StoreError> {
    e.periods
        .iter()
        .map(|p| match p {
            PeriodOp::Open { conversation, user, from } => {
                let role = crate::columns::opening_role(e, *user, *from)?.as_str();
                Ok(PeriodParams {
                    open: true,
                    user: user.as_uuid(),
                    conversation: conversation.as_uuid(),
                    event: i(from.get()),
                    role,
                })
            }
            PeriodOp::Close { conversation, user, to } => Ok(PeriodParams {
                open: false,
                user: user.as_uuid(),
                conversation: conversation.as_uuid(),
                event: i(to.get()),
                role: "",
            }),
        })
        .collect()
}

async fn write(tx: &Transaction<'_>, e: &Effects) -> Result<(), StoreError> {
    let c = Columns::of(e);
    let periods = period_params(e)?;
    // Statements in foreign-key order; each is skipped when it has no rows.
    let plan: Vec<(&str, Vec<Param<'_>>, bool)> = vec![
        (
            INSERT_CONVERSATIONS,
            vec![
                &c.cn_id,
                &c.cn_kind,
                &c.cn_title,
                &c.cn_by,
                &c.cn_at,
                &c.cn_seq,
                &c.cn_mc,
                &c.cn_oc,
                &c.cn_direct,
                &c.cn_org,
                &c.cn_patient,
            ],
            c.cn_id.is_empty(),
        ),
        (UPDATE_CONVERSATIONS, vec![&c.cc_id, &c.cc_title, &c.cc_seq, &c.cc_mc, &c.cc_oc], c.cc_id.is_empty()),
        (DELETE_MEMBERS, vec![&c.md_c, &c.md_u], c.md_c.is_empty()),
        (UPSERT_MEMBERS, vec![&c.mu_c, &c.mu_u, &c.mu_role, &c.mu_d, &c.mu_r, &c.mu_at], c.mu_c.is_empty()),
    ];
    let mut statements: Vec<(String, Vec<Param<'_>>)> =
        plan.into_iter().filter(|(_, _, skip)| !skip).map(|(sql, p, _)| (sql.to_owned(), p)).collect();
    for p in &periods {
        if p.open {
            statements.push((OPEN_PERIOD.to_owned(), vec![&p.user, &p.conversation, &p.event, &p.role]));
        } else {
            statements.push((CLOSE_PERIOD.to_owned(), vec![&p.user, &p.conversation, &p.event]));
        }
    }
    let rest: Vec<(&str, Vec<Param<'_>>, bool)> = vec![
        (
            INSERT_MESSAGES,
            vec![
                &c.m_id,
                &c.m_conv,
                &c.m_seq,
                &c.m_sender,
                &c.m_txn,
                &c.m_body,
                &c.m_prio,
                &c.m_reply,
                &c.m_at,
                &c.m_rev,
                &c.m_edited,
                &c.m_rec_at,
                &c.m_rec_by,
                &c.m_event,
                &c.m_hash,
                &c.m_acked,
            ],
            c.m_id.is_empty(),
        ),
        (
            UPDATE_MESSAGES,
            vec![&c.mc_id, &c.mc_body, &c.mc_rev, &c.mc_edited, &c.mc_rec_at, &c.mc_rec_by, &c.mc_acked],
            c.mc_id.is_empty(),
        ),
        (INSERT_REVISIONS, vec![&c.rv_m, &c.rv_rev, &c.rv_body, &c.rv_at], c.rv_m.is_empty()),
        (UPSERT_ACKS, vec![&c.a_m, &c.a_u, &c.a_resp, &c.a_min, &c.a_at], c.a_m.is_empty()),
        (
            INSERT_EVENTS,
            vec![
                &c.e_id, &c.e_conv, &c.e_kind, &c.e_at, &c.e_actor, &c.e_msg, &c.e_seq, &c.e_rev, &c.e_subj, &c.e_role,
                &c.e_del, &c.e_read, &c.e_ack, &c.e_min, &c.e_title, &c.e_ck,
            ],
            c.e_id.is_empty(),
        ),
        (INSERT_TARGETS, vec![&c.t_u, &c.t_e], c.t_u.is_empty()),
    ];
    statements.extend(rest.into_iter().filter(|(_, _, skip)| !skip).map(|(sql, p, _)| (sql.to_owned(), p)));

    // Prepare (cached per connection) first, then send every statement without waiting, in
    // order: PostgreSQL runs them in the order received.
    let prepared = try_join_all(statements.iter().map(|(sql, _)| tx.prepare_cached(sql))).await?;
    try_join_all(prepared.iter().zip(&statements).map(|(st, (_, params))| tx.execute(st, params))).await?;
    Ok(())
}

pub(super) async fn bootstrap(client: &mut Object, org: &Org, admin: &UserRecord) -> Result<bool, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENT_LOG_LOCK]).await?;
    let exists: bool = tx.query_one("SELECT EXISTS (SELECT 1 FROM orgs)", &[]).await?.try_get(0)?;
    if exists {
        return Ok(false);
    }
    insert_org(&*tx, org).await?;
    insert_user(&*tx, admin).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn create_org(
    client: &mut Object,
    org: &Org,
    admin: &UserRecord,
    audit: &[AuditRecord],
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    insert_org(&*tx, org).await?;
    insert_user(&*tx, admin).await?;
    super::identity::append_leaves(&*tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_org(c: &impl tokio_postgres::GenericClient, org: &Org) -> Result<(), StoreError> {
    let res = c
        .execute(
            "INSERT INTO orgs (id, name, created_at, idle_timeout_s) VALUES ($1, $2, $3, $4)",
            &[&org.id.as_uuid(), &org.name, &org.created_at.as_microsecond(), &org.idle_timeout.as_secs()],
        )
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            Err(StoreError::Conflict("an organization with this name exists"))
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn insert_user(c: &impl tokio_postgres::GenericClient, r: &UserRecord) -> Result<(), StoreError> {
    let u = &r.user;
    let res = c
        .execute(
            // One statement, so the user and its first role are written together.
            &format!(
                "WITH u AS (INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id)
                 INSERT INTO user_roles (user_id, role_id, granted_by, granted_at)
                 SELECT id, (SELECT id FROM roles WHERE org_id IS NULL AND key = $10), NULL, $9 FROM u"
            ),
            &[
                &u.id.as_uuid(),
                &u.org.as_uuid(),
                &u.username,
                &u.display_name,
                &u.role.as_str(),
                &u.active,
                &r.password_hash,
                &r.must_change_password,
                &u.created_at.as_microsecond(),
                &u.role.default_role_key(),
            ],
        )
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.as_db_error().is_some_and(|d| d.constraint() == Some("users_username_key")) => {
            Err(StoreError::UsernameTaken)
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn set_user_active(
    client: &mut Object,
    id: UserId,
    active: bool,
    now: Timestamp,
    audit: &[AuditRecord],
    session_end: Option<&AuditRecord>,
) -> Result<bool, StoreError> {
    let tx = client.transaction().await?;
    let changed = tx.execute("UPDATE users SET active = $2 WHERE id = $1", &[&id.as_uuid(), &active]).await? > 0;
    if !changed {
        return Ok(false);
    }
    if !active {
        let rows = tx
            .query(
                "UPDATE sessions SET revoked_at = $2, end_reason = 'deactivated'
                 WHERE user_id = $1 AND revoked_at IS NULL RETURNING id, user_id",
                &[&id.as_uuid(), &now.as_microsecond()],
            )
            .await?;
        let ended = super::identity::ended(&rows)?;
        super::identity::append_session_ends(&*tx, session_end, &ended).await?;
    }
    super::identity::append_leaves(&*tx, audit).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn create_session(
    c: &mut ClientWrapper,
    s: &Session,
    audit: &[medhub_core::audit::AuditRecord],
) -> Result<(), StoreError> {
    let tx = c.transaction().await?;
    tx.execute(
        &format!(
            "INSERT INTO sessions ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            crate::sql::SESSION_COLS
        ),
        &[
            &s.id.as_uuid(),
            &s.user.as_uuid(),
            &&s.token_hash[..],
            &s.state.as_str(),
            &s.created_at.as_microsecond(),
            &s.last_activity_at.as_microsecond(),
            &s.expires_at.as_microsecond(),
            &s.revoked_at.map(|t| t.as_microsecond()),
            &s.mfa_at.map(|t| t.as_microsecond()),
            &s.ip,
            &s.user_agent,
        ],
    )
    .await?;
    super::identity::append_leaves(&*tx, audit).await?;
    tx.commit().await?;
    Ok(())
}
