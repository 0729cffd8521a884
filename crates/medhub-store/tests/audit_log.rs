//! The audit log as an RFC 9162 Merkle log, on both databases: every record gets the next
//! leaf number and its leaf hash in the appending transaction, the head follows, concurrent
//! appenders never share or skip a number, and `verify_log` finds and names each kind of
//! tampering done to the tables directly (edited, deleted, inserted, reordered, truncated).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::{AuditRecord, LogFault, Outcome, TreeHead};
use medhub_core::merkle;
use medhub_store::audit::{Verdict, verify_log};
use medhub_store::testdb::TestDb;
use medhub_store::{Backend, DynStore, Location, each_backend};

fn record(i: u64) -> AuditRecord {
    AuditRecord {
        actor: Some(medhub_core::UserId::from_uuid(uuid::Uuid::from_u128(u128::from(i) + 1))),
        ip: Some("10.1.2.3".into()),
        org: Some(medhub_core::OrgId::from_uuid(uuid::Uuid::from_u128(7))),
        ..AuditRecord::new(
            Timestamp::from_second(1_800_000_000 + i as i64).unwrap(),
            "http",
            if i.is_multiple_of(3) { Outcome::Deny } else { Outcome::Allow },
        )
        .object("conversation", i)
        .target(format!("GET /api/v1/conversations/{i}"))
    }
}

/// A store with `n` records appended in batches of 1, 2, 3, ….
async fn log_of(db: &TestDb, n: u64) -> DynStore {
    let store = db.open().await;
    let mut i = 0;
    let mut batch = 1;
    while i < n {
        let records: Vec<AuditRecord> = (i..(i + batch).min(n)).map(record).collect();
        store.append_audit(&records).await.unwrap();
        i += records.len() as u64;
        batch += 1;
    }
    store
}

async fn verdict(store: &DynStore) -> Verdict {
    verify_log(store.as_ref(), &[], |_, _| {}).await.unwrap()
}

fn fault(v: Verdict) -> LogFault {
    match v {
        Verdict::Bad { fault, .. } => fault,
        Verdict::Good(g) => panic!("tampering went unnoticed: {g:?}"),
    }
}

/// Runs SQL on the test database behind the store's back, as someone with database access.
async fn tamper(db: &TestDb, sql: &str) {
    match (db.backend(), db.location()) {
        (Backend::Sqlite, Location::Sqlite { data_dir }) => {
            let c = rusqlite::Connection::open(data_dir.join("medhub.db")).unwrap();
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

/// A blob literal in the database's dialect.
fn blob(db: &TestDb, bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match db.backend() {
        Backend::Sqlite => format!("X'{hex}'"),
        Backend::Postgres => format!("'\\x{hex}'::bytea"),
    }
}

each_backend! {
    async fn every_record_gets_the_next_leaf_and_the_head_follows(db) {
        let store = log_of(&db, 20).await;
        let head = store.audit_head().await.unwrap();
        assert_eq!(head.size, 20);
        let entries = store.audit_log(0, 100).await.unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
        let leaves: Vec<merkle::Hash> = entries.iter().map(|e| e.leaf_hash.clone().try_into().unwrap()).collect();
        for (e, leaf) in entries.iter().zip(&leaves) {
            assert_eq!(*leaf, merkle::leaf_hash(&e.record.leaf_data()), "leaf {}", e.seq);
            assert_eq!(e.record, record(e.seq), "the record round-trips");
        }
        assert_eq!(head.tree().unwrap().root(), merkle::root(&leaves));
        // Paging by leaf number.
        let page: Vec<u64> = store.audit_log(7, 3).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(page, vec![7, 8, 9]);
        assert_eq!(verdict(&store).await, Verdict::Good(medhub_store::audit::Verified { size: 20, root: merkle::root(&leaves) }));
    }
}

each_backend! {
    async fn concurrent_appenders_never_share_or_skip_a_number(db) {
        let store = db.open().await;
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for b in 0..5u64 {
                        let records: Vec<AuditRecord> = (0..10).map(|i| record(t * 1000 + b * 10 + i)).collect();
                        store.append_audit(&records).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.audit_head().await.unwrap().size, 400);
        match verdict(&store).await {
            Verdict::Good(v) => assert_eq!(v.size, 400),
            bad => panic!("{bad:?}"),
        }
    }
}

each_backend! {
    async fn each_kind_of_tampering_is_found_and_named(db) {
        let backend = db.backend();
        // Each case on a fresh log of 12 records.
        let fresh = || async move {
            let db = TestDb::new(backend).await;
            let store = log_of(&db, 12).await;
            (db, store)
        };

        let (t, store) = fresh().await;
        tamper(&t, "UPDATE audit_events SET target = 'GET /api/v1/conversations/other' WHERE seq = 4").await;
        assert_eq!(fault(verdict(&store).await), LogFault::LeafMismatch { seq: 4 });

        // Edited, with the leaf hash recomputed to match: the tree no longer matches the head.
        let (t, store) = fresh().await;
        let mut r = store.audit_log(4, 1).await.unwrap().remove(0).record;
        r.outcome = Outcome::Allow;
        r.ip = Some("192.0.2.66".into());
        let leaf = merkle::leaf_hash(&r.leaf_data());
        tamper(&t, &format!("UPDATE audit_events SET outcome = 'allow', ip = '192.0.2.66', leaf_hash = {} WHERE seq = 4", blob(&t, &leaf))).await;
        assert_eq!(fault(verdict(&store).await), LogFault::RootMismatch { size: 12 });

        let (t, store) = fresh().await;
        tamper(&t, "DELETE FROM audit_events WHERE seq = 6").await;
        assert_eq!(fault(verdict(&store).await), LogFault::Gap { expected: 6, found: 7 });

        // Two records swapped together with their numbers: each still matches its own hash.
        let (t, store) = fresh().await;
        tamper(&t, "UPDATE audit_events SET seq = -1 WHERE seq = 2;
                     UPDATE audit_events SET seq = 2 WHERE seq = 3;
                     UPDATE audit_events SET seq = 3 WHERE seq = -1;").await;
        assert_eq!(fault(verdict(&store).await), LogFault::RootMismatch { size: 12 });

        let (t, store) = fresh().await;
        tamper(&t, "DELETE FROM audit_events WHERE seq >= 9").await;
        assert_eq!(fault(verdict(&store).await), LogFault::Truncated { size: 9, head: 12 });

        // A forged record added at the end, hashed correctly.
        let (t, store) = fresh().await;
        let forged = AuditRecord {
            version: 1,
            action: "auth.sign_in".into(),
            actor: None,
            outcome: Outcome::Allow,
            org: None,
            object_type: None,
            object_id: None,
            ..record(99)
        };
        let leaf = merkle::leaf_hash(&forged.leaf_data());
        tamper(&t, &format!(
            "INSERT INTO audit_events (at, action, target, outcome, ip, seq, leaf_hash)
             VALUES ({}, 'auth.sign_in', 'GET /api/v1/conversations/99', 'allow', '10.1.2.3', 12, {})",
            forged.at.as_microsecond(), blob(&t, &leaf))).await;
        assert_eq!(fault(verdict(&store).await), LogFault::Longer { size: 13, head: 12 });

        // The untouched log of this test verifies.
        let store = log_of(&db, 12).await;
        assert!(matches!(verdict(&store).await, Verdict::Good(_)));
    }
}

each_backend! {
    async fn records_from_before_the_log_are_sealed_in_their_order(db) {
        // Records as the store kept them before migration 0012: no number, no leaf hash.
        let store = db.open().await;
        let old: Vec<AuditRecord> = (0..3)
            .map(|i| AuditRecord { version: 1, actor: None, org: None, object_type: None, object_id: None, ..record(i) })
            .collect();
        let rows: Vec<String> = old
            .iter()
            .map(|r| {
                let target = r.target.as_deref().unwrap();
                format!("({}, 'http', '{target}', '{}', '10.1.2.3')", r.at.as_microsecond(), r.outcome.as_str())
            })
            .collect();
        tamper(&db, &format!("INSERT INTO audit_events (at, action, target, outcome, ip) VALUES {}", rows.join(", "))).await;

        // Opening the store (its migration step) seals them, in the order they were written.
        store.migrate().await.unwrap();
        let sealed = store.audit_log(0, 10).await.unwrap();
        assert_eq!(sealed.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(sealed.iter().map(|e| e.record.clone()).collect::<Vec<_>>(), old);
        // New records follow them, and the whole log verifies.
        store.append_audit(&[record(3)]).await.unwrap();
        match verdict(&store).await {
            Verdict::Good(v) => assert_eq!(v.size, 4),
            bad => panic!("{bad:?}"),
        }
    }
}

/// Rewrites the log behind the store's back as a careful attacker would: `edit` changes the
/// records, then every leaf hash and the head are recomputed to match.
async fn rewrite(db: &TestDb, store: &DynStore, edit: impl Fn(&mut Vec<AuditRecord>)) {
    let mut records: Vec<AuditRecord> = store.audit_log(0, 1000).await.unwrap().into_iter().map(|e| e.record).collect();
    edit(&mut records);
    let mut tree = merkle::Tree::new();
    let mut sql = String::from("DELETE FROM audit_events;");
    for (seq, r) in records.iter().enumerate() {
        let leaf = merkle::leaf_hash(&r.leaf_data());
        tree.push(leaf);
        let id = |u: Option<uuid::Uuid>| match (u, db.backend()) {
            (None, _) => "NULL".to_owned(),
            (Some(a), Backend::Sqlite) => blob(db, a.as_bytes()),
            (Some(a), Backend::Postgres) => format!("'{a}'::uuid"),
        };
        let (actor, org) = (id(r.actor.map(|a| a.as_uuid())), id(r.org.map(|o| o.as_uuid())));
        let (kind, object) = (r.object_type.as_deref().unwrap(), r.object_id.as_deref().unwrap());
        sql.push_str(&format!(
            "INSERT INTO audit_events (version, org_id, object_type, object_id, at, actor_id, action, target, outcome,
                 ip, seq, leaf_hash)
             VALUES ({}, {org}, '{kind}', '{object}', {}, {actor}, '{}', '{}', '{}', '{}', {seq}, {});",
            r.version,
            r.at.as_microsecond(),
            r.action,
            r.target.as_deref().unwrap(),
            r.outcome.as_str(),
            r.ip.as_deref().unwrap(),
            blob(db, &leaf)
        ));
    }
    sql.push_str(&format!(
        "UPDATE audit_head SET size = {}, frontier = {} WHERE id = 1;",
        tree.size(),
        blob(db, &tree.frontier().concat())
    ));
    tamper(db, &sql).await;
}

fn exported(store_head: &medhub_store::AuditHead) -> TreeHead {
    TreeHead {
        size: store_head.size,
        root: store_head.tree().unwrap().root(),
        at: Timestamp::from_second(1_800_000_100).unwrap(),
    }
}

each_backend! {
    async fn exported_tree_heads_catch_a_consistent_rewrite(db) {
        let backend = db.backend();
        let fresh = || async move {
            let db = TestDb::new(backend).await;
            let store = log_of(&db, 6).await;
            let at_6 = exported(&store.audit_head().await.unwrap());
            store.append_audit(&(6..12).map(record).collect::<Vec<_>>()).await.unwrap();
            let at_12 = exported(&store.audit_head().await.unwrap());
            (db, store, [at_6, at_12])
        };

        // Record 2 rewritten with every hash and the head made to match: the stored head
        // alone cannot tell; the head exported at size 6 can.
        let (t, store, heads) = fresh().await;
        rewrite(&t, &store, |r| {
            assert_eq!(r[2].outcome, Outcome::Allow);
            r[2].outcome = Outcome::Deny;
        })
        .await;
        assert!(matches!(verdict(&store).await, Verdict::Good(_)), "without exported heads the rewrite passes");
        let found = verify_log(store.as_ref(), &heads, |_, _| {}).await.unwrap();
        assert_eq!(fault(found), LogFault::RootMismatch { size: 6 });

        // The tail cut, and the head rewritten to match.
        let (t, store, heads) = fresh().await;
        rewrite(&t, &store, |r| r.truncate(9)).await;
        assert!(matches!(verdict(&store).await, Verdict::Good(_)));
        let found = verify_log(store.as_ref(), &heads, |_, _| {}).await.unwrap();
        assert_eq!(fault(found), LogFault::Truncated { size: 9, head: 12 });

        // The untouched log passes its exported heads.
        let (_t, store, heads) = fresh().await;
        let found = verify_log(store.as_ref(), &heads, |_, _| {}).await.unwrap();
        assert!(matches!(found, Verdict::Good(v) if v.size == 12), "{found:?}");
    }
}

/// The plan each database chooses for `q`, one line per step.
async fn plan(db: &TestDb, q: &medhub_store::audit::AuditQuery) -> Vec<String> {
    use medhub_store::audit::{Param, search_sql};
    match (db.backend(), db.location()) {
        (Backend::Sqlite, Location::Sqlite { data_dir }) => {
            let (sql, params) = search_sql(q, '?');
            let c = rusqlite::Connection::open(data_dir.join("medhub.db")).unwrap();
            c.execute_batch("ANALYZE").unwrap();
            let values: Vec<rusqlite::types::Value> = params
                .into_iter()
                .map(|p| match p {
                    Param::Uuid(u) => rusqlite::types::Value::Blob(u.as_bytes().to_vec()),
                    Param::Text(t) => rusqlite::types::Value::Text(t),
                    Param::Int(i) => rusqlite::types::Value::Integer(i),
                })
                .collect();
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            st.query_map(rusqlite::params_from_iter(values), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
        (Backend::Postgres, Location::Postgres { url, .. }) => {
            let (sql, params) = search_sql(q, '$');
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            let conn = tokio::spawn(conn);
            // With sequential scans priced out, a scan in the plan means no index serves the query.
            c.batch_execute("ANALYZE audit_events; SET enable_seqscan = off").await.unwrap();
            let values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = params
                .into_iter()
                .map(|p| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                    match p {
                        Param::Uuid(u) => Box::new(u),
                        Param::Text(t) => Box::new(t),
                        Param::Int(i) => Box::new(i),
                    }
                })
                .collect();
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                values.iter().map(|v| &**v as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            let rows = c.query(&format!("EXPLAIN {sql}"), &refs).await.unwrap();
            drop(c);
            conn.await.unwrap().unwrap();
            rows.iter().map(|r| r.get::<_, String>(0)).collect()
        }
        _ => panic!("unexpected test database"),
    }
}

each_backend! {
    async fn every_audit_search_is_served_by_an_index_and_pages_exactly(db) {
        use medhub_store::audit::AuditQuery;
        let store = db.open().await;
        let org = |n: u128| medhub_core::OrgId::from_uuid(uuid::Uuid::from_u128(n));
        // 3,000 records over three organizations, several patients and users.
        let records: Vec<AuditRecord> = (0..3_000u64)
            .map(|i| AuditRecord {
                org: Some(org(u128::from(i % 3) + 1)),
                actor: Some(medhub_core::UserId::from_uuid(uuid::Uuid::from_u128(u128::from(i % 17) + 1))),
                patient_ref: (i % 5 == 0).then(|| format!("P{}", i % 7)),
                ..AuditRecord::new(
                    Timestamp::from_second(1_800_000_000 + (i / 10) as i64).unwrap(),
                    if i % 4 == 0 { "patient.read" } else { "http" },
                    if i % 7 == 0 { Outcome::Deny } else { Outcome::Allow },
                )
                .object("conversation", i % 11)
            })
            .collect();
        for chunk in records.chunks(500) {
            store.append_audit(chunk).await.unwrap();
        }
        let base = AuditQuery::org(org(2), 50);
        let queries = [
            base.clone(),
            AuditQuery { actor: Some(medhub_core::UserId::from_uuid(uuid::Uuid::from_u128(3))), ..base.clone() },
            AuditQuery { patient_ref: Some("P3".into()), ..base.clone() },
            AuditQuery { action: Some("patient.read".into()), outcome: Some(Outcome::Deny), ..base.clone() },
            AuditQuery { object_type: Some("conversation".into()), object_id: Some("4".into()), ..base.clone() },
            AuditQuery {
                since: Some(Timestamp::from_second(1_800_000_050).unwrap()),
                until: Some(Timestamp::from_second(1_800_000_100).unwrap()),
                before: Some((Timestamp::from_second(1_800_000_090).unwrap(), 2_000)),
                ..base.clone()
            },
        ];
        for q in &queries {
            let plan = plan(&db, q).await;
            let scans: Vec<&String> = plan
                .iter()
                .filter(|l| l.contains("Seq Scan") || (l.starts_with("SCAN") && l.contains("audit_events")))
                .collect();
            assert!(scans.is_empty(), "{q:?} scans the table: {plan:?}");
            assert!(plan.iter().any(|l| l.contains("audit_by_org")), "{q:?}: {plan:?}");
        }

        // Each query's pages, followed to the end, are exactly its matching records, newest first.
        for q in &queries[..5] {
            let mut got = Vec::new();
            let mut page = q.clone();
            loop {
                let rows = store.search_audit(&page).await.unwrap();
                let full = rows.len() == page.limit as usize;
                page.before = rows.last().map(|e| (e.record.at, e.seq));
                got.extend(rows.into_iter().map(|e| e.seq));
                if !full {
                    break;
                }
            }
            let mut want: Vec<u64> = (0..3_000u64)
                .filter(|&i| {
                    let r = &records[i as usize];
                    r.org == Some(q.org)
                        && q.actor.is_none_or(|a| r.actor == Some(a))
                        && q.patient_ref.as_ref().is_none_or(|p| r.patient_ref.as_ref() == Some(p))
                        && q.action.as_ref().is_none_or(|a| &r.action == a)
                        && q.outcome.is_none_or(|o| r.outcome == o)
                        && q.object_id.as_ref().is_none_or(|o| r.object_id.as_ref() == Some(o))
                })
                .collect();
            want.sort_by_key(|&i| std::cmp::Reverse((records[i as usize].at, i)));
            assert!(!want.is_empty(), "{q:?}");
            assert_eq!(got, want, "{q:?}");
        }
    }
}

each_backend! {
    async fn a_change_and_its_audit_record_commit_together_or_not_at_all(db) {
        use medhub_core::model::{Org, SystemRole};
        use medhub_core::patient::PatientRef;
        let store = db.open().await;
        store.upsert_builtin_roles(&medhub_core::authz::builtin_roles(), Timestamp::from_second(1_800_000_000).unwrap()).await.unwrap();
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let org = Org { id: medhub_core::OrgId::new_v7(), name: "General".into(), created_at: at, idle_timeout: medhub_core::session::DEFAULT_IDLE_TIMEOUT };
        let admin = medhub_store::testdb::user_record(org.id, "gh.admin", at);
        assert!(store.bootstrap(&org, &admin).await.unwrap());
        let nurse = medhub_store::testdb::user_record(org.id, "gh.nurse", at);
        store.create_user(&nurse).await.unwrap();
        let (admin, nurse) = (admin.user.id, nurse.user.id);
        let patient = PatientRef::parse("MRN-7").unwrap();
        let rec = |action: &str| AuditRecord { org: Some(org.id), actor: Some(admin), ..AuditRecord::new(at, action, Outcome::Success) };
        let size = |store: DynStore| async move { store.audit_head().await.unwrap().size };

        // The log cannot be written: each change fails, and nothing of it is left behind.
        let session = medhub_core::model::Session {
            id: medhub_core::SessionId::new_v7(),
            user: nurse,
            token_hash: [9; 32],
            state: medhub_core::model::SessionState::Active,
            created_at: at,
            last_activity_at: at,
            expires_at: at + SignedDuration::from_hours(12),
            revoked_at: None,
            mfa_at: Some(at),
            ip: None,
            user_agent: None,
        };
        store.create_session(&session, &[]).await.unwrap();
        let killed = medhub_core::model::Session { id: medhub_core::SessionId::new_v7(), token_hash: [8; 32], ..session.clone() };
        store.create_session(&killed, &[]).await.unwrap();
        store.put_pending_totp(nurse, b"sealed", at).await.unwrap();
        let passkey = medhub_store::PasskeyRecord {
            id: medhub_core::PasskeyId::new_v7(),
            user: nurse,
            credential_id: vec![5; 16],
            passkey: "{}".into(),
            name: "badge".into(),
            created_at: at,
            last_used_at: None,
        };
        let river = Org { id: medhub_core::OrgId::new_v7(), name: "River".into(), ..org.clone() };
        let river_admin = medhub_store::testdb::user_record(river.id, "river.admin", at);
        let kill = rec("admin.session_kill").object("session", killed.id);
        let before = size(store.clone()).await;
        let ended = AuditRecord::new(at, "session.end", Outcome::Success).reason("password_reset");
        tamper(&db, "ALTER TABLE audit_head RENAME TO audit_head_away").await;
        assert!(store.end_user_sessions(nurse, None, at, "password_reset", Some(&ended)).await.is_err());
        assert!(store.set_user_roles(nurse, &["charge_nurse".into()], admin, at, &[rec("admin.role_grant")]).await.is_err());
        assert!(store.add_to_care_team(org.id, &patient, nurse, admin, at, &[rec("care_team.add")]).await.is_err());
        assert!(store.set_break_glass_duration(org.id, SignedDuration::from_mins(15), &[rec("admin.settings")]).await.is_err());
        let week = at + SignedDuration::from_hours(168);
        assert!(store.create_invitation(&[7; 32], nurse, admin, at, week, &[rec("admin.invite")]).await.is_err());
        assert!(store.end_session(killed.id, at, "killed", Some(&ended), std::slice::from_ref(&kill)).await.is_err());
        assert!(store.set_user_role(nurse, SystemRole::Admin, &[rec("admin.user_update")]).await.is_err());
        assert!(store.set_user_active(nurse, false, at, &[rec("admin.user_update")], Some(&ended)).await.is_err());
        assert!(store.create_org(&river, &river_admin, &[rec("org.create")]).await.is_err());
        assert!(store.confirm_totp(nurse, 1, &[], at, &[rec("auth.mfa_enrol")]).await.is_err());
        assert!(store.add_passkey(&passkey, &[rec("auth.mfa_enrol")]).await.is_err());
        tamper(&db, "ALTER TABLE audit_head_away RENAME TO audit_head").await;
        assert!(!store.user_roles(nurse).await.unwrap().contains(&"charge_nurse".to_owned()));
        assert!(!store.on_care_team(org.id, &patient, nurse).await.unwrap());
        assert_ne!(store.break_glass_duration(org.id).await.unwrap(), SignedDuration::from_mins(15));
        assert!(!store.has_open_invitation(nurse, at).await.unwrap());
        assert_eq!(size(store.clone()).await, before);
        assert!(store.session(session.id).await.unwrap().is_some_and(|s| s.revoked_at.is_none()), "still live");
        assert!(store.session(killed.id).await.unwrap().is_some_and(|s| s.revoked_at.is_none()), "still live");
        let n = store.user(nurse).await.unwrap().unwrap();
        assert_eq!((n.role, n.active), (SystemRole::User, true));
        assert_eq!(store.orgs().await.unwrap().len(), 1);
        assert!(store.totp(nurse).await.unwrap().unwrap().confirmed_at.is_none());
        assert!(store.passkeys(nurse).await.unwrap().is_empty());

        // With the log back, each change and its record land together.
        assert!(store.end_session(killed.id, at, "killed", Some(&ended), std::slice::from_ref(&kill)).await.unwrap());
        // Ended already: no change, so no record.
        assert!(!store.end_session(killed.id, at, "killed", Some(&ended), &[kill]).await.unwrap());
        assert_eq!(store.end_user_sessions(nurse, None, at, "password_reset", Some(&ended)).await.unwrap(), vec![(session.id, nurse)]);
        store.set_user_roles(nurse, &["charge_nurse".into()], admin, at, &[rec("admin.role_grant")]).await.unwrap();
        assert!(store.add_to_care_team(org.id, &patient, nurse, admin, at, &[rec("care_team.add")]).await.unwrap());
        // Already on the team: no change, so no record.
        assert!(!store.add_to_care_team(org.id, &patient, nurse, admin, at, &[rec("care_team.add")]).await.unwrap());
        store.set_break_glass_duration(org.id, SignedDuration::from_mins(15), &[rec("admin.settings")]).await.unwrap();
        store.create_invitation(&[7; 32], nurse, admin, at, week, &[rec("admin.invite")]).await.unwrap();
        assert!(store.has_open_invitation(nurse, at).await.unwrap());
        store.set_user_role(nurse, SystemRole::Admin, &[rec("admin.user_update")]).await.unwrap();
        // Deactivation ends the session that is live again, with its own record.
        let again = medhub_core::model::Session { id: medhub_core::SessionId::new_v7(), token_hash: [7; 32], ..session.clone() };
        store.create_session(&again, &[]).await.unwrap();
        assert!(store.set_user_active(nurse, false, at, &[rec("admin.user_update")], Some(&ended)).await.unwrap());
        assert!(store.session(again.id).await.unwrap().is_none(), "ended by the deactivation");
        // An unknown user: no change, so no record.
        let nobody = medhub_core::UserId::new_v7();
        assert!(!store.set_user_active(nobody, false, at, &[rec("admin.user_update")], Some(&ended)).await.unwrap());
        store.create_org(&river, &river_admin, &[rec("org.create")]).await.unwrap();
        assert!(store.confirm_totp(nurse, 1, &[], at, &[rec("auth.mfa_enrol")]).await.unwrap());
        store.add_passkey(&passkey, &[rec("auth.mfa_enrol")]).await.unwrap();
        let n = store.user(nurse).await.unwrap().unwrap();
        assert_eq!((n.role, n.active), (SystemRole::Admin, false));
        assert_eq!(store.orgs().await.unwrap().len(), 2);
        assert!(store.totp(nurse).await.unwrap().unwrap().confirmed_at.is_some());

        // Deleting a passkey (TOTP remains, so it is not the last factor), password and
        // recovery-code changes, an accepted invitation and a session's second factor also
        // fail closed.
        store.set_user_active(nurse, true, at, &[], None).await.unwrap();
        let pending = medhub_core::model::Session {
            id: medhub_core::SessionId::new_v7(),
            token_hash: [6; 32],
            state: medhub_core::model::SessionState::MfaRequired,
            mfa_at: None,
            ..session.clone()
        };
        store.create_session(&pending, &[]).await.unwrap();
        let accepted = AuditRecord::new(at, "auth.invite_accept", Outcome::Success);
        let draft = medhub_core::handoff::Draft {
            to: admin,
            patients: vec![],
            conversations: vec![medhub_core::ConversationId::new_v7()],
        };
        let handoff = medhub_core::handoff::give(medhub_core::HandoffId::new_v7(), org.id, nurse, draft, at).unwrap();
        let cancelled = medhub_core::handoff::cancel(&handoff, nurse, at).unwrap();
        let mid = size(store.clone()).await;
        tamper(&db, "ALTER TABLE audit_head RENAME TO audit_head_away").await;
        assert!(store.delete_passkey(nurse, passkey.id, &[rec("auth.passkey_delete")]).await.is_err());
        assert!(store.set_password(admin, "new-phc", false, &[rec("auth.password_change")]).await.is_err());
        assert!(store.replace_recovery_codes(nurse, &["code".into()], &[rec("auth.recovery_codes")]).await.is_err());
        assert!(store.redeem_invitation(&[7; 32], "invited-phc", at, Some(&accepted)).await.is_err());
        assert!(store.activate_session(pending.id, &[5; 32], at, &[rec("auth.mfa")]).await.is_err());
        let active = medhub_core::model::SessionState::Active;
        assert!(store.set_session_state(pending.id, active, Some(at), &[rec("auth.step_up")]).await.is_err());
        assert!(store.create_handoff(&handoff, &[rec("handoff.give")]).await.is_err());
        tamper(&db, "ALTER TABLE audit_head_away RENAME TO audit_head").await;
        assert!(store.handoff(handoff.id).await.unwrap().is_none());
        assert_eq!(store.passkeys(nurse).await.unwrap().len(), 1);
        assert_ne!(store.user_record(admin).await.unwrap().unwrap().password_hash.as_deref(), Some("new-phc"));
        assert!(store.recovery_codes(nurse).await.unwrap().is_empty());
        assert!(store.has_open_invitation(nurse, at).await.unwrap());
        assert_eq!(store.session(pending.id).await.unwrap().unwrap().state, medhub_core::model::SessionState::MfaRequired);
        assert_eq!(size(store.clone()).await, mid);
        let deleted = store.delete_passkey(nurse, passkey.id, &[rec("auth.passkey_delete")]).await.unwrap();
        assert_eq!(deleted, medhub_store::PasskeyDeletion::Deleted);
        assert!(store.passkeys(nurse).await.unwrap().is_empty());
        store.set_password(admin, "new-phc", false, &[rec("auth.password_change")]).await.unwrap();
        store.replace_recovery_codes(nurse, &["code".into()], &[rec("auth.recovery_codes")]).await.unwrap();
        assert_eq!(store.redeem_invitation(&[7; 32], "invited-phc", at, Some(&accepted)).await.unwrap(), Some(nurse));
        assert!(store.activate_session(pending.id, &[5; 32], at, &[rec("auth.mfa")]).await.unwrap());
        store.set_session_state(pending.id, active, Some(at), &[rec("auth.step_up")]).await.unwrap();
        store.create_handoff(&handoff, &[rec("handoff.give")]).await.unwrap();
        tamper(&db, "ALTER TABLE audit_head RENAME TO audit_head_away").await;
        assert!(store.close_handoff(&cancelled, &[rec("handoff.cancel")]).await.is_err());
        tamper(&db, "ALTER TABLE audit_head_away RENAME TO audit_head").await;
        assert_eq!(store.handoff(handoff.id).await.unwrap().unwrap().state, medhub_core::handoff::HandoffState::Given);
        assert!(store.close_handoff(&cancelled, &[rec("handoff.cancel")]).await.unwrap());
        // Closed already: no change, so no record.
        assert!(!store.close_handoff(&cancelled, &[rec("handoff.cancel")]).await.unwrap());
        assert_eq!(store.handoff(handoff.id).await.unwrap().unwrap(), cancelled);
        assert_eq!(store.user_record(admin).await.unwrap().unwrap().password_hash.as_deref(), Some("new-phc"));
        assert_eq!(store.recovery_codes(nurse).await.unwrap().len(), 1);
        assert!(!store.has_open_invitation(nurse, at).await.unwrap());
        assert_eq!(store.session(pending.id).await.unwrap().unwrap().state, active);

        let log = store.audit_log(before, 100).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|e| e.record.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "session.end",
                "admin.session_kill",
                "session.end",
                "admin.role_grant",
                "care_team.add",
                "admin.settings",
                "admin.invite",
                "admin.user_update",
                "session.end",
                "admin.user_update",
                "org.create",
                "auth.mfa_enrol",
                "auth.mfa_enrol",
                "auth.passkey_delete",
                "auth.password_change",
                "auth.recovery_codes",
                "auth.invite_accept",
                "auth.mfa",
                "auth.step_up",
                "handoff.give",
                "handoff.cancel",
            ]
        );
        let invited = &log[16].record;
        assert_eq!((invited.actor, invited.org, invited.object_id.clone()), (Some(nurse), Some(org.id), Some(nurse.to_string())));
        let kill_end = &log[0].record;
        assert_eq!((kill_end.session, kill_end.reason.as_deref()), (Some(killed.id), Some("password_reset")));
        assert_eq!(log[1].record.object_id, Some(killed.id.to_string()));
        let end = &log[2].record;
        assert_eq!((end.actor, end.session, end.org), (Some(nurse), Some(session.id), Some(org.id)));
        assert_eq!((end.object_type.as_deref(), end.reason.as_deref()), (Some("session"), Some("password_reset")));
        assert_eq!(log[8].record.session, Some(again.id), "the deactivation's session end");
        assert!(matches!(verdict(&store).await, Verdict::Good(_)));
    }
}
