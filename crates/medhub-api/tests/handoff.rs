//! Shift handoff (I-PASS) end to end, on both databases: the outgoing nurse gives a handoff
//! of a patient and the patient's conversation; the incoming nurse cannot read the
//! conversation before accepting, accepts with a synthesis, and then can; every step, and
//! every read of the note, is in the audit log with the patient; bad handoffs are refused
//! with their documented codes; nobody else sees it; an expired one cannot be accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use medhub_core::{ManualClock, UserId};
use medhub_testkit::{Settings, TestServer, TestUser, each_backend};
use serde_json::{Value, json};

const PATIENT: &str = "pat-77";

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

fn note() -> Value {
    json!({
        "patient_ref": PATIENT,
        "severity": "watcher",
        "summary": "Day 2 after hip replacement, new confusion overnight",
        "actions": [{"text": "Check sodium at 06:00"}, {"text": "Review analgesia", "done": true}],
        "awareness": "If more confused: exclude retention, call the on-call doctor",
    })
}

struct Ward {
    s: TestServer,
    clock: Arc<ManualClock>,
    outgoing: TestUser,
    incoming: TestUser,
    conversation: String,
}

async fn ward(db: medhub_store::testdb::TestDb) -> Ward {
    let clock = Arc::new(ManualClock::new(Timestamp::now()));
    let s = TestServer::start_on(db, Settings { clock: clock.clone(), ..Default::default() }).await;
    let outgoing = s.user("nurse.day").await;
    let incoming = s.user("nurse.night").await;
    let charge = s.user("charge.kim").await;
    s.set_roles(&charge, &["charge_nurse"]).await;
    // The outgoing nurse is on the patient's care team and in the patient's conversation.
    let (status, body) = s
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/patients/{PATIENT}/care-team/{}", outgoing.id),
            Some(&charge),
            None,
        )
        .await;
    assert!(status == 200 || status == 201 || status == 204, "{status} {body}");
    let members = json!([{"user_id": outgoing.id}]);
    let body = json!({"kind": "group", "title": "Bed 4", "members": members, "patient_ref": PATIENT});
    let (status, c) = s.post("/api/v1/conversations", &charge, body).await;
    assert_eq!(status, 201, "{c}");
    let conversation = c["conversation"]["id"].as_str().unwrap().to_owned();
    Ward { s, clock, outgoing, incoming, conversation }
}

each_backend! {
    async fn a_handoff_is_given_accepted_with_a_synthesis_and_moves_the_work(db) {
        let Ward { s, outgoing, incoming, conversation, .. } = ward(db).await;
        // Before: the incoming nurse cannot read the patient's conversation.
        assert_eq!(s.get(&format!("/api/v1/conversations/{conversation}"), &incoming).await.0, 404);

        let give = json!({"to": incoming.id, "patients": [note()], "conversations": [conversation]});
        let (status, h) = s.post("/api/v1/handoffs", &outgoing, give).await;
        assert_eq!(status, 201, "{h}");
        assert_eq!(h["state"], "given");
        assert_eq!(h["patients"][0]["actions"][1]["done"], true);
        assert!(h["patients"][0].get("synthesis").is_none());
        let id = h["id"].as_str().unwrap().to_owned();

        // Both see it in their listing, without patient data.
        for u in [&outgoing, &incoming] {
            let (status, list) = s.get("/api/v1/handoffs", u).await;
            assert_eq!(status, 200, "{list}");
            let found = &list["handoffs"][0];
            assert_eq!((found["id"].as_str(), found["patient_count"].as_u64()), (Some(id.as_str()), Some(1)));
            assert!(!list.to_string().contains(PATIENT), "a listing names no patient: {list}");
        }
        // Nobody else sees it.
        let stranger = s.user("nurse.other").await;
        assert_eq!(s.get(&format!("/api/v1/handoffs/{id}"), &stranger).await.0, 404);
        assert_eq!(s.get("/api/v1/handoffs", &stranger).await.1["handoffs"], json!([]));

        // The receiver reads it (recorded), then accepts; a missing synthesis is refused.
        let (status, read) = s.get(&format!("/api/v1/handoffs/{id}"), &incoming).await;
        assert_eq!((status, read["patients"][0]["summary"].as_str()), (200, Some("Day 2 after hip replacement, new confusion overnight")));
        let (status, e) = s.post(&format!("/api/v1/handoffs/{id}/accept"), &incoming, json!({"synthesis": []})).await;
        assert_eq!((status, code(&e)), (400, "invalid_handoff"), "{e}");
        let (status, e) = s.post(&format!("/api/v1/handoffs/{id}/accept"), &outgoing, json!({"synthesis": []})).await;
        assert_eq!((status, code(&e)), (403, "forbidden"), "{e}");
        let synthesis = json!({"synthesis": [{"patient_ref": PATIENT, "synthesis": "Confused since last night; sodium at 6"}]});
        let (status, done) = s.post(&format!("/api/v1/handoffs/{id}/accept"), &incoming, synthesis.clone()).await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["state"], "accepted");
        assert_eq!(done["patients"][0]["synthesis"], "Confused since last night; sodium at 6");
        // Accepting again answers the same (the moves are idempotent); cancelling now is too late.
        let (status, again) = s.post(&format!("/api/v1/handoffs/{id}/accept"), &incoming, synthesis).await;
        assert_eq!((status, &again["state"]), (200, &json!("accepted")), "{again}");
        let (status, e) = s.post(&format!("/api/v1/handoffs/{id}/cancel"), &outgoing, json!({})).await;
        assert_eq!((status, code(&e)), (409, "handoff_closed"), "{e}");

        // After: the receiver is a member of the conversation and on the patient's care team.
        let (status, c) = s.get(&format!("/api/v1/conversations/{conversation}"), &incoming).await;
        assert_eq!((status, &c["conversation"]["access"]), (200, &json!("member")), "{c}");
        let (status, team) = s.get(&format!("/api/v1/patients/{PATIENT}/care-team"), &incoming).await;
        assert_eq!(status, 200, "{team}");
        assert!(team.to_string().contains(&incoming.id.to_string()), "{team}");

        // Every step is audited with the patient, by whom, about which handoff.
        let (out_id, in_id) = (UserId::from_uuid(outgoing.id), UserId::from_uuid(incoming.id));
        let records = s
            .audit_until(|r| {
                ["handoff.give", "handoff.read", "handoff.accept"].iter().all(|a| r.iter().any(|x| x.action == *a))
                    && r.iter().any(|x| x.action == "care_team.add" && x.reason.as_deref() == Some("handoff"))
            })
            .await;
        let step = |action: &str| records.iter().find(|r| r.action == action).unwrap().clone();
        let given = step("handoff.give");
        assert_eq!((given.actor, given.patient_ref.as_deref(), given.object_id.as_deref()), (Some(out_id), Some(PATIENT), Some(id.as_str())));
        assert_eq!((step("handoff.read").actor, step("handoff.accept").actor), (Some(in_id), Some(in_id)));
        let added = records.iter().find(|r| r.action == "care_team.add" && r.reason.as_deref() == Some("handoff")).unwrap();
        assert_eq!((added.patient_ref.as_deref(), added.object_id.clone()), (Some(PATIENT), Some(in_id.to_string())));
        // The note's text is nowhere in the audit log.
        assert!(!format!("{records:?}").contains("hip replacement"));
    }
}

each_backend! {
    async fn bad_handoffs_are_refused_with_their_codes(db) {
        let Ward { s, outgoing, incoming, conversation, .. } = ward(db).await;
        let post = |body: Value| s.post("/api/v1/handoffs", &outgoing, body);
        let (status, e) = post(json!({"to": outgoing.id, "patients": [note()]})).await;
        assert_eq!((status, code(&e)), (400, "invalid_handoff"), "{e}");
        let (status, e) = post(json!({"to": incoming.id})).await;
        assert_eq!((status, code(&e)), (400, "invalid_handoff"), "{e}");
        let mut bad = note();
        bad["severity"] = json!("critical");
        let (status, e) = post(json!({"to": incoming.id, "patients": [bad]})).await;
        assert_eq!((status, code(&e)), (400, "invalid_handoff"), "{e}");
        let mut bad = note();
        bad["patient_ref"] = json!("bad ref!");
        let (status, e) = post(json!({"to": incoming.id, "patients": [bad]})).await;
        assert_eq!((status, code(&e)), (400, "invalid_patient_ref"), "{e}");
        let mut bad = note();
        bad["synthesis"] = json!("not yours to write");
        let (status, e) = post(json!({"to": incoming.id, "patients": [bad]})).await;
        assert_eq!((status, code(&e)), (400, "invalid_handoff"), "{e}");
        let (status, e) = post(json!({"to": incoming.id, "patients": [note()], "extra": 1})).await;
        assert_eq!((status, code(&e)), (400, "bad_frame"), "{e}");
        // A patient whose care team the giver is not on, a conversation it is not in, and a
        // receiver that does not exist.
        let mut other = note();
        other["patient_ref"] = json!("pat-99");
        let (status, e) = post(json!({"to": incoming.id, "patients": [other]})).await;
        assert_eq!((status, code(&e)), (400, "invalid_handoff"), "{e}");
        let (status, e) = post(json!({"to": incoming.id, "conversations": [uuid::Uuid::now_v7()]})).await;
        assert_eq!((status, code(&e)), (404, "not_found"), "{e}");
        let (status, e) = post(json!({"to": uuid::Uuid::now_v7(), "conversations": [conversation]})).await;
        assert_eq!((status, code(&e)), (404, "not_found"), "{e}");
        let (status, list) = s.get("/api/v1/handoffs", &outgoing).await;
        assert_eq!((status, &list["handoffs"]), (200, &json!([])), "nothing was stored: {list}");
        // The server keeps working.
        let (status, h) = post(json!({"to": incoming.id, "conversations": [conversation]})).await;
        assert_eq!(status, 201, "{h}");
    }
}

each_backend! {
    async fn a_handoff_nobody_accepted_expires_and_the_giver_can_cancel_one(db) {
        let Ward { s, clock, outgoing, incoming, conversation } = ward(db).await;
        let give = json!({"to": incoming.id, "patients": [note()], "conversations": [conversation]});
        let (_, first) = s.post("/api/v1/handoffs", &outgoing, give.clone()).await;
        let (_, second) = s.post("/api/v1/handoffs", &outgoing, give).await;
        let (first, second) = (first["id"].as_str().unwrap().to_owned(), second["id"].as_str().unwrap().to_owned());

        let (status, e) = s.post(&format!("/api/v1/handoffs/{second}/cancel"), &incoming, json!({})).await;
        assert_eq!((status, code(&e)), (403, "forbidden"), "{e}");
        let (status, c) = s.post(&format!("/api/v1/handoffs/{second}/cancel"), &outgoing, json!({})).await;
        assert_eq!((status, &c["state"]), (200, &json!("cancelled")), "{c}");
        let synthesis = json!({"synthesis": [{"patient_ref": PATIENT, "synthesis": "ok"}]});
        let (status, e) = s.post(&format!("/api/v1/handoffs/{second}/accept"), &incoming, synthesis.clone()).await;
        assert_eq!((status, code(&e)), (409, "handoff_closed"), "{e}");

        clock.advance(SignedDuration::from_hours(16));
        // Sessions end after 12 hours; the receiver signs in again.
        let incoming = s.new_session(&incoming).await;
        let (status, h) = s.get(&format!("/api/v1/handoffs/{first}"), &incoming).await;
        assert_eq!((status, &h["state"]), (200, &json!("expired")), "{h}");
        let (status, e) = s.post(&format!("/api/v1/handoffs/{first}/accept"), &incoming, synthesis).await;
        assert_eq!((status, code(&e)), (409, "handoff_closed"), "{e}");
        // Nothing moved: the incoming nurse still cannot read the conversation.
        assert_eq!(s.get(&format!("/api/v1/conversations/{conversation}"), &incoming).await.0, 404);
    }
}
