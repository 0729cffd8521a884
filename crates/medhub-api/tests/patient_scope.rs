//! Patient scope end to end, on both databases: a conversation linked to a patient is read by
//! its members and by the patient's care team only; break-glass opens it to someone else with
//! the permission, a reason and a fresh step-up, for 60 minutes exactly (59:59 passes, 60:00
//! fails, on a clock the test controls); compliance officers are alerted live and can list
//! every grant; every read by a non-member and every grant reaches the audit interface.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use medhub_core::model::SystemRole;
use medhub_core::{Clock, ManualClock};
use medhub_testkit::{Settings, TestServer, TestUser, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const PATIENT: &str = "pat-42";
const REASON: &str = "Patient collapsed in the ED; attending unreachable, need the handover notes";

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

async fn server(db: medhub_store::testdb::TestDb, clock: &Arc<ManualClock>) -> TestServer {
    TestServer::start_on(
        db,
        Settings {
            clock: clock.clone(),
            service: medhub_service::ServiceConfig {
                session_sweep_interval: Duration::from_millis(100),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
}

/// A user with these roles and a password, signed in over HTTP with an authenticator (so
/// that it can step up).
async fn signed_in(s: &TestServer, username: &str, roles: &[&str]) -> (TestUser, String) {
    s.password_user(username, SystemRole::User, PASSWORD, false).await;
    let signed = s.sign_in(username, PASSWORD, None).await;
    s.set_roles(&signed.user, roles).await;
    (signed.user, signed.totp_secret)
}

async fn patient_conversation(s: &TestServer, owner: &TestUser, members: &[&TestUser]) -> String {
    let members: Vec<Value> = members.iter().map(|m| json!({"user_id": m.id})).collect();
    let body = json!({"kind": "group", "title": "Bed 12", "members": members, "patient_ref": PATIENT});
    let (status, c) = s.post("/api/v1/conversations", owner, body).await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["conversation"]["patient_ref"], PATIENT);
    assert_eq!(c["conversation"]["access"], "member");
    c["conversation"]["id"].as_str().unwrap().to_owned()
}

/// What a reader gets for the conversation, its history and one of its messages.
async fn reads(s: &TestServer, u: &TestUser, conv: &str, message: &str) -> [u16; 3] {
    [
        s.get(&format!("/api/v1/conversations/{conv}"), u).await.0,
        s.get(&format!("/api/v1/conversations/{conv}/messages"), u).await.0,
        s.get(&format!("/api/v1/messages/{message}"), u).await.0,
    ]
}

each_backend! {
    async fn a_patients_conversation_is_read_by_its_members_and_its_care_team_only(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = server(db, &clock).await;
        let attending = s.user("dr.house").await;
        s.set_roles(&attending, &["attending_physician"]).await;
        let nurse = s.user("nurse.joy").await;
        let pharmacist = s.user("pharm.lee").await;
        s.set_roles(&pharmacist, &["pharmacist"]).await;
        let charge = s.user("charge.kim").await;
        s.set_roles(&charge, &["charge_nurse"]).await;

        let conv = patient_conversation(&s, &attending, &[&nurse]).await;
        let (status, sent) = s
            .post(&format!("/api/v1/conversations/{conv}/messages"), &attending,
                  json!({"client_txn_id": "t1", "body": "K+ 6.9, repeat the ECG"}))
            .await;
        assert_eq!(status, 201, "{sent}");
        let message = sent["message"]["id"].as_str().unwrap().to_owned();

        // Members read it; someone else gets exactly what an unknown id gets.
        assert_eq!(reads(&s, &nurse, &conv, &message).await, [200, 200, 200]);
        assert_eq!(reads(&s, &pharmacist, &conv, &message).await, [404, 404, 404]);
        let (_, unknown) = s.get(&format!("/api/v1/conversations/{}", uuid::Uuid::now_v7()), &pharmacist).await;
        let (_, hidden) = s.get(&format!("/api/v1/conversations/{conv}"), &pharmacist).await;
        assert_eq!(hidden, unknown);

        // Only care-team keepers put people on a care team.
        let team = format!("/api/v1/patients/{PATIENT}/care-team");
        let put = |u: &TestUser| format!("{team}/{}", u.id);
        let (status, body) = s.call(Method::PUT, &put(&pharmacist), Some(&nurse), None).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        assert_eq!(s.call(Method::PUT, &put(&pharmacist), Some(&charge), None).await.0, 201);
        assert_eq!(s.call(Method::PUT, &put(&pharmacist), Some(&charge), None).await.0, 200, "already on it");
        let (status, body) =
            s.call(Method::PUT, &format!("{team}/{}", uuid::Uuid::now_v7()), Some(&charge), None).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "no such user");
        let (status, body) = s.call(Method::PUT, &format!("/api/v1/patients/bad%20ref/care-team/{}", pharmacist.id),
                                    Some(&charge), None).await;
        assert_eq!((status, code(&body)), (400, "invalid_patient_ref"));
        let (status, list) = s.get(&team, &nurse).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["members"].as_array().unwrap().len(), 1);
        assert_eq!(list["members"][0]["user_id"], json!(pharmacist.id));
        assert_eq!(list["members"][0]["added_by"], json!(charge.id));

        // On the care team: read only, and the reads are audited as such.
        assert_eq!(reads(&s, &pharmacist, &conv, &message).await, [200, 200, 200]);
        let (_, c) = s.get(&format!("/api/v1/conversations/{conv}"), &pharmacist).await;
        assert_eq!((&c["conversation"]["access"], &c["conversation"]["patient_ref"]), (&json!("care_team"), &json!(PATIENT)));
        let (status, body) = s
            .post(&format!("/api/v1/conversations/{conv}/messages"), &pharmacist,
                  json!({"client_txn_id": "p1", "body": "can I add a note?"}))
            .await;
        assert_eq!((status, code(&body)), (404, "not_found"), "the care team does not write");
        let pharmacist_id = medhub_core::UserId::from_uuid(pharmacist.id);
        let records = s
            .audit_until(|r| r.iter().any(|a| a.action == "patient.read" && a.actor == Some(pharmacist_id)))
            .await;
        let read = records.iter().find(|a| a.action == "patient.read" && a.actor == Some(pharmacist_id)).unwrap();
        assert_eq!(
            (read.object_type.as_deref(), read.object_id.as_deref(), read.reason.as_deref()),
            (Some("conversation"), Some(conv.as_str()), Some("care_team"))
        );
        assert_eq!(read.patient_ref.as_deref(), Some(PATIENT));
        assert!(records.iter().any(|a| a.action == "care_team.add" && a.actor == Some(medhub_core::UserId::from_uuid(charge.id))));

        // Off the care team: gone again.
        assert_eq!(s.call(Method::DELETE, &put(&pharmacist), Some(&charge), None).await.0, 204);
        let (status, body) = s.call(Method::DELETE, &put(&pharmacist), Some(&charge), None).await;
        assert_eq!((status, code(&body)), (404, "not_found"));
        assert_eq!(reads(&s, &pharmacist, &conv, &message).await, [404, 404, 404]);

        // A care team reaches only conversations linked to its patient.
        let plain = s.conversation(&attending, "group", &[&nurse]).await;
        assert_eq!(s.call(Method::PUT, &put(&pharmacist), Some(&charge), None).await.0, 201);
        assert_eq!(s.get(&format!("/api/v1/conversations/{plain}"), &pharmacist).await.0, 404);

        // Only groups are linked to a patient; a bad reference is refused.
        let (status, body) = s.post("/api/v1/conversations", &attending,
            json!({"kind": "direct", "members": [{"user_id": nurse.id}], "patient_ref": PATIENT})).await;
        assert_eq!((status, code(&body)), (400, "patient_link_not_allowed"));
        let (status, body) = s.post("/api/v1/conversations", &attending,
            json!({"kind": "group", "members": [], "patient_ref": "Jane Doe"})).await;
        assert_eq!((status, code(&body)), (400, "invalid_patient_ref"));
    }
}

each_backend! {
    async fn break_glass_needs_the_permission_a_reason_and_a_step_up_and_ends_after_sixty_minutes(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = server(db, &clock).await;
        let attending = s.user("dr.grey").await;
        s.set_roles(&attending, &["attending_physician"]).await;
        let nurse = s.user("nurse.ratched").await;
        let conv = patient_conversation(&s, &attending, &[&nurse]).await;
        let (_, sent) = s
            .post(&format!("/api/v1/conversations/{conv}/messages"), &attending,
                  json!({"client_txn_id": "t1", "body": "Allergic to penicillin"}))
            .await;
        let message = sent["message"]["id"].as_str().unwrap().to_owned();
        let plain = s.conversation(&attending, "group", &[&nurse]).await;

        let (er, er_secret) = signed_in(&s, "dr.er", &["attending_physician"]).await;
        let (officer, _) = signed_in(&s, "comp.liance", &["compliance_officer"]).await;
        let (mut officer_ws, _) = s.connect(&officer, None).await;
        let (clerk, _) = signed_in(&s, "unit.clerk", &["unit_clerk"]).await;
        let glass = format!("/api/v1/conversations/{conv}/break-glass");

        // Members do not need it (and nothing is recorded).
        let (status, body) = s.post(&glass, &attending, json!({"reason": REASON})).await;
        assert_eq!((status, code(&body)), (409, "break_glass_not_needed"));
        // Without the permission: refused, whatever the reason.
        let (status, body) = s.post(&glass, &clerk, json!({"reason": REASON})).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        // With it, but the sign-in's proof is more than 5 minutes old: step up first.
        clock.advance(SignedDuration::from_mins(6));
        let (status, body) = s.post(&glass, &er, json!({"reason": REASON})).await;
        assert_eq!((status, code(&body)), (403, "step_up_required"));
        let (status, body) = s.post("/api/v1/auth/step-up", &er, json!({"code": s.totp_code(&er_secret, 0)})).await;
        assert_eq!(status, 204, "{body}");
        // A reason that says nothing is refused.
        let (status, body) = s.post(&glass, &er, json!({"reason": "urgent"})).await;
        assert_eq!((status, code(&body)), (400, "invalid_reason"));
        // Only patients' conversations, and only real ones.
        let (status, body) = s.post(&format!("/api/v1/conversations/{plain}/break-glass"), &er, json!({"reason": REASON})).await;
        assert_eq!((status, code(&body)), (404, "not_found"));
        let (status, body) = s
            .post(&format!("/api/v1/conversations/{}/break-glass", uuid::Uuid::now_v7()), &er, json!({"reason": REASON}))
            .await;
        assert_eq!((status, code(&body)), (404, "not_found"));

        assert_eq!(reads(&s, &er, &conv, &message).await, [404, 404, 404]);
        let started = clock.now();
        let (status, grant) = s.post(&glass, &er, json!({"reason": REASON})).await;
        assert_eq!(status, 201, "{grant}");
        assert_eq!((&grant["user_id"], &grant["conversation_id"], &grant["patient_ref"], &grant["reason"]),
                   (&json!(er.id), &json!(conv), &json!(PATIENT), &json!(REASON)));
        let expires: Timestamp = grant["expires_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(expires, started + SignedDuration::from_mins(60));

        // Compliance officers hear of it at once, ids only.
        let alert = officer_ws.next_of_type("break_glass").await;
        assert_eq!((&alert["grant_id"], &alert["user_id"], &alert["conversation_id"]), (&grant["id"], &json!(er.id), &json!(conv)));
        assert!(alert.get("reason").is_none() && alert.get("patient_ref").is_none(), "{alert}");
        // And can list every grant, with the reason; others cannot.
        let (status, list) = s.get("/api/v1/break-glass", &officer).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["grants"][0]["id"], grant["id"]);
        assert_eq!(list["grants"][0]["reason"], REASON);
        assert_eq!(list["grants"][0]["ended_at"], Value::Null);
        let (status, body) = s.get("/api/v1/break-glass", &er).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));

        // Read only, for 60 minutes. (Reads every 10 minutes keep the session alive.)
        assert_eq!(reads(&s, &er, &conv, &message).await, [200, 200, 200]);
        let (_, c) = s.get(&format!("/api/v1/conversations/{conv}"), &er).await;
        assert_eq!(c["conversation"]["access"], "break_glass");
        let (status, _) = s
            .post(&format!("/api/v1/conversations/{conv}/messages"), &er, json!({"client_txn_id": "x", "body": "hello"}))
            .await;
        assert_eq!(status, 404, "break-glass does not write");
        for i in 0..5 {
            clock.advance(SignedDuration::from_mins(10));
            let (status, body) = s.get(&format!("/api/v1/conversations/{conv}"), &er).await;
            assert_eq!(status, 200, "{i}: {body}");
        }
        clock.set(started + SignedDuration::from_secs(59 * 60 + 59));
        assert_eq!(reads(&s, &er, &conv, &message).await, [200, 200, 200], "59:59");
        clock.set(started + SignedDuration::from_mins(60));
        assert_eq!(reads(&s, &er, &conv, &message).await, [404, 404, 404], "60:00");

        // The trail: the start (with its grant), the reads and the end.
        let er_id = medhub_core::UserId::from_uuid(er.id);
        let records = s
            .audit_until(|r| r.iter().any(|a| a.action == "break_glass.end" && a.actor == Some(er_id)))
            .await;
        let of = |action: &str| records.iter().filter(|a| a.action == action && a.actor == Some(er_id)).collect::<Vec<_>>();
        let starts = of("break_glass.start");
        assert!(starts.iter().any(|a| a.outcome.as_str() == "deny" && a.reason.as_deref() == Some("step_up_required")));
        let ok = starts.iter().find(|a| a.outcome.as_str() == "success").unwrap();
        assert_eq!(
            (ok.object_type.as_deref(), ok.object_id.as_deref(), ok.patient_ref.as_deref()),
            (Some("grant"), grant["id"].as_str(), Some(PATIENT))
        );
        assert_eq!(ok.target, Some(format!("conversation:{conv}")));
        // The typed reason stays in the grant; the record holds its SHA-256.
        let typed = grant["reason"].as_str().unwrap();
        assert_eq!(ok.reason.as_deref().map(str::len), Some(64));
        assert!(!ok.reason.as_deref().unwrap().contains(typed));
        assert!(of("patient.read").iter().all(|a| a.reason.as_deref() == Some("break_glass")));
        assert!(of("patient.read").len() >= 3);
        assert_eq!(of("break_glass.end").len(), 1);
        // (The officer's session went idle meanwhile; a new sign-in.)
        let officer = s.new_session(&officer).await;
        let (_, list) = s.get("/api/v1/break-glass", &officer).await;
        assert!(list["grants"][0]["ended_at"].is_string(), "{list}");
    }
}

each_backend! {
    async fn the_break_glass_duration_is_an_organization_setting(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = server(db, &clock).await;
        let attending = s.user("dr.who").await;
        s.set_roles(&attending, &["attending_physician"]).await;
        let conv = patient_conversation(&s, &attending, &[]).await;
        let admin = s.user_with_role("it.admin", SystemRole::Admin).await;
        let (status, settings) = s.get("/api/v1/admin/settings", &admin).await;
        assert_eq!((status, &settings["break_glass_minutes"]), (200, &json!(60)), "{settings}");
        for bad in [4, 1441] {
            let (status, body) = s.call(Method::PATCH, "/api/v1/admin/settings", Some(&admin), Some(json!({"break_glass_minutes": bad}))).await;
            assert_eq!((status, code(&body)), (400, "invalid_break_glass_duration"), "{bad}");
        }
        let (status, body) = s.call(Method::PATCH, "/api/v1/admin/settings", Some(&admin), Some(json!({}))).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"));
        let (status, settings) = s.call(Method::PATCH, "/api/v1/admin/settings", Some(&admin), Some(json!({"break_glass_minutes": 30}))).await;
        assert_eq!((status, &settings["break_glass_minutes"], &settings["idle_timeout_minutes"]), (200, &json!(30), &json!(15)));

        let er = s.user("dr.er").await;
        s.set_roles(&er, &["department_head"]).await;
        let (status, grant) = s.post(&format!("/api/v1/conversations/{conv}/break-glass"), &er, json!({"reason": REASON})).await;
        assert_eq!(status, 201, "{grant}");
        for step in [10, 10, 9] {
            clock.advance(SignedDuration::from_mins(step));
            assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &er).await.0, 200);
        }
        clock.advance(SignedDuration::from_mins(1));
        assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &er).await.0, 404);
    }
}

each_backend! {
    async fn break_glass_ends_early_by_the_grantee_or_on_a_compliance_officers_review(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = server(db, &clock).await;
        let owner = s.user("dr.owner").await;
        s.set_roles(&owner, &["attending_physician"]).await;
        let er = s.user("dr.er").await;
        s.set_roles(&er, &["attending_physician"]).await;
        let locum = s.user("dr.locum").await;
        s.set_roles(&locum, &["attending_physician"]).await;
        let officer = s.user("privacy.pat").await;
        s.set_roles(&officer, &["compliance_officer"]).await;
        let conv = patient_conversation(&s, &owner, &[]).await;
        let (status, sent) = s
            .post(&format!("/api/v1/conversations/{conv}/messages"), &owner, json!({"client_txn_id": "t1", "body": "Plan: CT head"}))
            .await;
        assert_eq!(status, 201, "{sent}");
        let message = sent["message"]["id"].as_str().unwrap().to_owned();
        let open = |u: &TestUser| {
            let u = u.clone();
            let conv = conv.clone();
            let s = &s;
            async move {
                let (status, g) = s.post(&format!("/api/v1/conversations/{conv}/break-glass"), &u, json!({"reason": REASON})).await;
                assert_eq!(status, 201, "{g}");
                g["id"].as_str().unwrap().to_owned()
            }
        };

        // The grantee ends her own grant when done: reads stop at once.
        let mine = open(&er).await;
        assert_eq!(reads(&s, &er, &conv, &message).await, [200, 200, 200]);
        let (status, g) = s.post(&format!("/api/v1/break-glass/{mine}/end"), &er, json!({})).await;
        assert_eq!(status, 200, "{g}");
        assert!(g["ended_at"].is_string(), "{g}");
        assert_eq!(g["ended_at"], g["expires_at"], "{g}");
        assert_eq!(reads(&s, &er, &conv, &message).await, [404, 404, 404]);
        let (status, body) = s.post(&format!("/api/v1/break-glass/{mine}/end"), &er, json!({})).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "already ended: {body}");

        // Someone else's grant cannot be ended by a colleague, only by a compliance officer.
        let theirs = open(&locum).await;
        let (status, body) = s.post(&format!("/api/v1/break-glass/{theirs}/end"), &er, json!({})).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
        assert_eq!(reads(&s, &locum, &conv, &message).await, [200, 200, 200]);
        let (status, g) = s.post(&format!("/api/v1/break-glass/{theirs}/end"), &officer, json!({})).await;
        assert_eq!(status, 200, "{g}");
        assert_eq!(reads(&s, &locum, &conv, &message).await, [404, 404, 404]);

        // Each early end is audited with who ended it, and the sweeper does not end it again.
        let officer_id = medhub_core::UserId::from_uuid(officer.id);
        let records = s
            .audit_until(|r| r.iter().any(|a| a.action == "break_glass.end" && a.actor == Some(officer_id)))
            .await;
        let ends: Vec<_> = records.iter().filter(|a| a.action == "break_glass.end").collect();
        assert_eq!(ends.len(), 2, "{ends:?}");
        assert!(ends.iter().any(|a| a.actor == Some(medhub_core::UserId::from_uuid(er.id)) && a.reason.as_deref() == Some("ended_by_user")));
        assert!(ends.iter().any(|a| a.actor == Some(officer_id) && a.reason.as_deref() == Some("revoked")));
        clock.advance(SignedDuration::from_hours(2));
        let patients = s.services.patients.clone();
        assert_eq!(s.on_server(async move { patients.end_expired().await.unwrap() }).await, 0);
    }
}

each_backend! {
    async fn a_patient_read_is_in_the_audit_log_before_the_answer_or_refused(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = server(db, &clock).await;
        let owner = s.user("dr.owner").await;
        s.set_roles(&owner, &["attending_physician"]).await;
        let pharmacist = s.user("pharm.lee").await;
        s.set_roles(&pharmacist, &["pharmacist"]).await;
        let charge = s.user("charge.kim").await;
        s.set_roles(&charge, &["charge_nurse"]).await;
        let conv = patient_conversation(&s, &owner, &[]).await;
        let put = format!("/api/v1/patients/{PATIENT}/care-team/{}", pharmacist.id);
        assert_eq!(s.call(Method::PUT, &put, Some(&charge), None).await.0, 201);

        // The record is stored when the answer arrives: no waiting for a writer.
        let (status, _) = s.get(&format!("/api/v1/conversations/{conv}"), &pharmacist).await;
        assert_eq!(status, 200);
        let store = s.services.store.clone();
        let log = s.on_server(async move { store.audit_log(0, 10_000).await.unwrap() }).await;
        let who = medhub_core::UserId::from_uuid(pharmacist.id);
        assert!(
            log.iter().any(|e| e.record.action == "patient.read" && e.record.actor == Some(who)
                && e.record.object_id.as_deref() == Some(conv.as_str())
                && e.record.patient_ref.as_deref() == Some(PATIENT)),
            "the read is in the log already"
        );

        // With the audit log unwritable, the read is refused and shows nothing; so is every
        // other audited request, a member's too (fail closed).
        s.sql("ALTER TABLE audit_head RENAME TO audit_head_away").await;
        let (status, body) = s.get(&format!("/api/v1/conversations/{conv}"), &pharmacist).await;
        assert!(status >= 500, "{status} {body}");
        assert!(body.get("conversation").is_none(), "{body}");
        let (status, body) = s.get(&format!("/api/v1/conversations/{conv}"), &owner).await;
        assert!(status >= 500 && body.get("conversation").is_none(), "{status} {body}");
        s.sql("ALTER TABLE audit_head_away RENAME TO audit_head").await;
        assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &owner).await.0, 200);
        assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &pharmacist).await.0, 200);
    }
}

each_backend! {
    async fn writes_to_a_patients_conversation_commit_with_their_audit_records(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = server(db, &clock).await;
        let attending = s.user("dr.att").await;
        s.set_roles(&attending, &["attending_physician"]).await;
        let nurse = s.user("nurse.joy").await;
        s.set_roles(&nurse, &["nurse"]).await;
        let conv = patient_conversation(&s, &attending, &[&nurse]).await;
        let plain = s.conversation(&attending, "group", &[&nurse]).await;

        // Over REST and over the WebSocket: a send, an edit, a resend of the same
        // transaction, and an acknowledgement.
        let (status, sent) = s
            .post(&format!("/api/v1/conversations/{conv}/messages"), &attending,
                  json!({"client_txn_id": "t1", "body": "Please review the potassium", "priority": "urgent"}))
            .await;
        assert_eq!(status, 201, "{sent}");
        let first = sent["message"]["id"].as_str().unwrap().to_owned();
        let (mut ws, _) = s.connect(&nurse, None).await;
        let by_ws = ws.request(json!({"type": "send", "conversation_id": conv, "client_txn_id": "w1", "body": "On it"})).await;
        assert_eq!(by_ws["type"], "sent", "{by_ws}");
        let second = by_ws["message"]["id"].as_str().unwrap().to_owned();
        let again = ws.request(json!({"type": "send", "conversation_id": conv, "client_txn_id": "w1", "body": "On it"})).await;
        assert_eq!(again["message"]["id"], json!(second), "a resend is the same message");
        let edited = ws.request(json!({"type": "edit", "message_id": second, "body": "On it, 5 min"})).await;
        assert_eq!(edited["type"], "edited", "{edited}");
        let (status, body) = s.post(&format!("/api/v1/messages/{first}/ack"), &nurse, json!({"response": {"kind": "accept"}})).await;
        assert!((200..300).contains(&status), "{status} {body}");
        // Who may read the patient's conversation changes: that is recorded too.
        let pharmacist = s.user("pharm.lee").await;
        s.set_roles(&pharmacist, &["pharmacist"]).await;
        let (status, body) =
            s.post(&format!("/api/v1/conversations/{conv}/members"), &attending, json!({"user_id": pharmacist.id})).await;
        assert_eq!(status, 201, "{body}");
        // A conversation with no patient: its writes are not patient data.
        let (status, _) = s
            .post(&format!("/api/v1/conversations/{plain}/messages"), &attending, json!({"client_txn_id": "p1", "body": "Lunch?"}))
            .await;
        assert_eq!(status, 201);

        // The records were in the log when the answers came: no waiting.
        let store = s.services.store.clone();
        let log = s.on_server(async move { store.audit_log(0, 100_000).await.unwrap() }).await;
        let writes: Vec<(&str, Option<&str>, Option<uuid::Uuid>)> = log
            .iter()
            .filter(|e| e.record.action.starts_with("message."))
            .map(|e| (e.record.action.as_str(), e.record.object_id.as_deref(), e.record.actor.map(|a| a.as_uuid())))
            .collect();
        assert_eq!(
            writes,
            vec![
                ("message.send", Some(first.as_str()), Some(attending.id)),
                ("message.send", Some(second.as_str()), Some(nurse.id)),
                ("message.edit", Some(second.as_str()), Some(nurse.id)),
                ("message.ack", Some(first.as_str()), Some(nurse.id)),
            ],
            "one record per write, none for the resend or the other conversation"
        );
        let changes: Vec<(&str, Option<&str>, Option<&str>)> = log
            .iter()
            .filter(|e| e.record.action.starts_with("conversation."))
            .map(|e| (e.record.action.as_str(), e.record.object_id.as_deref(), e.record.patient_ref.as_deref()))
            .collect();
        let added = pharmacist.id.to_string();
        assert_eq!(
            changes,
            vec![
                ("conversation.create", Some(conv.as_str()), Some(PATIENT)),
                ("conversation.member_add", Some(added.as_str()), Some(PATIENT)),
            ],
            "the plain conversation's creation is not a patient record"
        );
        for e in log.iter().filter(|e| e.record.action.starts_with("message.")) {
            assert_eq!(e.record.patient_ref.as_deref(), Some(PATIENT));
            assert_eq!(e.record.target, Some(format!("conversation:{conv}")));
            assert_eq!(e.record.object_type.as_deref(), Some("message"));
            assert!(e.record.org.is_some() && e.record.session.is_some());
        }

        // With the log unwritable, a write to the patient's conversation fails and nothing
        // is sent (its record and the message are one transaction).
        s.sql("ALTER TABLE audit_head RENAME TO audit_head_away").await;
        let refused = ws.request(json!({"type": "send", "conversation_id": conv, "client_txn_id": "w2", "body": "lost?"})).await;
        assert_eq!(refused["type"], "error", "{refused}");
        s.sql("ALTER TABLE audit_head_away RENAME TO audit_head").await;
        let (_, page) = s.get(&format!("/api/v1/conversations/{conv}/messages"), &attending).await;
        let bodies: Vec<&str> = page["messages"].as_array().unwrap().iter().filter_map(|m| m["body"].as_str()).collect();
        assert!(!bodies.contains(&"lost?"), "{bodies:?}");
    }
}
