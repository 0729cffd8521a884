//! Session lifetime under a clock the test controls: expiry ends REST access and closes live
//! sockets at their next heartbeat, without the test waiting twelve hours.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use medhub_core::ManualClock;
use medhub_testkit::{Closed, Settings, TestServer, each_backend};
use serde_json::json;

each_backend! {
    async fn expired_sessions_lose_access_and_their_sockets(db) {
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let s = TestServer::start_on(db, Settings {
            clock: clock.clone(),
            api: medhub_api::ApiConfig {
                heartbeat_interval: Duration::from_millis(100),
                heartbeat_timeout: Duration::from_secs(60),
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
        let alice = s.user("alice").await;
        let (mut ws, _) = s.connect(&alice, None).await;
        let ticket = s.ws_ticket(&alice).await;
        assert_eq!(s.get("/api/v1/me", &alice).await.0, 200);
        // Busy all shift: a user action every 10 minutes keeps the idle timeout away...
        for _ in 0..71 {
            clock.advance(SignedDuration::from_mins(10));
            assert_eq!(s.get("/api/v1/me", &alice).await.0, 200);
        }
        // ...until one second before the 12-hour lifetime ends.
        clock.advance(SignedDuration::from_mins(10) - SignedDuration::from_secs(1));
        assert_eq!(s.get("/api/v1/me", &alice).await.0, 200);
        assert_eq!(ws.request(json!({"type": "ping"})).await["type"], "pong");
        // At 12:00:00, REST refuses and the socket is closed with 4003 at its next heartbeat.
        clock.advance(SignedDuration::from_secs(1));
        let (status, body) = s.get("/api/v1/me", &alice).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("session_expired")), "{body}");
        assert_eq!(ws.closed().await, Closed::Code(4003));
        // A ticket issued earlier does not outlive its session (nor its 30 seconds).
        let mut again = medhub_testkit::WsClient::open(&s.ws_url()).await.unwrap();
        again.send(json!({"type": "hello", "ticket": ticket})).await;
        assert_eq!(again.next().await.unwrap()["error"]["code"], "unauthenticated");
        // Afterwards it is just an unknown token.
        let (status, body) = s.get("/api/v1/me", &alice).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{body}");
    }
}

each_backend! {
    async fn sessions_revoked_elsewhere_close_their_sockets(db) {
        let s = TestServer::start_on(db, Settings {
            service: medhub_service::ServiceConfig {
                session_sweep_interval: Duration::from_millis(100),
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let (mut a, _) = s.connect(&alice, None).await;
        let (mut b, _) = s.connect(&bob, None).await;
        // Deactivate Alice the way `medhub admin` does, through the store, not this server's hub.
        let store = s.services.store.clone();
        let id = medhub_core::UserId::from_uuid(alice.id);
        s.on_server(async move { store.set_user_active(id, false, Timestamp::now(), &[], None).await.unwrap() }).await;
        assert_eq!(a.closed().await, Closed::Code(4003));
        // Bob is untouched.
        assert_eq!(b.request(json!({"type": "ping"})).await["type"], "pong");
    }
}
