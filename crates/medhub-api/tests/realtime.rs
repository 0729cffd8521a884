//! The real-time protocol end to end: a real server, real WebSocket clients, both databases.

// Tests panic on anything unexpected; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use medhub_testkit::{Closed, Settings, TestServer, each_backend};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn send(conv: &str, txn: &str, body: &str) -> Value {
    json!({"type": "send", "conversation_id": conv, "client_txn_id": txn, "body": body})
}

each_backend! {
    async fn messages_reach_members_in_order_after_a_durable_ack(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let (mut a, _) = s.connect(&alice, None).await;
        let (mut b, ready) = s.connect(&bob, None).await;
        assert_eq!(ready["protocol"], 1);
        assert_eq!(ready["limits"]["max_message_bytes"], 16384);
        let (mut c, _) = s.connect(&carol, None).await;
        for n in 1..=3 {
            let sent = a.request(send(&conv, &format!("t{n}"), &format!("hello {n}"))).await;
            assert_eq!(sent["type"], "sent", "{sent}");
            assert_eq!(sent["message"]["seq"], n);
            assert_eq!(sent["duplicate"], false);
        }
        for n in 1..=3 {
            let e = b.next_event().await;
            assert_eq!(e["kind"], "message.created");
            assert_eq!(e["message"]["seq"], n);
            assert_eq!(e["message"]["body"], format!("hello {n}"));
            assert_eq!(e["conversation_id"], conv);
        }
        // The sender's own connection sees its messages too (other devices stay in sync).
        for n in 1..=3 {
            assert_eq!(a.next_event().await["message"]["seq"], n);
        }
        // Carol is not a member: she gets nothing, and a ping proves her connection is alive.
        let pong = c.request(json!({"type": "ping"})).await;
        assert_eq!(pong["type"], "pong");
        assert!(c.backlog().iter().all(|f| f["type"] != "event"), "{:?}", c.backlog());
    }
}

each_backend! {
    async fn strangers_get_the_same_answer_as_for_missing_conversations(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, mallory) = (s.user("alice").await, s.user("bob").await, s.user("mallory").await);
        let conv = s.conversation(&alice, "direct", &[&bob]).await;
        let (mut m, _) = s.connect(&mallory, None).await;
        let theirs = m.request(send(&conv, "x1", "let me in")).await;
        let missing = m.request(send(&uuid::Uuid::now_v7().to_string(), "x2", "let me in")).await;
        assert_eq!(theirs["type"], "error");
        assert_eq!(theirs["error"], missing["error"]);
        assert_eq!(theirs["error"]["code"], "not_found");
        let (st1, b1) = s.get(&format!("/api/v1/conversations/{conv}/messages"), &mallory).await;
        let (st2, b2) = s.get(&format!("/api/v1/conversations/{}/messages", uuid::Uuid::now_v7()), &mallory).await;
        assert_eq!((st1, &b1), (st2, &b2));
        assert_eq!(st1, 404);
    }
}

each_backend! {
    async fn resend_returns_the_original_message_even_after_restart(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "direct", &[&bob]).await;
        let (mut a, _) = s.connect(&alice, None).await;
        let first = a.request(send(&conv, "same-key", "BP 80/40")).await;
        let again = a.request(send(&conv, "same-key", "BP 80/40")).await;
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["message"], first["message"]);
        let reused = a.request(send(&conv, "same-key", "something else")).await;
        assert_eq!(reused["error"]["code"], "idempotency_key_reused");
        drop(a);
        let s = s.restart().await;
        let (mut a, _) = s.connect(&alice, None).await;
        let after = a.request(send(&conv, "same-key", "BP 80/40")).await;
        assert_eq!(after["duplicate"], true);
        assert_eq!(after["message"]["id"], first["message"]["id"]);
        let (_, page) = s.get(&format!("/api/v1/conversations/{conv}/messages"), &alice).await;
        assert_eq!(page["messages"].as_array().map(Vec::len), Some(1), "{page}");
    }
}

each_backend! {
    async fn resume_delivers_every_missed_event_exactly_once(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let (mut b, _) = s.connect(&bob, None).await;
        let (mut a, _) = s.connect(&alice, None).await;
        a.request(send(&conv, "m1", "one")).await;
        let first = b.next_event().await;
        let cursor = first["cursor"].as_u64().unwrap();
        b.close().await;
        for n in 2..=6 {
            a.request(send(&conv, &format!("m{n}"), "missed")).await;
        }
        // Reconnect while Alice keeps sending: nothing lost, nothing twice.
        let sender = {
            let conv = conv.clone();
            let (mut a2, _) = s.connect(&alice, None).await;
            tokio::spawn(async move {
                for n in 7..=12 {
                    a2.request(send(&conv, &format!("m{n}"), "during reconnect")).await;
                }
            })
        };
        let (mut b, _) = s.connect(&bob, Some(cursor)).await;
        let mut seqs = Vec::new();
        let mut last_cursor = cursor;
        while seqs.len() < 11 {
            let e = b.next_event().await;
            let c = e["cursor"].as_u64().unwrap();
            assert!(c > last_cursor, "cursors increase: {c} after {last_cursor}");
            last_cursor = c;
            seqs.push(e["message"]["seq"].as_u64().unwrap());
        }
        sender.await.unwrap();
        assert_eq!(seqs, (2..=12).collect::<Vec<_>>());
        let pong = b.request(json!({"type": "ping"})).await;
        assert_eq!(pong["type"], "pong");
        assert!(b.backlog().iter().all(|f| f["type"] != "event"), "no duplicates: {:?}", b.backlog());
    }
}

each_backend! {
    async fn a_cursor_ahead_of_the_log_requires_a_resync(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let alice = s.user("alice").await;
        let ticket = s.ws_ticket(&alice).await;
        let mut c = medhub_testkit::WsClient::open(&s.ws_url()).await.unwrap();
        c.send(json!({"type": "hello", "ticket": ticket, "cursor": 999_999})).await;
        let err = c.next().await.unwrap();
        assert_eq!(err["error"]["code"], "cursor_out_of_range");
        assert_eq!(c.closed().await, Closed::Code(4010));
    }
}

each_backend! {
    async fn bad_input_gets_an_error_and_the_connection_keeps_working(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "direct", &[&bob]).await;
        let (mut a, _) = s.connect(&alice, None).await;
        for (raw, code) in [
            ("{not json", "bad_frame"),
            (r#"{"type":"teleport"}"#, "bad_frame"),
            (r#"{"type":"send","conversation_id":42,"client_txn_id":"t","body":"x"}"#, "bad_frame"),
            (r#"{"type":"ping","id":""}"#, "bad_frame"),
            (r#"{"type":"hello","token":"again"}"#, "bad_frame"),
        ] {
            a.send_raw(Message::text(raw)).await;
            let e = a.next().await.unwrap();
            assert_eq!(e["type"], "error", "{raw}");
            assert_eq!(e["error"]["code"], code, "{raw}: {e}");
        }
        a.send_raw(Message::binary(vec![1u8, 2, 3])).await;
        assert_eq!(a.next().await.unwrap()["error"]["code"], "unsupported_frame");
        let big = "x".repeat(16 * 1024 + 1);
        let e = a.request(send(&conv, "big", &big)).await;
        assert_eq!(e["error"]["code"], "message_too_large");
        let e = a.request(send(&conv, "bad key!", "x")).await;
        assert_eq!(e["error"]["code"], "invalid_client_txn_id");
        let e = a.request(send(&conv, "ctl", "a\u{0}b")).await;
        assert_eq!(e["error"]["code"], "body_control_character");
        let e = a.request(json!({"type": "ack", "message_id": uuid::Uuid::now_v7(), "response": {"kind": "accept"}})).await;
        assert_eq!(e["error"]["code"], "not_found");
        // Still alive, and nothing bad was committed.
        let ok = a.request(send(&conv, "fine", "still here")).await;
        assert_eq!(ok["message"]["seq"], 1);
    }
}

each_backend! {
    async fn oversize_frames_close_with_1009_and_the_server_keeps_serving(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let alice = s.user("alice").await;
        let (mut a, _) = s.connect(&alice, None).await;
        a.send_raw(Message::text("x".repeat(65 * 1024))).await;
        assert_eq!(a.closed().await, Closed::Code(1009));
        let (mut again, _) = s.connect(&alice, None).await;
        assert_eq!(again.request(json!({"type": "ping"})).await["type"], "pong");
    }
}

each_backend! {
    async fn invalid_utf8_closes_with_1007(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let alice = s.user("alice").await;
        let (mut a, _) = s.connect(&alice, None).await;
        // A text frame whose payload is not UTF-8, written at the frame level.
        let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
            vec![0x7b, 0xff, 0xfe, 0x7d],
            tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
            ),
            true,
        );
        a.send_raw(Message::Frame(frame)).await;
        assert_eq!(a.closed().await, Closed::Code(1007));
    }
}

each_backend! {
    async fn unauthenticated_connections_are_refused(db) {
        let s = TestServer::start_with(db.backend(), Settings {
            api: medhub_api::ApiConfig { hello_timeout: Duration::from_millis(300), ..Default::default() },
            ..Default::default()
        }).await;
        drop(db);
        for forged in [json!({"ticket": "mht_forged"}), json!({"ticket": "mh_not_a_ticket"})] {
            let mut c = medhub_testkit::WsClient::open(&s.ws_url()).await.unwrap();
            let mut hello = forged.clone();
            hello["type"] = json!("hello");
            c.send(hello).await;
            assert_eq!(c.next().await.unwrap()["error"]["code"], "unauthenticated", "{forged}");
            assert_eq!(c.closed().await, Closed::Code(4001));
        }
        // A real session token is refused in `hello` (tickets only, by default), and so is a
        // hello with both or neither.
        let alice = s.user("alice").await;
        for hello in [
            json!({"type": "hello", "token": alice.token}),
            json!({"type": "hello"}),
            json!({"type": "hello", "token": alice.token, "ticket": "mht_x"}),
        ] {
            let mut c = medhub_testkit::WsClient::open(&s.ws_url()).await.unwrap();
            c.send(hello.clone()).await;
            let e = c.next().await.unwrap();
            assert_eq!(e["type"], "error", "{hello}: {e}");
            assert_ne!(e["error"]["code"], "internal");
            assert_eq!(c.closed().await, Closed::Code(4001), "{hello}");
        }
        let mut c = medhub_testkit::WsClient::open(&s.ws_url()).await.unwrap();
        c.send(json!({"type": "ping"})).await;
        assert_eq!(c.next().await.unwrap()["error"]["code"], "unauthenticated");
        assert_eq!(c.closed().await, Closed::Code(4001));
        // Silence: closed after the hello timeout.
        let mut c = medhub_testkit::WsClient::open(&s.ws_url()).await.unwrap();
        assert_eq!(c.closed().await, Closed::Code(4001));
    }
}

each_backend! {
    async fn floods_are_rate_limited_per_connection(db) {
        let s = TestServer::start_on(db, Settings {
            api: medhub_api::ApiConfig { frames_per_second: 1, frame_burst: 5, ..Default::default() },
            ..Default::default()
        }).await;
        let alice = s.user("alice").await;
        let (mut a, _) = s.connect(&alice, None).await;
        for n in 0..10 {
            a.send(json!({"type": "ping", "id": format!("p{n}")})).await;
        }
        let mut pongs = 0;
        let mut limited = 0;
        for _ in 0..10 {
            let f = a.next().await.unwrap();
            match f["type"].as_str() {
                Some("pong") => pongs += 1,
                Some("error") => {
                    assert_eq!(f["error"]["code"], "rate_limited");
                    limited += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((pongs, limited), (5, 5));
        // Another connection of the same user has its own bucket.
        let (mut other, _) = s.connect(&alice, None).await;
        assert_eq!(other.request(json!({"type": "ping"})).await["type"], "pong");
    }
}

each_backend! {
    async fn slow_consumers_are_closed_and_resume_without_loss(db) {
        let s = TestServer::start_on(db, Settings {
            service: medhub_service::ServiceConfig { connection_queue_frames: 8, ..Default::default() },
            api: medhub_api::ApiConfig { frames_per_second: 100_000, frame_burst: 100_000, ..Default::default() },
            ..Default::default()
        }).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "direct", &[&bob]).await;
        let (mut b, ready) = s.connect(&bob, None).await;
        let start = ready["cursor"].as_u64().unwrap();
        // Fill Bob's socket buffers and then his queue: he is not reading.
        let (mut a, _) = s.connect(&alice, None).await;
        let body = "x".repeat(16_000);
        let mut n = 0;
        let closed = loop {
            n += 1;
            let r = a.request(send(&conv, &format!("t{n}"), &body)).await;
            assert_eq!(r["type"], "sent");
            if n % 50 == 0 && s.services.metrics.slow_consumer_closes.get() > 0 {
                break true;
            }
            if n > 5000 {
                break false;
            }
        };
        assert!(closed, "bob was never closed");
        // Bob's socket delivers what was written before the close, then 4008.
        let mut seen = Vec::new();
        let end = loop {
            match b.next().await {
                Ok(f) if f["type"] == "event" => seen.push(f["message"]["seq"].as_u64().unwrap()),
                Ok(_) => {}
                Err(e) => break e.to_string(),
            }
        };
        // The close frame arrives if there was room for it behind the backlog; otherwise the
        // server drops the connection. Either way, Bob resumes from the last event he saw.
        assert!(end.contains("4008") || end.contains("connection ended") || end.contains("reset"), "{end}");
        let resume_from = b_last_cursor(&seen, start);
        let (mut b2, _) = s.connect(&bob, Some(resume_from)).await;
        let mut all = seen.clone();
        while all.len() < n {
            let e = b2.next_event().await;
            all.push(e["message"]["seq"].as_u64().unwrap());
        }
        assert_eq!(all, (1..=n as u64).collect::<Vec<_>>());
    }
}

/// Bob's events were the conversation creation (before `start`) and one per message, so the
/// cursor of his k-th message event is `start + k` in this test.
fn b_last_cursor(seen: &[u64], start: u64) -> u64 {
    start + seen.len() as u64
}

each_backend! {
    async fn silent_clients_are_closed_by_the_heartbeat(db) {
        let s = TestServer::start_on(db, Settings {
            api: medhub_api::ApiConfig {
                heartbeat_interval: Duration::from_millis(100),
                heartbeat_timeout: Duration::from_millis(350),
                ..Default::default()
            },
            ..Default::default()
        }).await;
        let alice = s.user("alice").await;
        // A client that never answers pings.
        let mut raw = medhub_testkit::RawWs::connect(s.addr, "/api/v1/ws").await.unwrap();
        let ticket = s.ws_ticket(&alice).await;
        raw.send_text(&json!({"type": "hello", "ticket": ticket}).to_string()).await.unwrap();
        let (code, pings) = raw.read_until_close().await.unwrap();
        assert_eq!(code, 4009);
        assert!(pings >= 2, "the server pinged before giving up ({pings})");
        // A client that keeps talking stays connected well past the timeout.
        let (mut polite, _) = s.connect(&alice, None).await;
        for _ in 0..8 {
            assert_eq!(polite.request(json!({"type": "ping"})).await["type"], "pong");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
