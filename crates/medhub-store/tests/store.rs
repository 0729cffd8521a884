//! Store tests. Every test runs on SQLite and on PostgreSQL.

// Tests panic on anything unexpected; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};
use medhub_core::model::{AckResponse, ConversationKind, MemberRole, Org, Priority, Session, SessionState, User};
use medhub_core::plan::{Command, CreateConversation, Limits, Outcome, SendMessage};
use medhub_core::policy::Actor;
use medhub_core::recipients::{apply_membership, recipients};
use medhub_core::{ClientTxnId, ConversationId, EventId, EventKind, MessageId, OrgId, Seq, SessionId, UserId};
use medhub_store::{DynStore, HistoryPage, StoreError, UserRecord, each_backend};

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

async fn org(store: &DynStore) -> Org {
    if let Some(o) = store.org().await.unwrap() {
        return o;
    }
    let org = Org {
        id: OrgId::new_v7(),
        name: "General Hospital".into(),
        created_at: now(),
        idle_timeout: medhub_core::session::DEFAULT_IDLE_TIMEOUT,
    };
    let admin = record(org.id, "admin");
    assert!(store.bootstrap(&org, &admin).await.unwrap());
    org
}

fn record(org: OrgId, username: &str) -> UserRecord {
    medhub_store::testdb::user_record(org, username, now())
}

async fn user(store: &DynStore, name: &str) -> UserId {
    let o = org(store).await;
    let r = record(o.id, name);
    store.create_user(&r).await.unwrap();
    r.user.id
}

async fn run(store: &DynStore, cmds: Vec<Command>) -> Vec<Result<Outcome, medhub_core::DomainError>> {
    store.apply_batch(cmds, now(), Limits::default()).await.unwrap().results
}

fn create(actor: UserId, kind: ConversationKind, members: &[UserId]) -> (ConversationId, Command) {
    let id = ConversationId::new_v7();
    let cmd = Command::CreateConversation(CreateConversation {
        id,
        actor: Actor::User(actor),
        kind,
        title: (kind != ConversationKind::Direct).then(|| "Ward 7".to_owned()),
        members: members.iter().map(|u| (*u, MemberRole::Member)).collect(),
        patient: None,
    });
    (id, cmd)
}

fn send(actor: UserId, conversation: ConversationId, txn: &str, body: &str, priority: Priority) -> Command {
    Command::SendMessage(SendMessage {
        id: MessageId::new_v7(),
        actor,
        conversation,
        client_txn_id: ClientTxnId::parse(txn).unwrap(),
        body: body.into(),
        priority,
        reply_to: None,
    })
}

fn message_of(r: &Result<Outcome, medhub_core::DomainError>) -> medhub_core::model::Message {
    match r {
        Ok(Outcome::MessageSent { message, .. }) => message.clone(),
        other => panic!("expected a message, got {other:?}"),
    }
}

each_backend! {
    async fn migrations_are_idempotent(db) {
        let store = db.open().await;
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        store.ping().await.unwrap();
        assert_eq!(store.last_event_id().await.unwrap(), EventId::ZERO);
    }
}

each_backend! {
    async fn bootstrap_happens_once(db) {
        let store = db.open().await;
        assert_eq!(store.org().await.unwrap(), None);
        let first = org(&store).await;
        let again = Org { name: "Other".into(), id: OrgId::new_v7(), ..first.clone() };
        assert!(!store.bootstrap(&again, &record(again.id, "admin2")).await.unwrap());
        assert_eq!(store.org().await.unwrap(), Some(first));
        assert!(store.user_record_by_username("admin2").await.unwrap().is_none());
    }
}

each_backend! {
    async fn usernames_are_unique(db) {
        let store = db.open().await;
        let o = org(&store).await;
        store.create_user(&record(o.id, "house")).await.unwrap();
        assert!(matches!(store.create_user(&record(o.id, "house")).await, Err(StoreError::UsernameTaken)));
        let found = store.user_record_by_username("house").await.unwrap().unwrap();
        assert_eq!(found.user.display_name, "Dr house");
        let listed = store.list_users(o.id, None, 10).await.unwrap();
        assert_eq!(listed.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), vec!["admin", "house"]);
        assert_eq!(store.list_users(o.id, Some("admin"), 10).await.unwrap().len(), 1);
    }
}

each_backend! {
    async fn organizations_are_tenants(db) {
        let store = db.open().await;
        let first = org(&store).await;
        store.create_user(&record(first.id, "house")).await.unwrap();
        let later = |name: &str| Org {
            id: OrgId::new_v7(),
            name: name.into(),
            created_at: now() + SignedDuration::from_secs(1),
            idle_timeout: SignedDuration::from_mins(30),
        };
        let second = later("Riverside Clinic");
        store.create_org(&second, &record(second.id, "river-admin"), &[]).await.unwrap();
        assert_eq!(store.orgs().await.unwrap(), vec![first.clone(), second.clone()], "oldest first");
        assert_eq!(store.org().await.unwrap(), Some(first.clone()), "the first is still bootstrap's");

        // Names are unique whatever the letter case; usernames are unique on the server.
        // Neither failure leaves an organization behind.
        let clash = later("RIVERSIDE clinic");
        let e = store.create_org(&clash, &record(clash.id, "someone"), &[]).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        let third = later("Hilltop");
        let e = store.create_org(&third, &record(third.id, "house"), &[]).await.unwrap_err();
        assert!(matches!(e, StoreError::UsernameTaken), "{e:?}");
        assert_eq!(store.orgs().await.unwrap().len(), 2);

        // The directory and the session list are per organization.
        let names = |v: Vec<User>| v.into_iter().map(|u| u.username).collect::<Vec<_>>();
        assert_eq!(names(store.list_users(first.id, None, 10).await.unwrap()), vec!["admin", "house"]);
        assert_eq!(names(store.list_users(second.id, None, 10).await.unwrap()), vec!["river-admin"]);
        let house = store.user_record_by_username("house").await.unwrap().unwrap().user.id;
        let river = store.user_record_by_username("river-admin").await.unwrap().unwrap().user.id;
        let idle_20 = now() - SignedDuration::from_mins(20);
        let (a, b) = (session(house, 1, idle_20, now() + SignedDuration::from_hours(1)), session(river, 2, idle_20, now() + SignedDuration::from_hours(1)));
        store.create_session(&a, &[]).await.unwrap();
        store.create_session(&b, &[]).await.unwrap();
        let ids = |v: Vec<Session>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(store.live_sessions(first.id, None, 10).await.unwrap()), vec![a.id]);
        assert_eq!(ids(store.live_sessions(second.id, None, 10).await.unwrap()), vec![b.id]);

        // Each session is measured against its own organization's idle timeout: 20 minutes
        // idle ends a session under 15, not under 30.
        assert_eq!(store.end_expired_sessions(now(), None).await.unwrap(), vec![(a.id, house)]);
        assert!(store.session(b.id).await.unwrap().is_some());
        // Setting one organization's timeout leaves the other's alone.
        store.set_idle_timeout(second.id, SignedDuration::from_mins(10), &[]).await.unwrap();
        let orgs = store.orgs().await.unwrap();
        assert_eq!(orgs[0].idle_timeout, first.idle_timeout);
        assert_eq!(orgs[1].idle_timeout, SignedDuration::from_mins(10));
        assert_eq!(store.end_expired_sessions(now(), None).await.unwrap(), vec![(b.id, river)]);
    }
}

fn session(user: UserId, hash: u8, last_activity: Timestamp, expires: Timestamp) -> Session {
    Session {
        id: SessionId::new_v7(),
        user,
        token_hash: [hash; 32],
        state: SessionState::Active,
        created_at: now(),
        last_activity_at: last_activity,
        expires_at: expires,
        revoked_at: None,
        mfa_at: None,
        ip: Some("10.1.2.3".into()),
        user_agent: Some("Ward tablet".into()),
    }
}

each_backend! {
    async fn sessions_end_when_revoked_idle_too_old_or_deactivated(db) {
        let store = db.open().await;
        let u = user(&store, "nurse").await;
        let hour = SignedDuration::from_hours(1);
        let idle = SignedDuration::from_mins(15);
        let live = session(u, 1, now(), now() + hour);
        let too_old = session(u, 2, now(), now() - SignedDuration::from_secs(1));
        let other = session(u, 3, now(), now() + hour);
        let idle_one = session(u, 4, now() - idle, now() + hour);
        let almost_idle = session(u, 5, now() - idle + SignedDuration::from_secs(1), now() + hour);
        for s in [&live, &too_old, &other, &idle_one, &almost_idle] {
            store.create_session(s, &[]).await.unwrap();
        }
        let (found, who) = store.session_by_token_hash(&[1; 32]).await.unwrap().unwrap();
        assert_eq!((found.id, who.id), (live.id, u));
        assert_eq!(found, live, "every column round-trips");
        assert!(store.session_by_token_hash(&[9; 32]).await.unwrap().is_none(), "unknown");

        // The sweep ends exactly the idle (15:00) and too old sessions, with their reasons.
        let mut ended = store.end_expired_sessions(now(), None).await.unwrap();
        ended.sort();
        let mut expect = vec![(too_old.id, u), (idle_one.id, u)];
        expect.sort();
        assert_eq!(ended, expect);
        assert!(store.session_by_token_hash(&[2; 32]).await.unwrap().is_none(), "too old");
        assert!(store.session_by_token_hash(&[4; 32]).await.unwrap().is_none(), "idle");
        assert!(store.session_by_token_hash(&[5; 32]).await.unwrap().is_some(), "14:59 idle is alive");

        // Activity only moves forward.
        let later = now() + SignedDuration::from_mins(5);
        store.record_activity(&[(almost_idle.id, later), (live.id, now() - hour)]).await.unwrap();
        assert_eq!(store.session(almost_idle.id).await.unwrap().unwrap().last_activity_at, later);
        assert_eq!(store.session(live.id).await.unwrap().unwrap().last_activity_at, now());

        assert!(store.end_session(live.id, now(), "logout", None, &[]).await.unwrap());
        assert!(!store.end_session(live.id, now(), "logout", None, &[]).await.unwrap(), "already ended");
        assert!(store.session_by_token_hash(&[1; 32]).await.unwrap().is_none(), "revoked");
        assert!(store.revoked_sessions_since(now()).await.unwrap().contains(&live.id));

        let listed: Vec<SessionId> = store.sessions_for_user(u).await.unwrap().iter().map(|s| s.id).collect();
        assert_eq!(listed, vec![almost_idle.id, other.id], "live sessions, newest first");
        let ended = store.end_user_sessions(u, Some(other.id), now(), "password_changed", None).await.unwrap();
        assert_eq!(ended, vec![(almost_idle.id, u)]);
        assert!(store.set_user_active(u, false, now(), &[], None).await.unwrap());
        assert!(store.session_by_token_hash(&[3; 32]).await.unwrap().is_none(), "deactivated");
        store.set_user_active(u, true, now(), &[], None).await.unwrap();
        assert!(store.session_by_token_hash(&[3; 32]).await.unwrap().is_none(), "stays revoked");
        let org = store.user(u).await.unwrap().unwrap().org;
        assert!(store.live_sessions(org, None, 10).await.unwrap().is_empty());
    }
}

each_backend! {
    async fn totp_steps_only_move_forward_and_recovery_codes_work_once(db) {
        let store = db.open().await;
        let u = user(&store, "resident").await;
        assert_eq!(store.totp(u).await.unwrap(), None);
        store.put_pending_totp(u, b"sealed-1", now()).await.unwrap();
        store.put_pending_totp(u, b"sealed-2", now()).await.unwrap();
        let pending = store.totp(u).await.unwrap().unwrap();
        assert_eq!((pending.secret_enc.as_slice(), pending.confirmed_at), (&b"sealed-2"[..], None));
        assert!(!store.advance_totp_step(u, 10).await.unwrap(), "not confirmed yet");
        let hashes: Vec<String> = (0..3).map(|i| format!("hash-{i}")).collect();
        assert!(store.confirm_totp(u, 100, &hashes, now(), &[]).await.unwrap());
        assert!(!store.confirm_totp(u, 101, &hashes, now(), &[]).await.unwrap(), "confirmed once");
        assert!(matches!(store.put_pending_totp(u, b"x", now()).await, Err(StoreError::Conflict(_))));
        assert!(!store.advance_totp_step(u, 100).await.unwrap(), "the confirming code's step is used");
        assert!(store.advance_totp_step(u, 101).await.unwrap());
        assert!(!store.advance_totp_step(u, 101).await.unwrap(), "same step again");
        assert!(!store.advance_totp_step(u, 99).await.unwrap(), "older step");
        assert_eq!(store.totp(u).await.unwrap().unwrap().last_step, Some(101));

        let codes = store.recovery_codes(u).await.unwrap();
        assert_eq!(codes.iter().map(|(i, h)| (*i, h.as_str())).collect::<Vec<_>>(), vec![(0, "hash-0"), (1, "hash-1"), (2, "hash-2")]);
        assert!(store.use_recovery_code(u, 1, now()).await.unwrap());
        assert!(!store.use_recovery_code(u, 1, now()).await.unwrap(), "used once");
        assert_eq!(store.recovery_codes(u).await.unwrap().len(), 2);
        store.replace_recovery_codes(u, &["new".to_owned()], &[]).await.unwrap();
        assert_eq!(store.recovery_codes(u).await.unwrap(), vec![(0, "new".to_owned())]);
        store.remove_second_factors(u, &[]).await.unwrap();
        assert_eq!(store.totp(u).await.unwrap(), None);
        assert!(store.recovery_codes(u).await.unwrap().is_empty());
    }
}

each_backend! {
    async fn passkeys_are_unique_updated_compare_and_set_and_the_last_factor_stays(db) {
        use medhub_core::PasskeyId;
        use medhub_store::{PasskeyDeletion, PasskeyRecord};
        let store = db.open().await;
        let (u, other) = (user(&store, "nurse").await, user(&store, "porter").await);
        let key = |user: UserId, cred: u8, name: &str| PasskeyRecord {
            id: PasskeyId::new_v7(),
            user,
            credential_id: vec![cred; 16],
            passkey: format!("{{\"cred\":{{\"counter\":0,\"n\":{cred}}}}}"),
            name: name.into(),
            created_at: now(),
            last_used_at: None,
        };
        let laptop = key(u, 1, "laptop");
        store.add_passkey(&laptop, &[]).await.unwrap();
        // A credential id is registered once, whoever tries again.
        assert!(matches!(store.add_passkey(&key(other, 1, "copy"), &[]).await, Err(StoreError::Conflict(_))));
        assert_eq!(store.passkeys(u).await.unwrap(), vec![laptop.clone()]);
        assert!(store.passkeys(other).await.unwrap().is_empty());
        assert_eq!(store.passkey_by_credential(&[1; 16]).await.unwrap(), Some(laptop.clone()));
        assert_eq!(store.passkey_by_credential(&[9; 16]).await.unwrap(), None);
        // Compare-and-set: only the writer that saw the current value wins.
        let later = now() + SignedDuration::from_mins(1);
        assert!(store.update_passkey(laptop.id, &laptop.passkey, "{\"v\":2}", later).await.unwrap());
        assert!(!store.update_passkey(laptop.id, &laptop.passkey, "{\"v\":3}", later).await.unwrap(), "stale");
        let stored = store.passkeys(u).await.unwrap().remove(0);
        assert_eq!((stored.passkey.as_str(), stored.last_used_at), ("{\"v\":2}", Some(later)));
        // Deleting: never another user's, never the last factor.
        assert_eq!(store.delete_passkey(other, laptop.id, &[]).await.unwrap(), PasskeyDeletion::NotFound);
        assert_eq!(store.delete_passkey(u, laptop.id, &[]).await.unwrap(), PasskeyDeletion::LastFactor);
        let phone = key(u, 2, "phone");
        store.add_passkey(&phone, &[]).await.unwrap();
        assert_eq!(store.delete_passkey(u, laptop.id, &[]).await.unwrap(), PasskeyDeletion::Deleted);
        assert_eq!(store.delete_passkey(u, laptop.id, &[]).await.unwrap(), PasskeyDeletion::NotFound);
        assert_eq!(store.delete_passkey(u, phone.id, &[]).await.unwrap(), PasskeyDeletion::LastFactor);
        // A confirmed TOTP secret counts as another factor.
        store.put_pending_totp(u, b"sealed", now()).await.unwrap();
        assert_eq!(store.delete_passkey(u, phone.id, &[]).await.unwrap(), PasskeyDeletion::LastFactor, "pending TOTP");
        assert!(store.confirm_totp(u, 1, &[], now(), &[]).await.unwrap());
        store.add_passkey(&key(u, 3, "key"), &[]).await.unwrap();
        assert_eq!(store.delete_passkey(u, phone.id, &[]).await.unwrap(), PasskeyDeletion::Deleted);
        // The administrator's MFA reset removes passkeys too.
        store.remove_second_factors(u, &[]).await.unwrap();
        assert!(store.passkeys(u).await.unwrap().is_empty());
    }
}

each_backend! {
    async fn tickets_work_once_and_expire(db) {
        let store = db.open().await;
        let u = user(&store, "clerk").await;
        let s = session(u, 1, now(), now() + SignedDuration::from_hours(1));
        store.create_session(&s, &[]).await.unwrap();
        let soon = now() + SignedDuration::from_secs(30);
        store.create_ws_ticket(&[7; 32], s.id, soon).await.unwrap();
        store.create_ws_ticket(&[8; 32], s.id, soon).await.unwrap();
        assert_eq!(store.consume_ws_ticket(&[7; 32], now()).await.unwrap(), Some(s.id));
        assert_eq!(store.consume_ws_ticket(&[7; 32], now()).await.unwrap(), None, "single use");
        assert_eq!(store.consume_ws_ticket(&[8; 32], soon).await.unwrap(), None, "expired at 30 s");
        assert_eq!(store.consume_ws_ticket(&[9; 32], now()).await.unwrap(), None, "unknown");
    }
}

each_backend! {
    async fn throttles_invitations_and_the_key_check_persist(db) {
        let store = db.open().await;
        let t = medhub_core::session::Throttle { failures: 6, window_start: now(), locked_until: Some(now() + SignedDuration::from_secs(2)) };
        store.put_throttle("login:acct:alice", &t).await.unwrap();
        let keys = vec!["login:acct:alice".to_owned(), "login:ip:10.0.0.1".to_owned()];
        assert_eq!(store.throttles(&keys).await.unwrap(), vec![("login:acct:alice".to_owned(), t)]);
        store.clear_throttle("login:acct:alice").await.unwrap();
        assert!(store.throttles(&keys).await.unwrap().is_empty());

        let admin = store.user_record_by_username("admin").await.unwrap();
        let by = match admin { Some(a) => a.user.id, None => user(&store, "boss").await };
        let invitee = user(&store, "newbie").await;
        let week = now() + SignedDuration::from_hours(168);
        store.create_invitation(&[5; 32], invitee, by, now(), week, &[]).await.unwrap();
        assert!(store.has_open_invitation(invitee, now()).await.unwrap());
        assert_eq!(store.redeem_invitation(&[6; 32], "phc", now(), None).await.unwrap(), None, "unknown code");
        assert_eq!(store.redeem_invitation(&[5; 32], "phc", week, None).await.unwrap(), None, "expired");
        assert_eq!(store.redeem_invitation(&[5; 32], "phc", now(), None).await.unwrap(), Some(invitee));
        assert_eq!(store.user_record(invitee).await.unwrap().unwrap().password_hash.as_deref(), Some("phc"));
        assert_eq!(store.redeem_invitation(&[5; 32], "phc2", now(), None).await.unwrap(), None, "single use");
        assert!(!store.has_open_invitation(invitee, now()).await.unwrap());

        assert_eq!(store.key_check(None, now()).await.unwrap(), None);
        assert_eq!(store.key_check(Some(b"first"), now()).await.unwrap(), Some(b"first".to_vec()));
        assert_eq!(store.key_check(Some(b"second"), now()).await.unwrap(), Some(b"first".to_vec()), "kept from the first use");
        assert_eq!(store.key_check(None, now()).await.unwrap(), Some(b"first".to_vec()));
    }
}

each_backend! {
    async fn batches_commit_gap_free_sequences_and_events(db) {
        let store = db.open().await;
        let (a, b) = (user(&store, "a").await, user(&store, "b").await);
        let (conv, create_cmd) = create(a, ConversationKind::Direct, &[b]);
        let mut cmds = vec![create_cmd];
        for n in 0..50 {
            cmds.push(send(if n % 2 == 0 { a } else { b }, conv, &format!("t{n}"), &format!("message {n}"), Priority::Routine));
        }
        cmds.push(send(a, conv, "bad", "", Priority::Routine));
        let results = run(&store, cmds).await;
        assert!(matches!(results[51], Err(medhub_core::DomainError::EmptyBody)));
        let seqs: Vec<u64> = results[1..51].iter().map(|r| message_of(r).seq.get()).collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        // Resend across batches: the original comes back and nothing is created.
        let head = store.last_event_id().await.unwrap();
        assert_eq!(head, EventId::new(51));
        let again = run(&store, vec![send(a, conv, "t0", "message 0", Priority::Routine)]).await;
        assert!(matches!(&again[0], Ok(Outcome::MessageSent { duplicate: true, message }) if message.seq == Seq::new(1)));
        assert_eq!(store.last_event_id().await.unwrap(), head);
        let next = run(&store, vec![send(b, conv, "t-next", "next", Priority::Routine)]).await;
        assert_eq!(message_of(&next[0]).seq, Seq::new(51));
        assert_eq!(store.conversation(conv).await.unwrap().unwrap().last_seq, Seq::new(51));
    }
}

each_backend! {
    async fn stored_events_render_exactly_as_committed(db) {
        let store = db.open().await;
        let (a, b, c) = (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await);
        let (conv, create_cmd) = create(a, ConversationKind::Group, &[b]);
        let r = run(&store, vec![create_cmd, send(a, conv, "1", "K+ 6.9 mmol/L", Priority::Critical)]).await;
        let m = message_of(&r[1]);
        let plan = store
            .apply_batch(
                vec![
                    Command::AddMember { actor: Actor::User(a), conversation: conv, user: c, role: MemberRole::ReadOnly },
                    Command::Acknowledge { actor: b, message: m.id, response: AckResponse::CallBack { minutes: 5 } },
                    Command::UpdateReceipt { actor: b, conversation: conv, delivered: Some(Seq::new(1)), read: Some(Seq::new(1)) },
                    Command::SetMemberRole { actor: Actor::User(a), conversation: conv, user: c, role: MemberRole::Member },
                    Command::UpdateConversation { actor: Actor::User(a), conversation: conv, title: Some("Ward 8".into()) },
                    Command::RemoveMember { actor: Actor::User(a), conversation: conv, user: c },
                ],
                now(),
                Limits::default(),
            )
            .await
            .unwrap();
        assert!(plan.results.iter().all(Result::is_ok), "{:?}", plan.results);
        let all = store.events_range(EventId::ZERO, EventId::new(100), 100).await.unwrap();
        assert_eq!(all.len(), 8);
        assert_eq!(&all[2..], &plan.effects.events[..]);
        assert!(matches!(&all[0].kind, EventKind::ConversationCreated { members, .. } if members.len() == 2));
        // A replayed message.created carries the internal acknowledged flag as it is now.
        let acked = medhub_core::model::Message { acknowledged: true, ..m.clone() };
        assert!(matches!(&all[1].kind, EventKind::MessageCreated { message } if **message == acked));
        match &all[4].kind {
            EventKind::ReceiptUpdated { targets, .. } => {
                let mut want = vec![a, b];
                want.sort();
                assert_eq!(targets, &want);
            }
            other => panic!("{other:?}"),
        }
    }
}

each_backend! {
    async fn replay_never_shows_recalled_text(db) {
        let store = db.open().await;
        let (a, b) = (user(&store, "a").await, user(&store, "b").await);
        let (conv, create_cmd) = create(a, ConversationKind::Group, &[b]);
        let r = run(&store, vec![create_cmd, send(a, conv, "1", "wrong patient", Priority::Routine)]).await;
        let m = message_of(&r[1]);
        run(&store, vec![Command::EditMessage { actor: a, message: m.id, body: "still wrong".into() }]).await;
        run(&store, vec![Command::EditMessage { actor: a, message: m.id, body: "third".into() }]).await;
        // Before the recall, the edit events replay their own revision's text.
        let events = store.events_for_user(b, EventId::ZERO, EventId::new(100), 100).await.unwrap();
        let bodies: Vec<Option<String>> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::MessageEdited { body, .. } => Some(body.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(bodies, vec![Some("still wrong".to_owned()), Some("third".to_owned())]);
        // The replayed creation shows the message as created: original text, revision 0.
        let created = events.iter().find_map(|e| match &e.kind {
            EventKind::MessageCreated { message } => Some(message.clone()),
            _ => None,
        });
        let created = created.unwrap();
        assert_eq!((created.body.as_str(), created.revision, created.edited_at), ("wrong patient", 0, None));
        let revisions = store.revisions(m.id).await.unwrap();
        assert_eq!(revisions.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(), vec!["wrong patient", "still wrong"]);
        run(&store, vec![Command::RecallMessage { actor: Actor::User(a), message: m.id }]).await;
        let events = store.events_for_user(b, EventId::ZERO, EventId::new(100), 100).await.unwrap();
        for e in &events {
            match &e.kind {
                EventKind::MessageCreated { message } => assert!(message.recall.is_some()),
                EventKind::MessageEdited { body, .. } => assert_eq!(body, &None),
                _ => {}
            }
        }
        // The text is kept for audit.
        assert_eq!(store.message(m.id).await.unwrap().unwrap().body, "third");
    }
}

each_backend! {
    async fn history_pages_in_both_directions(db) {
        let store = db.open().await;
        let (a, b) = (user(&store, "a").await, user(&store, "b").await);
        let (conv, create_cmd) = create(a, ConversationKind::Direct, &[b]);
        let mut cmds = vec![create_cmd];
        cmds.extend((1..=25).map(|n| send(a, conv, &format!("t{n}"), &format!("m{n}"), Priority::Routine)));
        run(&store, cmds).await;
        let seqs = |v: Vec<medhub_core::model::Message>| v.iter().map(|m| m.seq.get()).collect::<Vec<_>>();
        assert_eq!(seqs(store.messages(conv, HistoryPage::Latest, 5).await.unwrap()), vec![21, 22, 23, 24, 25]);
        assert_eq!(seqs(store.messages(conv, HistoryPage::Before(Seq::new(21)), 5).await.unwrap()), vec![16, 17, 18, 19, 20]);
        assert_eq!(seqs(store.messages(conv, HistoryPage::After(Seq::new(0)), 3).await.unwrap()), vec![1, 2, 3]);
        assert_eq!(seqs(store.messages(conv, HistoryPage::After(Seq::new(24)), 3).await.unwrap()), vec![25]);
        assert!(store.messages(conv, HistoryPage::Before(Seq::new(1)), 3).await.unwrap().is_empty());
    }
}

each_backend! {
    async fn status_and_unread_follow_receipts_and_acks(db) {
        let store = db.open().await;
        let (a, b, c) = (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await);
        let (conv, create_cmd) = create(a, ConversationKind::Group, &[b, c]);
        let r = run(&store, vec![create_cmd, send(a, conv, "1", "call me", Priority::Urgent), send(a, conv, "2", "now", Priority::Routine)]).await;
        let m = message_of(&r[1]);
        run(&store, vec![
            Command::UpdateReceipt { actor: b, conversation: conv, delivered: Some(Seq::new(2)), read: None },
            Command::UpdateReceipt { actor: c, conversation: conv, delivered: None, read: Some(Seq::new(1)) },
            Command::Acknowledge { actor: c, message: m.id, response: AckResponse::Accept },
        ]).await;
        let rows = store.recipients(&m).await.unwrap();
        let by_user: HashMap<UserId, _> = rows.iter().map(|r| (r.user, r)).collect();
        assert_eq!(rows.len(), 2, "the sender is not its own recipient");
        assert_eq!(by_user[&b].member.as_ref().unwrap().delivered_seq, Seq::new(2));
        assert!(by_user[&b].ack.is_none());
        assert_eq!(by_user[&c].ack.unwrap().response, AckResponse::Accept);
        let views = store.conversations_for_user(b).await.unwrap();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].unread, 2);
        let views = store.conversations_for_user(c).await.unwrap();
        assert_eq!(views[0].unread, 1);
        assert_eq!(store.conversations_for_user(a).await.unwrap()[0].unread, 0, "own messages are not unread");
    }
}

each_backend! {
    /// The resume query must give every user exactly what the pure recipient rule gives, over
    /// a history with joins, leaves, re-joins and receipts.
    async fn resume_query_matches_the_recipient_rule(db) {
        let store = db.open().await;
        let mut users = Vec::new();
        for n in 0..5 {
            users.push(user(&store, &format!("u{n}")).await);
        }
        let (g, create_g) = create(users[0], ConversationKind::Group, &[users[1], users[2]]);
        let (d, create_d) = create(users[3], ConversationKind::Direct, &[users[4]]);
        run(&store, vec![create_g, create_d]).await;
        let owner = Actor::User(users[0]);
        let steps: Vec<Vec<Command>> = vec![
            vec![send(users[1], g, "a", "one", Priority::Routine), send(users[3], d, "b", "two", Priority::Routine)],
            vec![Command::AddMember { actor: owner, conversation: g, user: users[3], role: MemberRole::Member }],
            vec![send(users[3], g, "c", "three", Priority::Urgent)],
            vec![Command::UpdateReceipt { actor: users[2], conversation: g, delivered: None, read: Some(Seq::new(2)) }],
            vec![Command::RemoveMember { actor: owner, conversation: g, user: users[1] }],
            vec![send(users[0], g, "d", "four", Priority::Routine)],
            vec![Command::AddMember { actor: owner, conversation: g, user: users[1], role: MemberRole::ReadOnly }],
            vec![Command::UpdateReceipt { actor: users[1], conversation: g, delivered: Some(Seq::new(3)), read: None }],
            vec![Command::RemoveMember { actor: Actor::User(users[3]), conversation: g, user: users[3] }],
            vec![send(users[4], d, "e", "five", Priority::Routine)],
        ];
        for step in steps {
            let r = run(&store, step).await;
            assert!(r.iter().all(Result::is_ok), "{r:?}");
        }
        let head = store.last_event_id().await.unwrap();
        let all = store.events_range(EventId::ZERO, head, 1000).await.unwrap();
        let mut members: HashMap<ConversationId, HashSet<UserId>> = HashMap::new();
        let mut expected: HashMap<UserId, Vec<EventId>> = HashMap::new();
        for e in &all {
            let m = members.entry(e.conversation).or_default();
            for u in recipients(&e.kind, m) {
                expected.entry(u).or_default().push(e.id);
            }
            apply_membership(&e.kind, m);
        }
        for u in &users {
            let mut want = expected.get(u).cloned().unwrap_or_default();
            want.sort();
            let got: Vec<EventId> = store.events_for_user(*u, EventId::ZERO, head, 1000).await.unwrap().iter().map(|e| e.id).collect();
            assert_eq!(got, want, "user {u}");
            // From every cursor, the rest of the stream (paged by 2) is the same suffix.
            for cursor in 0..=head.get() {
                let mut paged = Vec::new();
                let mut after = EventId::new(cursor);
                loop {
                    let page = store.events_for_user(*u, after, head, 2).await.unwrap();
                    let Some(last) = page.last() else { break };
                    after = last.id;
                    paged.extend(page.iter().map(|e| e.id));
                }
                let suffix: Vec<EventId> = want.iter().copied().filter(|id| id.get() > cursor).collect();
                assert_eq!(paged, suffix, "user {u} from cursor {cursor}");
            }
        }
        // members_before agrees with the replayed membership at every event.
        let mut replay: HashMap<ConversationId, HashSet<UserId>> = HashMap::new();
        for e in &all {
            let before = replay.entry(e.conversation).or_default();
            let mut got: Vec<UserId> = store.members_before(e.conversation, e.id).await.unwrap();
            got.sort();
            let mut want: Vec<UserId> = before.iter().copied().collect();
            want.sort();
            assert_eq!(got, want, "members before event {}", e.id);
            apply_membership(&e.kind, before);
        }
    }
}
