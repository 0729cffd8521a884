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
