//! Escalation policies, timers, the delivery trace, the outbox and contact points in
//! PostgreSQL (see `crate::escalation`).
//!
//! Several nodes fire timers and send deliveries at once: each claims with `FOR UPDATE SKIP
//! LOCKED`, so they take disjoint rows. Lock order, to stay free of deadlocks with the commit
//! pipeline's batches (which close escalations on acknowledgement): timers (skipping locked
//! ones), then escalations in message-id order, then the audit head. A batch locks escalations
//! in the same order and never waits for a timer (it skips locked ones: their firing sees the
//! escalation closed once it gets the row).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::AuditRecord;
use medhub_core::escalation::{self, Channel, ChannelSet, CloseReason, Facts, Point, Policy, State, TraceKind, Why};
use medhub_core::model::{AckResponse, Priority};
use medhub_core::plan::Effects;
use medhub_core::{DeliveryId, MessageId, OrgId, PushSubscriptionId, TimerId, UserId};
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::codec::us;
use super::identity::append_leaves;
use super::{PgStore, codec};
use crate::StoreError;
use crate::escalation::{
    AttemptResult, Closed, ContactPoints, DeliveryJob, DueTimer, Escalation, EscalationStore, FireInput, Fired,
    FiringContext, FiringWrites, MAX_PUSH_SUBSCRIPTIONS, NewTrace, PushSubscriptionRow, Reach, StepRow,
    StoredEscalationPolicy, TimerKind, TraceRow, attempt_trace, firing_writes,
};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("escalation: {what}"))
}

const ESCALATION_COLS: &str = "message_id, org_id, conversation_id, sender_id, priority, sent_at, level, round, \
     closed_at, closed_reason, closed_by";

fn point(r: &Row, level: usize, round: usize) -> Result<Option<Point>, StoreError> {
    Ok(match (r.try_get::<_, Option<i64>>(level)?, r.try_get::<_, Option<i64>>(round)?) {
        (Some(l), Some(k)) => Some(Point {
            level: u16::try_from(l).map_err(|_| corrupt("bad level"))?,
            round: u32::try_from(k).map_err(|_| corrupt("bad round"))?,
        }),
        _ => None,
    })
}

fn escalation_row(r: &Row) -> Result<Escalation, StoreError> {
    let closed = match codec::opt_ts(r, 8)? {
        Some(at) => Some(Closed {
            at,
            reason: codec::parse(r, 9, CloseReason::parse)?,
            by: codec::opt_uuid(r, 10)?.map(UserId::from_uuid),
        }),
        None => None,
    };
    Ok(Escalation {
        message: codec::message_id(r, 0)?,
        org: OrgId::from_uuid(codec::uuid(r, 1)?),
        conversation: codec::conversation_id(r, 2)?,
        sender: codec::user_id(r, 3)?,
        priority: codec::parse(r, 4, Priority::parse)?,
        sent_at: codec::ts(r, 5)?,
        state: State { last: point(r, 6, 7)? },
        closed,
    })
}

fn trace_row(r: &Row) -> Result<TraceRow, StoreError> {
    Ok(TraceRow {
        at: codec::ts(r, 0)?,
        kind: codec::parse(r, 1, TraceKind::parse)?,
        level: r.try_get::<_, Option<i64>>(2)?.and_then(|v| u16::try_from(v).ok()),
        round: r.try_get::<_, Option<i64>>(3)?.and_then(|v| u32::try_from(v).ok()),
        user: codec::opt_uuid(r, 4)?.map(UserId::from_uuid),
        channel: codec::opt_parse(r, 5, Channel::parse)?,
        detail: r.try_get(6)?,
    })
}

fn subscription_row(r: &Row) -> Result<PushSubscriptionRow, StoreError> {
    Ok(PushSubscriptionRow {
        id: PushSubscriptionId::from_uuid(codec::uuid(r, 0)?),
        user: codec::user_id(r, 1)?,
        endpoint: r.try_get(2)?,
        p256dh: r.try_get(3)?,
        auth: r.try_get(4)?,
        created_at: codec::ts(r, 5)?,
    })
}

async fn insert_trace(
    c: &impl GenericClient,
    message: MessageId,
    at: Timestamp,
    t: &NewTrace,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO escalation_trace (message_id, at, kind, level, round, user_id, channel, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &message.as_uuid(),
            &us(at),
            &t.kind.as_str(),
            &t.point.map(|p| i64::from(p.level)),
            &t.point.map(|p| i64::from(p.round)),
            &t.user.map(|u| u.as_uuid()),
            &t.channel.map(Channel::as_str),
            &t.detail,
        ],
    )
    .await?;
    Ok(())
}

/// The batch transaction's part (see the SQLite twin): new escalations with their first timer,
/// set-based; escalations closed by an acknowledgement or a recall, locked in message order
/// first; their pending timers cancelled, skipping any a firing holds.
pub(super) async fn on_commit(tx: &tokio_postgres::Transaction<'_>, effects: &Effects) -> Result<(), StoreError> {
    let new: Vec<_> = effects.messages_new.iter().filter(|m| escalation::escalates(m)).collect();
    if !new.is_empty() {
        let ids: Vec<Uuid> = new.iter().map(|m| m.id.as_uuid()).collect();
        let convs: Vec<Uuid> = new.iter().map(|m| m.conversation.as_uuid()).collect();
        let senders: Vec<Uuid> = new.iter().map(|m| m.sender.as_uuid()).collect();
        let priorities: Vec<&str> = new.iter().map(|m| m.priority.as_str()).collect();
        let times: Vec<i64> = new.iter().map(|m| us(m.created_at)).collect();
        let timers: Vec<Uuid> = new.iter().map(|_| TimerId::new_v7().as_uuid()).collect();
        tx.execute(
            "INSERT INTO escalations (message_id, org_id, conversation_id, sender_id, priority, sent_at)
             SELECT k.m, c.org_id, c.id, k.s, k.p, k.t
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int8[]) AS k(m, c, s, p, t)
             JOIN conversations c ON c.id = k.c",
            &[&ids, &convs, &senders, &priorities, &times],
        )
        .await?;
        tx.execute(
            "INSERT INTO timers (id, org_id, kind, ref_id, due_at, created_at)
             SELECT k.id, c.org_id, $5, k.m, k.t, k.t
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::int8[]) AS k(id, m, c, t)
             JOIN conversations c ON c.id = k.c",
            &[&timers, &ids, &convs, &times, &TimerKind::Escalation.as_str()],
        )
        .await?;
    }
    // The first closing per message: an acknowledgement, else a recall.
    let mut closes: BTreeMap<MessageId, (CloseReason, Option<UserId>, Timestamp)> = BTreeMap::new();
    for a in effects.acks.iter().filter(|a| escalation::closes(a.response)) {
        closes.entry(a.message).or_insert((CloseReason::Acknowledged, Some(a.user), a.at));
    }
    for m in &effects.messages_changed {
        if let Some(r) = m.recall {
            closes.entry(m.id).or_insert((CloseReason::Recalled, r.by, r.at));
        }
    }
    if closes.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = closes.keys().map(|m| m.as_uuid()).collect();
    let reasons: Vec<&str> = closes.values().map(|c| c.0.as_str()).collect();
    let by: Vec<Option<Uuid>> = closes.values().map(|c| c.1.map(|u| u.as_uuid())).collect();
    let at: Vec<i64> = closes.values().map(|c| us(c.2)).collect();
    tx.query("SELECT 1 FROM escalations WHERE message_id = ANY($1) ORDER BY message_id FOR UPDATE", &[&ids]).await?;
    let closed = tx
        .query(
            "UPDATE escalations e SET closed_at = k.at, closed_reason = k.reason, closed_by = k.by
             FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::int8[]) AS k(m, reason, by, at)
             WHERE e.message_id = k.m AND e.closed_at IS NULL
             RETURNING e.message_id, k.at",
            &[&ids, &reasons, &by, &at],
        )
        .await?;
    if closed.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = closed.iter().map(|r| codec::uuid(r, 0)).collect::<Result<_, _>>()?;
    let at: Vec<i64> = closed.iter().map(|r| r.try_get(1)).collect::<Result<_, _>>()?;
    tx.execute(
        "UPDATE timers t SET cancelled_at = k.at FROM UNNEST($1::uuid[], $2::int8[]) AS k(m, at)
         WHERE t.ref_id = k.m AND t.id IN (
             SELECT id FROM timers WHERE ref_id = ANY($1) AND fired_at IS NULL AND cancelled_at IS NULL
             FOR UPDATE SKIP LOCKED)",
        &[&ids, &at],
    )
    .await?;
    Ok(())
}

async fn close(
    c: &impl GenericClient,
    message: MessageId,
    reason: CloseReason,
    by: Option<UserId>,
    at: Timestamp,
) -> Result<(), StoreError> {
    let n = c
        .execute(
            "UPDATE escalations SET closed_at = $2, closed_reason = $3, closed_by = $4
             WHERE message_id = $1 AND closed_at IS NULL",
            &[&message.as_uuid(), &us(at), &reason.as_str(), &by.map(|u| u.as_uuid())],
        )
        .await?;
    if n > 0 {
        c.execute(
            "UPDATE timers SET cancelled_at = $2 WHERE ref_id = $1 AND fired_at IS NULL AND cancelled_at IS NULL",
            &[&message.as_uuid(), &us(at)],
        )
        .await?;
    }
    Ok(())
}

async fn policy_of(
    c: &impl GenericClient,
    org: OrgId,
    priority: Priority,
) -> Result<Option<StoredEscalationPolicy>, StoreError> {
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&org.as_uuid(), &priority.as_str()];
    let Some(head) = c
        .query_opt(
            "SELECT stop_after_secs, set_by, set_at FROM escalation_policies WHERE org_id = $1 AND priority = $2",
            &key,
        )
        .await?
    else {
        return Ok(None);
    };
    let rows = c
        .query(
            "SELECT after_secs, target, users, role, channels, repeat_secs FROM escalation_policy_steps
             WHERE org_id = $1 AND priority = $2 ORDER BY idx",
            &key,
        )
        .await?;
    let steps = rows
        .iter()
        .map(|r| {
            StepRow {
                after_secs: r.try_get(0)?,
                target: r.try_get(1)?,
                users: r.try_get(2)?,
                role: r.try_get(3)?,
                channels: r.try_get(4)?,
                repeat_secs: r.try_get(5)?,
            }
            .step()
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(StoredEscalationPolicy {
        policy: Policy { org, priority, steps, stop_after: SignedDuration::from_secs(head.try_get(0)?) },
        set_by: codec::opt_uuid(&head, 1)?.map(UserId::from_uuid),
        set_at: codec::ts(&head, 2)?,
    }))
}

/// The recipients (members at the message's event who are still members, sender excluded), who
/// declined, and the conversation's patient.
async fn facts(c: &impl GenericClient, esc: &Escalation) -> Result<(Facts, Option<String>), StoreError> {
    let head = c
        .query_one(
            "SELECT m.event_id, c.patient_ref FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.id = $1",
            &[&esc.message.as_uuid()],
        )
        .await?;
    let (event, patient): (i64, Option<String>) = (head.try_get(0)?, head.try_get(1)?);
    let recipients = c
        .query(
            "SELECT DISTINCT p.user_id FROM member_periods p
             JOIN members m ON m.conversation_id = p.conversation_id AND m.user_id = p.user_id
             WHERE p.conversation_id = $1 AND p.from_event <= $2 AND (p.to_event IS NULL OR p.to_event >= $2)
               AND p.user_id <> $3
             ORDER BY p.user_id",
            &[&esc.conversation.as_uuid(), &event, &esc.sender.as_uuid()],
        )
        .await?
        .iter()
        .map(|r| codec::user_id(r, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let declined = c
        .query(
            "SELECT user_id FROM acks WHERE message_id = $1 AND response = $2",
            &[&esc.message.as_uuid(), &AckResponse::Decline.kind_str()],
        )
        .await?
        .iter()
        .map(|r| codec::user_id(r, 0))
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok((Facts { sender: esc.sender, recipients, declined, holders: BTreeMap::new() }, patient))
}

/// Who of `users` may be notified (active users of the organization) and on which channels.
async fn reach(
    c: &impl GenericClient,
    org: OrgId,
    users: &BTreeSet<UserId>,
    enabled: ChannelSet,
) -> Result<Reach, StoreError> {
    let mut out = Reach { channels: BTreeMap::new(), subscriptions: BTreeMap::new() };
    if users.is_empty() {
        return Ok(out);
    }
    let ids: Vec<Uuid> = users.iter().map(|u| u.as_uuid()).collect();
    let rows = c
        .query(
            "SELECT u.id, c.email IS NOT NULL, c.phone IS NOT NULL, c.pager IS NOT NULL FROM users u
             LEFT JOIN contact_points c ON c.user_id = u.id
             WHERE u.id = ANY($1) AND u.org_id = $2 AND u.active",
            &[&ids, &org.as_uuid()],
        )
        .await?;
    let subs = c
        .query("SELECT user_id, id FROM push_subscriptions WHERE user_id = ANY($1) ORDER BY created_at, id", &[&ids])
        .await?;
    let mut by_user: BTreeMap<UserId, Vec<PushSubscriptionId>> = BTreeMap::new();
    for r in &subs {
        by_user.entry(codec::user_id(r, 0)?).or_default().push(PushSubscriptionId::from_uuid(codec::uuid(r, 1)?));
    }
    for r in &rows {
        let u = codec::user_id(r, 0)?;
        let ids = by_user.remove(&u).unwrap_or_default();
        let mut has = ChannelSet::of(&[Channel::InApp]);
        let on = [
            (!ids.is_empty(), Channel::Push),
            (r.try_get::<_, bool>(1)?, Channel::Email),
            (r.try_get::<_, bool>(2)?, Channel::Sms),
            (r.try_get::<_, bool>(3)?, Channel::Pager),
        ];
        for (yes, ch) in on {
            if yes {
                has = has.with(ch);
            }
        }
        out.channels.insert(u, has.intersect(enabled.with(Channel::InApp)));
        out.subscriptions.insert(u, ids);
    }
    Ok(out)
}

async fn write_firing(
    c: &impl GenericClient,
    esc: &Escalation,
    timer: TimerId,
    w: &FiringWrites,
    now: Timestamp,
) -> Result<(), StoreError> {
    for t in &w.trace {
        insert_trace(c, esc.message, now, t).await?;
    }
    if !w.jobs.is_empty() {
        let ids: Vec<Uuid> = w.jobs.iter().map(|j| j.id.as_uuid()).collect();
        let users: Vec<Uuid> = w.jobs.iter().map(|j| j.user.as_uuid()).collect();
        let channels: Vec<&str> = w.jobs.iter().map(|j| j.channel.as_str()).collect();
        let subs: Vec<Option<Uuid>> = w.jobs.iter().map(|j| j.subscription.map(|s| s.as_uuid())).collect();
        let whys: Vec<&str> = w.jobs.iter().map(|j| j.why.as_str()).collect();
        let levels: Vec<i64> = w.jobs.iter().map(|j| i64::from(j.point.level)).collect();
        let rounds: Vec<i64> = w.jobs.iter().map(|j| i64::from(j.point.round)).collect();
        c.execute(
            "INSERT INTO delivery_jobs (id, org_id, message_id, user_id, channel, subscription_id, why, level, round,
                 state, attempts, next_attempt_at, created_at)
             SELECT k.id, $8, $9, k.u, k.ch, k.s, k.w, k.l, k.r, 'pending', 0, $10, $10
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::int8[], $7::int8[])
                 AS k(id, u, ch, s, w, l, r)",
            &[
                &ids,
                &users,
                &channels,
                &subs,
                &whys,
                &levels,
                &rounds,
                &esc.org.as_uuid(),
                &esc.message.as_uuid(),
                &us(now),
            ],
        )
        .await?;
    }
    if let Some(last) = w.due.state.last {
        c.execute(
            "UPDATE escalations SET level = $2, round = $3 WHERE message_id = $1",
            &[&esc.message.as_uuid(), &i64::from(last.level), &i64::from(last.round)],
        )
        .await?;
    }
    c.execute("UPDATE timers SET fired_at = $2 WHERE id = $1", &[&timer.as_uuid(), &us(now)]).await?;
    if w.due.exhausted {
        close(c, esc.message, CloseReason::Exhausted, None, now).await?;
    } else if let Some(next) = w.due.next {
        c.execute(
            "INSERT INTO timers (id, org_id, kind, ref_id, due_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &TimerId::new_v7().as_uuid(),
                &esc.org.as_uuid(),
                &TimerKind::Escalation.as_str(),
                &esc.message.as_uuid(),
                &us(next),
                &us(now),
            ],
        )
        .await?;
    }
    Ok(())
}

const JOB_COLS: &str = "j.id, j.org_id, j.message_id, j.user_id, j.channel, j.subscription_id, j.why, j.attempts";

#[async_trait]
impl EscalationStore for PgStore {
    async fn escalation_policy(
        &self,
        org: OrgId,
        priority: Priority,
    ) -> Result<Option<StoredEscalationPolicy>, StoreError> {
        policy_of(&**self.pool.get().await?, org, priority).await
    }

    async fn set_escalation_policy(
        &self,
        policy: &Policy,
        by: Option<UserId>,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let (org, priority) = (policy.org.as_uuid(), policy.priority.as_str());
        tx.execute("DELETE FROM escalation_policy_steps WHERE org_id = $1 AND priority = $2", &[&org, &priority])
            .await?;
        tx.execute(
            "INSERT INTO escalation_policies (org_id, priority, stop_after_secs, set_by, set_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (org_id, priority) DO UPDATE SET stop_after_secs = excluded.stop_after_secs,
                 set_by = excluded.set_by, set_at = excluded.set_at",
            &[&org, &priority, &policy.stop_after.as_secs(), &by.map(|u| u.as_uuid()), &us(now)],
        )
        .await?;
        for (i, s) in policy.steps.iter().enumerate() {
            let row = StepRow::of(s);
            tx.execute(
                "INSERT INTO escalation_policy_steps
                     (org_id, priority, idx, after_secs, target, users, role, channels, repeat_secs)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &org,
                    &priority,
                    &i64::try_from(i).unwrap_or(i64::MAX),
                    &row.after_secs,
                    &row.target,
                    &row.users,
                    &row.role,
                    &row.channels,
                    &row.repeat_secs,
                ],
            )
            .await?;
        }
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn due_timers(&self, now: Timestamp, limit: u32) -> Result<Vec<DueTimer>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT t.id, t.kind, t.ref_id, e.org_id, e.priority, t.due_at FROM timers t
                 JOIN escalations e ON e.message_id = t.ref_id
                 WHERE t.due_at <= $1 AND t.fired_at IS NULL AND t.cancelled_at IS NULL
                 ORDER BY t.due_at LIMIT $2",
                &[&us(now), &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DueTimer {
                    id: TimerId::from_uuid(codec::uuid(r, 0)?),
                    kind: codec::parse(r, 1, TimerKind::parse)?,
                    message: codec::message_id(r, 2)?,
                    org: OrgId::from_uuid(codec::uuid(r, 3)?),
                    priority: codec::parse(r, 4, Priority::parse)?,
                    due_at: codec::ts(r, 5)?,
                })
            })
            .collect()
    }

    async fn fire_timers(
        &self,
        now: Timestamp,
        inputs: &[FireInput],
        enabled: ChannelSet,
        template: &AuditRecord,
    ) -> Result<Vec<Fired>, StoreError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.batch_execute("SET LOCAL synchronous_commit = on").await?;
        let ids: Vec<Uuid> = inputs.iter().map(|i| i.timer.as_uuid()).collect();
        // Claim: still due, not fired, not cancelled; rows another worker holds are skipped.
        let claimed = tx
            .query(
                "SELECT id, ref_id FROM timers WHERE id = ANY($1) AND kind = $2 AND due_at <= $3
                   AND fired_at IS NULL AND cancelled_at IS NULL
                 ORDER BY id FOR UPDATE SKIP LOCKED",
                &[&ids, &TimerKind::Escalation.as_str(), &us(now)],
            )
            .await?;
        let claimed: BTreeMap<TimerId, MessageId> = claimed
            .iter()
            .map(|r| Ok((TimerId::from_uuid(codec::uuid(r, 0)?), codec::message_id(r, 1)?)))
            .collect::<Result<_, StoreError>>()?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // Lock their escalations, in message order, and re-read them: an acknowledgement that
        // committed first is seen here.
        let refs: Vec<Uuid> = claimed.values().map(|m| m.as_uuid()).collect();
        let escs: BTreeMap<MessageId, Escalation> = tx
            .query(
                &format!(
                    "SELECT {ESCALATION_COLS} FROM escalations WHERE message_id = ANY($1) ORDER BY message_id FOR UPDATE"
                ),
                &[&refs],
            )
            .await?
            .iter()
            .map(|r| escalation_row(r).map(|e| (e.message, e)))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        let mut records = Vec::new();
        for input in inputs {
            let Some(&message) = claimed.get(&input.timer) else { continue };
            let Some(esc) = escs.get(&message).filter(|e| e.closed.is_none()) else {
                tx.execute("UPDATE timers SET cancelled_at = $2 WHERE id = $1", &[&input.timer.as_uuid(), &us(now)])
                    .await?;
                out.push(Fired { timer: input.timer, message, jobs: 0, closed: None, cancelled: true });
                continue;
            };
            let (mut facts, patient) = facts(&*tx, esc).await?;
            facts.holders = input.holders.clone();
            let due = escalation::due(&input.policy, esc.sent_at, esc.state, now);
            let people: BTreeSet<UserId> =
                escalation::audience(&input.policy, &due.fire, &facts).into_iter().flat_map(|(_, u)| u).collect();
            let reach = reach(&*tx, esc.org, &people, enabled).await?;
            let ctx =
                FiringContext { esc, policy: &input.policy, facts: &facts, reach: &reach, patient: patient.as_deref() };
            let w = firing_writes(&ctx, due, now, template);
            write_firing(&*tx, esc, input.timer, &w, now).await?;
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
            append_leaves(&*tx, &records).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn escalation(&self, message: MessageId) -> Result<Option<Escalation>, StoreError> {
        let c = self.pool.get().await?;
        c.query_opt(&format!("SELECT {ESCALATION_COLS} FROM escalations WHERE message_id = $1"), &[&message.as_uuid()])
            .await?
            .as_ref()
            .map(escalation_row)
            .transpose()
    }

    async fn escalation_trace(&self, message: MessageId) -> Result<Vec<TraceRow>, StoreError> {
        let c = self.pool.get().await?;
        c.query(
            "SELECT at, kind, level, round, user_id, channel, detail FROM escalation_trace
             WHERE message_id = $1 ORDER BY id",
            &[&message.as_uuid()],
        )
        .await?
        .iter()
        .map(trace_row)
        .collect()
    }

    async fn escalation_timers(
        &self,
        message: MessageId,
    ) -> Result<Vec<(Timestamp, Option<Timestamp>, Option<Timestamp>)>, StoreError> {
        let c = self.pool.get().await?;
        c.query(
            "SELECT due_at, fired_at, cancelled_at FROM timers WHERE ref_id = $1 ORDER BY created_at, due_at, id",
            &[&message.as_uuid()],
        )
        .await?
        .iter()
        .map(|r| Ok((codec::ts(r, 0)?, codec::opt_ts(r, 1)?, codec::opt_ts(r, 2)?)))
        .collect()
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_for: SignedDuration,
        limit: u32,
    ) -> Result<Vec<DeliveryJob>, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {JOB_COLS}, e.closed_at IS NOT NULL, j.level, j.round FROM delivery_jobs j
                     LEFT JOIN escalations e ON e.message_id = j.message_id
                     WHERE j.state = 'pending' AND j.next_attempt_at <= $1
                       AND (j.leased_until IS NULL OR j.leased_until <= $1)
                     ORDER BY j.next_attempt_at LIMIT $2
                     FOR UPDATE OF j SKIP LOCKED"
                ),
                &[&us(now), &i64::from(limit)],
            )
            .await?;
        let leased_until = us(now.checked_add(lease_for).unwrap_or(now));
        let mut out = Vec::new();
        for r in &rows {
            let at = point(r, 9, 10)?.unwrap_or(Point { level: 0, round: 0 });
            let job = DeliveryJob {
                id: DeliveryId::from_uuid(codec::uuid(r, 0)?),
                org: OrgId::from_uuid(codec::uuid(r, 1)?),
                message: codec::message_id(r, 2)?,
                user: codec::user_id(r, 3)?,
                channel: codec::parse(r, 4, Channel::parse)?,
                subscription: codec::opt_uuid(r, 5)?.map(PushSubscriptionId::from_uuid),
                why: codec::parse(r, 6, Why::parse)?,
                level: at.level,
                round: at.round,
                attempts: u32::try_from(r.try_get::<_, i64>(7)?).unwrap_or(0),
                lease: Uuid::now_v7(),
            };
            let closed: bool = r.try_get(8)?;
            if closed {
                tx.execute(
                    "UPDATE delivery_jobs SET state = 'cancelled', finished_at = $2 WHERE id = $1",
                    &[&job.id.as_uuid(), &us(now)],
                )
                .await?;
                let t = NewTrace {
                    kind: TraceKind::Cancelled,
                    point: Some(at),
                    user: Some(job.user),
                    channel: Some(job.channel),
                    detail: Some("the escalation had ended".to_owned()),
                };
                insert_trace(&*tx, job.message, now, &t).await?;
            } else {
                tx.execute(
                    "UPDATE delivery_jobs SET lease_token = $2, leased_until = $3 WHERE id = $1",
                    &[&job.id.as_uuid(), &job.lease, &leased_until],
                )
                .await?;
                out.push(job);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn finish_delivery(
        &self,
        job: &DeliveryJob,
        result: &AttemptResult,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let attempts = i64::from(job.attempts) + 1;
        let (state, next, error) = match result {
            AttemptResult::Sent => ("sent", None, None),
            AttemptResult::Retry { at, reason } => ("pending", Some(us(*at)), Some(reason.as_str())),
            AttemptResult::Failed { reason } | AttemptResult::Gone { reason } => {
                ("failed", None, Some(reason.as_str()))
            }
        };
        let finished = (state != "pending").then_some(us(now));
        let row = tx
            .query_opt(
                "UPDATE delivery_jobs SET state = $3, attempts = $4, next_attempt_at = COALESCE($5, next_attempt_at),
                     last_error = $6, lease_token = NULL, leased_until = NULL, finished_at = $7
                 WHERE id = $1 AND lease_token = $2 AND state = 'pending'
                 RETURNING level, round",
                &[&job.id.as_uuid(), &job.lease, &state, &attempts, &next, &error, &finished],
            )
            .await?;
        let Some(row) = row else { return Ok(false) };
        if let (AttemptResult::Gone { .. }, Some(sub)) = (result, job.subscription) {
            tx.execute("DELETE FROM push_subscriptions WHERE id = $1", &[&sub.as_uuid()]).await?;
        }
        let (kind, detail) = attempt_trace(result, job.attempts + 1);
        let t = NewTrace { kind, point: point(&row, 0, 1)?, user: Some(job.user), channel: Some(job.channel), detail };
        insert_trace(&*tx, job.message, now, &t).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn contact_points(&self, user: UserId) -> Result<ContactPoints, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt("SELECT email, phone, pager FROM contact_points WHERE user_id = $1", &[&user.as_uuid()])
            .await?;
        Ok(match row {
            Some(r) => ContactPoints { email: r.try_get(0)?, phone: r.try_get(1)?, pager: r.try_get(2)? },
            None => ContactPoints::default(),
        })
    }

    async fn set_contact_points(
        &self,
        user: UserId,
        contact: &ContactPoints,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO contact_points (user_id, email, phone, pager, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, phone = excluded.phone,
                 pager = excluded.pager, updated_at = excluded.updated_at",
            &[&user.as_uuid(), &contact.email, &contact.phone, &contact.pager, &us(now)],
        )
        .await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn push_subscriptions(&self, user: UserId) -> Result<Vec<PushSubscriptionRow>, StoreError> {
        let c = self.pool.get().await?;
        c.query(
            "SELECT id, user_id, endpoint, p256dh, auth, created_at FROM push_subscriptions
             WHERE user_id = $1 ORDER BY created_at, id",
            &[&user.as_uuid()],
        )
        .await?
        .iter()
        .map(subscription_row)
        .collect()
    }

    async fn push_subscription(&self, id: PushSubscriptionId) -> Result<Option<PushSubscriptionRow>, StoreError> {
        let c = self.pool.get().await?;
        c.query_opt(
            "SELECT id, user_id, endpoint, p256dh, auth, created_at FROM push_subscriptions WHERE id = $1",
            &[&id.as_uuid()],
        )
        .await?
        .as_ref()
        .map(subscription_row)
        .transpose()
    }

    async fn add_push_subscription(&self, sub: &PushSubscriptionRow, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute("DELETE FROM push_subscriptions WHERE endpoint = $1", &[&sub.endpoint]).await?;
        tx.execute(
            "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&sub.id.as_uuid(), &sub.user.as_uuid(), &sub.endpoint, &sub.p256dh, &sub.auth, &us(sub.created_at)],
        )
        .await?;
        tx.execute(
            "DELETE FROM push_subscriptions WHERE user_id = $1 AND id NOT IN
                 (SELECT id FROM push_subscriptions WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2)",
            &[&sub.user.as_uuid(), &i64::try_from(MAX_PUSH_SUBSCRIPTIONS).unwrap_or(i64::MAX)],
        )
        .await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_push_subscription(
        &self,
        user: UserId,
        endpoint: &str,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM push_subscriptions WHERE user_id = $1 AND endpoint = $2",
                &[&user.as_uuid(), &endpoint],
            )
            .await?;
        if n == 0 {
            return Ok(false);
        }
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}
