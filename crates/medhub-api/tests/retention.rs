//! Retention and legal hold over HTTP, on both databases (issue 4 §6, docs/retention.md):
//! administrators set policies per class, compliance officers set and lift holds, run the
//! expiry and erase a person's data; clinicians and other organizations cannot; clients see
//! removed messages as tombstones and kept clinical content flagged; every change is in the
//! audit log, which still verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use medhub_core::ManualClock;
use medhub_core::audit::LogFault;
use medhub_core::model::SystemRole;
use medhub_store::audit::{Verdict, verify_log};
use medhub_testkit::{Settings, TestServer, TestUser, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

const REASON: &str = "Matter 2026-114: claim about the night of 3 March, ward 7";

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

async fn put(s: &TestServer, path: &str, u: &TestUser, body: Value) -> (u16, Value) {
    s.call(Method::PUT, path, Some(u), Some(body)).await
}

async fn send(s: &TestServer, u: &TestUser, conv: &str, txn: &str, body: &str) -> String {
    let (status, sent) =
        s.post(&format!("/api/v1/conversations/{conv}/messages"), u, json!({"client_txn_id": txn, "body": body})).await;
    assert_eq!(status, 201, "{sent}");
    sent["message"]["id"].as_str().unwrap().to_owned()
}

async fn patient_conversation(s: &TestServer, owner: &TestUser, member: &TestUser) -> String {
    let body =
        json!({"kind": "group", "title": "Bed 12", "members": [{"user_id": member.id}], "patient_ref": "pat-12"});
    let (status, c) = s.post("/api/v1/conversations", owner, body).await;
    assert_eq!(status, 201, "{c}");
    c["conversation"]["id"].as_str().unwrap().to_owned()
}

/// The audit log verifies. The audit writer may still be appending the requests' records
/// while the check reads: a log that grew past the head it read is checked again.
async fn log_verifies(s: &TestServer) {
    for _ in 0..100 {
        let store = s.services.store.clone();
        let verdict = s.on_server(async move { verify_log(store.as_ref(), &[], |_, _| {}).await.unwrap() }).await;
        match verdict {
            Verdict::Good(_) => return,
            Verdict::Bad { fault: LogFault::Longer { .. }, .. } => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            bad => panic!("the audit log does not verify: {bad:?}"),
        }
    }
    panic!("the audit log never stopped growing");
}

each_backend! {
    async fn policies_holds_expiry_and_erasure_work_for_whom_they_should(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = TestServer::start_on(db, Settings { clock: clock.clone(), ..Default::default() }).await;
        let admin = s.user_with_role("it.admin", SystemRole::Admin).await;
        s.set_roles(&admin, &["administrator"]).await;
        let officer = s.user("dpo.meyer").await;
        s.set_roles(&officer, &["compliance_officer"]).await;
        let ann = s.user("dr.ann").await;
        s.set_roles(&ann, &["attending_physician"]).await;
        let bob = s.user("nurse.bob").await;
        let other = s.tenant("Riverside", "r.admin").await;
        let outsider = s.user_in_org(Some(other), "r.dpo", SystemRole::User).await;
        s.set_roles(&outsider, &["compliance_officer", "administrator"]).await;

        // --- policies: everyone reads them, administrators set them ------------------------
        let (status, body) = s.get("/api/v1/retention/policies", &bob).await;
        assert_eq!((status, body), (200, json!({"policies": []})));
        let (status, body) = put(&s, "/api/v1/retention/policies/direct", &bob, json!({"days": 30})).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        let (status, body) = put(&s, "/api/v1/retention/policies/direct", &officer, json!({"days": 30})).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "compliance officers do not set policies");
        let (status, body) = put(&s, "/api/v1/retention/policies/clinical", &admin, json!({"days": 30})).await;
        assert_eq!((status, code(&body)), (400, "invalid_retention"), "clinical content is kept 6 years at least");
        let (status, body) = put(&s, "/api/v1/retention/policies/emails", &admin, json!({"days": 30})).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"));
        let (status, body) = put(&s, "/api/v1/retention/policies/direct", &admin, json!({"days": 0})).await;
        assert_eq!((status, code(&body)), (400, "invalid_retention"));
        for (class, days) in [("direct", 30), ("clinical", 3650), ("group", 1)] {
            let (status, body) =
                put(&s, &format!("/api/v1/retention/policies/{class}"), &admin, json!({"days": days})).await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, body) = s.get("/api/v1/retention/policies", &ann).await;
        assert_eq!(status, 200);
        let shown: Vec<(String, u64)> = body["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["class"].as_str().unwrap().to_owned(), p["days"].as_u64().unwrap()))
            .collect();
        assert_eq!(shown, [("clinical".to_owned(), 3650), ("direct".to_owned(), 30), ("group".to_owned(), 1)]);
        let (_, theirs) = s.get("/api/v1/retention/policies", &outsider).await;
        assert_eq!(theirs, json!({"policies": []}), "policies are per organization");
        // Setting a policy needs a fresh step-up.
        clock.advance(SignedDuration::from_mins(6));
        let (status, body) = put(&s, "/api/v1/retention/policies/channel", &admin, json!({"days": 5})).await;
        assert_eq!((status, code(&body)), (403, "step_up_required"));

        // --- content ---------------------------------------------------------------------
        let direct = s.conversation(&ann, "direct", &[&bob]).await;
        let group = s.conversation(&ann, "group", &[&bob]).await;
        let chart = patient_conversation(&s, &ann, &bob).await;
        let chat = send(&s, &ann, &direct, "a1", "Lunch at noon?").await;
        let (status, _) = s.call(Method::PATCH, &format!("/api/v1/messages/{chat}"), Some(&ann), Some(json!({"body": "Lunch at one?"}))).await;
        assert_eq!(status, 200);
        let huddle = send(&s, &ann, &group, "a2", "Huddle notes: bed 3 to ICU").await;
        let order = send(&s, &ann, &chart, "a3", "Start IV ceftriaxone 2 g").await;
        let bobs_chat = send(&s, &bob, &direct, "b1", "Sounds good").await;
        let bobs_chart = send(&s, &bob, &chart, "b2", "Ceftriaxone started 14:05").await;

        // --- legal holds: compliance officers only, per organization -----------------------
        let hold_on_group = json!({"scope": {"kind": "conversation", "conversation_id": group}, "reason": REASON});
        let (status, body) = s.post("/api/v1/legal-holds", &ann, hold_on_group.clone()).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "a clinician cannot set a hold");
        let (status, body) = s.post("/api/v1/legal-holds", &admin, hold_on_group.clone()).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "nor can IT");
        let (status, body) = s
            .post("/api/v1/legal-holds", &officer, json!({"scope": {"kind": "conversation", "conversation_id": group}, "reason": "lawsuit"}))
            .await;
        assert_eq!((status, code(&body)), (400, "invalid_hold_reason"));
        let (status, body) = s
            .post("/api/v1/legal-holds", &officer, json!({"scope": {"kind": "patient", "patient_ref": "pat 12!"}, "reason": REASON}))
            .await;
        assert_eq!((status, code(&body)), (400, "invalid_patient_ref"));
        let (status, body) = s.post("/api/v1/legal-holds", &outsider, hold_on_group.clone()).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "another organization's conversation does not exist for them");
        let (status, body) = s
            .post("/api/v1/legal-holds", &outsider, json!({"scope": {"kind": "user", "user_id": ann.id}, "reason": REASON}))
            .await;
        assert_eq!((status, code(&body)), (404, "not_found"));
        let (status, hold) = s.post("/api/v1/legal-holds", &officer, hold_on_group.clone()).await;
        assert_eq!(status, 201, "{hold}");
        assert_eq!(hold["scope"], json!({"kind": "conversation", "conversation_id": group}));
        assert_eq!(hold["reason"], REASON);
        let hold_id = hold["id"].as_str().unwrap().to_owned();
        let (status, list) = s.get("/api/v1/legal-holds", &officer).await;
        assert_eq!((status, list["holds"].as_array().unwrap().len()), (200, 1));
        let (_, list) = s.get("/api/v1/legal-holds", &outsider).await;
        assert_eq!(list["holds"], json!([]), "another organization sees none of them");
        let (status, body) = s.get("/api/v1/legal-holds", &ann).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        let lift = json!({"reason": "Claim withdrawn by the patient's lawyer"});
        let (status, body) = s.post(&format!("/api/v1/legal-holds/{hold_id}/lift"), &outsider, lift.clone()).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "nor lift them");
        let (status, body) = s.post(&format!("/api/v1/legal-holds/{hold_id}/lift"), &officer, lift.clone()).await;
        assert_eq!((status, code(&body)), (403, "step_up_required"), "lifting needs a fresh step-up");

        // --- expiry: 40 days later, direct messages and the (held) group's are past retention
        clock.advance(SignedDuration::from_hours(24 * 40));
        // Sessions idle for 40 days have ended: everyone signs in again.
        let (ann, bob, officer) = (s.new_session(&ann).await, s.new_session(&bob).await, s.new_session(&officer).await);
        let (admin, outsider) = (s.new_session(&admin).await, s.new_session(&outsider).await);
        let (status, body) = s.post("/api/v1/retention/expire", &ann, json!({})).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        let (status, report) = s.post("/api/v1/retention/expire", &officer, json!({})).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report, json!({"removed": 2, "revisions": 1, "held": 1, "erasure_finished": 0}));
        let (status, m) = s.get(&format!("/api/v1/messages/{chat}"), &bob).await;
        assert_eq!(status, 200);
        let m = &m["message"];
        assert_eq!(m["body"], Value::Null);
        assert_eq!(m["removed"]["cause"], "retention");
        assert_eq!((m["seq"].as_u64(), m["sender_id"].as_str()), (Some(1), Some(ann.id.to_string().as_str())));
        let (status, body) = s.get(&format!("/api/v1/messages/{chat}/revisions"), &bob).await;
        assert_eq!((status, code(&body)), (409, "message_removed"));
        let (status, body) = s.call(Method::PATCH, &format!("/api/v1/messages/{chat}"), Some(&ann), Some(json!({"body": "again"}))).await;
        assert_eq!((status, code(&body)), (409, "message_removed"));
        let (_, history) = s.get(&format!("/api/v1/conversations/{direct}/messages"), &ann).await;
        let texts: Vec<Value> = history["messages"].as_array().unwrap().iter().map(|m| m["body"].clone()).collect();
        assert_eq!(texts, [Value::Null, Value::Null], "both direct messages are tombstones");
        assert!(!history.to_string().contains("Lunch"), "{history}");
        let (_, kept) = s.get(&format!("/api/v1/messages/{huddle}"), &bob).await;
        assert_eq!(kept["message"]["body"], "Huddle notes: bed 3 to ICU", "held");
        let (_, kept) = s.get(&format!("/api/v1/messages/{order}"), &bob).await;
        assert_eq!(kept["message"]["body"], "Start IV ceftriaxone 2 g", "clinical: ten years");
        // Idempotent.
        let (_, again) = s.post("/api/v1/retention/expire", &officer, json!({})).await;
        assert_eq!(again, json!({"removed": 0, "revisions": 0, "held": 1, "erasure_finished": 0}));

        // Lifting: needs a reason, keeps the record, then the content goes.
        let (status, body) = s.post(&format!("/api/v1/legal-holds/{hold_id}/lift"), &officer, json!({"reason": "done"})).await;
        assert_eq!((status, code(&body)), (400, "invalid_hold_reason"));
        let (status, lifted) = s.post(&format!("/api/v1/legal-holds/{hold_id}/lift"), &officer, lift.clone()).await;
        assert_eq!(status, 200, "{lifted}");
        assert_eq!(lifted["lifted_by"], json!(officer.id));
        let (status, body) = s.post(&format!("/api/v1/legal-holds/{hold_id}/lift"), &officer, lift.clone()).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "lifted already");
        let (_, list) = s.get("/api/v1/legal-holds?include_lifted=true", &officer).await;
        assert_eq!(list["holds"][0]["lift_reason"], "Claim withdrawn by the patient's lawyer");
        let (_, report) = s.post("/api/v1/retention/expire", &officer, json!({})).await;
        assert_eq!(report["removed"], 1);

        // --- erasure ------------------------------------------------------------------------
        let erase = |u: &TestUser| format!("/api/v1/users/{}/erase", u.id);
        let (status, body) = s.post(&erase(&bob), &admin, json!({})).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "administrators do not erase people");
        let (status, body) = s.post(&erase(&bob), &outsider, json!({})).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "another organization's user does not exist for them");
        let (status, body) = s.post(&erase(&officer), &officer, json!({})).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"));
        // A user under a legal hold cannot be erased until it is lifted.
        let (status, held) = s
            .post("/api/v1/legal-holds", &officer, json!({"scope": {"kind": "user", "user_id": bob.id}, "reason": REASON}))
            .await;
        assert_eq!(status, 201, "{held}");
        let officer = s.new_session(&officer).await; // a fresh step-up
        let (status, body) = s.post(&erase(&bob), &officer, json!({})).await;
        assert_eq!((status, code(&body)), (409, "under_legal_hold"));
        let (status, _) = s.post(&format!("/api/v1/legal-holds/{}/lift", held["id"].as_str().unwrap()), &officer, lift).await;
        assert_eq!(status, 200);
        let (status, report) = s.post(&erase(&bob), &officer, json!({})).await;
        assert_eq!(status, 200, "{report}");
        // Bob's direct message was expired already; his note in the patient's chart is kept.
        assert_eq!((report["removed"].as_u64(), report["flagged"].as_u64()), (Some(0), Some(1)), "{report}");
        assert!(report["sessions_ended"].as_u64().unwrap() >= 1 && report["first_time"] == json!(true));
        let (status, _) = s.get("/api/v1/me", &bob).await;
        assert_eq!(status, 401, "his sessions ended");
        let (status, shown) = s.get(&format!("/api/v1/users/{}", bob.id), &ann).await;
        assert_eq!(status, 200);
        assert!(shown["display_name"].as_str().unwrap().starts_with("Erased user "), "{shown}");
        assert!(!shown.to_string().contains("nurse.bob"), "{shown}");
        let (_, note) = s.get(&format!("/api/v1/messages/{bobs_chart}"), &ann).await;
        let note = &note["message"];
        assert_eq!(note["body"], "Ceftriaxone started 14:05");
        assert!(note["erasure_requested_at"].is_string(), "{note}");
        let (_, gone) = s.get(&format!("/api/v1/messages/{bobs_chat}"), &ann).await;
        assert_eq!(gone["message"]["removed"]["cause"], "retention");

        // --- the audit trail ----------------------------------------------------------------
        let records = s
            .audit_until(|r| r.iter().filter(|x| x.action == "gdpr.erase").count() >= 2)
            .await;
        for action in ["retention.policy_set", "legal_hold.set", "legal_hold.lift", "retention.expire", "gdpr.erase"] {
            assert!(records.iter().any(|r| r.action == action), "{action}");
        }
        let ours: Vec<_> = records
            .iter()
            .filter(|r| r.action.starts_with("retention.") || r.action.starts_with("legal_hold.") || r.action == "gdpr.erase")
            .collect();
        for r in &ours {
            let text = format!("{:?} {:?}", r.target, r.reason);
            assert!(!text.contains("Matter 2026") && !text.contains("Ceftriaxone") && !text.contains("nurse.bob"), "{text}");
        }
        assert!(ours.iter().any(|r| r.action == "gdpr.erase" && r.target.as_deref().unwrap().contains(&bob.id.to_string())));
        log_verifies(&s).await;
    }
}

each_backend! {
    async fn the_expiry_job_runs_by_itself_and_finishes_an_interrupted_erasure(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let service = medhub_service::ServiceConfig {
            retention_interval: std::time::Duration::from_millis(100),
            ..Default::default()
        };
        let s = TestServer::start_on(db, Settings { clock: clock.clone(), service, ..Default::default() }).await;
        let admin = s.user_with_role("it.admin", SystemRole::Admin).await;
        s.set_roles(&admin, &["administrator"]).await;
        let (ann, bob) = (s.user("dr.ann").await, s.user("nurse.bob").await);
        let (status, _) = put(&s, "/api/v1/retention/policies/direct", &admin, json!({"days": 7})).await;
        assert_eq!(status, 200);
        let direct = s.conversation(&ann, "direct", &[&bob]).await;
        let old = send(&s, &ann, &direct, "a1", "Old chat").await;
        let bobs = send(&s, &bob, &direct, "b1", "Bob's reply").await;
        clock.advance(SignedDuration::from_hours(24 * 8));
        let fresh = send(&s, &s.new_session(&ann).await, &direct, "a2", "New chat").await;
        // A crash after an erasure's account step: `erased_at` is set, Bob's message is not
        // done yet. (Bob's reply is past retention too, so mark a fresh message of his instead.)
        let bob = s.new_session(&bob).await;
        let bobs_fresh = send(&s, &bob, &direct, "b2", "Bob's new reply").await;
        s.sql("UPDATE users SET erased_at = 1 WHERE username = 'nurse.bob'").await;

        let store = s.services.store.clone();
        let ids: Vec<medhub_core::MessageId> =
            [&old, &bobs, &fresh, &bobs_fresh].iter().map(|m| m.parse().unwrap()).collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let removed = loop {
            let store = store.clone();
            let ids = ids.clone();
            let states = s
                .on_server(async move {
                    let mut out = Vec::new();
                    for id in ids {
                        out.push(store.message(id).await.unwrap().unwrap().removal.map(|r| r.cause.as_str()));
                    }
                    out
                })
                .await;
            if states.iter().filter(|r| r.is_some()).count() == 3 {
                break states;
            }
            assert!(std::time::Instant::now() < deadline, "the job did not run: {states:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(removed, [Some("retention"), Some("retention"), None, Some("erasure")]);
        let records = s.audit_until(|r| r.iter().any(|x| x.action == "gdpr.erase")).await;
        assert!(records.iter().any(|r| r.action == "retention.expire" && r.actor.is_none()), "the job acts as the system");
        log_verifies(&s).await;
    }
}
