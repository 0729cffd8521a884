//! Retention storage (issue 4 §6, docs/retention.md), on SQLite and PostgreSQL: policies per
//! organization and class, the expiry's tombstones and every copy of a text they remove,
//! legal holds, the version check that stops stale decisions, erasure of account data, and the
//! audit log still verifying afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::{AuditRecord, Outcome as AuditOutcome};
use medhub_core::model::{ConversationKind, MemberRole, Org, Priority, RemovalCause, Session, SessionState};
use medhub_core::patient::PatientRef;
use medhub_core::plan::{Command, CreateConversation, Limits, Outcome, SendMessage};
use medhub_core::policy::Actor;
use medhub_core::retention::{self as rules, HoldScope, RetentionClass};
use medhub_core::session::Throttle;
use medhub_core::{ClientTxnId, ConversationId, EventId, EventKind, LegalHoldId, MessageId, OrgId, SessionId, UserId};
use medhub_store::audit::{Verdict, verify_log};
use medhub_store::testdb::TestDb;
use medhub_store::{
    Backend, ContentChange, DynStore, HistoryPage, HoldLift, LegalHold, Location, StoreError, UserRecord, each_backend,
};

fn t0() -> Timestamp {
    Timestamp::from_second(1_500_000_000).unwrap()
}

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
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

async fn conversation(
    store: &DynStore,
    at: Timestamp,
    actor: UserId,
    kind: ConversationKind,
    members: &[UserId],
    patient: Option<&str>,
) -> ConversationId {
    let id = ConversationId::new_v7();
    let cmd = Command::CreateConversation(CreateConversation {
        id,
        actor: Actor::User(actor),
        kind,
        title: (kind != ConversationKind::Direct).then(|| "Ward 7".to_owned()),
        members: members.iter().map(|u| (*u, MemberRole::Member)).collect(),
        patient: patient.map(|p| PatientRef::parse(p).unwrap()),
    });
    let r = store.apply_batch(vec![cmd], at, Limits::default()).await.unwrap();
    assert!(r.results[0].is_ok(), "{:?}", r.results[0]);
    id
}

async fn send(store: &DynStore, at: Timestamp, actor: UserId, conv: ConversationId, body: &str) -> MessageId {
    let id = MessageId::new_v7();
    let cmd = Command::SendMessage(SendMessage {
        id,
        actor,
        conversation: conv,
        client_txn_id: ClientTxnId::parse(&format!("t-{id}")).unwrap(),
        body: body.into(),
        priority: Priority::Urgent,
        reply_to: None,
    });
    let r = store.apply_batch(vec![cmd], at, Limits::default()).await.unwrap();
    assert!(matches!(r.results[0], Ok(Outcome::MessageSent { .. })), "{:?}", r.results[0]);
    id
}

async fn edit(store: &DynStore, at: Timestamp, actor: UserId, message: MessageId, body: &str) {
    let cmd = Command::EditMessage { actor, message, body: body.into() };
    let r = store.apply_batch(vec![cmd], at, Limits::default()).await.unwrap();
    assert!(r.results[0].is_ok(), "{:?}", r.results[0]);
}

fn record(action: &str, target: String) -> AuditRecord {
    AuditRecord::new(t0(), action, AuditOutcome::Success).target(target)
}

async fn audit_actions(store: &DynStore) -> Vec<(String, Option<String>)> {
    store.audit_events(0, 10_000).await.unwrap().into_iter().map(|(_, r)| (r.action, r.target)).collect()
}

async fn log_verifies(store: &DynStore) {
    match verify_log(store.as_ref(), &[], |_, _| {}).await.unwrap() {
        Verdict::Good(v) => assert!(v.size > 0),
        Verdict::Bad { fault, .. } => panic!("the audit log no longer verifies: {fault:?}"),
    }
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

/// Every text of a message as any reader could get it: the message, its revisions, and the
/// replayed events of its conversation.
async fn texts(store: &DynStore, id: MessageId) -> Vec<String> {
    let m = store.message(id).await.unwrap().unwrap();
    let mut out = vec![m.body.clone()];
    out.extend(store.revisions(id).await.unwrap().into_iter().map(|r| r.body));
    let head = store.last_event_id().await.unwrap();
    for e in store.events_range(EventId::ZERO, head, 10_000).await.unwrap() {
        match e.kind {
            EventKind::MessageCreated { message } if message.id == id => out.push(message.body.clone()),
            EventKind::MessageEdited { message, body: Some(b), .. } if message == id => out.push(b),
            _ => {}
        }
    }
    out.retain(|t| !t.is_empty());
    out
}

/// Runs the expiry as the service does, with the pure rules: every class, page by page.
async fn expire(store: &DynStore, org: OrgId, now: Timestamp, page: u32) -> (u64, u64) {
    let (mut removed, mut held) = (0, 0);
    for class in RetentionClass::ALL {
        let state = store.retention_state(org).await.unwrap();
        let policies = state.policies();
        let Some(policy) = rules::policy_for(&policies, class) else { continue };
        let mut after = None;
        loop {
            let cands = store
                .expiry_candidates(org, class, policy.cutoff(now), after, page, &state.held_users())
                .await
                .unwrap();
            let Some(last) = cands.last() else { break };
            after = Some((last.facts.created_at, last.message));
            let mut remove = Vec::new();
            for c in &cands {
                match rules::expiry(&c.facts, &policies, &state.holds, now) {
                    rules::Expiry::Remove => remove.push(c.message),
                    rules::Expiry::Keep(rules::Kept::Held(_)) => held += 1,
                    rules::Expiry::Keep(k) => panic!("candidate kept for {k:?}"),
                }
            }
            let audit = [record("retention.expire", format!("org:{org} removed:{}", remove.len()))];
            let change = ContentChange { remove, cause: RemovalCause::Retention, flag: vec![] };
            removed += store.apply_content_change(org, state.version, &change, now, &audit).await.unwrap().removed;
        }
    }
    (removed, held)
}

each_backend! {
    async fn policies_are_per_organization_and_class_and_audited(db) {
        let store = db.open().await;
        let a = org(&store, "General", "g.admin").await;
        let b = org(&store, "Riverside", "r.admin").await;
        let audit = [record("retention.policy_set", format!("org:{} class:clinical days:3650", a.id))];
        store.set_retention_policy(a.id, RetentionClass::Clinical, Some(3650), None, t0(), &audit).await.unwrap();
        store.set_retention_policy(a.id, RetentionClass::Direct, Some(30), None, t0(), &[]).await.unwrap();
        store.set_retention_policy(b.id, RetentionClass::Direct, Some(90), None, t0(), &[]).await.unwrap();
        let sa = store.retention_state(a.id).await.unwrap();
        let sb = store.retention_state(b.id).await.unwrap();
        let shown = |s: &medhub_store::RetentionState| {
            s.policies.iter().map(|p| (p.policy.class, p.policy.days)).collect::<Vec<_>>()
        };
        assert_eq!(shown(&sa), [(RetentionClass::Clinical, 3650), (RetentionClass::Direct, 30)]);
        assert_eq!(shown(&sb), [(RetentionClass::Direct, 90)]);
        // Replacing and removing a policy; each change moves the version.
        let before = sa.version;
        store.set_retention_policy(a.id, RetentionClass::Direct, Some(60), None, t0(), &[]).await.unwrap();
        store.set_retention_policy(a.id, RetentionClass::Clinical, None, None, t0(), &[]).await.unwrap();
        let sa = store.retention_state(a.id).await.unwrap();
        assert_eq!(shown(&sa), [(RetentionClass::Direct, 60)]);
        assert_eq!(sa.version, before + 2);
        assert_eq!(store.retention_state(b.id).await.unwrap().version, sb.version, "the other organization's");
        assert!(audit_actions(&store).await.iter().any(|(a, _)| a == "retention.policy_set"));
        log_verifies(&store).await;
    }
}

each_backend! {
    async fn expiry_removes_every_copy_of_past_retention_content_and_keeps_the_rest(db) {
        let store = db.open().await;
        let o = org(&store, "General", "admin").await;
        let (ann, bob) = (user(&store, o.id, "ann").await, user(&store, o.id, "bob").await);
        let old = t0();
        let direct = conversation(&store, old, ann, ConversationKind::Direct, &[bob], None).await;
        let group = conversation(&store, old, ann, ConversationKind::Group, &[bob], None).await;
        let clinical = conversation(&store, old, ann, ConversationKind::Group, &[bob], Some("pat-7")).await;
        let gone = send(&store, old, ann, direct, "Lunch at noon?").await;
        edit(&store, old + SignedDuration::from_secs(5), ann, gone, "Lunch at one?").await;
        store
            .apply_batch(
                vec![Command::Acknowledge { actor: bob, message: gone, response: medhub_core::model::AckResponse::Accept }],
                old + SignedDuration::from_secs(9),
                Limits::default(),
            )
            .await
            .unwrap();
        let recent = send(&store, old + days(100), ann, direct, "Coffee?").await;
        let kept_group = send(&store, old, ann, group, "No policy for groups").await;
        let chart = send(&store, old, ann, clinical, "K+ 6.1, repeat in 2 h").await;
        assert_eq!(texts(&store, gone).await.len(), 4, "body, one revision, two events");

        store.set_retention_policy(o.id, RetentionClass::Direct, Some(30), None, old, &[]).await.unwrap();
        store.set_retention_policy(o.id, RetentionClass::Clinical, Some(3650), None, old, &[]).await.unwrap();
        let now = old + days(120);
        let (removed, held) = expire(&store, o.id, now, 500).await;
        assert_eq!((removed, held), (1, 0));

        // Every copy of the text is gone; the tombstone keeps the conversation coherent.
        assert_eq!(texts(&store, gone).await, Vec::<String>::new());
        let m = store.message(gone).await.unwrap().unwrap();
        assert_eq!(m.removal.map(|r| (r.cause, r.at)), Some((RemovalCause::Retention, now)));
        assert_eq!(m.request_hash, [0; 32]);
        assert!(m.acknowledged && m.revision == 1 && m.seq.get() == 1);
        let rows = store.recipients(&m).await.unwrap();
        assert!(rows.iter().any(|r| r.user == bob && r.ack.is_some()), "acknowledgement history stays");
        let history = store.messages(direct, HistoryPage::Latest, 10).await.unwrap();
        assert_eq!(history.iter().map(|m| m.seq.get()).collect::<Vec<_>>(), [1, 2]);
        // What is within retention, or has no policy, is untouched.
        assert_eq!(texts(&store, recent).await, ["Coffee?", "Coffee?"]);
        assert_eq!(store.message(kept_group).await.unwrap().unwrap().body, "No policy for groups");
        assert_eq!(store.message(chart).await.unwrap().unwrap().body, "K+ 6.1, repeat in 2 h");
        // A tombstone cannot be edited back to life.
        let r = store
            .apply_batch(vec![Command::EditMessage { actor: ann, message: gone, body: "x".into() }], now, Limits::default())
            .await
            .unwrap();
        assert_eq!(r.results[0].as_ref().err(), Some(&medhub_core::DomainError::MessageRemoved));

        // Idempotent: a second run finds nothing.
        assert_eq!(expire(&store, o.id, now, 500).await, (0, 0));
        let actions = audit_actions(&store).await;
        assert_eq!(actions.iter().filter(|(a, _)| a == "retention.expire").count(), 1);
        log_verifies(&store).await;
    }
}

each_backend! {
    async fn a_long_backlog_goes_in_bounded_pages(db) {
        let store = db.open().await;
        let o = org(&store, "General", "admin").await;
        let (ann, bob) = (user(&store, o.id, "ann").await, user(&store, o.id, "bob").await);
        let channel = conversation(&store, t0(), ann, ConversationKind::Channel, &[bob], None).await;
        for i in 0..23 {
            send(&store, t0() + SignedDuration::from_secs(i), ann, channel, &format!("shift note {i}")).await;
        }
        store.set_retention_policy(o.id, RetentionClass::Channel, Some(1), None, t0(), &[]).await.unwrap();
        assert_eq!(expire(&store, o.id, t0() + days(2), 5).await, (23, 0));
        let actions = audit_actions(&store).await;
        assert_eq!(actions.iter().filter(|(a, _)| a == "retention.expire").count(), 5, "one record per page");
        let history = store.messages(channel, HistoryPage::Latest, 50).await.unwrap();
        assert!(history.iter().all(|m| m.body.is_empty() && m.removal.is_some()));
    }
}

each_backend! {
    async fn holds_keep_what_they_cover_until_lifted(db) {
        let store = db.open().await;
        let o = org(&store, "General", "admin").await;
        let (ann, bob, cat) =
            (user(&store, o.id, "ann").await, user(&store, o.id, "bob").await, user(&store, o.id, "cat").await);
        let officer = user(&store, o.id, "officer").await;
        let direct = conversation(&store, t0(), ann, ConversationKind::Direct, &[bob], None).await;
        let other = conversation(&store, t0(), ann, ConversationKind::Direct, &[cat], None).await;
        let held_msg = send(&store, t0(), ann, direct, "Held by the conversation hold").await;
        let seen_by_cat = send(&store, t0(), ann, other, "Cat saw this").await;
        store.set_retention_policy(o.id, RetentionClass::Direct, Some(30), None, t0(), &[]).await.unwrap();

        let hold = |scope| LegalHold {
            id: LegalHoldId::new_v7(),
            org: o.id,
            scope,
            reason: "Case 2026-114, claim about bed 4".into(),
            created_by: officer,
            created_at: t0(),
            lifted: None,
        };
        let on_conv = hold(HoldScope::Conversation(direct));
        let on_cat = hold(HoldScope::User(cat));
        let audit = [record("legal_hold.set", format!("hold:{}", on_conv.id))];
        store.create_legal_hold(&on_conv, &audit).await.unwrap();
        store.create_legal_hold(&on_cat, &[record("legal_hold.set", format!("hold:{}", on_cat.id))]).await.unwrap();
        let listed = store.legal_holds(o.id, false).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].reason, "Case 2026-114, claim about bed 4");

        let now = t0() + days(60);
        assert_eq!(expire(&store, o.id, now, 500).await, (0, 2));
        assert!(store.message(held_msg).await.unwrap().unwrap().removal.is_none());
        assert!(store.message(seen_by_cat).await.unwrap().unwrap().removal.is_none());

        // Lifting: recorded, not deleted; twice is refused; then the content goes.
        let lift = HoldLift { by: officer, at: now, reason: "Claim withdrawn on 2026-11-01".into() };
        let lifted = store
            .lift_legal_hold(o.id, on_cat.id, &lift, &[record("legal_hold.lift", format!("hold:{}", on_cat.id))])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lifted.lifted.as_ref().map(|l| (l.by, l.at)), Some((officer, now)));
        assert!(store.lift_legal_hold(o.id, on_cat.id, &lift, &[]).await.unwrap().is_none());
        let stranger = org(&store, "Riverside", "r.admin").await;
        assert!(store.lift_legal_hold(stranger.id, on_conv.id, &lift, &[]).await.unwrap().is_none(), "other org");
        assert_eq!(store.legal_holds(o.id, false).await.unwrap().len(), 1);
        assert_eq!(store.legal_holds(o.id, true).await.unwrap().len(), 2);
        assert_eq!(expire(&store, o.id, now, 500).await, (1, 1));
        assert!(store.message(seen_by_cat).await.unwrap().unwrap().removal.is_some());
        assert!(store.message(held_msg).await.unwrap().unwrap().removal.is_none());

        let actions = audit_actions(&store).await;
        for a in ["legal_hold.set", "legal_hold.lift", "retention.expire"] {
            assert!(actions.iter().any(|(x, _)| x == a), "{a}");
        }
        // Records hold ids, never the typed reason.
        assert!(actions.iter().all(|(_, t)| !t.as_deref().unwrap_or("").contains("Case 2026")));
        log_verifies(&store).await;
    }
}

each_backend! {
    async fn stale_decisions_are_refused_and_nothing_is_written(db) {
        let store = db.open().await;
        let o = org(&store, "General", "admin").await;
        let (ann, bob) = (user(&store, o.id, "ann").await, user(&store, o.id, "bob").await);
        let direct = conversation(&store, t0(), ann, ConversationKind::Direct, &[bob], None).await;
        let m = send(&store, t0(), ann, direct, "Discuss later").await;
        store.set_retention_policy(o.id, RetentionClass::Direct, Some(1), None, t0(), &[]).await.unwrap();
        let state = store.retention_state(o.id).await.unwrap();
        // A hold arrives between the decision and the write.
        let hold = LegalHold {
            id: LegalHoldId::new_v7(),
            org: o.id,
            scope: HoldScope::Conversation(direct),
            reason: "Preserve for the inquiry 77".into(),
            created_by: ann,
            created_at: t0(),
            lifted: None,
        };
        store.create_legal_hold(&hold, &[]).await.unwrap();
        let size = store.audit_head().await.unwrap().size;
        let change = ContentChange { remove: vec![m], cause: RemovalCause::Retention, flag: vec![] };
        let audit = [record("retention.expire", "removed:1".into())];
        let r = store.apply_content_change(o.id, state.version, &change, t0() + days(5), &audit).await;
        assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
        assert!(store.message(m).await.unwrap().unwrap().removal.is_none());
        assert_eq!(store.audit_head().await.unwrap().size, size, "no record without its change");
        // Another organization's version cannot remove this one's messages either.
        let other = org(&store, "Riverside", "r.admin").await;
        let v = store.retention_state(other.id).await.unwrap().version;
        let r = store.apply_content_change(other.id, v, &change, t0() + days(5), &[]).await;
        assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
        assert!(store.message(m).await.unwrap().unwrap().removal.is_none());
    }
}

each_backend! {
    async fn erasure_removes_account_data_keeps_and_flags_clinical_content_and_the_log_verifies(db) {
        let store = db.open().await;
        let o = org(&store, "General", "admin").await;
        let (ann, bob) = (user(&store, o.id, "ann").await, user(&store, o.id, "bob").await);
        // Ann's personal data beyond her name: a session, a second factor, a throttle entry.
        let session = Session {
            id: SessionId::new_v7(),
            user: ann,
            token_hash: [7; 32],
            state: SessionState::Active,
            created_at: t0(),
            last_activity_at: t0(),
            expires_at: t0() + days(1),
            revoked_at: None,
            mfa_at: Some(t0()),
            ip: Some("10.1.2.3".into()),
            user_agent: Some("Ann's phone".into()),
        };
        store.create_session(&session, &[]).await.unwrap();
        store.put_pending_totp(ann, b"sealed", t0()).await.unwrap();
        store.replace_recovery_codes(ann, &["hash".into()], &[]).await.unwrap();
        let throttle = Throttle { failures: 2, window_start: t0(), locked_until: None };
        store.put_throttle("login:acct:ann", &throttle).await.unwrap();
        store.put_throttle("login:acct:xann", &throttle).await.unwrap();
        let contact = medhub_store::ContactPoints { email: Some("ann@h.example".into()), phone: Some("+447700900123".into()), pager: None };
        store.set_contact_points(ann, &contact, t0(), &[]).await.unwrap();
        let sub = medhub_store::PushSubscriptionRow {
            id: medhub_core::PushSubscriptionId::new_v7(),
            user: ann,
            endpoint: "https://push.example/ann".into(),
            p256dh: "k".into(),
            auth: "a".into(),
            created_at: t0(),
        };
        store.add_push_subscription(&sub, &[]).await.unwrap();

        let direct = conversation(&store, t0(), ann, ConversationKind::Direct, &[bob], None).await;
        let clinical = conversation(&store, t0(), ann, ConversationKind::Group, &[bob], Some("pat-9")).await;
        let held = conversation(&store, t0(), ann, ConversationKind::Group, &[bob], None).await;
        let chat = send(&store, t0(), ann, direct, "See you at the party").await;
        edit(&store, t0(), ann, chat, "See you at the party!").await;
        let chart = send(&store, t0(), ann, clinical, "Started IV antibiotics").await;
        let kept = send(&store, t0(), ann, held, "Held for the inquiry").await;
        let bobs = send(&store, t0(), bob, direct, "Bob's own message").await;
        store.set_retention_policy(o.id, RetentionClass::Clinical, Some(3650), None, t0(), &[]).await.unwrap();
        let hold = LegalHold {
            id: LegalHoldId::new_v7(),
            org: o.id,
            scope: HoldScope::Conversation(held),
            reason: "Preserve for the inquiry 77".into(),
            created_by: bob,
            created_at: t0(),
            lifted: None,
        };
        store.create_legal_hold(&hold, &[]).await.unwrap();

        let now = t0() + days(3);
        let state = store.retention_state(o.id).await.unwrap();
        let (name, display) = rules::pseudonym(ann);
        let audit = [record("gdpr.erase", format!("org:{} user:{ann} account", o.id))];
        let done = store.erase_account(o.id, state.version, ann, (&name, &display), now, &audit).await.unwrap().unwrap();
        assert_eq!(done.ended_sessions, [session.id]);
        assert!(done.first_time);
        // The account: pseudonymous, without credentials, deactivated.
        let rec = store.user_record(ann).await.unwrap().unwrap();
        assert_eq!((rec.user.username.as_str(), rec.user.display_name.as_str()), (name.as_str(), display.as_str()));
        assert!(!rec.user.active && rec.password_hash.is_none());
        assert!(store.user_record_by_username("ann").await.unwrap().is_none());
        assert!(store.totp(ann).await.unwrap().is_none());
        assert!(store.recovery_codes(ann).await.unwrap().is_empty());
        assert_eq!(store.contact_points(ann).await.unwrap(), medhub_store::ContactPoints::default());
        assert!(store.push_subscriptions(ann).await.unwrap().is_empty());
        assert!(store.session(session.id).await.unwrap().is_none(), "ended");
        let left = scalar(&db, "SELECT COUNT(*) FROM sessions WHERE ip IS NOT NULL OR user_agent IS NOT NULL").await;
        assert_eq!(left, 0, "no address or user agent is kept");
        let keys = ["login:acct:ann".to_owned(), "login:acct:xann".to_owned()];
        let left: Vec<String> = store.throttles(&keys).await.unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(left, ["login:acct:xann"], "only the erased account's throttle goes");

        // Her messages, decided by the erasure rule, in one page.
        let cands = store.erasure_candidates(ann, None, 500, &state.held_users()).await.unwrap();
        assert_eq!(cands.len(), 3);
        let mut change = ContentChange { remove: vec![], cause: RemovalCause::Erasure, flag: vec![] };
        for c in &cands {
            match rules::erasure(&c.facts, &state.policies(), &state.holds, now) {
                rules::Erasure::Remove => change.remove.push(c.message),
                _ => change.flag.push(c.message),
            }
        }
        assert_eq!(change.remove, [chat]);
        let audit = [record("gdpr.erase", format!("org:{} user:{ann} removed:1 flagged:2", o.id))];
        let count = store.apply_content_change(o.id, state.version, &change, now, &audit).await.unwrap();
        assert_eq!((count.removed, count.revisions, count.flagged), (1, 1, 2));
        assert_eq!(texts(&store, chat).await, Vec::<String>::new());
        assert_eq!(store.message(chat).await.unwrap().unwrap().removal.map(|r| r.cause), Some(RemovalCause::Erasure));
        for m in [chart, kept] {
            let m = store.message(m).await.unwrap().unwrap();
            assert!(m.removal.is_none() && !m.body.is_empty());
            assert_eq!(m.erasure_requested_at, Some(now));
        }
        let b = store.message(bobs).await.unwrap().unwrap();
        assert!(b.removal.is_none() && b.erasure_requested_at.is_none(), "others' messages are untouched");
        assert!(store.erasure_candidates(ann, None, 500, &[]).await.unwrap().is_empty());
        assert!(store.unfinished_erasures(o.id).await.unwrap().is_empty());

        // Erasing again only finishes the work; the audit records keep Ann's id and verify.
        let again = store.erase_account(o.id, state.version, ann, (&name, &display), now, &[]).await.unwrap().unwrap();
        assert!(!again.first_time && again.ended_sessions.is_empty());
        let actions = audit_actions(&store).await;
        assert!(actions.iter().filter(|(a, _)| a == "gdpr.erase").all(|(_, t)| t.as_deref().unwrap().contains(&ann.to_string())));
        log_verifies(&store).await;
        // Another organization cannot erase her.
        let other = org(&store, "Riverside", "r.admin").await;
        let v = store.retention_state(other.id).await.unwrap().version;
        assert!(store.erase_account(other.id, v, bob, ("x-1", "X"), now, &[]).await.unwrap().is_none());
        assert!(store.user(bob).await.unwrap().unwrap().active);
    }
}

each_backend! {
    async fn an_interrupted_erasure_is_found_again(db) {
        let store = db.open().await;
        let o = org(&store, "General", "admin").await;
        let (ann, bob) = (user(&store, o.id, "ann").await, user(&store, o.id, "bob").await);
        let direct = conversation(&store, t0(), ann, ConversationKind::Direct, &[bob], None).await;
        send(&store, t0(), ann, direct, "Left behind by a crash").await;
        let v = store.retention_state(o.id).await.unwrap().version;
        store.erase_account(o.id, v, ann, ("erased-ann", "Erased"), t0(), &[]).await.unwrap().unwrap();
        assert_eq!(store.unfinished_erasures(o.id).await.unwrap(), [ann]);
        // The version check names the organization: an unknown one is refused.
        let r = store.erase_account(OrgId::new_v7(), v, ann, ("x", "y"), t0(), &[]).await;
        assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    }
}
