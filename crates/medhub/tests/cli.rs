//! The real binary's operator commands on both databases: `migrate`, `check-config` and
//! `admin` (users, conversations, memberships), as a deployment script would use them, and
//! their errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use medhub_store::each_backend;
use medhub_store::testdb::TestDb;
use serde_json::Value;

/// The store arguments for `db`.
fn store_args(db: &TestDb) -> Vec<String> {
    match db.location() {
        medhub_store::Location::Sqlite { data_dir } => vec!["--data-dir".into(), data_dir.display().to_string()],
        medhub_store::Location::Postgres { url, .. } => {
            vec!["--database-url".into(), url.clone(), "--data-dir".into(), db.files_dir().display().to_string()]
        }
    }
}

/// Runs `medhub ARGS… STORE-ARGS` with `stdin` fed in; logging kept quiet.
fn medhub(db: &TestDb, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_medhub"))
        .args(args)
        .args(store_args(db))
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn medhub");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// The JSON lines of an output, skipping the bootstrap announcement.
fn json_lines(s: &str) -> Vec<Value> {
    s.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect()
}

each_backend! {
    async fn an_operator_scripts_a_deployment_with_the_cli(db) {
        // migrate: on an empty store, then again (idempotent).
        ok(&medhub(&db, &["migrate"], None));
        ok(&medhub(&db, &["migrate"], None));

        // Users: a generated one-time password, and one read from standard input.
        let nurse = json_lines(&ok(&medhub(&db, &["admin", "user", "create", "nurse", "--display-name", "Night Nurse", "--json"], None)));
        let nurse = nurse.iter().find(|v| v["username"] == "nurse").expect("the created user");
        assert!(nurse["one_time_password"].as_str().unwrap().len() >= 15);
        let doc_password = "correct horse battery staple";
        let doc = json_lines(&ok(&medhub(
            &db,
            &["admin", "user", "create", "doc", "--display-name", "Dr Doc", "--password-stdin", "--json"],
            Some(&format!("{doc_password}\n")),
        )));
        assert!(doc[0].get("one_time_password").is_none_or(Value::is_null), "{doc:?}");
        let taken = failed(&medhub(&db, &["admin", "user", "create", "nurse", "--display-name", "X"], None));
        assert!(taken.contains("already taken"), "{taken}");
        let short = failed(&medhub(&db, &["admin", "user", "create", "intern", "--display-name", "I", "--password-stdin"], Some("short\n")));
        assert!(short.contains("password"), "{short}");

        let users = json_lines(&ok(&medhub(&db, &["admin", "user", "list", "--json"], None)));
        let names: Vec<&str> = users.iter().map(|u| u["username"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["admin", "doc", "nurse"]);

        // A channel with an owner; members added, re-roled, removed.
        let created = json_lines(&ok(&medhub(
            &db,
            &["admin", "conversation", "create", "--kind", "channel", "--title", "Cardiology on call", "--owner", "nurse", "--json"],
            None,
        )));
        let conv = created[0]["id"].as_str().unwrap().to_owned();
        ok(&medhub(&db, &["admin", "member", "add", &conv, "doc", "--role", "read-only"], None));
        let members = json_lines(&ok(&medhub(&db, &["admin", "member", "list", &conv, "--json"], None)));
        let roles: Vec<(&str, &str)> =
            members.iter().map(|m| (m["username"].as_str().unwrap(), m["role"].as_str().unwrap())).collect();
        assert_eq!(roles, vec![("nurse", "owner"), ("doc", "read_only")]);
        ok(&medhub(&db, &["admin", "member", "role", &conv, "doc", "member"], None));
        let members = json_lines(&ok(&medhub(&db, &["admin", "member", "list", &conv, "--json"], None)));
        assert_eq!(members[1]["role"], "member");
        ok(&medhub(&db, &["admin", "member", "remove", &conv, "doc"], None));
        let members = json_lines(&ok(&medhub(&db, &["admin", "member", "list", &conv, "--json"], None)));
        assert_eq!(members.len(), 1);
        let nobody = failed(&medhub(&db, &["admin", "member", "add", &conv, "nobody"], None));
        assert!(nobody.contains("no user named \"nobody\""), "{nobody}");
        let bad_conv = failed(&medhub(&db, &["admin", "member", "list", "not-a-uuid"], None));
        assert!(!bad_conv.is_empty());

        // Deactivation shows in the list.
        ok(&medhub(&db, &["admin", "user", "deactivate", "nurse"], None));
        let users = json_lines(&ok(&medhub(&db, &["admin", "user", "list", "--json"], None)));
        let nurse = users.iter().find(|u| u["username"] == "nurse").unwrap();
        assert_eq!(nurse["active"], false);

        // check-config: the effective settings, with the database password redacted;
        // a bad value from the environment is named.
        let out = Command::new(env!("CARGO_BIN_EXE_medhub"))
            .args(["check-config", "--database-url", "postgres://medhub:s3cret-pw@db.example/medhub"])
            .output()
            .unwrap();
        let shown = ok(&out);
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("postgres://medhub:<redacted>@db.example/medhub"), "{shown}");
        let out = Command::new(env!("CARGO_BIN_EXE_medhub"))
            .args(["check-config"])
            .env("MEDHUB__AUTH__SESSION_TTL_HOURS", "0")
            .output()
            .unwrap();
        let err = failed(&out);
        assert!(err.contains("auth.session_ttl_hours"), "{err}");
    }
}

each_backend! {
    async fn an_operator_creates_organizations_and_their_users(db) {
        // The first command bootstraps the first organization; a second one comes from the CLI.
        let first = json_lines(&ok(&medhub(&db, &["admin", "org", "list", "--json"], None)));
        assert_eq!(first.len(), 1, "{first:?}");
        let created = json_lines(&ok(&medhub(
            &db,
            &["admin", "org", "create", "Riverside Clinic", "--admin", "river.admin", "--json"],
            None,
        )));
        assert_eq!(created[0]["name"], "Riverside Clinic");
        assert_eq!(created[0]["admin_username"], "river.admin");
        assert!(created[0]["one_time_password"].as_str().is_some_and(|p| p.len() >= 16), "{created:?}");
        let orgs = json_lines(&ok(&medhub(&db, &["admin", "org", "list", "--json"], None)));
        let names: Vec<&str> = orgs.iter().map(|o| o["name"].as_str().unwrap()).collect();
        assert_eq!(names[1], "Riverside Clinic", "oldest first: {names:?}");
        assert_eq!(orgs[1]["idle_timeout_minutes"], 15);

        // Names are unique whatever the letter case; usernames across the server.
        let err = failed(&medhub(&db, &["admin", "org", "create", "riverside CLINIC", "--admin", "x.admin"], None));
        assert!(err.contains("organization with this name exists"), "{err}");
        let err = failed(&medhub(&db, &["admin", "org", "create", "Hilltop", "--admin", "river.admin"], None));
        assert!(err.to_lowercase().contains("username"), "{err}");
        assert_eq!(json_lines(&ok(&medhub(&db, &["admin", "org", "list", "--json"], None))).len(), 2);

        // Users go to the organization named, and the list can be narrowed to one.
        ok(&medhub(&db, &["admin", "user", "create", "river.nurse", "--display-name", "R Nurse", "--org", "riverside clinic", "--no-password"], None));
        ok(&medhub(&db, &["admin", "user", "create", "gh.nurse", "--display-name", "G Nurse", "--no-password"], None));
        let river = json_lines(&ok(&medhub(&db, &["admin", "user", "list", "--org", "Riverside Clinic", "--json"], None)));
        let names: Vec<&str> = river.iter().map(|u| u["username"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["river.admin", "river.nurse"]);
        let all = json_lines(&ok(&medhub(&db, &["admin", "user", "list", "--json"], None)));
        let gh = all.iter().find(|u| u["username"] == "gh.nurse").unwrap();
        assert_eq!(gh["org"], orgs[0]["name"], "{gh}");
        let err = failed(&medhub(&db, &["admin", "user", "list", "--org", "Nowhere"], None));
        assert!(err.contains("no organization named"), "{err}");
    }
}

each_backend! {
    async fn audit_verify_checks_the_log_and_names_the_first_bad_record(db) {
        // A log of 5 records, written as the server writes them.
        let store = db.open().await;
        let records: Vec<medhub_core::audit::AuditRecord> = (0..5)
            .map(|i| medhub_core::audit::AuditRecord {
                ip: Some("10.0.0.7".into()),
                ..medhub_core::audit::AuditRecord::new(
                    jiff::Timestamp::from_second(1_800_000_000 + i).unwrap(),
                    "auth.sign_in",
                    medhub_core::audit::Outcome::Success,
                )
                .target(format!("user {i}"))
            })
            .collect();
        store.append_audit(&records).await.unwrap();
        let out = json_lines(&ok(&medhub(&db, &["audit", "verify", "--json"], None)));
        assert_eq!(out[0]["ok"], true, "{out:?}");
        assert_eq!(out[0]["records"], 5);
        assert_eq!(out[0]["tree_heads"], 0, "none exported yet");

        // A signed tree head, on demand: printed, and appended to the export file, which
        // verification then uses; it pins the log with this server's public key only.
        let head = json_lines(&ok(&medhub(&db, &["audit", "sign-head"], None)));
        assert_eq!(head[0]["size"], 5, "{head:?}");
        let key = ok(&medhub(&db, &["audit", "public-key"], None)).trim().to_owned();
        assert_eq!(key.len(), 64, "{key}");
        let out = json_lines(&ok(&medhub(&db, &["audit", "verify", "--json", "--public-key", &key], None)));
        assert_eq!((&out[0]["ok"], &out[0]["tree_heads"]), (&serde_json::json!(true), &serde_json::json!(1)), "{out:?}");
        let other = format!("{}{}", if key.starts_with('0') { '1' } else { '0' }, &key[1..]);
        let err = failed(&medhub(&db, &["audit", "verify", "--public-key", &other], None));
        assert!(err.contains("tree head on line 1") || err.contains("not a valid Ed25519 key"), "{err}");

        // Someone with database access edits record 2.
        let sql = "UPDATE audit_events SET target = 'user 9' WHERE seq = 2";
        match db.location() {
            medhub_store::Location::Sqlite { data_dir } => {
                rusqlite::Connection::open(data_dir.join("medhub.db")).unwrap().execute_batch(sql).unwrap();
            }
            medhub_store::Location::Postgres { url, .. } => {
                let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                let conn = tokio::spawn(conn);
                c.batch_execute(sql).await.unwrap();
                drop(c);
                conn.await.unwrap().unwrap();
            }
        }
        let out = medhub(&db, &["audit", "verify", "--json"], None);
        let err = failed(&out);
        assert!(err.contains("record 2 does not match its leaf hash"), "{err}");
        let report = json_lines(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(report[0]["fault"], serde_json::json!({"kind": "leaf_mismatch", "seq": 2}), "{report:?}");
        assert_eq!(report[0]["records_checked"], 2);
    }
}

each_backend! {
    async fn audit_report_writes_a_compliance_report_and_records_it(db) {
        // The first command bootstraps the organization; a user of it fails to sign in.
        let orgs = json_lines(&ok(&medhub(&db, &["admin", "org", "list", "--json"], None)));
        let org_name = orgs[0]["name"].as_str().unwrap().to_owned();
        ok(&medhub(&db, &["admin", "user", "create", "gh.nurse", "--display-name", "G Nurse", "--no-password"], None));
        let store = db.open().await;
        let user = store.user_record_by_username("gh.nurse").await.unwrap().unwrap().user;
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let failed_at = |t: &str, reason: &str| medhub_core::audit::AuditRecord {
            org: Some(user.org),
            actor: Some(user.id),
            ip: Some("=cmd|' /C calc'!A0".into()),
            ..medhub_core::audit::AuditRecord::new(at(t), "auth.sign_in", medhub_core::audit::Outcome::Failure)
                .reason(reason)
        };
        store
            .append_audit(&[
                failed_at("2027-01-01T10:00:00Z", "invalid_credentials"),
                failed_at("2027-01-01T10:00:05Z", "rate_limited"),
                failed_at("2027-01-02T10:00:00Z", "invalid_credentials"),
            ])
            .await
            .unwrap();

        let period = ["--since", "2027-01-01", "--until", "2027-01-01"];
        let csv = ok(&medhub(&db, &[&["audit", "report", "failed-sign-ins", "--org", &org_name, "--format", "csv"][..], &period[..]].concat(), None));
        let mut r = csv::Reader::from_reader(csv.as_bytes());
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2, "the first day only: {csv}");
        let headers = r.headers().unwrap().clone();
        let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
        assert_eq!((&rows[0][col("user")], &rows[0][col("username")]), ("G Nurse", "gh.nurse"));
        assert_eq!(&rows[1][col("basis or reason")], "rate_limited");
        assert_eq!(&rows[0][col("address")], "'=cmd|' /C calc'!A0", "a formula is neutralized");

        let out = db.files_dir().join("failed.html");
        ok(&medhub(&db, &[&["audit", "report", "failed-sign-ins", "--org", &org_name, "--out", out.to_str().unwrap()][..], &period[..]].concat(), None));
        let html = std::fs::read_to_string(&out).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("Failed sign-ins and lockouts"), "{html}");
        assert!(html.contains("<title>2027-01-01: 2</title>"), "one bar, two failures");

        // Each report is in the audit log as the operator's.
        let log = store.audit_log(0, 100).await.unwrap();
        let reports: Vec<_> = log.iter().filter(|e| e.record.action == "audit.report").collect();
        assert_eq!(reports.len(), 2);
        assert!(reports.iter().all(|e| e.record.reason.as_deref() == Some("operator") && e.record.org == Some(user.org)));

        // Errors say what is wrong.
        let err = failed(&medhub(&db, &["audit", "report", "patient-access", "--org", &org_name], None));
        assert!(err.contains("needs patient"), "{err}");
        let err = failed(&medhub(&db, &["audit", "report", "break-glass", "--org", "Nowhere"], None));
        assert!(err.contains("no organization is named"), "{err}");
        let err = failed(&medhub(&db, &["audit", "report", "everything", "--org", &org_name], None));
        assert!(err.contains("unknown report"), "{err}");
        let err = failed(&medhub(&db, &["audit", "report", "user-activity", "--org", &org_name, "--user", "nobody.here"], None));
        assert!(err.contains("is not a user of"), "{err}");
    }
}

each_backend! {
    async fn audit_search_finds_an_organizations_records_and_records_the_search(db) {
        ok(&medhub(&db, &["admin", "org", "list", "--json"], None));
        ok(&medhub(&db, &["admin", "org", "create", "Riverside Clinic", "--admin", "river.admin"], None));
        let orgs = json_lines(&ok(&medhub(&db, &["admin", "org", "list", "--json"], None)));
        let (home, river) = (&orgs[0], &orgs[1]);
        let id = |o: &serde_json::Value| medhub_core::OrgId::from_uuid(o["id"].as_str().unwrap().parse().unwrap());
        let store = db.open().await;
        let records: Vec<medhub_core::audit::AuditRecord> = (0..6)
            .map(|i| medhub_core::audit::AuditRecord {
                org: Some(if i % 2 == 0 { id(home) } else { id(river) }),
                ..medhub_core::audit::AuditRecord::new(
                    jiff::Timestamp::from_second(1_800_000_000 + i).unwrap(),
                    "patient.read",
                    medhub_core::audit::Outcome::Allow,
                )
                .patient(format!("P{}", i % 3))
            })
            .collect();
        store.append_audit(&records).await.unwrap();

        let name = home["name"].as_str().unwrap();
        let found = json_lines(&ok(&medhub(&db, &["audit", "search", "--org", name, "--action", "patient.read", "--json"], None)));
        let at: Vec<&str> = found.iter().map(|e| e["at"].as_str().unwrap()).collect();
        assert_eq!(at, ["2027-01-15T08:00:04Z", "2027-01-15T08:00:02Z", "2027-01-15T08:00:00Z"], "{found:?}");
        let p0 = json_lines(&ok(&medhub(&db, &["audit", "search", "--org", "riverside clinic", "--patient", "P0", "--json"], None)));
        assert_eq!(p0.len(), 1, "{p0:?}");
        assert_eq!(p0[0]["at"], "2027-01-15T08:00:03Z");
        // The search itself is in the log, with the patient it named and the operator as its reason.
        let searches = json_lines(&ok(&medhub(&db, &["audit", "search", "--org", "Riverside Clinic", "--action", "audit.search", "--json"], None)));
        assert_eq!(searches.len(), 1, "{searches:?}");
        assert_eq!((&searches[0]["patient_ref"], &searches[0]["reason"]), (&serde_json::json!("P0"), &serde_json::json!("operator")));
        // Pages: two at a time, with the cursor printed for the next.
        let out = medhub(&db, &["audit", "search", "--org", name, "--action", "patient.read", "--limit", "2"], None);
        let more = String::from_utf8_lossy(&out.stderr).into_owned();
        let cursor = more
            .lines()
            .find_map(|l| l.strip_prefix("more: --before "))
            .unwrap_or_else(|| panic!("{more}"))
            .to_owned();
        let rest = ok(&medhub(&db, &["audit", "search", "--org", name, "--action", "patient.read", "--before", &cursor], None));
        assert_eq!(rest.lines().count(), 1, "{rest}");
        // Bad input is refused with a clear message.
        let err = failed(&medhub(&db, &["audit", "search", "--org", "Nowhere"], None));
        assert!(err.contains("no organization named"), "{err}");
        let err = failed(&medhub(&db, &["audit", "search", "--org", name, "--outcome", "maybe"], None));
        assert!(err.contains("--outcome must be"), "{err}");
        let err = failed(&medhub(&db, &["audit", "search", "--org", name, "--limit", "0"], None));
        assert!(err.contains("limit must be between 1 and 500"), "{err}");
    }
}

each_backend! {
    async fn retention_cli_sets_policies_lists_holds_and_expires(db) {
        use jiff::{SignedDuration, Timestamp};
        use medhub_core::model::{ConversationKind, MemberRole};
        use medhub_core::plan::{Command as Cmd, CreateConversation, Limits, SendMessage};
        use medhub_core::policy::Actor;
        use medhub_core::retention::HoldScope;
        use medhub_core::{ClientTxnId, ConversationId, LegalHoldId, MessageId, UserId};

        let ann = json_lines(&ok(&medhub(&db, &["admin", "user", "create", "ann", "--display-name", "Dr Ann", "--json"], None)));
        let bob = json_lines(&ok(&medhub(&db, &["admin", "user", "create", "bob", "--display-name", "Bob", "--json"], None)));
        let id = |v: &[Value]| UserId::from_uuid(v[0]["id"].as_str().unwrap().parse().unwrap());
        let (ann, bob) = (id(&ann), id(&bob));

        // Policies: bounded, per class, `forever` removes one.
        let err = failed(&medhub(&db, &["retention", "policy", "set", "clinical", "30"], None));
        assert!(err.contains("between 2190 and 36500 days"), "{err}");
        let err = failed(&medhub(&db, &["retention", "policy", "set", "email", "30"], None));
        assert!(err.contains("class must be clinical, direct, group or channel"), "{err}");
        ok(&medhub(&db, &["retention", "policy", "set", "group", "10"], None));
        ok(&medhub(&db, &["retention", "policy", "set", "group", "forever"], None));
        let out = ok(&medhub(&db, &["retention", "policy", "set", "direct", "30"], None));
        assert!(out.contains("direct kept 30 days"), "{out}");
        let listed = json_lines(&ok(&medhub(&db, &["retention", "policy", "list", "--json"], None)));
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!((&listed[0]["class"], &listed[0]["days"]), (&serde_json::json!("direct"), &serde_json::json!(30)));

        // Two direct conversations from 40 days ago; a compliance officer holds one of them.
        let store = db.open().await;
        let org = store.org().await.unwrap().unwrap();
        let old = Timestamp::now() - SignedDuration::from_hours(24 * 40);
        let mut messages = Vec::new();
        for (i, other) in [bob, UserId::from_uuid(uuid_of(&ok(&medhub(&db, &["admin", "user", "create", "cat", "--display-name", "Cat", "--json"], None))))].into_iter().enumerate() {
            let conv = ConversationId::new_v7();
            let create = Cmd::CreateConversation(CreateConversation {
                id: conv,
                actor: Actor::User(ann),
                kind: ConversationKind::Direct,
                title: None,
                members: vec![(other, MemberRole::Member)],
                patient: None,
            });
            let message = MessageId::new_v7();
            let send = Cmd::SendMessage(SendMessage {
                id: message,
                actor: ann,
                conversation: conv,
                client_txn_id: ClientTxnId::parse(&format!("m{i}")).unwrap(),
                body: format!("Old chat {i}"),
                priority: medhub_core::model::Priority::Routine,
                reply_to: None,
            });
            let plan = store.apply_batch(vec![create, send], old, Limits::default()).await.unwrap();
            assert!(plan.results.iter().all(Result::is_ok), "{:?}", plan.results);
            messages.push((conv, message));
        }
        let hold = medhub_store::LegalHold {
            id: LegalHoldId::new_v7(),
            org: org.id,
            scope: HoldScope::Conversation(messages[1].0),
            reason: "Matter 2026-9: preserve Ann and Cat's chat".into(),
            created_by: ann,
            created_at: old,
            lifted: None,
        };
        store.create_legal_hold(&hold, &[]).await.unwrap();
        let holds = json_lines(&ok(&medhub(&db, &["retention", "holds", "--json"], None)));
        assert_eq!(holds.len(), 1, "{holds:?}");
        assert_eq!((&holds[0]["scope"], &holds[0]["state"]), (&serde_json::json!("conversation"), &serde_json::json!("active")));

        // The expiry on demand: the unheld chat goes, the held one stays; again, nothing.
        let done = json_lines(&ok(&medhub(&db, &["retention", "expire", "--json"], None)));
        assert_eq!((&done[0]["removed"], &done[0]["held"]), (&serde_json::json!(1), &serde_json::json!(1)), "{done:?}");
        let gone = store.message(messages[0].1).await.unwrap().unwrap();
        assert!(gone.body.is_empty() && gone.removal.is_some());
        assert_eq!(store.message(messages[1].1).await.unwrap().unwrap().body, "Old chat 1");
        let again = json_lines(&ok(&medhub(&db, &["retention", "expire", "--json"], None)));
        assert_eq!(again[0]["removed"], 0);
        // Every step is in the audit log, and the log still verifies.
        let actions: Vec<String> =
            store.audit_events(0, 10_000).await.unwrap().into_iter().map(|(_, r)| r.action).collect();
        assert!(actions.iter().any(|a| a == "retention.policy_set") && actions.iter().any(|a| a == "retention.expire"));
        let out = json_lines(&ok(&medhub(&db, &["audit", "verify", "--json"], None)));
        assert_eq!(out[0]["ok"], true, "{out:?}");
    }
}

fn uuid_of(out: &str) -> uuid::Uuid {
    json_lines(out)[0]["id"].as_str().unwrap().parse().unwrap()
}

each_backend! {
    async fn an_operator_manages_on_call_schedules_with_the_cli(db) {
        ok(&medhub(&db, &["migrate"], None));
        let nurse = uuid_of(&ok(&medhub(&db, &["admin", "user", "create", "nurse.kim", "--display-name", "Kim", "--json"], None)));
        let doc = uuid_of(&ok(&medhub(&db, &["admin", "user", "create", "dr.lee", "--display-name", "Dr Lee", "--json"], None)));

        // A role with a daily 08:00 Berlin rotation, the rotations read from standard input.
        let out = ok(&medhub(&db, &["admin", "oncall", "create", "cardiology-oncall", "--name", "Cardiology on-call", "--department", "Cardiology"], None));
        assert!(out.starts_with("cardiology-oncall\t"), "{out}");
        let rotations = serde_json::json!([{"participants": [nurse, doc], "start": "2026-03-02T08:00:00", "kind": "daily"}]).to_string();
        ok(&medhub(&db, &["admin", "oncall", "add-schedule", "cardiology-oncall", "--name", "Primary", "--time-zone", "Europe/Berlin", "--rotations", "-"], Some(&rotations)));
        let bad = failed(&medhub(&db, &["admin", "oncall", "add-schedule", "cardiology-oncall", "--name", "X", "--time-zone", "Mars/Olympus"], None));
        assert!(bad.contains("unknown time zone"), "{bad}");
        let missing = failed(&medhub(&db, &["admin", "oncall", "show", "no-such-role"], None));
        assert!(missing.contains("no on-call role \"no-such-role\""), "{missing}");

        // The directory at a chosen instant: Dr Lee on 3 March, Kim next at 08:00 on the 4th.
        let list = json_lines(&ok(&medhub(&db, &["admin", "oncall", "list", "--at", "2026-03-03T09:00:00Z", "--json"], None)));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["key"], "cardiology-oncall");
        assert_eq!(list[0]["now"][0]["user_id"], serde_json::json!(doc));
        assert_eq!(list[0]["now"][0]["display_name"], "Dr Lee");
        assert_eq!((&list[0]["next"]["at"], &list[0]["next"]["holders"][0]["user_id"]), (&serde_json::json!("2026-03-04T07:00:00Z"), &serde_json::json!(nurse)));
        let text = ok(&medhub(&db, &["admin", "oncall", "list", "--at", "2026-03-03T09:00:00Z"], None));
        assert!(text.contains("now: Dr Lee (rotation 0)"), "{text}");
        let show = json_lines(&ok(&medhub(&db, &["admin", "oncall", "show", "cardiology-oncall", "--json"], None)));
        assert_eq!(show[0]["schedules"][0]["time_zone"], "Europe/Berlin");
        assert_eq!(show[0]["schedules"][0]["rotations"][0]["kind"], "daily");

        // Export across the spring change to a file, import it into a schedule without
        // rotations: the mirror has the same holder at every instant.
        let dir = tempfile::tempdir().unwrap();
        let ics = dir.path().join("cardiology.ics");
        let ics_path = ics.display().to_string();
        ok(&medhub(&db, &["admin", "oncall", "export", "cardiology-oncall", "--from", "2026-03-28T00:00:00Z", "--to", "2026-03-31T00:00:00Z", "--out", &ics_path], None));
        let text = std::fs::read_to_string(&ics).unwrap();
        assert!(text.contains("DTSTART:20260328T070000Z\r\nDTEND:20260329T060000Z\r\n"), "{text}");
        ok(&medhub(&db, &["admin", "oncall", "create", "cardiology-mirror", "--name", "Mirror", "--kind", "role"], None));
        ok(&medhub(&db, &["admin", "oncall", "add-schedule", "cardiology-mirror", "--name", "Imported", "--time-zone", "Europe/Berlin"], None));
        let window = ["--from", "2026-03-27T00:00:00Z", "--to", "2026-03-31T00:00:00Z"];
        let mut args = vec!["admin", "oncall", "import", "cardiology-mirror", &ics_path, "--json"];
        args.extend(window);
        let imported = json_lines(&ok(&medhub(&db, &args, None)));
        // The export has whole shifts: the one from 27 March 08:00 that was running at its start,
        // and those starting on the 28th, 29th and 30th; all four start in the import window.
        assert_eq!((&imported[0]["added"], &imported[0]["removed"]), (&serde_json::json!(4), &serde_json::json!(0)), "{imported:?}");
        for at in ["2026-03-28T12:00:00Z", "2026-03-29T06:30:00Z", "2026-03-30T20:00:00Z"] {
            let list = json_lines(&ok(&medhub(&db, &["admin", "oncall", "list", "--at", at, "--json"], None)));
            let holder = |key: &str| list.iter().find(|r| r["key"] == key).unwrap()["now"][0]["user_id"].clone();
            assert_eq!(holder("cardiology-mirror"), holder("cardiology-oncall"), "{at}");
        }
        // Again: replaced, not doubled.
        let again = json_lines(&ok(&medhub(&db, &args, None)));
        assert_eq!((&again[0]["added"], &again[0]["removed"]), (&serde_json::json!(4), &serde_json::json!(4)));

        // A calendar naming someone unknown is refused whole, with the event's line.
        let stranger = text.replacen(&format!("X-MEDHUB-USER:{doc}"), "X-MEDHUB-USER:00000000-0000-0000-0000-000000000009", 1);
        std::fs::write(&ics, stranger).unwrap();
        let refused = failed(&medhub(&db, &args, None));
        assert!(refused.contains("events on lines"), "{refused}");

        // The operator's changes are in the audit log, without an actor.
        let store = db.open().await;
        let records: Vec<medhub_core::audit::AuditRecord> = store.audit_events(0, 10_000).await.unwrap().into_iter().map(|(_, r)| r).collect();
        for action in ["oncall.role_create", "schedule.create", "schedule.import"] {
            let r = records.iter().find(|r| r.action == action).unwrap_or_else(|| panic!("no {action}"));
            assert_eq!(r.actor, None, "{action}");
            assert!(r.org.is_some(), "{action}");
        }
        assert_eq!(records.iter().filter(|r| r.action == "schedule.import").count(), 2);
    }
}
