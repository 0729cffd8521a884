//! Presence end to end, on both databases: an override ("in procedure") reaches followers in
//! real time, holds across the user's reconnects and a server restart, is visible over REST,
//! ends when cleared or when it expires (announced to followers), and bad overrides are
//! refused with `invalid_presence`; another organization's user is not found.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use medhub_core::ManualClock;
use medhub_core::model::SystemRole;
use medhub_testkit::{Settings, TestServer, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

each_backend! {
    async fn an_override_reaches_followers_holds_across_reconnects_and_expires(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = TestServer::start_on(db, Settings { clock: clock.clone(), ..Default::default() }).await;
        let (nurse, surgeon) = (s.user("nurse.ana").await, s.user("dr.cut").await);
        let (mut watcher, _) = s.connect(&nurse, None).await;
        let state = watcher.request(json!({"type": "presence_subscribe", "user_ids": [surgeon.id]})).await;
        assert_eq!(state["users"][0]["state"], "offline", "{state}");

        let (conn, _) = s.connect(&surgeon, None).await;
        assert_eq!(watcher.next_of_type("presence").await["state"], "available");

        // In procedure for 10 minutes (within the 15-minute idle timeout, so the sessions
        // stay live when the clock moves): followers see it at once, with its end.
        let put = json!({"state": "in_procedure", "minutes": 10});
        let (status, mine) = s.call(Method::PUT, "/api/v1/me/presence", Some(&surgeon), Some(put)).await;
        assert_eq!((status, &mine["state"]), (200, &json!("in_procedure")), "{mine}");
        let until = mine["until"].as_str().unwrap().to_owned();
        let seen = watcher.next_of_type("presence").await;
        assert_eq!((seen["state"].as_str(), seen["until"].as_str()), (Some("in_procedure"), Some(until.as_str())), "{seen}");

        // It holds while the surgeon's connection drops and comes back.
        conn.close().await;
        let seen = watcher.next_of_type("presence").await;
        assert_eq!((seen["status"].as_str(), seen["state"].as_str()), (Some("offline"), Some("in_procedure")), "{seen}");
        let (_again, _) = s.connect(&surgeon, None).await;
        let seen = watcher.next_of_type("presence").await;
        assert_eq!((seen["status"].as_str(), seen["state"].as_str()), (Some("online"), Some("in_procedure")), "{seen}");
        let (status, read) = s.get(&format!("/api/v1/users/{}/presence", surgeon.id), &nurse).await;
        assert_eq!((status, &read["state"]), (200, &json!("in_procedure")), "{read}");

        // It ends by itself: the poller announces the change after the end.
        clock.advance(SignedDuration::from_mins(10));
        let seen = watcher.next_of_type("presence").await;
        assert_eq!(seen["state"], "available", "{seen}");
        assert!(seen.get("until").is_none(), "{seen}");

        // Busy, then cleared by hand.
        let put = json!({"state": "busy", "minutes": 30});
        let (status, _) = s.call(Method::PUT, "/api/v1/me/presence", Some(&surgeon), Some(put)).await;
        assert_eq!(status, 200);
        assert_eq!(watcher.next_of_type("presence").await["state"], "busy");
        let (status, cleared) = s.call(Method::DELETE, "/api/v1/me/presence", Some(&surgeon), None).await;
        assert_eq!((status, &cleared["state"]), (200, &json!("available")), "{cleared}");
        assert_eq!(watcher.next_of_type("presence").await["state"], "available");
    }
}

each_backend! {
    async fn an_override_is_stored_so_it_survives_a_restart(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (nurse, surgeon) = (s.user("nurse.bo").await, s.user("dr.saw").await);
        let put = json!({"state": "off_shift", "minutes": 600});
        let (status, _) = s.call(Method::PUT, "/api/v1/me/presence", Some(&surgeon), Some(put)).await;
        assert_eq!(status, 200);
        let s = s.restart().await;
        let nurse = s.new_session(&nurse).await;
        // The poller loads the stored override at start.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let (status, read) = s.get(&format!("/api/v1/users/{}/presence", surgeon.id), &nurse).await;
            assert_eq!(status, 200, "{read}");
            if read["state"] == "off_shift" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the override was lost across the restart: {read}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

each_backend! {
    async fn bad_overrides_are_refused_and_other_organizations_are_not_found(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let nurse = s.user("nurse.cy").await;
        for bad in [
            json!({"state": "offline", "minutes": 10}),
            json!({"state": "asleep", "minutes": 10}),
            json!({"state": "busy", "minutes": 0}),
            json!({"state": "busy", "minutes": 961}),
        ] {
            let (status, e) = s.call(Method::PUT, "/api/v1/me/presence", Some(&nurse), Some(bad.clone())).await;
            assert_eq!((status, code(&e)), (400, "invalid_presence"), "{bad}: {e}");
        }
        let (status, e) = s.call(Method::PUT, "/api/v1/me/presence", Some(&nurse), Some(json!({"state": "busy"}))).await;
        assert_eq!((status, code(&e)), (400, "bad_frame"), "{e}");
        let (status, ok) =
            s.call(Method::PUT, "/api/v1/me/presence", Some(&nurse), Some(json!({"state": "busy", "minutes": 960}))).await;
        assert_eq!((status, &ok["state"]), (200, &json!("busy")), "{ok}");

        let other = s.tenant("Other Hospital", "other.root").await;
        let outsider = s.user_in_org(Some(other), "other.nurse", SystemRole::User).await;
        assert_eq!(s.get(&format!("/api/v1/users/{}/presence", nurse.id), &outsider).await.0, 404);
        assert_eq!(s.get(&format!("/api/v1/users/{}/presence", uuid::Uuid::now_v7()), &nurse).await.0, 404);
    }
}

async fn presence_of(s: &TestServer, asking: &medhub_testkit::TestUser, u: &medhub_testkit::TestUser) -> Value {
    let (status, body) = s.get(&format!("/api/v1/users/{}/presence", u.id), asking).await;
    assert_eq!(status, 200, "{body}");
    body
}

each_backend! {
    async fn presence_follows_the_on_call_schedule(db) {
        // 3 March 2026, 09:00 UTC (10:00 in Berlin): a daily 08:00 rotation of Alice then Bob
        // starting 2 March gives Bob today and Alice tomorrow.
        let clock = Arc::new(ManualClock::new("2026-03-03T09:00:00Z".parse().unwrap()));
        let s = TestServer::start_on(db, Settings { clock: clock.clone(), ..Default::default() }).await;
        let keeper = s.user("charge.kim").await;
        s.set_roles(&keeper, &["charge_nurse"]).await;
        let (alice, bob, carol) = (s.user("dr.alice").await, s.user("dr.bob").await, s.user("dr.carol").await);
        let (status, body) =
            s.post("/api/v1/oncall", &keeper, json!({"key": "cardiology-oncall", "name": "Cardiology on call", "kind": "role"})).await;
        assert_eq!(status, 201, "{body}");
        let rotation = json!({"participants": [alice.id, bob.id], "start": "2026-03-02T08:00:00", "kind": "daily"});
        let spec = json!({"name": "Primary", "time_zone": "Europe/Berlin", "rotations": [rotation]});
        let (status, body) = s.post("/api/v1/oncall/cardiology-oncall/schedules", &keeper, spec).await;
        assert_eq!(status, 201, "{body}");

        let presence = s.services.presence.clone();
        let flags = s.on_server(async move { presence.on_call_flags().await.unwrap() }).await;
        let (a, b) = (medhub_core::UserId::from_uuid(alice.id), medhub_core::UserId::from_uuid(bob.id));
        assert_eq!((flags.get(&b), flags.get(&a)), (Some(&true), Some(&false)), "{flags:?}");
        assert!(!flags.contains_key(&medhub_core::UserId::from_uuid(carol.id)));
        s.services.hub.set_on_call(flags);

        // None of them is connected: Bob is on call (offline, but reachable by page), Alice is
        // off shift until tomorrow, Carol is on no schedule.
        let bob_now = presence_of(&s, &keeper, &bob).await;
        assert_eq!((bob_now["state"].as_str(), bob_now["on_call"].as_bool()), (Some("offline"), Some(true)), "{bob_now}");
        let alice_now = presence_of(&s, &keeper, &alice).await;
        assert_eq!((alice_now["state"].as_str(), alice_now["on_call"].as_bool()), (Some("off_shift"), Some(false)), "{alice_now}");
        assert_eq!(presence_of(&s, &keeper, &carol).await["state"], "offline");
        // Alice connects: connected beats off shift.
        let (_c, _) = s.connect(&alice, None).await;
        assert_eq!(presence_of(&s, &keeper, &alice).await["state"], "available");
    }
}
