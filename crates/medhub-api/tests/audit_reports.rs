//! Compliance reports end to end, on both databases: real activity through the running
//! server (failed sign-ins and a lockout, care-team changes, break-glass with a reason, patient
//! reads, role grants, another organization doing the same), then each report holds exactly
//! the records it should and nobody else's, its HTML parses and escapes, its chart has a bar
//! per day with the right counts, its CSV reads back, a clinician is refused, the report is
//! itself audited, and the schedule writes each period's files once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::AuditRecord;
use medhub_core::model::SystemRole;
use medhub_core::{Clock, ManualClock, UserId};
use medhub_service::reports::schedule::{Every, Schedule, write_due};
use medhub_testkit::{Settings, TestServer, TestUser, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

const PATIENT: &str = "pat-42";
const PASSWORD: &str = "correct horse battery staple";
/// A reason that tries to be markup: the report must show it as text.
const REASON: &str = "<script>alert('x')</script> Patient collapsed in the ED & attending unreachable";

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

struct Got {
    status: u16,
    content_type: String,
    csp: String,
    body: String,
}

async fn fetch(s: &TestServer, path: &str, user: &TestUser) -> Got {
    let resp = reqwest::Client::new().get(s.url(path)).bearer_auth(&user.token).send().await.unwrap();
    let header = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let (content_type, csp) = (header("content-type"), header("content-security-policy"));
    Got { status: resp.status().as_u16(), content_type, csp, body: resp.text().await.unwrap() }
}

/// The CSV's rows as maps from column name to value.
fn csv_rows(text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| headers.iter().map(str::to_owned).zip(rec.unwrap().iter().map(str::to_owned)).collect())
        .collect()
}

fn seqs(rows: &[std::collections::HashMap<String, String>]) -> BTreeSet<i64> {
    rows.iter().map(|r| r["seq"].parse().unwrap()).collect()
}

/// The bars of each chart of a page: (label: value) titles, chart by chart.
fn bars(page: &str) -> Vec<Vec<String>> {
    let doc = roxmltree::Document::parse_with_options(
        page,
        roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
    )
    .unwrap_or_else(|e| panic!("the page is not well-formed: {e}"));
    doc.descendants()
        .filter(|n| n.has_tag_name("svg"))
        .map(|svg| {
            svg.descendants()
                .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some("bar"))
                .map(|n| n.descendants().find(|c| c.has_tag_name("title")).and_then(|t| t.text()).unwrap().to_owned())
                .collect()
        })
        .collect()
}

async fn log(s: &TestServer) -> Vec<(i64, AuditRecord)> {
    let store = s.services.store.clone();
    let entries = s.on_server(async move { store.audit_log(0, 100_000).await.unwrap() }).await;
    entries.into_iter().map(|e| (i64::try_from(e.seq).unwrap(), e.record)).collect()
}

fn expected(log: &[(i64, AuditRecord)], keep: impl Fn(&AuditRecord) -> bool) -> BTreeSet<i64> {
    log.iter().filter(|(_, r)| keep(r)).map(|(seq, _)| *seq).collect()
}

each_backend! {
    async fn compliance_reports_hold_exactly_their_records(db) {
        let t0: Timestamp = "2026-03-02T09:00:00Z".parse().unwrap();
        let clock = Arc::new(ManualClock::new(t0));
        let s = TestServer::start_on(
            db,
            Settings {
                clock: clock.clone(),
                service: medhub_service::ServiceConfig { session_sweep_interval: Duration::from_millis(100), ..Default::default() },
                ..Default::default()
            },
        )
        .await;
        let attending = s.user("dr.owner").await;
        s.set_roles(&attending, &["attending_physician"]).await;
        let nurse = s.user("nurse.joy").await;
        let er = s.user("dr.er").await;
        s.set_roles(&er, &["attending_physician"]).await;
        let charge = s.user("charge.kim").await;
        s.set_roles(&charge, &["charge_nurse"]).await;
        let pharmacist = s.user("pharm.lee").await;
        s.set_roles(&pharmacist, &["pharmacist"]).await;
        let officer = s.user("privacy.pat").await;
        s.set_roles(&officer, &["compliance_officer"]).await;
        let admin = s.user_with_role("it.admin", SystemRole::Admin).await;
        s.password_user("nurse.bad", SystemRole::User, PASSWORD, false).await;
        let org_a = {
            let store = s.services.store.clone();
            let id = UserId::from_uuid(officer.id);
            s.on_server(async move { store.user(id).await.unwrap().unwrap().org }).await
        };
        // Another organization, with a patient of the same reference.
        let b = s.tenant("Other Hospital", "other.admin").await;
        let b_charge = s.user_in_org(Some(b), "b.charge", SystemRole::User).await;
        s.set_roles(&b_charge, &["charge_nurse"]).await;
        let b_nurse = s.user_in_org(Some(b), "b.nurse", SystemRole::User).await;

        // Day one: a patient's conversation, a care-team change, a refused one, reads,
        // break-glass ended on review by the compliance officer, a role grant, failed sign-ins.
        let body = json!({"kind": "group", "title": "Bed 12", "members": [{"user_id": nurse.id}], "patient_ref": PATIENT});
        let (status, c) = s.post("/api/v1/conversations", &attending, body).await;
        assert_eq!(status, 201, "{c}");
        let conv = c["conversation"]["id"].as_str().unwrap().to_owned();
        let team = format!("/api/v1/patients/{PATIENT}/care-team");
        assert_eq!(s.call(Method::PUT, &format!("{team}/{}", pharmacist.id), Some(&nurse), None).await.0, 403);
        assert_eq!(s.call(Method::PUT, &format!("{team}/{}", pharmacist.id), Some(&charge), None).await.0, 201);
        assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &pharmacist).await.0, 200);
        let (status, grant) = s.post(&format!("/api/v1/conversations/{conv}/break-glass"), &er, json!({"reason": REASON})).await;
        assert_eq!(status, 201, "{grant}");
        assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &er).await.0, 200);
        let grant_id = grant["id"].as_str().unwrap();
        assert_eq!(s.post(&format!("/api/v1/break-glass/{grant_id}/end"), &officer, json!({})).await.0, 200);
        let roles = format!("/api/v1/admin/users/{}/roles", nurse.id);
        let (status, body) = s.call(Method::PUT, &roles, Some(&admin), Some(json!({"roles": ["pharmacist"]}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(s.login("nobody.at.all", "wrong password!").await.0, 401);
        let mut refused = Vec::new();
        for _ in 0..7 {
            refused.push(s.login("nurse.bad", "wrong password!").await.0);
        }
        assert!(refused.contains(&429), "locked out at last: {refused:?}");
        // The other organization: the same patient reference, a care-team change.
        let b_team = format!("/api/v1/patients/{PATIENT}/care-team/{}", b_nurse.id);
        assert_eq!(s.call(Method::PUT, &b_team, Some(&b_charge), None).await.0, 201);

        // Day two: more reads, and another grant.
        clock.set(t0 + SignedDuration::from_hours(25));
        let pharmacist = s.new_session(&pharmacist).await;
        let officer = s.new_session(&officer).await;
        let attending = s.new_session(&attending).await;
        for _ in 0..2 {
            assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &pharmacist).await.0, 200);
        }
        let locum = s.user("dr.locum").await;
        s.set_roles(&locum, &["attending_physician"]).await;
        let (status, open) = s
            .post(&format!("/api/v1/conversations/{conv}/break-glass"), &locum, json!({"reason": "Covering the night shift, need the plan"}))
            .await;
        assert_eq!(status, 201, "{open}");

        let before = log(&s).await;
        let in_a = |r: &AuditRecord| r.org == Some(org_a);
        let day = |r: &AuditRecord| r.at >= "2026-03-01T00:00:00Z".parse::<Timestamp>().unwrap() && r.at < "2026-03-04T00:00:00Z".parse::<Timestamp>().unwrap();
        let period = "since=2026-03-01&until=2026-03-03";

        // Patient access: every record of org A with the patient's reference, and no other.
        let want = expected(&before, |r| in_a(r) && day(r) && r.patient_ref.as_deref() == Some(PATIENT));
        assert!(want.len() >= 8, "{want:?}");
        let got = fetch(&s, &format!("/api/v1/audit/reports/patient-access?patient={PATIENT}&{period}&format=csv"), &officer).await;
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(got.content_type, "text/csv; charset=utf-8; header=present");
        let rows = csv_rows(&got.body);
        assert_eq!(seqs(&rows), want);
        let actions: BTreeSet<&str> = rows.iter().map(|r| r["action"].as_str()).collect();
        for a in ["patient.read", "care_team.add", "break_glass.start", "break_glass.end", "http"] {
            assert!(actions.contains(a), "{a} missing from {actions:?}");
        }
        assert!(rows.iter().any(|r| r["action"] == "http" && r["outcome"] == "deny" && r["username"] == "nurse.joy"), "the refused change");
        assert!(rows.iter().any(|r| r["action"] == "patient.read" && r["basis or reason"] == "care_team" && r["user"] == "pharm.lee"));
        assert!(rows.iter().any(|r| r["action"] == "care_team.add" && r["concerning"] == "pharm.lee (pharm.lee)"));
        assert!(rows.iter().all(|r| r["username"] != "b.charge" && r["username"] != "b.nurse"), "another organization's");

        // The page: the same rows and now the CSV report's own record too (it concerns the
        // patient); its first chart is accesses per day, one bar a day.
        let mid = log(&s).await;
        let want = expected(&mid, |r| in_a(r) && day(r) && r.patient_ref.as_deref() == Some(PATIENT));
        let page = fetch(&s, &format!("/api/v1/audit/reports/patient-access?patient={PATIENT}&{period}"), &officer).await;
        assert_eq!(page.status, 200);
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        assert!(page.csp.starts_with("default-src 'none'; style-src 'sha256-"), "{}", page.csp);
        let charts = bars(&page.body);
        let on = |d: &str| want.iter().filter(|s| mid.iter().any(|(q, r)| q == *s && r.at.to_string().starts_with(d))).count();
        assert_eq!(
            charts[0],
            ["2026-03-01: 0".to_owned(), format!("2026-03-02: {}", on("2026-03-02")), format!("2026-03-03: {}", on("2026-03-03"))]
        );
        assert!(on("2026-03-03") >= 2);
        let users: u64 = charts[1].iter().map(|b| b.rsplit(": ").next().unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(users as usize, want.len(), "the by-user chart counts every record");

        // The report itself is in the log, with the patient, before it was answered.
        let after = log(&s).await;
        let reports: Vec<&AuditRecord> = after.iter().map(|(_, r)| r).filter(|r| r.action == "audit.report").collect();
        assert_eq!(reports.len(), 2, "{reports:?}");
        for r in &reports {
            assert_eq!((r.actor, r.org, r.patient_ref.as_deref()), (Some(UserId::from_uuid(officer.id)), Some(org_a), Some(PATIENT)));
            assert_eq!(r.object_type.as_deref(), Some("report"));
            assert!(r.target.as_deref().unwrap().starts_with("patient-access 2026-03-01T00:00:00Z/2026-03-04T00:00:00Z"), "{r:?}");
        }

        // Break-glass: both grants, the reason as typed (escaped in the page), review status.
        let got = fetch(&s, &format!("/api/v1/audit/reports/break-glass?{period}&format=csv"), &officer).await;
        let rows = csv_rows(&got.body);
        assert_eq!(rows.len(), 2, "{}", got.body);
        let er_row = rows.iter().find(|r| r["username"] == "dr.er").unwrap();
        assert_eq!(er_row["reason"], REASON);
        assert_eq!((er_row["patient"].as_str(), er_row["conversation"].as_str()), (PATIENT, conv.as_str()));
        assert_eq!(er_row["how it ended"], "ended early by a compliance officer");
        assert_eq!((er_row["review status"].as_str(), er_row["reviewed by"].as_str()), ("reviewed", "privacy.pat (privacy.pat)"));
        let locum_row = rows.iter().find(|r| r["username"] == "dr.locum").unwrap();
        assert_eq!((locum_row["how it ended"].as_str(), locum_row["review status"].as_str()), ("active", "awaiting review"));
        let page = fetch(&s, &format!("/api/v1/audit/reports/break-glass?{period}"), &officer).await;
        assert!(!page.body.contains("<script>alert"), "the reason became markup");
        assert!(page.body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Patient collapsed in the ED &amp; attending"));
        assert_eq!(bars(&page.body)[0], ["2026-03-01: 0", "2026-03-02: 1", "2026-03-03: 1"]);

        // Failed sign-ins: org A's failures, the lockout included; not the unknown name's.
        let want = expected(&before, |r| in_a(r) && day(r) && ["auth.sign_in", "auth.mfa"].contains(&r.action.as_str()) && r.outcome.as_str() == "failure");
        let rows = csv_rows(&fetch(&s, &format!("/api/v1/audit/reports/failed-sign-ins?{period}&format=csv"), &officer).await.body);
        assert_eq!(seqs(&rows), want);
        assert!(rows.iter().any(|r| r["basis or reason"] == "rate_limited" && r["username"] == "nurse.bad"), "the lockout");
        assert!(rows.iter().all(|r| r["username"] == "nurse.bad"));
        assert!(before.iter().any(|(_, r)| r.action == "auth.sign_in" && r.org.is_none()), "the unknown name's failure is in the log");

        // Permission changes: the role grant and the care-team change, not org B's.
        let changes = ["admin.role_create", "admin.role_grant", "admin.user_update", "admin.invite", "admin.mfa_reset", "sso.roles", "care_team.add", "care_team.remove", "org.create"];
        let want = expected(&before, |r| in_a(r) && day(r) && changes.contains(&r.action.as_str()));
        let rows = csv_rows(&fetch(&s, &format!("/api/v1/audit/reports/permission-changes?{period}&format=csv"), &officer).await.body);
        assert_eq!(seqs(&rows), want);
        let grant = rows.iter().find(|r| r["action"] == "admin.role_grant").unwrap();
        assert_eq!((grant["user"].as_str(), grant["concerning"].as_str(), grant["what"].as_str()), ("it.admin", "nurse.joy (nurse.joy)", "roles set to pharmacist"));

        // User activity: the pharmacist's records only. (The session sweeper may end her
        // idle first session meanwhile: that record is hers too, so the log is read before
        // and after the report.)
        let pharmacist_id = UserId::from_uuid(pharmacist.id);
        let hers = |log: &[(i64, AuditRecord)]| expected(log, |r| in_a(r) && day(r) && r.actor == Some(pharmacist_id));
        let earlier = hers(&log(&s).await);
        let rows = csv_rows(&fetch(&s, &format!("/api/v1/audit/reports/user-activity?user={}&{period}&format=csv", pharmacist.id), &officer).await.body);
        let later = hers(&log(&s).await);
        let got = seqs(&rows);
        assert!(earlier.is_subset(&got) && got.is_subset(&later), "{earlier:?} <= {got:?} <= {later:?}");
        assert!(rows.iter().all(|r| r["user id"] == pharmacist.id.to_string()));
        assert!(rows.iter().filter(|r| r["action"] == "patient.read").count() >= 3);

        // Exports: the reports made so far (the officer's), now a record each.
        let now = log(&s).await;
        let want = expected(&now, |r| in_a(r) && r.action == "audit.report");
        let got = fetch(&s, "/api/v1/audit/reports/exports?format=csv&since=2026-03-01&until=2026-03-03", &officer).await;
        assert_eq!(seqs(&csv_rows(&got.body)), want);
        assert_eq!(want.len(), 7);

        // Refusals: a clinician; a missing subject; bad dates; another organization's user.
        let got = fetch(&s, &format!("/api/v1/audit/reports/patient-access?patient={PATIENT}"), &attending).await;
        assert_eq!(got.status, 403, "{}", got.body);
        for (path, status, error, message) in [
            ("patient-access", 400, "invalid_request", "needs patient"),
            ("user-activity", 400, "invalid_request", "needs user"),
            ("break-glass?since=last+week", 400, "invalid_request", "since"),
            ("break-glass?since=2026-03-05&until=2026-03-01", 400, "invalid_request", "before"),
            ("break-glass?format=pdf", 400, "invalid_request", "format"),
            ("everything", 400, "invalid_request", "unknown report"),
        ] {
            let (got, body) = s.get(&format!("/api/v1/audit/reports/{path}"), &officer).await;
            assert_eq!((got, code(&body)), (status, error), "{path}: {body}");
            assert!(body["error"]["message"].as_str().unwrap().contains(message), "{path}: {body}");
        }
        let (got, body) = s.get(&format!("/api/v1/audit/reports/user-activity?user={}", b_nurse.id), &officer).await;
        assert_eq!((got, code(&body)), (404, "not_found"), "{body}");

        // The schedule: each organization's organization-wide reports of the day that ended,
        // written once.
        let dir = tempfile::tempdir().unwrap();
        let schedule = Schedule { dir: dir.path().to_owned(), every: Every::Day };
        let (store, audit) = (s.services.store.clone(), s.services.audit.clone());
        let (c, sch) = (clock.clone(), schedule.clone());
        let written = s.on_server(async move { write_due(&store, &audit, c.as_ref(), &sch).await.unwrap() }).await;
        assert_eq!(written.len(), 2 * 4 * 2, "{written:?}");
        let a_dir = written.iter().map(|p| p.parent().unwrap().to_owned()).find(|d| d.file_name().unwrap().to_str().unwrap().starts_with("test-hospital-")).unwrap();
        let bg = std::fs::read_to_string(a_dir.join("break-glass_20260302T000000Z_20260303T000000Z.csv")).unwrap();
        let rows = csv_rows(&bg);
        assert_eq!(rows.len(), 1, "the grant of the day: {bg}");
        assert_eq!(rows[0]["reason"], REASON);
        let html = std::fs::read_to_string(a_dir.join("failed-sign-ins_20260302T000000Z_20260303T000000Z.html")).unwrap();
        assert_eq!(bars(&html)[0].len(), 1, "one day");
        let (store, audit) = (s.services.store.clone(), s.services.audit.clone());
        let (c, sch) = (clock.clone(), schedule.clone());
        let again = s.on_server(async move { write_due(&store, &audit, c.as_ref(), &sch).await.unwrap() }).await;
        assert!(again.is_empty(), "written once: {again:?}");
        let scheduled = log(&s).await.into_iter().filter(|(_, r)| r.action == "audit.report" && r.reason.as_deref() == Some("scheduled")).count();
        assert_eq!(scheduled, 16);
        // The next day's are due the day after.
        clock.set(clock.now() + SignedDuration::from_hours(24));
        let (store, audit) = (s.services.store.clone(), s.services.audit.clone());
        let (c, sch) = (clock.clone(), schedule.clone());
        let next = s.on_server(async move { write_due(&store, &audit, c.as_ref(), &sch).await.unwrap() }).await;
        assert_eq!(next.len(), 16);
    }
}
