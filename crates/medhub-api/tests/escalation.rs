//! Escalation until acknowledged over HTTP and WebSocket, on both databases (docs/clinical.md):
//! a critical message alerts its recipient in the app at once and again every two minutes,
//! escalates to the backup on call at five, and stops when acknowledged; the sender reads it
//! all in the delivery trace. Time is the test's clock; the server's own workers fire.
//! Administrators read and set the policies; users set their contact points and push
//! subscriptions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use medhub_core::escalation::OnCallRole;
use medhub_core::model::SystemRole;
use medhub_core::{ManualClock, OrgId, UserId};
use medhub_service::escalation::{OnCallDirectory, OnCallHandle};
use medhub_service::{ServiceConfig, ServiceError};
use medhub_testkit::{Settings, TestServer, TestUser, WsClient, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

/// The on-call directory of the test: whoever the test says holds `backup_on_call`.
#[derive(Default)]
struct Roster {
    backup: Mutex<Vec<UserId>>,
}

#[async_trait]
impl OnCallDirectory for Roster {
    async fn holders(&self, _org: OrgId, role: &OnCallRole, _at: Timestamp) -> Result<Vec<UserId>, ServiceError> {
        Ok(if role.as_str() == "backup_on_call" { self.backup.lock().unwrap().clone() } else { Vec::new() })
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

async fn server(db: medhub_store::testdb::TestDb, clock: &Arc<ManualClock>, roster: Arc<Roster>) -> TestServer {
    let service = ServiceConfig { on_call: Some(OnCallHandle(roster)), ..ServiceConfig::default() };
    TestServer::start_on(db, Settings { service, clock: clock.clone(), ..Default::default() }).await
}

/// The trace as (kind, user, channel, step, round), once `done` holds (the workers write it in
/// the background; waits up to 15 s).
async fn trace_until(s: &TestServer, sender: &TestUser, message: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = s.get(&format!("/api/v1/messages/{message}/trace"), sender).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "the trace never got there: {body:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(trace: &Value, kind: &str, user: &TestUser) -> usize {
    trace["steps"].as_array().unwrap().iter().filter(|s| s["kind"] == kind && s["user_id"] == json!(user.id)).count()
}

async fn notice(c: &mut WsClient) -> Value {
    let n = c.next_of_type("notice").await;
    assert!(c.backlog().iter().all(|f| f["type"] != "notice"), "two notices at once: {:?}", c.backlog());
    n
}

each_backend! {
    async fn a_critical_message_alerts_repeats_escalates_and_stops_when_acknowledged(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let roster = Arc::new(Roster::default());
        let s = server(db, &clock, roster.clone()).await;
        let alice = s.user("lab.alice").await;
        let bob = s.user("dr.bob").await;
        let carol = s.user("dr.carol").await;
        let dave = s.user("nurse.dave").await;
        let admin = s.user_with_role("it.admin", SystemRole::Admin).await;
        s.set_roles(&admin, &["administrator"]).await;
        roster.backup.lock().unwrap().push(UserId::from_uuid(carol.id));
        let conv = s.conversation(&alice, "group", &[&bob, &dave]).await;
        let (mut b, _) = s.connect(&bob, None).await;
        let (mut c, _) = s.connect(&carol, None).await;

        let (status, sent) = s.post(&format!("/api/v1/conversations/{conv}/messages"), &alice,
            json!({"client_txn_id": "k1", "body": "K+ 7.1 on bed 4, call me", "priority": "critical"})).await;
        assert_eq!(status, 201, "{sent}");
        let m = sent["message"]["id"].as_str().unwrap().to_owned();

        // At once, in the app: the recipients (not the sender).
        let n = notice(&mut b).await;
        assert_eq!((n["message_id"].as_str(), n["reason"].as_str(), &n["step"], &n["round"]),
            (Some(m.as_str()), Some("new_message"), &json!(1), &json!(0)));
        assert_eq!((n["priority"].as_str(), n["sender_id"].clone()), (Some("critical"), json!(alice.id)));
        assert!(n.get("body").is_none() && !n.to_string().contains("K+"), "a notice carries ids only: {n}");
        // Dave is offline: the trace says so, and nothing is silently dropped.
        let t = trace_until(&s, &alice, &m, |t| count(t, "sent", &bob) == 1 && count(t, "failed", &dave) == 1).await;
        let failed = t["steps"].as_array().unwrap().iter().find(|s| s["kind"] == "failed").unwrap();
        assert_eq!((failed["channel"].as_str(), failed["detail"].as_str()),
            (Some("in_app"), Some("attempt 1: no live connection on this node")));

        // Two minutes later, again.
        clock.advance(SignedDuration::from_mins(2));
        let n = notice(&mut b).await;
        assert_eq!((&n["step"], &n["round"]), (&json!(1), &json!(1)));
        // Five minutes after the send, the backup on call: an escalation to her.
        clock.advance(SignedDuration::from_mins(3));
        let n = notice(&mut c).await;
        assert_eq!((n["reason"].as_str(), &n["step"], &n["round"]), (Some("escalated"), &json!(2), &json!(0)));
        let t = trace_until(&s, &alice, &m, |t| count(t, "sent", &carol) == 1).await;
        assert_eq!(count(&t, "escalated", &carol), 1);
        assert_eq!(t["escalation"]["state"], "open");
        assert_eq!(t["escalation"]["step"], 2);

        // Bob takes it on: the escalation ends, for everyone.
        let (status, body) = s.post(&format!("/api/v1/messages/{m}/ack"), &bob, json!({"response": {"kind": "accept"}})).await;
        assert_eq!(status, 200, "{body}");
        clock.advance(SignedDuration::from_mins(30));
        // Half an hour idle ends sessions: everyone signs in again.
        let (alice, admin, carol, dave) =
            (s.new_session(&alice).await, s.new_session(&admin).await, s.new_session(&carol).await, s.new_session(&dave).await);
        let escalation = s.services.escalation.clone();
        assert_eq!(s.on_server(async move { escalation.fire_due().await.unwrap() }).await, 0, "nothing pending");
        let t = trace_until(&s, &alice, &m, |t| t["escalation"]["state"] == "acknowledged").await;
        assert_eq!(t["escalation"]["closed_by"], json!(bob.id));
        assert_eq!((count(&t, "notified", &bob), count(&t, "notified", &carol), count(&t, "notified", &dave)), (2, 1, 2));

        // The whole trace, in order.
        let kinds: Vec<(String, Option<String>, Option<String>)> = t["steps"].as_array().unwrap().iter()
            .map(|s| (s["kind"].as_str().unwrap().to_owned(), s["user_id"].as_str().map(str::to_owned), s["channel"].as_str().map(str::to_owned)))
            .collect();
        let first = &kinds[0];
        assert_eq!(first, &("accepted".to_owned(), Some(alice.id.to_string()), None));
        let last = kinds.last().unwrap();
        assert_eq!(last, &("acknowledged".to_owned(), Some(bob.id.to_string()), None));
        let pos = |k: &str, u: &TestUser| kinds.iter().position(|(kind, user, _)| kind == k && user.as_deref() == Some(&u.id.to_string())).unwrap();
        assert!(pos("notified", &bob) < pos("sent", &bob));
        assert!(pos("sent", &bob) < pos("escalated", &carol));
        assert!(pos("escalated", &carol) < pos("notified", &carol));
        let steps = t["steps"].as_array().unwrap();
        let times: Vec<Timestamp> = steps.iter().map(|s| s["at"].as_str().unwrap().parse().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "in order of time");
        let mut recipients: Vec<(String, String)> = t["recipients"].as_array().unwrap().iter()
            .map(|r| (r["user_id"].as_str().unwrap().to_owned(), r["state"].as_str().unwrap().to_owned())).collect();
        recipients.sort();
        let mut want = vec![(bob.id.to_string(), "acknowledged".to_owned()), (dave.id.to_string(), "sent".to_owned())];
        want.sort();
        assert_eq!(recipients, want);

        // Who may read it: the sender and administrators; another member is refused; an
        // outsider cannot tell it exists.
        let (status, _) = s.get(&format!("/api/v1/messages/{m}/trace"), &admin).await;
        assert_eq!(status, 200);
        let (status, body) = s.get(&format!("/api/v1/messages/{m}/trace"), &dave).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        let (status, body) = s.get(&format!("/api/v1/messages/{m}/trace"), &carol).await;
        assert_eq!((status, code(&body)), (404, "not_found"));
        // Firings are audited with ids only; attempts are counted per channel and outcome.
        let records = s.audit_until(|r| r.iter().filter(|r| r.action == "escalation.step").count() == 3).await;
        assert!(records.iter().filter(|r| r.action == "escalation.step").all(|r| r.object_id.as_deref() == Some(m.as_str())));
        let (_, metrics) = s.call(Method::GET, "/metrics", None, None).await;
        let metrics = metrics.as_str().unwrap().to_owned();
        assert!(metrics.contains(r#"medhub_notifications_total{channel="in_app",outcome="sent"} 3"#), "{metrics}");
        assert!(metrics.contains(r#"medhub_notifications_total{channel="in_app",outcome="failed"} 2"#), "{metrics}");
        assert!(metrics.contains("medhub_escalation_firings_total 3"), "{metrics}");
    }
}

each_backend! {
    async fn a_routine_message_is_not_escalated_and_a_decline_does_not_stop_it(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = server(db, &clock, Arc::new(Roster::default())).await;
        let alice = s.user("lab.alice").await;
        let bob = s.user("dr.bob").await;
        let conv = s.conversation(&alice, "direct", &[&bob]).await;
        let (status, sent) = s.post(&format!("/api/v1/conversations/{conv}/messages"), &alice,
            json!({"client_txn_id": "r1", "body": "Lunch?"})).await;
        assert_eq!(status, 201);
        let routine = sent["message"]["id"].as_str().unwrap().to_owned();
        let (status, t) = s.get(&format!("/api/v1/messages/{routine}/trace"), &alice).await;
        assert_eq!(status, 200);
        assert_eq!(t["escalation"], Value::Null);
        assert_eq!(t["steps"].as_array().unwrap().len(), 1, "accepted only: {t}");

        let (_, sent) = s.post(&format!("/api/v1/conversations/{conv}/messages"), &alice,
            json!({"client_txn_id": "u1", "body": "BP 80/40", "priority": "urgent"})).await;
        let m = sent["message"]["id"].as_str().unwrap().to_owned();
        // In the app only: this server has no Web Push, and bob no subscription.
        trace_until(&s, &alice, &m, |t| count(t, "notified", &bob) == 1).await;
        let (status, _) = s.post(&format!("/api/v1/messages/{m}/ack"), &bob, json!({"response": {"kind": "decline"}})).await;
        assert_eq!(status, 200);
        // Urgent repeats every 5 minutes; bob declined, so the repeat has nobody to notify.
        clock.advance(SignedDuration::from_mins(5));
        let t = trace_until(&s, &alice, &m, |t| t["steps"].as_array().unwrap().iter().any(|s| s["kind"] == "no_target")).await;
        assert_eq!(t["escalation"]["state"], "open", "a decline does not end the escalation");
        assert_eq!(count(&t, "notified", &bob), 1);
        assert_eq!(t["steps"].as_array().unwrap().iter().filter(|s| s["channel"] == "push").count(), 0);
        let (status, _) = s.post(&format!("/api/v1/messages/{m}/ack"), &bob, json!({"response": {"kind": "done"}})).await;
        assert_eq!(status, 200);
        let t = trace_until(&s, &alice, &m, |t| t["escalation"]["state"] == "acknowledged").await;
        assert_eq!(t["steps"].as_array().unwrap().last().unwrap()["detail"], "done");
    }
}

each_backend! {
    async fn administrators_read_and_set_escalation_policies(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = server(db, &clock, Arc::new(Roster::default())).await;
        let admin = s.user_with_role("it.admin", SystemRole::Admin).await;
        s.set_roles(&admin, &["administrator"]).await;
        let nurse = s.user("nurse.dave").await;
        let other = s.tenant("Riverside", "r.admin").await;
        let outsider = s.user_in_org(Some(other), "r.nurse", SystemRole::User).await;
        let path = "/api/v1/admin/escalation-policies/critical";

        let (status, p) = s.get(path, &admin).await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(p["shipped"], true);
        assert_eq!(p["stop_after_secs"], 7200);
        assert_eq!(p["steps"][0], json!({"after_secs": 0, "targets": {"kind": "recipients"},
            "channels": ["in_app", "push", "email", "sms", "pager"], "repeat_every_secs": 120}));
        assert_eq!(p["steps"][1]["targets"], json!({"kind": "on_call", "role": "backup_on_call"}));
        assert_eq!(p["steps"][2]["after_secs"], 600);
        let (status, body) = s.get(path, &nurse).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        let (status, body) = s.get("/api/v1/admin/escalation-policies/routine", &admin).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"));

        let ours = json!({"steps": [
            {"after_secs": 0, "targets": {"kind": "recipients"}, "channels": ["in_app", "push"], "repeat_every_secs": 60},
            {"after_secs": 180, "targets": {"kind": "on_call", "role": "icu_charge_nurse"}, "channels": ["in_app", "pager"]},
            {"after_secs": 600, "targets": {"kind": "users", "user_ids": [nurse.id]}, "channels": ["sms"]}
        ], "stop_after_secs": 3600});
        let (status, body) = s.call(Method::PUT, path, Some(&admin), Some(ours.clone())).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["shipped"], false);
        assert_eq!(body["set_by"], json!(admin.id));
        let want: Vec<Value> = ours["steps"].as_array().unwrap().iter().map(|s| {
            let mut s = s.clone();
            if s.get("repeat_every_secs").is_none() { s["repeat_every_secs"] = Value::Null; }
            s
        }).collect();
        assert_eq!(body["steps"], Value::Array(want));
        let (_, again) = s.get(path, &admin).await;
        assert_eq!(again, body);
        // Urgent is untouched.
        let (_, urgent) = s.get("/api/v1/admin/escalation-policies/urgent", &admin).await;
        assert_eq!(urgent["shipped"], true);

        for (bad, why) in [
            (json!({"steps": [], "stop_after_secs": 60}), "invalid_escalation_policy"),
            (json!({"steps": [{"after_secs": 0, "targets": {"kind": "recipients"}, "channels": ["push"], "repeat_every_secs": 10}], "stop_after_secs": 60}), "invalid_escalation_policy"),
            (json!({"steps": [{"after_secs": 0, "targets": {"kind": "recipients"}, "channels": []}], "stop_after_secs": 60}), "invalid_escalation_policy"),
            (json!({"steps": [{"after_secs": 0, "targets": {"kind": "recipients"}, "channels": ["push"]}], "stop_after_secs": 90000}), "invalid_escalation_policy"),
            (json!({"steps": [{"after_secs": 0, "targets": {"kind": "on_call", "role": "ICU Nurse"}, "channels": ["push"]}], "stop_after_secs": 60}), "invalid_request"),
            (json!({"steps": [{"after_secs": 0, "targets": {"kind": "users", "user_ids": [outsider.id]}, "channels": ["push"]}], "stop_after_secs": 60}), "not_found"),
            (json!({"steps": [{"after_secs": 0, "targets": {"kind": "recipients"}, "channels": ["fax"]}], "stop_after_secs": 60}), "bad_frame"),
        ] {
            let (status, body) = s.call(Method::PUT, path, Some(&admin), Some(bad.clone())).await;
            assert_eq!(code(&body), why, "{bad} -> {status} {body}");
        }
        let (_, unchanged) = s.get(path, &admin).await;
        assert_eq!(unchanged, body, "refused changes change nothing");
        // Changing it needs a fresh step-up; every change is audited.
        clock.advance(SignedDuration::from_mins(6));
        let (status, body) = s.call(Method::PUT, path, Some(&admin), Some(ours)).await;
        assert_eq!((status, code(&body)), (403, "step_up_required"));
        let records = s.audit_until(|r| r.iter().any(|r| r.action == "admin.escalation_policy")).await;
        let changes: Vec<_> = records.iter().filter(|r| r.action == "admin.escalation_policy").collect();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].target.as_deref(), Some("priority=critical steps=3"));
    }
}

each_backend! {
    async fn users_set_their_contact_points_and_push_subscriptions(db) {
        let vapid = medhub_notify::VapidKey::generate().unwrap();
        let notify: medhub_notify::NotifyConfig = serde_json::from_value(json!({
            "public_base_url": "https://medhub.example.org",
            "webpush": {"vapid_private_key": vapid.private_base64url(), "subject": "mailto:it@hospital.example",
                        "allowed_endpoint_hosts": ["push.example"]},
        })).unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let notifier = medhub_notify::Notifier::new(&notify, clock.clone()).unwrap();
        let service = ServiceConfig { notifier: Some(Arc::new(notifier)), ..ServiceConfig::default() };
        let s = TestServer::start_on(db, Settings { service, clock: clock.clone(), ..Default::default() }).await;
        let bob = s.user("dr.bob").await;

        let (status, c) = s.get("/api/v1/me/contact", &bob).await;
        assert_eq!((status, c), (200, json!({"email": null, "phone": null, "pager": null})));
        for (bad, why) in [
            (json!({"email": "not an address"}), "email is not an e-mail address"),
            (json!({"phone": "07700 900123"}), "phone is not a mobile number in E.164 form (+447700900123)"),
        ] {
            let (status, body) = s.call(Method::PUT, "/api/v1/me/contact", Some(&bob), Some(bad)).await;
            assert_eq!((status, code(&body), body["error"]["message"].as_str()), (400, "invalid_contact_point", Some(why)));
        }
        let mine = json!({"email": "bob@hospital.example", "phone": "+447700900123", "pager": "4711"});
        let (status, body) = s.call(Method::PUT, "/api/v1/me/contact", Some(&bob), Some(mine.clone())).await;
        assert_eq!((status, body), (200, mine.clone()));
        let (_, c) = s.get("/api/v1/me/contact", &bob).await;
        assert_eq!(c, mine);
        let (status, body) = s.call(Method::PUT, "/api/v1/me/contact", Some(&bob), Some(json!({"email": "  "}))).await;
        assert_eq!((status, body), (200, json!({"email": null, "phone": null, "pager": null})));
        // The audit record says which are set, never the values.
        let records = s.audit_until(|r| r.iter().filter(|r| r.action == "account.contact").count() == 2).await;
        let contact: Vec<_> = records.iter().filter(|r| r.action == "account.contact").collect();
        assert_eq!(contact[0].target.as_deref(), Some("set=email,phone,pager"));
        assert!(!format!("{contact:?}").contains("hospital.example") && !format!("{contact:?}").contains("7700"));

        let sub = json!({"endpoint": "https://push.example/send/abc", "expirationTime": null,
                         "keys": {"p256dh": vapid.public_base64url(), "auth": "AAAAAAAAAAAAAAAAAAAAAA"}});
        let (status, body) = s.post("/api/v1/me/push-subscriptions", &bob, sub.clone()).await;
        assert_eq!(status, 201, "{body}");
        let mut elsewhere = sub.clone();
        elsewhere["endpoint"] = json!("https://attacker.example/x");
        let (status, body) = s.post("/api/v1/me/push-subscriptions", &bob, elsewhere).await;
        assert_eq!((status, code(&body)), (400, "invalid_contact_point"));
        let mut broken = sub.clone();
        broken["keys"]["auth"] = json!("short");
        let (status, body) = s.post("/api/v1/me/push-subscriptions", &bob, broken).await;
        assert_eq!((status, code(&body)), (400, "invalid_contact_point"));
        let gone = json!({"endpoint": "https://push.example/send/abc"});
        let (status, _) = s.call(Method::DELETE, "/api/v1/me/push-subscriptions", Some(&bob), Some(gone.clone())).await;
        assert_eq!(status, 204);
        let (status, body) = s.call(Method::DELETE, "/api/v1/me/push-subscriptions", Some(&bob), Some(gone)).await;
        assert_eq!((status, code(&body)), (404, "not_found"));
    }
}
