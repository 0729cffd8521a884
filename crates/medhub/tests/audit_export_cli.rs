//! `medhub audit export` with the real binary, on both databases (docs/audit-export.md): an
//! operator exports one organization's records as CSV to a file and as FHIR to standard output;
//! the FHIR passes the npm validators, the CSV reads back to the stored records, another
//! organization's records stay out, filters apply, the export is audited (no actor, reason
//! `operator`) before anything is written, and an export whose record cannot be stored writes
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};

use jiff::Timestamp;
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_store::each_backend;
use medhub_store::testdb::TestDb;
use medhub_testkit::audit_export::validate_fhir;
use medhub_wire::audit_export::{CSV_HEADER, csv_cell_value};

fn store_args(db: &TestDb) -> Vec<String> {
    match db.location() {
        medhub_store::Location::Sqlite { data_dir } => vec!["--data-dir".into(), data_dir.display().to_string()],
        medhub_store::Location::Postgres { url, .. } => {
            vec!["--database-url".into(), url.clone(), "--data-dir".into(), db.files_dir().display().to_string()]
        }
    }
}

fn medhub(db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medhub"))
        .args(args)
        .args(store_args(db))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run medhub")
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

async fn sql(db: &TestDb, sql: &str) {
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
}

each_backend! {
    async fn an_operator_exports_one_organizations_audit_log(db) {
        // Two organizations (the first bootstrapped by the first command), each with records.
        ok(&medhub(&db, &["admin", "org", "create", "Riverside Clinic", "--admin", "river.admin"]));
        let store = db.open().await;
        let orgs = store.orgs().await.unwrap();
        let (ours, theirs) = (orgs[0].clone(), orgs.iter().find(|o| o.is_named("riverside clinic")).unwrap().clone());
        let base = Timestamp::now() - jiff::SignedDuration::from_hours(2);
        let record = |org: &medhub_core::model::Org, i: i64, action: &str, outcome: Outcome| AuditRecord {
            org: Some(org.id),
            ip: Some("10.1.2.3".into()),
            node: Some("node-a".into()),
            ..AuditRecord::new(base + jiff::SignedDuration::from_secs(i), action, outcome)
        };
        store
            .append_audit(&[
                record(&ours, 1, "patient.read", Outcome::Allow).patient("pat-9").object("conversation", uuid::Uuid::now_v7()).reason("care_team"),
                record(&ours, 2, "break_glass.start", Outcome::Success).patient("pat-9").object("grant", uuid::Uuid::now_v7()),
                record(&ours, 3, "break_glass.end", Outcome::Success).patient("pat-9").reason("expired"),
                record(&ours, 4, "http", Outcome::Deny).target("GET /api/v1/audit/export").reason("forbidden"),
                record(&ours, 5, "auth.sign_in", Outcome::Failure).target("password").reason("invalid_credentials"),
                record(&theirs, 6, "patient.read", Outcome::Allow).patient("pat-9"),
            ])
            .await
            .unwrap();
        let ours_in_store: Vec<_> = store.audit_log(0, 10_000).await.unwrap().into_iter()
            .filter(|e| e.record.org == Some(ours.id)).collect();

        // CSV to a file: the organization's records only, each row the stored record.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.csv");
        let file_arg = file.display().to_string();
        let out = medhub(&db, &["audit", "export", "--org", "MedHub", "--format", "csv", "--out", &file_arg]);
        assert!(ok(&out).is_empty(), "nothing on standard output with --out");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("exported"), "{stderr}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let mut reader = csv::Reader::from_path(&file).unwrap();
        assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), CSV_HEADER);
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        // The export's own record first, then the organization's stored records, newest first.
        assert_eq!((&rows[0][9], &rows[0][13], &rows[0][15], &rows[0][5]), ("audit.export", "format=csv", "operator", ""));
        assert_eq!(&rows[0][4], ours.id.to_string().as_str());
        assert_eq!(rows.len(), ours_in_store.len() + 1);
        for (row, stored) in rows[1..].iter().zip(ours_in_store.iter().rev()) {
            assert_eq!(row[0].parse::<u64>().unwrap(), stored.seq);
            let leaf: String = stored.leaf_hash.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(&row[1], leaf.as_str());
            assert_eq!(csv_cell_value(&row[9]), stored.record.action);
            assert_eq!(&row[4], ours.id.to_string().as_str(), "another organization's record: {row:?}");
        }
        // The export is in the log: no actor, reason operator, the organization's.
        let log = store.audit_log(0, 10_000).await.unwrap();
        let exported = log.iter().find(|e| e.record.action == "audit.export").unwrap();
        assert_eq!((exported.record.actor, exported.record.reason.as_deref(), exported.record.org),
                   (None, Some("operator"), Some(ours.id)));
        assert_eq!(exported.record.object_type.as_deref(), Some("export"));
        // An existing file is never overwritten.
        let err = failed(&medhub(&db, &["audit", "export", "--org", "medhub", "--format", "csv", "--out", &file_arg]));
        assert!(err.contains("exists"), "{err}");

        // FHIR to standard output, filtered to a patient: valid for both validators, coded.
        let out = ok(&medhub(&db, &["audit", "export", "--org", "medhub", "--format", "fhir-ndjson", "--patient", "pat-9"]));
        let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let types: Vec<(&str, Option<&str>)> =
            events.iter().map(|e| (e["type"]["code"].as_str().unwrap(), e["subtype"][0]["code"].as_str())).collect();
        // The export itself (about the patient), the end, the start, the read.
        assert_eq!(types, [("110106", None), ("110113", Some("110138")), ("110113", Some("110127")), ("110110", None)]);
        assert_eq!(events[0]["agent"][0]["who"]["display"], "medhub operator (command line)");
        let path = dir.path().join("pat-9.fhir.ndjson");
        std::fs::write(&path, &out).unwrap();
        let bundle = ok(&medhub(&db, &["audit", "export", "--org", "medhub", "--format", "fhir", "--outcome", "deny"]));
        let bundle_path = dir.path().join("deny.fhir.json");
        std::fs::write(&bundle_path, &bundle).unwrap();
        let v: serde_json::Value = serde_json::from_str(&bundle).unwrap();
        assert_eq!(v["entry"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["entry"][0]["resource"]["subtype"][0]["code"], "110132");
        let validated = validate_fhir(&[&path, &bundle_path]);
        assert_eq!(validated.summary["types"]["AuditEvent"], 4 + 1);

        // Unknown organizations, formats and users are refused.
        let err = failed(&medhub(&db, &["audit", "export", "--org", "Nowhere", "--format", "csv"]));
        assert!(err.contains("no organization named"), "{err}");
        let err = failed(&medhub(&db, &["audit", "export", "--org", "medhub", "--format", "xml"]));
        assert!(err.contains("fhir, fhir-ndjson, ndjson or csv"), "{err}");
        let err = failed(&medhub(&db, &["audit", "export", "--org", "medhub", "--format", "csv", "--user", "river.admin"]));
        assert!(err.contains("no user named"), "another organization's user: {err}");

        // When the export's record cannot be stored, nothing is exported: the log refuses
        // appends (a trigger stands in for a failing disk), reading still works.
        let (refuse, allow) = match db.location() {
            medhub_store::Location::Sqlite { .. } => (
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'refused'); END;",
                "DROP TRIGGER refuse_audit;",
            ),
            medhub_store::Location::Postgres { .. } => (
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
                 CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_audit();",
                "DROP TRIGGER refuse_audit ON audit_events; DROP FUNCTION refuse_audit();",
            ),
        };
        sql(&db, refuse).await;
        let file = dir.path().join("refused.csv");
        let out = medhub(&db, &["audit", "export", "--org", "medhub", "--format", "csv", "--out", &file.display().to_string()]);
        let err = failed(&out);
        assert!(err.contains("nothing was exported"), "{err}");
        assert!(!file.exists() && !dir.path().join(".refused.csv.partial").exists());
        let out = medhub(&db, &["audit", "export", "--org", "medhub", "--format", "ndjson"]);
        failed(&out);
        assert!(out.stdout.is_empty(), "nothing on standard output: {}", String::from_utf8_lossy(&out.stdout));
        sql(&db, allow).await;
        ok(&medhub(&db, &["audit", "export", "--org", "medhub", "--format", "ndjson"]));
    }
}
