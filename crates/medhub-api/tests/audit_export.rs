//! `GET /api/v1/audit/export` end to end, on both databases (docs/audit-export.md): real
//! activity through the running server (a failed sign-in, an enrolment, a role grant, a care
//! team change, patient reads, a denial, break-glass start and end, a settings change, a
//! sign-out) is exported in every format; the FHIR passes the npm validators
//! (`tools/fhir-validate`) with zero errors and is coded after IHE BALP and DICOM; the NDJSON's
//! records give back their leaf hashes; the CSV reads back with a real CSV parser and cannot
//! run as a formula; filters and the organization bound what is exported; only compliance
//! officers export, and every export is in the audit log before its first byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::model::SystemRole;
use medhub_core::{OrgId, UserId};
use medhub_testkit::audit_export::{leaf_hash_hex, record_of, validate_fhir};
use medhub_testkit::{TestServer, TestUser, each_backend};
use medhub_wire::audit_export::{CSV_HEADER, FlatRecord, csv_cell_value};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const PATIENT: &str = "pat-77";
const REASON: &str = "Patient collapsed in the ED; attending unreachable, need the handover notes";

struct Download {
    status: u16,
    content_type: String,
    export_id: Option<String>,
    body: String,
}

async fn export(s: &TestServer, user: &TestUser, query: &str) -> Download {
    let resp = reqwest::Client::new()
        .get(s.url(&format!("/api/v1/audit/export?{query}")))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let content_type = header("content-type").unwrap_or_default();
    let export_id = header("x-medhub-export-id");
    let status = resp.status().as_u16();
    Download { status, content_type, export_id, body: resp.text().await.unwrap() }
}

/// A successful export's body.
async fn body(s: &TestServer, user: &TestUser, query: &str) -> String {
    let d = export(s, user, query).await;
    assert_eq!(d.status, 200, "{query}: {}", d.body);
    d.body
}

fn flat(body: &str) -> Vec<FlatRecord> {
    body.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// The log-entry entity's detail `name` of an AuditEvent.
fn detail<'a>(event: &'a Value, name: &str) -> Option<&'a str> {
    let log = event["entity"].as_array().unwrap().last().unwrap();
    log["detail"].as_array().unwrap().iter().find(|d| d["type"] == name).map(|d| d["valueString"].as_str().unwrap())
}

fn codes(concepts: &Value) -> Vec<&str> {
    concepts
        .as_array()
        .map(|a| a.iter().flat_map(|c| c["coding"].as_array().unwrap()).map(|c| c["code"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

/// The entity of an event with this object-role code.
fn entity_with_role<'a>(event: &'a Value, role: &str) -> Option<&'a Value> {
    event["entity"].as_array().unwrap().iter().find(|e| e["role"]["code"] == role)
}

/// Every record stored, oldest first.
async fn stored(s: &TestServer) -> Vec<(u64, AuditRecord)> {
    let store = s.services.store.clone();
    s.on_server(async move { store.audit_log(0, 100_000).await.unwrap() })
        .await
        .into_iter()
        .map(|e| (e.seq, e.record))
        .collect()
}

async fn org_of(s: &TestServer, user: &TestUser) -> OrgId {
    let store = s.services.store.clone();
    let id = UserId::from_uuid(user.id);
    s.on_server(async move { store.user(id).await.unwrap().unwrap().org }).await
}

fn write_temp(dir: &tempfile::TempDir, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, body).unwrap();
    path
}

each_backend! {
    async fn every_format_carries_every_kind_of_record_and_the_fhir_passes_the_npm_validators(db) {
        let s = TestServer::start_on(db, Default::default()).await;
        let admin = s.user_with_role("boss", SystemRole::Admin).await;
        let officer = s.user("privacy.pat").await;
        s.set_roles(&officer, &["compliance_officer"]).await;
        let attending = s.user("dr.grey").await;
        s.set_roles(&attending, &["attending_physician"]).await;
        let er = s.user("dr.er").await;
        s.set_roles(&er, &["attending_physician"]).await;
        let clerk = s.user("unit.clerk").await;
        s.set_roles(&clerk, &["unit_clerk"]).await;
        let org = org_of(&s, &officer).await;

        // A failed sign-in, then a sign-in that enrols an authenticator.
        let pharm_id = s.password_user("pharm.lee", SystemRole::User, PASSWORD, false).await;
        assert_eq!(s.login("pharm.lee", "not the password at all").await.0, 401);
        let pharm = s.sign_in("pharm.lee", PASSWORD, None).await.user;
        // A role grant, a settings change.
        let roles = format!("/api/v1/admin/users/{pharm_id}/roles");
        let (status, b) = s.call(Method::PUT, &roles, Some(&admin), Some(json!({"roles": ["pharmacist"]}))).await;
        assert_eq!(status, 200, "{b}");
        // Taking a role away ended her sessions: a new one.
        let pharm = s.new_session(&pharm).await;
        let (status, b) = s.call(Method::PATCH, "/api/v1/admin/settings", Some(&admin), Some(json!({"idle_timeout_minutes": 20}))).await;
        assert_eq!(status, 200, "{b}");
        // A patient's conversation, a care team, a care-team read.
        let (status, c) = s
            .post("/api/v1/conversations", &attending, json!({"kind": "group", "title": "Bed 12", "members": [], "patient_ref": PATIENT}))
            .await;
        assert_eq!(status, 201, "{c}");
        let conv = c["conversation"]["id"].as_str().unwrap().to_owned();
        let care = format!("/api/v1/patients/{PATIENT}/care-team/{pharm_id}");
        assert_eq!(s.call(Method::PUT, &care, Some(&clerk), None).await.0, 201);
        assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &pharm).await.0, 200);
        // A denial.
        let (status, b) = s.get("/api/v1/audit/proof/inclusion?seq=0&size=1", &clerk).await;
        assert_eq!((status, code(&b)), (403, "forbidden"));
        // Break-glass: start, a read under it, the end.
        let (status, grant) = s.post(&format!("/api/v1/conversations/{conv}/break-glass"), &er, json!({"reason": REASON})).await;
        assert_eq!(status, 201, "{grant}");
        assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &er).await.0, 200);
        let (status, b) = s.post(&format!("/api/v1/break-glass/{}/end", grant["id"].as_str().unwrap()), &er, json!({})).await;
        assert_eq!(status, 200, "{b}");
        // A sign-out.
        assert!(s.call(Method::POST, "/api/v1/auth/logout", Some(&clerk), None).await.0 < 300);
        // Values a hostile client could try to smuggle into a spreadsheet.
        let hostile = AuditRecord {
            org: Some(org),
            ip: Some("-10.0.0.1".into()),
            ..AuditRecord::new(Timestamp::now(), "http", Outcome::Deny)
                .target("=HYPERLINK(\"http://evil.example\",\"open\")")
                .object("conversation", "+1")
                .patient("-2")
                .reason("@SUM(A1:A9)")
        };
        let store = s.services.store.clone();
        s.on_server(async move { store.append_audit(&[hostile]).await.unwrap() }).await;

        // NDJSON (the flat record): every kind, newest first, each giving back its leaf hash;
        // the export's own record comes first: it was stored before the data was read.
        let d = export(&s, &officer, "format=ndjson").await;
        assert_eq!(d.status, 200, "{}", d.body);
        assert_eq!(d.content_type, "application/x-ndjson");
        let records = flat(&d.body);
        let first = &records[0];
        assert_eq!((first.action.as_str(), first.target.as_deref()), ("audit.export", Some("format=ndjson")));
        assert_eq!((first.object_type.as_deref(), first.object_id.as_deref()), (Some("export"), d.export_id.as_deref()));
        assert_eq!(first.actor, Some(officer.id.to_string()));
        for r in &records {
            assert_eq!(leaf_hash_hex(&record_of(r)), r.leaf_hash, "record {} gives back its leaf hash", r.seq);
            assert_eq!(r.org, Some(org.to_string()), "{r:?}");
        }
        let key = |r: &FlatRecord| (r.at.parse::<Timestamp>().unwrap(), r.seq);
        assert!(records.windows(2).all(|w| key(&w[0]) > key(&w[1])), "newest first");
        let newest = records[0].seq;
        let want: BTreeSet<u64> =
            stored(&s).await.into_iter().filter(|(seq, r)| r.org == Some(org) && *seq <= newest).map(|(seq, _)| seq).collect();
        assert_eq!(records.iter().map(|r| r.seq).collect::<BTreeSet<_>>(), want, "every record of the organization");
        let actions: BTreeSet<&str> = records.iter().map(|r| r.action.as_str()).collect();
        for a in ["auth.sign_in", "auth.mfa_enrol", "admin.role_grant", "admin.settings", "care_team.add", "patient.read",
                  "http", "break_glass.start", "break_glass.end", "session.end", "audit.export"] {
            assert!(actions.contains(a), "{a} missing from {actions:?}");
        }
        let by_seq: BTreeMap<u64, &FlatRecord> = records.iter().map(|r| (r.seq, r)).collect();

        // FHIR: a Bundle and the Bulk Data NDJSON, both valid for both npm validators.
        let dir = tempfile::tempdir().unwrap();
        let d = export(&s, &officer, "format=fhir").await;
        assert_eq!((d.status, d.content_type.as_str()), (200, "application/fhir+json"), "{}", d.body);
        let bundle: Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!((&bundle["resourceType"], &bundle["type"]), (&json!("Bundle"), &json!("collection")));
        let entries = bundle["entry"].as_array().unwrap().len();
        let bundle_file = write_temp(&dir, "export.fhir.json", &d.body);
        let d = export(&s, &officer, "format=fhir-ndjson").await;
        assert_eq!((d.status, d.content_type.as_str()), (200, "application/fhir+ndjson"), "{}", d.body);
        let events: Vec<Value> = d.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let ndjson_file = write_temp(&dir, "export.fhir.ndjson", &d.body);
        let validated = validate_fhir(&[&bundle_file, &ndjson_file]);
        // The validator counts the Bundle, its entries and the lines.
        assert_eq!(validated.summary["types"]["AuditEvent"], json!(entries + events.len()), "{}", validated.output);
        assert_eq!(validated.summary["types"]["Bundle"], 1);
        assert!(events.len() > records.len(), "the later export holds more");

        // The coding, record by record (docs/audit-export.md).
        let mut seen = BTreeSet::new();
        for e in &events {
            let seq: u64 = e["id"].as_str().unwrap().parse().unwrap();
            assert_eq!(detail(e, "seq"), Some(e["id"].as_str().unwrap()));
            let Some(r) = by_seq.get(&seq) else { continue };
            assert_eq!(detail(e, "leaf_hash"), Some(r.leaf_hash.as_str()), "the event names its leaf in the Merkle log");
            assert_eq!(detail(e, "action"), Some(r.action.as_str()));
            assert_eq!(e["recorded"].as_str().unwrap(), r.at);
            let (kind, sub) = (e["type"]["code"].as_str().unwrap(), e["subtype"][0]["code"].as_str());
            let patient = entity_with_role(e, "1").map(|p| p["what"]["identifier"]["value"].as_str().unwrap());
            let who = e["agent"][0]["who"]["identifier"]["value"].as_str();
            match (r.action.as_str(), r.outcome.as_str()) {
                ("break_glass.start", "success") => {
                    assert_eq!((kind, sub, e["action"].as_str()), ("110113", Some("110127"), Some("E")), "{e}");
                    assert_eq!(codes(&e["purposeOfEvent"]), ["ETREAT", "BTG"]);
                    assert_eq!(codes(&e["agent"][0]["purposeOfUse"]), ["ETREAT", "BTG"]);
                    assert_eq!(patient, Some(PATIENT));
                    assert_eq!(who, Some(format!("urn:uuid:{}", er.id).as_str()));
                }
                ("break_glass.end", _) => {
                    assert_eq!((kind, sub), ("110113", Some("110138")), "{e}");
                    assert_eq!(codes(&e["purposeOfEvent"]), ["ETREAT", "BTG"]);
                    assert_eq!(patient, Some(PATIENT));
                }
                ("patient.read", _) => {
                    assert_eq!((kind, e["action"].as_str(), e["outcome"].as_str()), ("110110", Some("R"), Some("0")), "{e}");
                    assert_eq!(patient, Some(PATIENT));
                    let purpose = if r.reason.as_deref() == Some("break_glass") { vec!["ETREAT", "BTG"] } else { vec!["TREAT"] };
                    assert_eq!(codes(&e["purposeOfEvent"]), purpose, "{e}");
                    // The conversation read, as a domain resource.
                    assert_eq!(entity_with_role(e, "4").unwrap()["what"]["identifier"]["value"], format!("urn:uuid:{conv}"));
                }
                ("http", "deny") => {
                    assert_eq!((kind, sub, e["outcome"].as_str()), ("110113", Some("110132"), Some("4")), "{e}");
                }
                ("http", "allow") => assert_eq!((kind, e["type"]["system"].as_str()),
                    ("rest", Some("http://terminology.hl7.org/CodeSystem/audit-event-type"))),
                ("auth.sign_in", "failure") => {
                    assert_eq!((kind, sub, e["outcome"].as_str()), ("110114", Some("110122"), Some("4")), "{e}");
                    assert_eq!(who, Some(format!("urn:uuid:{pharm_id}").as_str()));
                    assert!(e["outcomeDesc"].as_str().unwrap().contains("invalid_credentials"));
                }
                ("auth.sign_in", "success") => assert_eq!((kind, sub, e["outcome"].as_str()), ("110114", Some("110122"), Some("0"))),
                ("session.end", _) => assert_eq!((kind, sub), ("110114", Some("110123")), "{e}"),
                ("admin.role_grant" | "auth.mfa_enrol", _) => assert_eq!((kind, sub), ("110113", Some("110137")), "{e}"),
                ("admin.settings", _) => assert_eq!((kind, sub), ("110113", Some("110129")), "{e}"),
                ("care_team.add", _) => {
                    assert_eq!((kind, sub, e["action"].as_str()), ("110113", Some("110135"), Some("C")), "{e}");
                    assert_eq!(patient, Some(PATIENT));
                }
                ("audit.export", _) => {
                    assert_eq!((kind, e["action"].as_str()), ("110106", Some("R")), "{e}");
                    let query = entity_with_role(e, "24").unwrap()["query"].as_str().unwrap();
                    use base64::Engine;
                    let query = base64::engine::general_purpose::STANDARD.decode(query).unwrap();
                    assert_eq!(String::from_utf8(query).unwrap(), "format=ndjson");
                }
                _ => {}
            }
            assert!(e["agent"].as_array().unwrap().iter().any(|a| a["requestor"] == true));
            assert_eq!(e["source"]["type"][0]["code"], "4");
            seen.insert(r.action.clone());
        }
        assert_eq!(seen.len(), actions.len(), "every kind of record was checked: {seen:?}");
        let ids: BTreeSet<u64> = events.iter().map(|e| e["id"].as_str().unwrap().parse().unwrap()).collect();
        assert!(by_seq.keys().all(|seq| ids.contains(seq)), "the FHIR export holds every record");

        // CSV: a real parser reads it back to the same records, and no cell runs as a formula.
        let d = export(&s, &officer, "format=csv").await;
        assert_eq!((d.status, d.content_type.as_str()), (200, "text/csv; charset=utf-8; header=present"));
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(d.body.as_bytes());
        assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), CSV_HEADER);
        let mut compared = 0;
        for row in reader.records() {
            let row = row.unwrap();
            assert_eq!(row.len(), CSV_HEADER.len());
            for cell in row.iter() {
                assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "a formula reached the CSV: {cell}");
            }
            let seq: u64 = row[0].parse().unwrap();
            if let Some(r) = by_seq.get(&seq) {
                let want: Vec<String> = r.cells().collect();
                let got: Vec<&str> = row.iter().map(csv_cell_value).collect();
                assert_eq!(got, want, "row {seq}");
                compared += 1;
            }
        }
        assert_eq!(compared, records.len());
        let hostile_row = d.body.lines().find(|l| l.contains("HYPERLINK")).unwrap();
        assert!(hostile_row.contains("\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"open\"\")\""), "{hostile_row}");
        assert!(hostile_row.contains(",'+1,") && hostile_row.contains(",'-2,") && hostile_row.contains(",'@SUM(A1:A9),"), "{hostile_row}");

        // Each export is in the log, format and filters as its target, before its data.
        let exports: Vec<String> = stored(&s)
            .await
            .into_iter()
            .filter(|(_, r)| r.action == "audit.export" && r.actor == Some(UserId::from_uuid(officer.id)))
            .map(|(_, r)| r.target.unwrap())
            .collect();
        assert_eq!(exports, ["format=ndjson", "format=fhir", "format=fhir-ndjson", "format=csv"]);
    }
}

each_backend! {
    async fn exports_are_filtered_kept_to_the_organization_and_for_compliance_officers_only(db) {
        let s = TestServer::start_on(db, Default::default()).await;
        let admin = s.user_with_role("boss", SystemRole::Admin).await;
        let officer = s.user("privacy.pat").await;
        s.set_roles(&officer, &["compliance_officer"]).await;
        let attending = s.user("dr.grey").await;
        s.set_roles(&attending, &["attending_physician"]).await;
        let pharm = s.user("pharm.lee").await;
        s.set_roles(&pharm, &["pharmacist"]).await;
        let clerk = s.user("unit.clerk").await;
        s.set_roles(&clerk, &["unit_clerk"]).await;
        let clinician = s.user("nurse.joy").await;
        let org = org_of(&s, &officer).await;
        // Another organization, with its own officer and staff.
        let river = s.tenant("Riverside Clinic", "river.admin").await;
        let river_officer = s.user_in_org(Some(river), "river.officer", SystemRole::User).await;
        s.set_roles(&river_officer, &["compliance_officer"]).await;
        let river_nurse = s.user_in_org(Some(river), "river.nurse", SystemRole::User).await;
        assert_eq!(s.get("/api/v1/me", &river_nurse).await.0, 200);
        assert_eq!(s.get("/api/v1/audit/proof/inclusion?seq=0&size=1", &river_nurse).await.0, 403);

        let (_, c) = s
            .post("/api/v1/conversations", &attending, json!({"kind": "group", "title": "Bed 3", "members": [], "patient_ref": PATIENT}))
            .await;
        let conv = c["conversation"]["id"].as_str().unwrap().to_owned();
        let care = format!("/api/v1/patients/{PATIENT}/care-team/{}", pharm.id);
        assert_eq!(s.call(Method::PUT, &care, Some(&clerk), None).await.0, 201);
        assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &pharm).await.0, 200);
        assert_eq!(s.get("/api/v1/audit/proof/inclusion?seq=0&size=1", &clerk).await.0, 403);
        let between = Timestamp::now();
        assert_eq!(s.get("/api/v1/me", &clerk).await.0, 200);

        // Each filter bounds what comes out; none comes back empty here.
        let check = |query: String, ok: Box<dyn Fn(&FlatRecord) -> bool>| {
            let s = &s;
            let officer = &officer;
            async move {
                let records = flat(&body(s, officer, &format!("format=ndjson&{query}")).await);
                // The export's own record matches only some filters; the rest must all match.
                let data: Vec<&FlatRecord> = records.iter().filter(|r| r.action != "audit.export").collect();
                assert!(!data.is_empty(), "{query}: nothing");
                for r in data {
                    assert!(ok(r), "{query}: {r:?}");
                }
            }
        };
        let clerk_id = clerk.id.to_string();
        check(format!("user={clerk_id}"), Box::new(move |r| r.actor.as_deref() == Some(clerk_id.as_str()))).await;
        check(format!("patient={PATIENT}"), Box::new(|r| r.patient_ref.as_deref() == Some(PATIENT))).await;
        check("action=patient.read".into(), Box::new(|r| r.action == "patient.read")).await;
        check("outcome=deny".into(), Box::new(|r| r.outcome == "deny")).await;
        let c2 = conv.clone();
        check(format!("object_type=conversation&object_id={conv}"),
              Box::new(move |r| r.object_type.as_deref() == Some("conversation") && r.object_id.as_deref() == Some(c2.as_str())))
            .await;
        let since = between.to_string();
        check(format!("since={since}"), Box::new(move |r| r.at.parse::<Timestamp>().unwrap() >= between)).await;
        check(format!("until={since}&action=http"), Box::new(move |r| r.at.parse::<Timestamp>().unwrap() < between && r.action == "http"))
            .await;
        // A patient filter puts the patient on the export's own record: the patient access
        // report shows who exported the patient's trail.
        let patient_export = flat(&body(&s, &officer, &format!("format=ndjson&patient={PATIENT}")).await);
        assert_eq!(patient_export[0].action, "audit.export");
        assert_eq!(patient_export[0].patient_ref.as_deref(), Some(PATIENT));
        assert_eq!(patient_export[0].target.as_deref(), Some("format=ndjson patient"));

        // Each organization's officer sees their own organization only.
        let ours = flat(&body(&s, &officer, "format=ndjson").await);
        assert!(ours.iter().all(|r| r.org == Some(org.to_string())));
        assert!(!ours.iter().any(|r| r.actor == Some(river_nurse.id.to_string())));
        let theirs = flat(&body(&s, &river_officer, "format=ndjson").await);
        assert!(theirs.iter().all(|r| r.org == Some(river.to_string())), "{theirs:?}");
        assert!(theirs.iter().any(|r| r.actor == Some(river_nurse.id.to_string()) && r.outcome == "deny"));
        assert!(!theirs.iter().any(|r| r.actor == Some(clerk.id.to_string())));
        // Filtering by another organization's user finds nothing of theirs.
        let none = flat(&body(&s, &officer, &format!("format=ndjson&user={}", river_nurse.id)).await);
        assert!(none.is_empty(), "{none:?}");

        // Not for clinicians, attendings, administrators, or anyone without a token; and not
        // for a role that may read the audit log but not take data out (refused and audited).
        for who in [&clinician, &attending, &admin] {
            let d = export(&s, who, "format=csv").await;
            assert_eq!(d.status, 403, "{}", d.body);
        }
        let anonymous = reqwest::get(s.url("/api/v1/audit/export?format=csv")).await.unwrap();
        assert_eq!(anonymous.status().as_u16(), 401);
        let (status, b) = s.post("/api/v1/admin/roles", &admin,
            json!({"key": "audit_reader", "name": "Audit reader", "permissions": ["audit.read", "account.self"]})).await;
        assert_eq!(status, 201, "{b}");
        let reader = s.user("audit.reader").await;
        s.set_roles(&reader, &["audit_reader"]).await;
        let d = export(&s, &reader, &format!("format=csv&patient={PATIENT}")).await;
        let refused: Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!((d.status, code(&refused)), (403, "forbidden"));
        let denied = stored(&s).await.into_iter().map(|(_, r)| r)
            .find(|r| r.action == "audit.export" && r.actor == Some(UserId::from_uuid(reader.id)))
            .expect("the refused export is audited");
        assert_eq!((denied.outcome, denied.reason.as_deref(), denied.patient_ref.as_deref()), (Outcome::Deny, Some("forbidden"), Some(PATIENT)));

        // Bad requests say what is wrong.
        for bad in ["format=xml", "", "format=csv&outcome=maybe", "format=csv&user=someone",
                    "format=csv&since=2030-01-01T00:00:00Z&until=2029-01-01T00:00:00Z", "format=csv&patient=a%20b",
                    "format=csv&colour=blue", "format=csv&since=yesterday"] {
            let d = export(&s, &officer, bad).await;
            let b: Value = serde_json::from_str(&d.body).unwrap();
            assert_eq!((d.status, code(&b)), (400, "invalid_request"), "{bad}: {b}");
        }
    }
}

each_backend! {
    async fn a_large_export_streams_page_by_page_without_gaps(db) {
        let s = TestServer::start_on(db, Default::default()).await;
        let officer = s.user("privacy.pat").await;
        s.set_roles(&officer, &["compliance_officer"]).await;
        let org = org_of(&s, &officer).await;
        // 1,234 records (two and a half pages), some sharing an instant, so that the keyset
        // cursor's tie-break on `seq` is exercised.
        let base = Timestamp::now() - jiff::SignedDuration::from_hours(1);
        let records: Vec<AuditRecord> = (0..1234i64)
            .map(|i| AuditRecord {
                org: Some(org),
                ..AuditRecord::new(base + jiff::SignedDuration::from_millis(i / 3), "patient.read", Outcome::Allow)
                    .patient(format!("bulk-{i}"))
            })
            .collect();
        let store = s.services.store.clone();
        s.on_server(async move { store.append_audit(&records).await.unwrap() }).await;

        for format in ["csv", "fhir-ndjson"] {
            let text = body(&s, &officer, &format!("format={format}&action=patient.read")).await;
            let seqs: Vec<u64> = if format == "csv" {
                let mut reader = csv::Reader::from_reader(text.as_bytes());
                reader.records().map(|r| r.unwrap()[0].parse().unwrap()).collect()
            } else {
                text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().parse().unwrap()).collect()
            };
            assert_eq!(seqs.len(), 1234, "{format}");
            assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{format}: newest first, no repeats");
            assert_eq!(seqs.iter().collect::<BTreeSet<_>>().len(), 1234);
        }
        let dir = tempfile::tempdir().unwrap();
        let fhir = write_temp(&dir, "bulk.fhir.json", &body(&s, &officer, "format=fhir&action=patient.read").await);
        let validated = validate_fhir(&[&fhir]);
        assert_eq!(validated.summary["types"]["AuditEvent"], 1234);
    }
}
