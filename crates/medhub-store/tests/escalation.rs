//! Escalation storage on SQLite and PostgreSQL (docs/clinical.md, "Escalation until
//! acknowledged"): the escalation and its first timer commit with the message; timers fire
//! exactly once, never early, with several workers and several stores on one database; an
//! acknowledgement closes the escalation and cancels what is pending; the outbox's leases,
//! retries and final failures; policies, contact points and push subscriptions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::{AuditRecord, Outcome as AuditOutcome};
use medhub_core::escalation::{Channel, ChannelSet, CloseReason, OnCallRole, Policy, Step, Target, TraceKind};
use medhub_core::model::{AckResponse, ConversationKind, MemberRole, Org, Priority};
use medhub_core::plan::{Command, CreateConversation, Limits, Outcome, SendMessage};
use medhub_core::policy::Actor;
use medhub_core::{ClientTxnId, ConversationId, MessageId, OrgId, PushSubscriptionId, UserId};
use medhub_store::testdb::TestDb;
use medhub_store::{
    AttemptResult, Backend, ContactPoints, DynStore, FireInput, Location, PushSubscriptionRow, TraceRow, UserRecord,
    each_backend,
};

fn t0() -> Timestamp {
    Timestamp::from_second(1_780_000_000).unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_secs(secs)).unwrap()
}

fn micro_before(t: Timestamp) -> Timestamp {
    t.checked_sub(SignedDuration::from_micros(1)).unwrap()
}

fn template() -> AuditRecord {
    AuditRecord::new(t0(), "escalation.step", AuditOutcome::Success)
}

async fn org(store: &DynStore, name: &str, admin: &str) -> Org {
    let org = Org {
        id: OrgId::new_v7(),
        name: name.into(),
        created_at: t0(),
        idle_timeout: medhub_core::session::DEFAULT_IDLE_TIMEOUT,
    };
    let rec = medhub_store::testdb::user_record(org.id, admin, t0());
    if !store.bootstrap(&org, &rec).await.unwrap() {
        store.create_org(&org, &rec, &[]).await.unwrap();
    }
    org
}

async fn user(store: &DynStore, org: OrgId, name: &str) -> UserId {
    let r: UserRecord = medhub_store::testdb::user_record(org, name, t0());
    store.create_user(&r).await.unwrap();
    r.user.id
}

async fn group(store: &DynStore, owner: UserId, members: &[UserId], patient: Option<&str>) -> ConversationId {
    let id = ConversationId::new_v7();
    let cmd = Command::CreateConversation(CreateConversation {
        id,
        actor: Actor::User(owner),
        kind: ConversationKind::Group,
        title: Some("Ward 7".into()),
        members: members.iter().map(|u| (*u, MemberRole::Member)).collect(),
        patient: patient.map(|p| medhub_core::patient::PatientRef::parse(p).unwrap()),
    });
    let r = store.apply_batch(vec![cmd], t0(), Limits::default()).await.unwrap();
    assert!(r.results[0].is_ok(), "{:?}", r.results[0]);
    id
}

fn send_cmd(actor: UserId, conv: ConversationId, priority: Priority) -> (MessageId, Command) {
    let id = MessageId::new_v7();
    let cmd = Command::SendMessage(SendMessage {
        id,
        actor,
        conversation: conv,
        client_txn_id: ClientTxnId::parse(&format!("t-{id}")).unwrap(),
        body: "K+ 6.9, please review".into(),
        priority,
        reply_to: None,
    });
    (id, cmd)
}

async fn send(store: &DynStore, now: Timestamp, actor: UserId, conv: ConversationId, priority: Priority) -> MessageId {
    let (id, cmd) = send_cmd(actor, conv, priority);
    let r = store.apply_batch(vec![cmd], now, Limits::default()).await.unwrap();
    assert!(matches!(r.results[0], Ok(Outcome::MessageSent { .. })), "{:?}", r.results[0]);
    id
}

async fn ack(store: &DynStore, now: Timestamp, actor: UserId, message: MessageId, response: AckResponse) {
    let r = store.apply_batch(vec![Command::Acknowledge { actor, message, response }], now, Limits::default()).await;
    assert!(r.unwrap().results[0].is_ok());
}

fn step(after_secs: i64, targets: Target, channels: ChannelSet, repeat_secs: Option<i64>) -> Step {
    Step {
        after: SignedDuration::from_secs(after_secs),
        targets,
        channels,
        repeat_every: repeat_secs.map(SignedDuration::from_secs),
    }
}

/// Recipients in the app at the send, again every 2 minutes; `second` at 5 minutes; ends at 30.
fn policy(org: OrgId, second: Target) -> Policy {
    Policy {
        org,
        priority: Priority::Critical,
        steps: vec![
            step(0, Target::Recipients, ChannelSet::of(&[Channel::InApp]), Some(120)),
            step(300, second, ChannelSet::ALL, Some(120)),
        ],
        stop_after: SignedDuration::from_secs(1800),
    }
}

/// Fires whatever is due at `now` with `policy` and no on-call holders, as the worker does.
async fn fire_due(store: &DynStore, now: Timestamp, policy: &Policy) -> Vec<medhub_store::Fired> {
    fire_due_with(store, now, policy, BTreeMap::new(), ChannelSet::ALL).await
}

async fn fire_due_with(
    store: &DynStore,
    now: Timestamp,
    policy: &Policy,
    holders: BTreeMap<OnCallRole, Vec<UserId>>,
    enabled: ChannelSet,
) -> Vec<medhub_store::Fired> {
    let due = store.due_timers(now, 1000).await.unwrap();
    let inputs: Vec<FireInput> =
        due.iter().map(|t| FireInput { timer: t.id, policy: policy.clone(), holders: holders.clone() }).collect();
    store.fire_timers(now, &inputs, enabled, &template()).await.unwrap()
}

fn kinds(trace: &[TraceRow]) -> Vec<(TraceKind, Option<UserId>, Option<Channel>)> {
    trace.iter().map(|r| (r.kind, r.user, r.channel)).collect()
}

/// One number, read behind the store's back.
async fn scalar(db: &TestDb, sql: &str) -> i64 {
    match (db.backend(), db.location()) {
        (Backend::Sqlite, Location::Sqlite { data_dir }) => {
            let c = rusqlite::Connection::open(data_dir.join("medhub.db")).unwrap();
            c.query_row(sql, [], |r| r.get(0)).unwrap()
        }
        (Backend::Postgres, Location::Postgres { url, .. }) => {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            let conn = tokio::spawn(conn);
            let n: i64 = c.query_one(sql, &[]).await.unwrap().get(0);
            drop(c);
            conn.await.unwrap().unwrap();
            n
        }
        _ => panic!("unexpected test database"),
    }
}

/// A statement run behind the store's back.
async fn exec(db: &TestDb, sql: &str) {
    match (db.backend(), db.location()) {
        (Backend::Sqlite, Location::Sqlite { data_dir }) => {
            let c = rusqlite::Connection::open(data_dir.join("medhub.db")).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
            c.execute_batch(sql).unwrap();
        }
        (Backend::Postgres, Location::Postgres { url, .. }) => {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            let conn = tokio::spawn(conn);
            c.batch_execute(sql).await.unwrap();
            drop(c);
            conn.await.unwrap().unwrap();
        }
        _ => panic!("unexpected test database"),
    }
}

struct Ward {
    org: Org,
    sender: UserId,
    nurse: UserId,
    resident: UserId,
    conv: ConversationId,
}

async fn ward(store: &DynStore) -> Ward {
    let org = org(store, "General", "g.admin").await;
    let sender = user(store, org.id, "lab").await;
    let nurse = user(store, org.id, "nurse").await;
    let resident = user(store, org.id, "resident").await;
    let conv = group(store, sender, &[nurse, resident], Some("pat-7")).await;
    Ward { org, sender, nurse, resident, conv }
}

each_backend! {
    async fn an_urgent_or_critical_message_commits_with_its_escalation_and_first_timer(db) {
        let store = db.open().await;
        let w = ward(&store).await;
        let critical = send(&store, at(10), w.sender, w.conv, Priority::Critical).await;
        let urgent = send(&store, at(11), w.sender, w.conv, Priority::Urgent).await;
        let routine = send(&store, at(12), w.sender, w.conv, Priority::Routine).await;
        for (m, p, sent) in [(critical, Priority::Critical, at(10)), (urgent, Priority::Urgent, at(11))] {
            let e = store.escalation(m).await.unwrap().unwrap();
            assert_eq!((e.org, e.conversation, e.sender, e.priority, e.sent_at), (w.org.id, w.conv, w.sender, p, sent));
            assert_eq!((e.state.last, e.closed), (None, None));
            assert_eq!(store.escalation_timers(m).await.unwrap(), vec![(sent, None, None)]);
        }
        assert_eq!(store.escalation(routine).await.unwrap(), None);
        assert!(store.escalation_timers(routine).await.unwrap().is_empty());
        // A resend of the same transaction makes nothing new.
        let (_, cmd) = send_cmd(w.sender, w.conv, Priority::Critical);
        let again = cmd.clone();
        store.apply_batch(vec![cmd], at(20), Limits::default()).await.unwrap();
        store.apply_batch(vec![again], at(21), Limits::default()).await.unwrap();
        assert_eq!(scalar(&db, "SELECT COUNT(*) FROM escalations").await, 3);
        assert_eq!(scalar(&db, "SELECT COUNT(*) FROM timers").await, 3);
        // Due, oldest first; nothing before its time.
        let due = store.due_timers(at(11), 10).await.unwrap();
        assert_eq!(due.iter().map(|t| t.message).collect::<Vec<_>>(), vec![critical, urgent]);
        assert_eq!(due[0].org, w.org.id);
        assert_eq!(store.due_timers(micro_before(at(10)), 10).await.unwrap(), vec![]);
    }
}

each_backend! {
    async fn a_firing_notifies_the_recipients_and_schedules_the_next_point_never_early(db) {
        let store = db.open().await;
        let w = ward(&store).await;
        let p = policy(w.org.id, Target::Users(vec![w.sender]));
        let m = send(&store, at(0), w.sender, w.conv, Priority::Critical).await;
        let fired = fire_due(&store, at(0), &p).await;
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].message, fired[0].jobs, fired[0].closed, fired[0].cancelled), (m, 2, None, false));
        let trace = store.escalation_trace(m).await.unwrap();
        let mut recipients = [w.nurse, w.resident];
        recipients.sort();
        assert_eq!(kinds(&trace), recipients.iter().map(|u| (TraceKind::Notified, Some(*u), Some(Channel::InApp))).collect::<Vec<_>>());
        assert!(trace.iter().all(|r| r.at == at(0) && r.level == Some(0) && r.round == Some(0)));
        assert_eq!(trace[0].detail.as_deref(), Some("new_message"));
        let timers = store.escalation_timers(m).await.unwrap();
        assert_eq!(timers, vec![(at(0), Some(at(0)), None), (at(120), None, None)]);
        assert_eq!(store.escalation(m).await.unwrap().unwrap().state.last, Some(medhub_core::escalation::Point { level: 0, round: 0 }));

        // One microsecond early: not due, not claimed even when named.
        let early = micro_before(at(120));
        assert!(store.due_timers(early, 10).await.unwrap().is_empty());
        let next = store.due_timers(at(120), 10).await.unwrap();
        let input = FireInput { timer: next[0].id, policy: p.clone(), holders: BTreeMap::new() };
        assert!(store.fire_timers(early, std::slice::from_ref(&input), ChannelSet::ALL, &template()).await.unwrap().is_empty());
        assert_eq!(store.escalation_trace(m).await.unwrap().len(), 2);
        // On time: the repeat.
        let fired = store.fire_timers(at(120), std::slice::from_ref(&input), ChannelSet::ALL, &template()).await.unwrap();
        assert_eq!(fired.len(), 1);
        // Named again after firing: nothing (fired once).
        assert!(store.fire_timers(at(200), &[input], ChannelSet::ALL, &template()).await.unwrap().is_empty());
        let trace = store.escalation_trace(m).await.unwrap();
        assert_eq!(trace.len(), 4);
        assert!(trace[2..].iter().all(|r| r.round == Some(1) && r.at == at(120)));

        // The second step: the sender is never notified, so nobody is left; recorded.
        fire_due(&store, at(240), &p).await;
        fire_due(&store, at(300), &p).await;
        let trace = store.escalation_trace(m).await.unwrap();
        let last = trace.last().unwrap();
        assert_eq!((last.kind, last.level, last.detail.as_deref()), (TraceKind::NoTarget, Some(1), Some("no active user named")));
        // Every firing that did something has its audit record, with the patient and no body.
        let records: Vec<AuditRecord> = store.audit_events(0, 10_000).await.unwrap().into_iter().map(|(_, r)| r)
            .filter(|r| r.action == "escalation.step").collect();
        assert_eq!(records.len(), 4);
        for r in &records {
            assert_eq!((r.org, r.object_type.as_deref(), r.object_id.clone()), (Some(w.org.id), Some("message"), Some(m.to_string())));
            assert_eq!(r.patient_ref.as_deref(), Some("pat-7"));
            assert!(!format!("{r:?}").contains("K+"), "{r:?}");
        }
        assert_eq!(records[0].target.as_deref(), Some("steps 1.0; notified 2"));
    }
}

each_backend! {
    async fn concurrent_workers_on_two_stores_fire_each_of_500_timers_exactly_once(db) {
        let a = db.open().await;
        // A second store on the same database: another process (PostgreSQL: another node).
        let b = db.open().await;
        let w = ward(&a).await;
        let p = Policy {
            org: w.org.id,
            priority: Priority::Critical,
            steps: vec![step(0, Target::Recipients, ChannelSet::of(&[Channel::InApp]), None)],
            stop_after: SignedDuration::from_secs(3600),
        };
        let cmds: Vec<Command> = (0..500).map(|_| send_cmd(w.sender, w.conv, Priority::Critical).1).collect();
        let r = a.apply_batch(cmds, at(0), Limits::default()).await.unwrap();
        let messages: Vec<MessageId> = r.results.iter().map(|o| match o {
            Ok(Outcome::MessageSent { message, .. }) => message.id,
            other => panic!("{other:?}"),
        }).collect();
        let now = at(1);
        let mut workers = Vec::new();
        for i in 0..4 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let p = p.clone();
            workers.push(tokio::spawn(async move {
                let mut fired = Vec::new();
                loop {
                    // Every worker reads the same due timers and races for them.
                    let due = store.due_timers(now, 64).await.unwrap();
                    if due.is_empty() {
                        return fired;
                    }
                    let inputs: Vec<FireInput> = due.iter()
                        .map(|t| FireInput { timer: t.id, policy: p.clone(), holders: BTreeMap::new() })
                        .collect();
                    fired.extend(store.fire_timers(now, &inputs, ChannelSet::ALL, &template()).await.unwrap());
                }
            }));
        }
        let mut by_timer: HashMap<medhub_core::TimerId, usize> = HashMap::new();
        let mut per_worker = Vec::new();
        for wk in workers {
            let fired = wk.await.unwrap();
            per_worker.push(fired.len());
            for f in fired {
                assert!(!f.cancelled);
                *by_timer.entry(f.timer).or_default() += 1;
            }
        }
        assert_eq!(by_timer.len(), 500, "fired per worker: {per_worker:?}");
        assert!(by_timer.values().all(|n| *n == 1), "a timer fired twice");
        // The effects, once each: two notifications and two jobs per message, one record.
        assert_eq!(scalar(&db, "SELECT COUNT(*) FROM escalation_trace WHERE kind = 'notified'").await, 1000);
        assert_eq!(scalar(&db, "SELECT COUNT(*) FROM delivery_jobs").await, 1000);
        assert_eq!(scalar(&db, "SELECT COUNT(*) FROM timers WHERE fired_at IS NOT NULL").await, 500);
        // Each escalation now waits for its end (stop_after).
        assert_eq!(scalar(&db, "SELECT COUNT(*) FROM timers WHERE fired_at IS NULL AND cancelled_at IS NULL").await, 500);
        for m in messages.iter().step_by(50) {
            assert_eq!(store_trace_len(&a, *m).await, 2);
        }
        let steps = a.audit_events(0, 10_000).await.unwrap().into_iter().filter(|(_, r)| r.action == "escalation.step").count();
        assert_eq!(steps, 500);
        medhub_store_log_verifies(&a).await;
    }
}

async fn store_trace_len(store: &DynStore, m: MessageId) -> usize {
    store.escalation_trace(m).await.unwrap().len()
}

async fn medhub_store_log_verifies(store: &DynStore) {
    match medhub_store::audit::verify_log(store.as_ref(), &[], |_, _| {}).await.unwrap() {
        medhub_store::audit::Verdict::Good(v) => assert!(v.size > 0),
        medhub_store::audit::Verdict::Bad { fault, .. } => panic!("the audit log no longer verifies: {fault:?}"),
    }
}

each_backend! {
    async fn an_acknowledgement_closes_the_escalation_and_cancels_what_is_pending(db) {
        let store = db.open().await;
        let w = ward(&store).await;
        let p = policy(w.org.id, Target::Users(vec![w.resident]));
        let m = send(&store, at(0), w.sender, w.conv, Priority::Critical).await;
        fire_due(&store, at(0), &p).await;
        // The jobs of the first firing are still waiting when the nurse takes it on.
        ack(&store, at(30), w.nurse, m, AckResponse::Accept).await;
        let e = store.escalation(m).await.unwrap().unwrap();
        let closed = e.closed.unwrap();
        assert_eq!((closed.at, closed.reason, closed.by), (at(30), CloseReason::Acknowledged, Some(w.nurse)));
        assert_eq!(store.escalation_timers(m).await.unwrap(), vec![(at(0), Some(at(0)), None), (at(120), None, Some(at(30)))]);
        assert!(store.due_timers(at(3600), 10).await.unwrap().is_empty());
        // The queued notifications are cancelled, not sent.
        assert!(store.claim_deliveries(at(31), SignedDuration::from_secs(60), 10).await.unwrap().is_empty());
        let trace = store.escalation_trace(m).await.unwrap();
        assert_eq!(trace.iter().filter(|r| r.kind == TraceKind::Cancelled).count(), 2);
        assert_eq!(scalar(&db, "SELECT COUNT(*) FROM delivery_jobs WHERE state = 'cancelled'").await, 2);

        // A firing that claimed its timer before the acknowledgement committed re-reads the
        // escalation in its own transaction: here the timer is made pending again behind the
        // store's back, as if the firing had won the race for the timer's row.
        exec(&db, "UPDATE timers SET cancelled_at = NULL").await;
        let fired = fire_due(&store, at(120), &p).await;
        assert_eq!(fired.len(), 1);
        assert!(fired[0].cancelled);
        assert_eq!(store.escalation_trace(m).await.unwrap().len(), trace.len(), "nothing notified after the ack");
        assert!(store.due_timers(at(3600), 10).await.unwrap().is_empty());
    }
}

each_backend! {
    async fn a_decline_does_not_close_and_the_decliner_is_not_notified_again(db) {
        let store = db.open().await;
        let w = ward(&store).await;
        let p = policy(w.org.id, Target::Users(vec![w.resident]));
        let m = send(&store, at(0), w.sender, w.conv, Priority::Critical).await;
        fire_due(&store, at(0), &p).await;
        ack(&store, at(10), w.nurse, m, AckResponse::Decline).await;
        assert_eq!(store.escalation(m).await.unwrap().unwrap().closed, None);
        fire_due(&store, at(120), &p).await;
        let repeat: Vec<_> = store.escalation_trace(m).await.unwrap().into_iter().filter(|r| r.round == Some(1)).collect();
        assert_eq!(kinds(&repeat), vec![(TraceKind::Notified, Some(w.resident), Some(Channel::InApp))]);
        // The decliner changes their mind: "call back" takes it on and closes it.
        ack(&store, at(130), w.nurse, m, AckResponse::CallBack { minutes: 10 }).await;
        assert_eq!(store.escalation(m).await.unwrap().unwrap().closed.map(|c| c.reason), Some(CloseReason::Acknowledged));
    }
}

each_backend! {
    async fn a_recall_closes_the_escalation(db) {
        let store = db.open().await;
        let w = ward(&store).await;
        let m = send(&store, at(0), w.sender, w.conv, Priority::Urgent).await;
        let r = store.apply_batch(vec![Command::RecallMessage { actor: Actor::User(w.sender), message: m }], at(5), Limits::default()).await.unwrap();
        assert!(r.results[0].is_ok());
        let closed = store.escalation(m).await.unwrap().unwrap().closed.unwrap();
        assert_eq!((closed.reason, closed.by, closed.at), (CloseReason::Recalled, Some(w.sender), at(5)));
        assert_eq!(store.escalation_timers(m).await.unwrap(), vec![(at(0), None, Some(at(5)))]);
    }
}

each_backend! {
    async fn escalation_to_on_call_holders_skips_other_organizations_and_ends_when_exhausted(db) {
        let store = db.open().await;
        let w = ward(&store).await;
        let other = org(&store, "Riverside", "r.admin").await;
        let stranger = user(&store, other.id, "stranger").await;
        let backup = user(&store, w.org.id, "backup").await;
        let role = OnCallRole::parse("backup_on_call").unwrap();
        let p = policy(w.org.id, Target::OnCall(role.clone()));
        store.set_contact_points(backup, &ContactPoints { email: Some("b@h.example".into()), phone: Some("+447700900123".into()), pager: None }, at(0), &[]).await.unwrap();
        let holders = BTreeMap::from([(role, vec![stranger, backup])]);
        let m = send(&store, at(0), w.sender, w.conv, Priority::Critical).await;
        // The server has e-mail on, not SMS; the backup has no pager and no push.
        let enabled = ChannelSet::of(&[Channel::InApp, Channel::Email]);
        fire_due_with(&store, at(0), &p, holders.clone(), enabled).await;
        // Down from 1 to 6 minutes: at restart the backup, once (the recipients' missed repeats are
        // not sent in a burst).
        let fired = fire_due_with(&store, at(360), &p, holders.clone(), enabled).await;
        assert_eq!(fired.len(), 1);
        let later: Vec<TraceRow> = store.escalation_trace(m).await.unwrap().into_iter().filter(|r| r.at == at(360)).collect();
        assert_eq!(kinds(&later), vec![
            (TraceKind::Escalated, Some(backup), None),
            (TraceKind::Notified, Some(backup), Some(Channel::InApp)),
            (TraceKind::Notified, Some(backup), Some(Channel::Email)),
        ]);
        assert_eq!(later[1].detail.as_deref(), Some("escalated"));
        assert!(later.iter().all(|r| r.user != Some(stranger)));
        // Repeats every 2 minutes until the end at 30 minutes, then exhausted, and closed.
        for t in (480..1800).step_by(120) {
            fire_due_with(&store, at(t), &p, holders.clone(), enabled).await;
        }
        assert!(store.escalation(m).await.unwrap().unwrap().closed.is_none());
        fire_due_with(&store, at(1800), &p, holders.clone(), enabled).await;
        let closed = store.escalation(m).await.unwrap().unwrap().closed.unwrap();
        assert_eq!((closed.reason, closed.at), (CloseReason::Exhausted, at(1800)));
        assert_eq!(store.escalation_trace(m).await.unwrap().last().unwrap().kind, TraceKind::Exhausted);
        assert!(store.due_timers(at(100_000), 10).await.unwrap().is_empty());
        let timers = store.escalation_timers(m).await.unwrap();
        assert!(timers.iter().all(|(due, fired, cancelled)| fired.is_some_and(|f| f >= *due) && cancelled.is_none()), "{timers:?}");
    }
}

each_backend! {
    async fn deliveries_are_leased_retried_and_end_sent_or_failed_with_a_trace(db) {
        let store = db.open().await;
        let w = ward(&store).await;
        let sub = PushSubscriptionRow {
            id: PushSubscriptionId::new_v7(),
            user: w.nurse,
            endpoint: "https://push.example/sub/1".into(),
            p256dh: "key".into(),
            auth: "auth".into(),
            created_at: at(0),
        };
        store.add_push_subscription(&sub, &[]).await.unwrap();
        let p = Policy {
            org: w.org.id,
            priority: Priority::Critical,
            steps: vec![step(0, Target::Users(vec![w.nurse]), ChannelSet::of(&[Channel::InApp, Channel::Push]), None)],
            stop_after: SignedDuration::from_secs(3600),
        };
        let m = send(&store, at(0), w.sender, w.conv, Priority::Critical).await;
        fire_due(&store, at(0), &p).await;
        let lease = SignedDuration::from_secs(60);
        let jobs = store.claim_deliveries(at(1), lease, 10).await.unwrap();
        assert_eq!(jobs.len(), 2);
        let push = jobs.iter().find(|j| j.channel == Channel::Push).unwrap().clone();
        let inapp = jobs.iter().find(|j| j.channel == Channel::InApp).unwrap().clone();
        assert_eq!((push.subscription, push.user, push.message, push.attempts), (Some(sub.id), w.nurse, m, 0));
        // Leased: nobody else gets them until the lease runs out (a worker that died).
        assert!(store.claim_deliveries(at(30), lease, 10).await.unwrap().is_empty());
        let again = store.claim_deliveries(at(62), lease, 10).await.unwrap();
        assert_eq!(again.len(), 2);
        // The first worker's lease is gone: it cannot finish the job.
        assert!(!store.finish_delivery(&inapp, &AttemptResult::Sent, at(63)).await.unwrap());
        let inapp = again.iter().find(|j| j.channel == Channel::InApp).unwrap().clone();
        let push = again.iter().find(|j| j.channel == Channel::Push).unwrap().clone();
        assert_eq!(push.id, jobs.iter().find(|j| j.channel == Channel::Push).unwrap().id, "the same job, the same key");
        assert!(store.finish_delivery(&inapp, &AttemptResult::Sent, at(63)).await.unwrap());
        let retry = AttemptResult::Retry { at: at(70), reason: "push service unreachable".into() };
        assert!(store.finish_delivery(&push, &retry, at(63)).await.unwrap());
        assert!(store.claim_deliveries(micro_before(at(70)), lease, 10).await.unwrap().is_empty());
        let third = store.claim_deliveries(at(70), lease, 10).await.unwrap();
        assert_eq!((third.len(), third[0].attempts), (1, 1));
        assert!(store.finish_delivery(&third[0], &AttemptResult::Gone { reason: "push subscription gone (410)".into() }, at(71)).await.unwrap());
        assert!(store.push_subscriptions(w.nurse).await.unwrap().is_empty(), "a gone subscription is deleted");
        let trace = store.escalation_trace(m).await.unwrap();
        let outcomes: Vec<(TraceKind, Option<Channel>, Option<String>)> = trace.iter()
            .filter(|r| matches!(r.kind, TraceKind::Sent | TraceKind::Retrying | TraceKind::Failed))
            .map(|r| (r.kind, r.channel, r.detail.clone())).collect();
        assert_eq!(outcomes, vec![
            (TraceKind::Sent, Some(Channel::InApp), None),
            (TraceKind::Retrying, Some(Channel::Push), Some("attempt 1: push service unreachable".into())),
            (TraceKind::Failed, Some(Channel::Push), Some("attempt 2: push subscription gone (410)".into())),
        ]);
        assert_eq!(scalar(&db, "SELECT COUNT(*) FROM delivery_jobs WHERE state = 'pending'").await, 0);
        assert!(store.claim_deliveries(at(10_000), lease, 10).await.unwrap().is_empty());
    }
}

each_backend! {
    async fn policies_contact_points_and_push_subscriptions_are_stored_with_their_records(db) {
        let store = db.open().await;
        let w = ward(&store).await;
        assert_eq!(store.escalation_policy(w.org.id, Priority::Critical).await.unwrap(), None);
        let role = OnCallRole::parse("icu_backup").unwrap();
        let mut p = policy(w.org.id, Target::OnCall(role));
        p.steps.push(step(900, Target::Users(vec![w.nurse, w.resident]), ChannelSet::of(&[Channel::Pager]), None));
        let rec = AuditRecord::new(t0(), "admin.escalation_policy", AuditOutcome::Success);
        store.set_escalation_policy(&p, Some(w.sender), at(5), std::slice::from_ref(&rec)).await.unwrap();
        let got = store.escalation_policy(w.org.id, Priority::Critical).await.unwrap().unwrap();
        assert_eq!((got.policy, got.set_by, got.set_at), (p.clone(), Some(w.sender), at(5)));
        // Replacing it replaces every step.
        p.steps.truncate(1);
        store.set_escalation_policy(&p, None, at(6), &[]).await.unwrap();
        assert_eq!(store.escalation_policy(w.org.id, Priority::Critical).await.unwrap().unwrap().policy, p);
        assert_eq!(store.escalation_policy(w.org.id, Priority::Urgent).await.unwrap(), None);

        assert_eq!(store.contact_points(w.nurse).await.unwrap(), ContactPoints::default());
        let c = ContactPoints { email: Some("n@h.example".into()), phone: None, pager: Some("4711".into()) };
        store.set_contact_points(w.nurse, &c, at(1), &[]).await.unwrap();
        assert_eq!(store.contact_points(w.nurse).await.unwrap(), c);
        assert!(!format!("{c:?}").contains("h.example"));

        // Eleven browsers: the oldest goes. An endpoint registered again moves.
        for i in 0..11 {
            let sub = PushSubscriptionRow {
                id: PushSubscriptionId::new_v7(),
                user: w.nurse,
                endpoint: format!("https://push.example/{i}"),
                p256dh: "k".into(),
                auth: "a".into(),
                created_at: at(i),
            };
            store.add_push_subscription(&sub, &[]).await.unwrap();
        }
        let subs = store.push_subscriptions(w.nurse).await.unwrap();
        assert_eq!(subs.len(), 10);
        assert_eq!(subs[0].endpoint, "https://push.example/1");
        let moved = PushSubscriptionRow { id: PushSubscriptionId::new_v7(), user: w.resident, endpoint: "https://push.example/5".into(), p256dh: "k".into(), auth: "a".into(), created_at: at(20) };
        store.add_push_subscription(&moved, &[]).await.unwrap();
        assert_eq!(store.push_subscriptions(w.nurse).await.unwrap().len(), 9);
        assert_eq!(store.push_subscription(moved.id).await.unwrap(), Some(moved.clone()));
        assert!(!store.remove_push_subscription(w.nurse, "https://push.example/5", &[]).await.unwrap());
        assert!(store.remove_push_subscription(w.resident, "https://push.example/5", std::slice::from_ref(&rec)).await.unwrap());
        assert!(store.push_subscriptions(w.resident).await.unwrap().is_empty());
        let actions = store.audit_events(0, 100).await.unwrap().into_iter().filter(|(_, r)| r.action == "admin.escalation_policy").count();
        assert_eq!(actions, 2);
    }
}
