//! Escalation policies, timers, the delivery trace, the outbox and contact points in SQLite
//! (see `crate::escalation`). Every write runs on the single writer connection in an immediate
//! transaction, which serialises firings with each other and with the commit pipeline's batches
//! (and, for several processes on one database file, SQLite's write lock does).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::AuditRecord;
use medhub_core::escalation::{self, Channel, ChannelSet, CloseReason, Facts, Point, Policy, State, TraceKind, Why};
use medhub_core::model::{AckResponse, Priority};
use medhub_core::plan::Effects;
use medhub_core::{DeliveryId, MessageId, OrgId, PushSubscriptionId, TimerId, UserId};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::codec::us;
use super::identity::append_leaves;
use super::{SqliteStore, codec};
use crate::StoreError;
use crate::escalation::{
    AttemptResult, Closed, ContactPoints, DeliveryJob, DueTimer, Escalation, EscalationStore, FireInput, Fired,
    FiringContext, FiringWrites, MAX_PUSH_SUBSCRIPTIONS, NewTrace, PushSubscriptionRow, Reach, StepRow,
    StoredEscalationPolicy, TimerKind, TraceRow, attempt_trace, firing_writes,
};

const ESCALATION_COLS: &str = "message_id, org_id, conversation_id, sender_id, priority, sent_at, level, round, \
     closed_at, closed_reason, closed_by";

fn escalation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Escalation> {
    let last = match (r.get::<_, Option<i64>>(6)?, r.get::<_, Option<i64>>(7)?) {
        (Some(level), Some(round)) => Some(Point {
            level: u16::try_from(level).map_err(|_| codec::corrupt(6, "bad level"))?,
            round: u32::try_from(round).map_err(|_| codec::corrupt(7, "bad round"))?,
        }),
        _ => None,
    };
    let closed = match codec::opt_ts(r, 8)? {
        Some(at) => Some(Closed {
            at,
            reason: codec::parse(r, 9, CloseReason::parse)?,
            by: codec::opt_id(r, 10, UserId::from_slice)?,
        }),
        None => None,
    };
    Ok(Escalation {
        message: codec::message_id(r, 0)?,
        org: codec::id(r, 1, OrgId::from_slice)?,
        conversation: codec::conversation_id(r, 2)?,
        sender: codec::user_id(r, 3)?,
        priority: codec::parse(r, 4, Priority::parse)?,
        sent_at: codec::ts(r, 5)?,
        state: State { last },
        closed,
    })
}

fn trace_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TraceRow> {
    Ok(TraceRow {
        at: codec::ts(r, 0)?,
        kind: codec::parse(r, 1, TraceKind::parse)?,
        level: r.get::<_, Option<i64>>(2)?.and_then(|v| u16::try_from(v).ok()),
        round: r.get::<_, Option<i64>>(3)?.and_then(|v| u32::try_from(v).ok()),
        user: codec::opt_id(r, 4, UserId::from_slice)?,
        channel: match r.get::<_, Option<String>>(5)? {
            Some(c) => Some(Channel::parse(&c).ok_or_else(|| codec::corrupt(5, "unknown channel"))?),
            None => None,
        },
        detail: r.get(6)?,
    })
}

fn subscription_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PushSubscriptionRow> {
    Ok(PushSubscriptionRow {
        id: codec::id(r, 0, PushSubscriptionId::from_slice)?,
        user: codec::user_id(r, 1)?,
        endpoint: r.get(2)?,
        p256dh: r.get(3)?,
        auth: r.get(4)?,
        created_at: codec::ts(r, 5)?,
    })
}

fn insert_trace(tx: &Transaction<'_>, message: MessageId, at: Timestamp, t: &NewTrace) -> Result<(), StoreError> {
    let mut st = tx.prepare_cached(
        "INSERT INTO escalation_trace (message_id, at, kind, level, round, user_id, channel, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    st.execute(params![
        message.to_bytes(),
        us(at),
        t.kind.as_str(),
        t.point.map(|p| i64::from(p.level)),
        t.point.map(|p| i64::from(p.round)),
        t.user.map(|u| u.to_bytes()),
        t.channel.map(Channel::as_str),
        t.detail,
    ])?;
    Ok(())
}

/// The batch transaction's part: a new urgent or critical message gets its escalation and
/// first timer (due at its send); an acknowledgement that takes a message on, or a recall,
/// closes its escalation and cancels its pending timers.
pub(super) fn on_commit(tx: &Transaction<'_>, effects: &Effects) -> Result<(), StoreError> {
    for m in effects.messages_new.iter().filter(|m| escalation::escalates(m)) {
        tx.prepare_cached(
            "INSERT INTO escalations (message_id, org_id, conversation_id, sender_id, priority, sent_at)
             SELECT ?1, org_id, id, ?2, ?3, ?4 FROM conversations WHERE id = ?5",
        )?
        .execute(params![
            m.id.to_bytes(),
            m.sender.to_bytes(),
            m.priority.as_str(),
            us(m.created_at),
            m.conversation.to_bytes()
        ])?;
        tx.prepare_cached(
            "INSERT INTO timers (id, org_id, kind, ref_id, due_at, created_at)
             SELECT ?1, org_id, ?2, ?3, ?4, ?4 FROM conversations WHERE id = ?5",
        )?
        .execute(params![
            TimerId::new_v7().to_bytes(),
            TimerKind::Escalation.as_str(),
            m.id.to_bytes(),
            us(m.created_at),
            m.conversation.to_bytes()
        ])?;
    }
    for a in effects.acks.iter().filter(|a| escalation::closes(a.response)) {
        close(tx, a.message, CloseReason::Acknowledged, Some(a.user), a.at)?;
    }
    for m in &effects.messages_changed {
        if let Some(r) = m.recall {
            close(tx, m.id, CloseReason::Recalled, r.by, r.at)?;
        }
    }
    Ok(())
}

fn close(
    tx: &Transaction<'_>,
    message: MessageId,
    reason: CloseReason,
    by: Option<UserId>,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let changed = tx
        .prepare_cached(
            "UPDATE escalations SET closed_at = ?2, closed_reason = ?3, closed_by = ?4
             WHERE message_id = ?1 AND closed_at IS NULL",
        )?
        .execute(params![message.to_bytes(), us(at), reason.as_str(), by.map(|u| u.to_bytes())])?;
    if changed > 0 {
        tx.prepare_cached(
            "UPDATE timers SET cancelled_at = ?2 WHERE ref_id = ?1 AND fired_at IS NULL AND cancelled_at IS NULL",
        )?
        .execute(params![message.to_bytes(), us(at)])?;
    }
    Ok(changed > 0)
}

fn policy_of(
    c: &rusqlite::Connection,
    org: OrgId,
    priority: Priority,
) -> Result<Option<StoredEscalationPolicy>, StoreError> {
    let head = c
        .prepare_cached(
            "SELECT stop_after_secs, set_by, set_at FROM escalation_policies WHERE org_id = ?1 AND priority = ?2",
        )?
        .query_row(params![org.to_bytes(), priority.as_str()], |r| {
            Ok((r.get::<_, i64>(0)?, codec::opt_id(r, 1, UserId::from_slice)?, codec::ts(r, 2)?))
        })
        .optional()?;
    let Some((stop_after, set_by, set_at)) = head else { return Ok(None) };
    let mut st = c.prepare_cached(
        "SELECT after_secs, target, users, role, channels, repeat_secs FROM escalation_policy_steps
         WHERE org_id = ?1 AND priority = ?2 ORDER BY idx",
    )?;
    let rows = st
        .query_map(params![org.to_bytes(), priority.as_str()], |r| {
            Ok(StepRow {
                after_secs: r.get(0)?,
                target: r.get(1)?,
                users: r.get(2)?,
                role: r.get(3)?,
                channels: r.get(4)?,
                repeat_secs: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let steps = rows.into_iter().map(StepRow::step).collect::<Result<Vec<_>, _>>()?;
    Ok(Some(StoredEscalationPolicy {
        policy: Policy { org, priority, steps, stop_after: SignedDuration::from_secs(stop_after) },
        set_by,
        set_at,
    }))
}

/// The recipients of a message (members at its event who are still members, sender excluded)
/// and those whose answer is "decline".
fn facts(tx: &Transaction<'_>, esc: &Escalation) -> Result<(Facts, Option<String>), StoreError> {
    let (event, patient): (i64, Option<String>) = tx
        .prepare_cached(
            "SELECT m.event_id, c.patient_ref FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.id = ?1",
        )?
        .query_row([esc.message.to_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let recipients = tx
        .prepare_cached(
            "SELECT DISTINCT p.user_id FROM member_periods p
             JOIN members m ON m.conversation_id = p.conversation_id AND m.user_id = p.user_id
             WHERE p.conversation_id = ?1 AND p.from_event <= ?2 AND (p.to_event IS NULL OR p.to_event >= ?2)
               AND p.user_id <> ?3
             ORDER BY p.user_id",
        )?
        .query_map(params![esc.conversation.to_bytes(), event, esc.sender.to_bytes()], |r| codec::user_id(r, 0))?
        .collect::<Result<Vec<_>, _>>()?;
    let declined = tx
        .prepare_cached("SELECT user_id FROM acks WHERE message_id = ?1 AND response = ?2")?
        .query_map(params![esc.message.to_bytes(), AckResponse::Decline.kind_str()], |r| codec::user_id(r, 0))?
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok((Facts { sender: esc.sender, recipients, declined, holders: BTreeMap::new() }, patient))
}

/// Who of `users` may be notified (active users of the organization) and on which channels.
fn reach(tx: &Transaction<'_>, org: OrgId, users: &BTreeSet<UserId>, enabled: ChannelSet) -> Result<Reach, StoreError> {
    let mut out = Reach { channels: BTreeMap::new(), subscriptions: BTreeMap::new() };
    let mut st = tx.prepare_cached(
        "SELECT c.email IS NOT NULL, c.phone IS NOT NULL, c.pager IS NOT NULL FROM users u
         LEFT JOIN contact_points c ON c.user_id = u.id
         WHERE u.id = ?1 AND u.org_id = ?2 AND u.active = 1",
    )?;
    let mut subs = tx.prepare_cached("SELECT id FROM push_subscriptions WHERE user_id = ?1 ORDER BY created_at, id")?;
    for u in users {
        let Some((email, phone, pager)) = st
            .query_row(params![u.to_bytes(), org.to_bytes()], |r| {
                Ok((r.get::<_, bool>(0)?, r.get::<_, bool>(1)?, r.get::<_, bool>(2)?))
            })
            .optional()?
        else {
            continue;
        };
        let ids = subs
            .query_map([u.to_bytes()], |r| codec::id(r, 0, PushSubscriptionId::from_slice))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut has = ChannelSet::of(&[Channel::InApp]);
        for (on, c) in
            [(!ids.is_empty(), Channel::Push), (email, Channel::Email), (phone, Channel::Sms), (pager, Channel::Pager)]
        {
            if on {
                has = has.with(c);
            }
        }
        out.channels.insert(*u, has.intersect(enabled.with(Channel::InApp)));
        out.subscriptions.insert(*u, ids);
    }
    Ok(out)
}

fn write_firing(
    tx: &Transaction<'_>,
    esc: &Escalation,
    timer: TimerId,
    w: &FiringWrites,
    now: Timestamp,
) -> Result<(), StoreError> {
    for t in &w.trace {
        insert_trace(tx, esc.message, now, t)?;
    }
    let mut job = tx.prepare_cached(
        "INSERT INTO delivery_jobs (id, org_id, message_id, user_id, channel, subscription_id, why, level, round,
             state, attempts, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', 0, ?10, ?10)",
    )?;
    for j in &w.jobs {
        job.execute(params![
            j.id.to_bytes(),
            esc.org.to_bytes(),
            esc.message.to_bytes(),
            j.user.to_bytes(),
            j.channel.as_str(),
            j.subscription.map(|s| s.to_bytes()),
            j.why.as_str(),
            i64::from(j.point.level),
            i64::from(j.point.round),
            us(now),
        ])?;
    }
    if let Some(last) = w.due.state.last {
        tx.prepare_cached("UPDATE escalations SET level = ?2, round = ?3 WHERE message_id = ?1")?.execute(params![
            esc.message.to_bytes(),
            i64::from(last.level),
            i64::from(last.round)
        ])?;
    }
    tx.prepare_cached("UPDATE timers SET fired_at = ?2 WHERE id = ?1")?.execute(params![timer.to_bytes(), us(now)])?;
    if w.due.exhausted {
        close(tx, esc.message, CloseReason::Exhausted, None, now)?;
    } else if let Some(next) = w.due.next {
        tx.prepare_cached(
            "INSERT INTO timers (id, org_id, kind, ref_id, due_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            TimerId::new_v7().to_bytes(),
            esc.org.to_bytes(),
            TimerKind::Escalation.as_str(),
            esc.message.to_bytes(),
            us(next),
            us(now)
        ])?;
    }
    Ok(())
}

fn fire(
    c: &mut rusqlite::Connection,
    now: Timestamp,
    inputs: &[FireInput],
    enabled: ChannelSet,
    template: &AuditRecord,
) -> Result<Vec<Fired>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = Vec::new();
    let mut records = Vec::new();
    for input in inputs {
        // Claim: still due, not fired, not cancelled. The immediate transaction holds the write
        // lock, so nobody else fires it meanwhile.
        let message = tx
            .prepare_cached(
                "SELECT ref_id FROM timers WHERE id = ?1 AND kind = ?2 AND due_at <= ?3
                   AND fired_at IS NULL AND cancelled_at IS NULL",
            )?
            .query_row(params![input.timer.to_bytes(), TimerKind::Escalation.as_str(), us(now)], |r| {
                codec::message_id(r, 0)
            })
            .optional()?;
        let Some(message) = message else { continue };
        let esc = tx
            .prepare_cached(&format!("SELECT {ESCALATION_COLS} FROM escalations WHERE message_id = ?1"))?
            .query_row([message.to_bytes()], escalation_row)
            .optional()?;
        let Some(esc) = esc.filter(|e| e.closed.is_none()) else {
            tx.prepare_cached("UPDATE timers SET cancelled_at = ?2 WHERE id = ?1")?
                .execute(params![input.timer.to_bytes(), us(now)])?;
            out.push(Fired { timer: input.timer, message, jobs: 0, closed: None, cancelled: true });
            continue;
        };
        let (mut facts, patient) = facts(&tx, &esc)?;
        facts.holders = input.holders.clone();
        let due = escalation::due(&input.policy, esc.sent_at, esc.state, now);
        let people: BTreeSet<UserId> =
            escalation::audience(&input.policy, &due.fire, &facts).into_iter().flat_map(|(_, u)| u).collect();
        let reach = reach(&tx, esc.org, &people, enabled)?;
        let ctx = FiringContext {
            esc: &esc,
            policy: &input.policy,
            facts: &facts,
            reach: &reach,
            patient: patient.as_deref(),
        };
        let w = firing_writes(&ctx, due, now, template);
        write_firing(&tx, &esc, input.timer, &w, now)?;
        records.extend(w.audit.clone());
        out.push(Fired {
            timer: input.timer,
            message,
            jobs: u32::try_from(w.jobs.len()).unwrap_or(u32::MAX),
            closed: w.due.exhausted.then_some(CloseReason::Exhausted),
            cancelled: false,
        });
    }
    if !records.is_empty() {
        append_leaves(&tx, &records)?;
    }
    tx.commit()?;
    Ok(out)
}

const JOB_COLS: &str = "j.id, j.org_id, j.message_id, j.user_id, j.channel, j.subscription_id, j.why, j.attempts";

fn claim(
    c: &mut rusqlite::Connection,
    now: Timestamp,
    lease_for: SignedDuration,
    limit: u32,
) -> Result<Vec<DeliveryJob>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rows = tx
        .prepare_cached(&format!(
            "SELECT {JOB_COLS}, e.closed_at IS NOT NULL, j.level, j.round FROM delivery_jobs j
             LEFT JOIN escalations e ON e.message_id = j.message_id
             WHERE j.state = 'pending' AND j.next_attempt_at <= ?1 AND (j.leased_until IS NULL OR j.leased_until <= ?1)
             ORDER BY j.next_attempt_at LIMIT ?2"
        ))?
        .query_map(params![us(now), limit], |r| {
            let point = Point {
                level: u16::try_from(r.get::<_, i64>(9)?).unwrap_or(0),
                round: u32::try_from(r.get::<_, i64>(10)?).unwrap_or(0),
            };
            let job = DeliveryJob {
                id: codec::id(r, 0, DeliveryId::from_slice)?,
                org: codec::id(r, 1, OrgId::from_slice)?,
                message: codec::message_id(r, 2)?,
                user: codec::user_id(r, 3)?,
                channel: codec::parse(r, 4, Channel::parse)?,
                subscription: codec::opt_id(r, 5, PushSubscriptionId::from_slice)?,
                why: codec::parse(r, 6, Why::parse)?,
                level: point.level,
                round: point.round,
                attempts: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
                lease: uuid::Uuid::now_v7(),
            };
            Ok((job, r.get::<_, bool>(8)?, point))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let leased_until = us(now.checked_add(lease_for).unwrap_or(now));
    let mut out = Vec::new();
    for (job, closed, point) in rows {
        if closed {
            tx.prepare_cached("UPDATE delivery_jobs SET state = 'cancelled', finished_at = ?2 WHERE id = ?1")?
                .execute(params![job.id.to_bytes(), us(now)])?;
            let t = NewTrace {
                kind: TraceKind::Cancelled,
                point: Some(point),
                user: Some(job.user),
                channel: Some(job.channel),
                detail: Some("the escalation had ended".to_owned()),
            };
            insert_trace(&tx, job.message, now, &t)?;
        } else {
            tx.prepare_cached("UPDATE delivery_jobs SET lease_token = ?2, leased_until = ?3 WHERE id = ?1")?
                .execute(params![job.id.to_bytes(), job.lease.as_bytes(), leased_until])?;
            out.push(job);
        }
    }
    tx.commit()?;
    Ok(out)
}

fn finish(
    c: &mut rusqlite::Connection,
    job: &DeliveryJob,
    result: &AttemptResult,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let attempts = i64::from(job.attempts) + 1;
    let (state, next, error) = match result {
        AttemptResult::Sent => ("sent", None, None),
        AttemptResult::Retry { at, reason } => ("pending", Some(us(*at)), Some(reason.as_str())),
        AttemptResult::Failed { reason } | AttemptResult::Gone { reason } => ("failed", None, Some(reason.as_str())),
    };
    let point = tx
        .prepare_cached(
            "SELECT level, round FROM delivery_jobs WHERE id = ?1 AND lease_token = ?2 AND state = 'pending'",
        )?
        .query_row(params![job.id.to_bytes(), job.lease.as_bytes()], |r| {
            Ok(Point {
                level: u16::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                round: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            })
        })
        .optional()?;
    let Some(point) = point else { return Ok(false) };
    tx.prepare_cached(
        "UPDATE delivery_jobs SET state = ?2, attempts = ?3, next_attempt_at = COALESCE(?4, next_attempt_at),
             last_error = ?5, lease_token = NULL, leased_until = NULL,
             finished_at = CASE WHEN ?2 = 'pending' THEN NULL ELSE ?6 END
         WHERE id = ?1",
    )?
    .execute(params![job.id.to_bytes(), state, attempts, next, error, us(now)])?;
    if let (AttemptResult::Gone { .. }, Some(sub)) = (result, job.subscription) {
        tx.prepare_cached("DELETE FROM push_subscriptions WHERE id = ?1")?.execute([sub.to_bytes()])?;
    }
    let (kind, detail) = attempt_trace(result, job.attempts + 1);
    let t = NewTrace { kind, point: Some(point), user: Some(job.user), channel: Some(job.channel), detail };
    insert_trace(&tx, job.message, now, &t)?;
    tx.commit()?;
    Ok(true)
}

#[async_trait]
impl EscalationStore for SqliteStore {
    async fn escalation_policy(
        &self,
        org: OrgId,
        priority: Priority,
    ) -> Result<Option<StoredEscalationPolicy>, StoreError> {
        self.read(move |c| policy_of(c, org, priority)).await
    }

    async fn set_escalation_policy(
        &self,
        policy: &Policy,
        by: Option<UserId>,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let (policy, audit) = (policy.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let key = params![policy.org.to_bytes(), policy.priority.as_str()];
            tx.execute("DELETE FROM escalation_policy_steps WHERE org_id = ?1 AND priority = ?2", key)?;
            tx.execute(
                "INSERT INTO escalation_policies (org_id, priority, stop_after_secs, set_by, set_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (org_id, priority) DO UPDATE SET stop_after_secs = excluded.stop_after_secs,
                     set_by = excluded.set_by, set_at = excluded.set_at",
                params![
                    policy.org.to_bytes(),
                    policy.priority.as_str(),
                    policy.stop_after.as_secs(),
                    by.map(|u| u.to_bytes()),
                    us(now)
                ],
            )?;
            for (i, s) in policy.steps.iter().enumerate() {
                let row = StepRow::of(s);
                tx.execute(
                    "INSERT INTO escalation_policy_steps
                         (org_id, priority, idx, after_secs, target, users, role, channels, repeat_secs)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        policy.org.to_bytes(),
                        policy.priority.as_str(),
                        i64::try_from(i).unwrap_or(i64::MAX),
                        row.after_secs,
                        row.target,
                        row.users,
                        row.role,
                        row.channels,
                        row.repeat_secs
                    ],
                )?;
            }
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn due_timers(&self, now: Timestamp, limit: u32) -> Result<Vec<DueTimer>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT t.id, t.kind, t.ref_id, e.org_id, e.priority, t.due_at FROM timers t
                 JOIN escalations e ON e.message_id = t.ref_id
                 WHERE t.due_at <= ?1 AND t.fired_at IS NULL AND t.cancelled_at IS NULL
                 ORDER BY t.due_at LIMIT ?2",
            )?;
            let rows = st
                .query_map(params![us(now), limit], |r| {
                    Ok(DueTimer {
                        id: codec::id(r, 0, TimerId::from_slice)?,
                        kind: codec::parse(r, 1, TimerKind::parse)?,
                        message: codec::message_id(r, 2)?,
                        org: codec::id(r, 3, OrgId::from_slice)?,
                        priority: codec::parse(r, 4, Priority::parse)?,
                        due_at: codec::ts(r, 5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn fire_timers(
        &self,
        now: Timestamp,
        inputs: &[FireInput],
        enabled: ChannelSet,
        audit: &AuditRecord,
    ) -> Result<Vec<Fired>, StoreError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let (inputs, audit) = (inputs.to_vec(), audit.clone());
        self.write(move |c| fire(c, now, &inputs, enabled, &audit)).await
    }

    async fn escalation(&self, message: MessageId) -> Result<Option<Escalation>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {ESCALATION_COLS} FROM escalations WHERE message_id = ?1"))?
                .query_row([message.to_bytes()], escalation_row)
                .optional()?)
        })
        .await
    }

    async fn escalation_trace(&self, message: MessageId) -> Result<Vec<TraceRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT at, kind, level, round, user_id, channel, detail FROM escalation_trace
                 WHERE message_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([message.to_bytes()], trace_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn escalation_timers(
        &self,
        message: MessageId,
    ) -> Result<Vec<(Timestamp, Option<Timestamp>, Option<Timestamp>)>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT due_at, fired_at, cancelled_at FROM timers WHERE ref_id = ?1 ORDER BY created_at, due_at, id",
            )?;
            let rows = st
                .query_map([message.to_bytes()], |r| {
                    Ok((codec::ts(r, 0)?, codec::opt_ts(r, 1)?, codec::opt_ts(r, 2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_for: SignedDuration,
        limit: u32,
    ) -> Result<Vec<DeliveryJob>, StoreError> {
        self.write(move |c| claim(c, now, lease_for, limit)).await
    }

    async fn finish_delivery(
        &self,
        job: &DeliveryJob,
        result: &AttemptResult,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (job, result) = (job.clone(), result.clone());
        self.write(move |c| finish(c, &job, &result, now)).await
    }

    async fn contact_points(&self, user: UserId) -> Result<ContactPoints, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT email, phone, pager FROM contact_points WHERE user_id = ?1")?
                .query_row([user.to_bytes()], |r| {
                    Ok(ContactPoints { email: r.get(0)?, phone: r.get(1)?, pager: r.get(2)? })
                })
                .optional()?
                .unwrap_or_default())
        })
        .await
    }

    async fn set_contact_points(
        &self,
        user: UserId,
        contact: &ContactPoints,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let (contact, audit) = (contact.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO contact_points (user_id, email, phone, pager, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, phone = excluded.phone,
                     pager = excluded.pager, updated_at = excluded.updated_at",
                params![user.to_bytes(), contact.email, contact.phone, contact.pager, us(now)],
            )?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn push_subscriptions(&self, user: UserId) -> Result<Vec<PushSubscriptionRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, user_id, endpoint, p256dh, auth, created_at FROM push_subscriptions
                 WHERE user_id = ?1 ORDER BY created_at, id",
            )?;
            let rows = st.query_map([user.to_bytes()], subscription_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn push_subscription(&self, id: PushSubscriptionId) -> Result<Option<PushSubscriptionRow>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, user_id, endpoint, p256dh, auth, created_at FROM push_subscriptions WHERE id = ?1",
            )?
            .query_row([id.to_bytes()], subscription_row)
            .optional()?)
        })
        .await
    }

    async fn add_push_subscription(&self, sub: &PushSubscriptionRow, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let (sub, audit) = (sub.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM push_subscriptions WHERE endpoint = ?1", [&sub.endpoint])?;
            tx.execute(
                "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![sub.id.to_bytes(), sub.user.to_bytes(), sub.endpoint, sub.p256dh, sub.auth, us(sub.created_at)],
            )?;
            tx.execute(
                "DELETE FROM push_subscriptions WHERE user_id = ?1 AND id NOT IN
                     (SELECT id FROM push_subscriptions WHERE user_id = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2)",
                params![sub.user.to_bytes(), i64::try_from(MAX_PUSH_SUBSCRIPTIONS).unwrap_or(i64::MAX)],
            )?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn remove_push_subscription(
        &self,
        user: UserId,
        endpoint: &str,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let (endpoint, audit) = (endpoint.to_owned(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "DELETE FROM push_subscriptions WHERE user_id = ?1 AND endpoint = ?2",
                params![user.to_bytes(), endpoint],
            )?;
            if n == 0 {
                return Ok(false);
            }
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}
