//! The long-polling transport at `GET /api/v1/events` end to end: the same frames, in the same
//! order, under the same cursor rules as the WebSocket, on both databases.

// Tests panic on anything unexpected; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use medhub_testkit::{FRAME_TIMEOUT, Settings, TestServer, TestUser, WsClient, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

async fn poll(s: &TestServer, user: &TestUser, query: &str) -> (u16, Value) {
    s.get(&format!("/api/v1/events?{query}"), user).await
}

/// A long poll run from another task, so the test can act while it waits.
fn spawn_poll(s: &TestServer, user: &TestUser, query: &str) -> tokio::task::JoinHandle<(u16, Value)> {
    let url = s.url(&format!("/api/v1/events?{query}"));
    let token = user.token.clone();
    tokio::spawn(async move {
        let resp = reqwest::Client::new().get(url).bearer_auth(token).send().await;
        let resp = resp.unwrap_or_else(|e| panic!("long poll: {e}"));
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or_else(|e| panic!("long poll body: {e}")))
    })
}

/// Waits until `n` real-time connections (WebSocket or long poll) are registered with the
/// hub: then a poll started by [`spawn_poll`] is certainly listening.
async fn wait_for_connections(s: &TestServer, n: i64) {
    let deadline = Instant::now() + FRAME_TIMEOUT;
    while s.services.metrics.connections.get() < n {
        assert!(Instant::now() < deadline, "only {} connections", s.services.metrics.connections.get());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn frames(body: &Value) -> Vec<Value> {
    body["frames"].as_array().cloned().unwrap_or_else(|| panic!("no frames array: {body}"))
}

fn cursor(body: &Value) -> u64 {
    body["cursor"].as_u64().unwrap_or_else(|| panic!("no cursor: {body}"))
}

/// Polls from `from` until the cursor reaches `until`, collecting every frame.
async fn poll_until(s: &TestServer, user: &TestUser, from: u64, until: u64) -> Vec<Value> {
    let mut at = from;
    let mut out = Vec::new();
    while at < until {
        let (status, body) = poll(s, user, &format!("cursor={at}&timeout_ms=2000")).await;
        assert_eq!(status, 200, "{body}");
        let next = cursor(&body);
        assert!(next >= at, "cursor went back from {at} to {next}");
        at = next;
        out.extend(frames(&body));
    }
    assert_eq!(at, until, "overshot the last event");
    out
}

/// WebSocket `event` frames until (and including) the one at cursor `until`.
async fn ws_events_until(c: &mut WsClient, until: u64) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let e = c.next_event().await;
        let at = e["cursor"].as_u64().unwrap_or_else(|| panic!("no cursor: {e}"));
        out.push(e);
        if at >= until {
            return out;
        }
    }
}

async fn send_rest(s: &TestServer, user: &TestUser, conv: &str, txn: &str, body: Value) -> Value {
    let mut req = body;
    req["client_txn_id"] = json!(txn);
    let (status, answer) = s.post(&format!("/api/v1/conversations/{conv}/messages"), user, req).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

each_backend! {
    async fn without_a_cursor_it_answers_at_once_with_the_head(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        send_rest(&s, &alice, &conv, "t1", json!({"body": "one"})).await;
        send_rest(&s, &alice, &conv, "t2", json!({"body": "two"})).await;
        let last = s.services.store.last_event_id().await.unwrap();
        let (_, ready) = s.connect(&bob, None).await;
        assert_eq!(ready["cursor"].as_u64(), Some(last.get()), "{ready}");
        // No `timeout_ms`: the default wait is 25 s, so an answer well within that did not wait.
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            reqwest::Client::new().get(s.url("/api/v1/events")).bearer_auth(&bob.token).send(),
        )
        .await
        .expect("a poll without a cursor answers at once")
        .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"frames": [], "cursor": ready["cursor"]}));
    }
}

each_backend! {
    async fn catching_up_yields_exactly_the_websocket_frames(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
        let (mut b, ready) = s.connect(&bob, None).await;
        let start = ready["cursor"].as_u64().unwrap();
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        // Traffic Bob must not see, interleaved with his own.
        let private = s.conversation(&alice, "direct", &[&carol]).await;
        send_rest(&s, &alice, &conv, "t1", json!({"body": "Bed 3 febrile"})).await;
        send_rest(&s, &alice, &private, "p1", json!({"body": "not for Bob"})).await;
        let urgent = send_rest(&s, &alice, &conv, "t2", json!({"body": "Bed 3 BP 80/40", "priority": "urgent"})).await;
        send_rest(&s, &bob, &conv, "b1", json!({"body": "coming"})).await;
        let (status, _) = s.post(&format!("/api/v1/conversations/{conv}/receipts"), &bob, json!({"read_seq": 2})).await;
        assert_eq!(status, 200);
        let msg = urgent["message"]["id"].as_str().unwrap();
        let (status, _) =
            s.post(&format!("/api/v1/messages/{msg}/ack"), &bob, json!({"response": {"kind": "accept"}})).await;
        assert_eq!(status, 200);
        let (status, _) = s
            .call(
                Method::PATCH,
                &format!("/api/v1/conversations/{conv}"),
                Some(&alice),
                Some(json!({"title": "Bed 3"})),
            )
            .await;
        assert_eq!(status, 200);
        let (status, added) =
            s.post(&format!("/api/v1/conversations/{conv}/members"), &alice, json!({"user_id": carol.id})).await;
        assert_eq!(status, 201);
        let last = added["cursor"].as_u64().unwrap();

        let over_ws = ws_events_until(&mut b, last).await;
        let kinds: Vec<&str> = over_ws.iter().filter_map(|e| e["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "conversation.created",
                "message.created",
                "message.created",
                "message.created",
                "receipt.updated",
                "message.acknowledged",
                "conversation.updated",
                "member.added"
            ]
        );
        let over_poll = poll_until(&s, &bob, start, last).await;
        assert_eq!(over_poll, over_ws, "long poll and WebSocket disagree");
        // And from the middle of the stream, the rest.
        let mid = over_ws[3]["cursor"].as_u64().unwrap();
        assert_eq!(poll_until(&s, &bob, mid, last).await, over_ws[4..].to_vec());
    }
}

each_backend! {
    async fn a_waiting_poll_answers_as_soon_as_an_event_arrives(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let (mut b, ready) = s.connect(&bob, None).await;
        let at = ready["cursor"].as_u64().unwrap();
        let waiting = spawn_poll(&s, &bob, &format!("cursor={at}&timeout_ms=5000"));
        // Bob's WebSocket plus his poll: the poll is registered and waiting.
        wait_for_connections(&s, 2).await;
        let sent = send_rest(&s, &alice, &conv, "t1", json!({"body": "Bed 9 needs you"})).await;
        let (status, body) = waiting.await.unwrap();
        assert_eq!(status, 200, "{body}");
        // A timed-out poll has no frames: this one was woken by the event.
        let got = frames(&body);
        assert_eq!(got.len(), 1, "{body}");
        let over_ws = b.next_event().await;
        assert_eq!(got[0], over_ws);
        assert_eq!(got[0]["message"], sent["message"]);
        assert_eq!(cursor(&body), over_ws["cursor"].as_u64().unwrap());
        assert_eq!(cursor(&body), at + 1);
    }
}

each_backend! {
    async fn an_idle_poll_times_out_empty_with_the_same_cursor(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
        s.conversation(&alice, "group", &[&bob]).await;
        let private = s.conversation(&alice, "group", &[&carol]).await;
        let (_, head) = poll(&s, &bob, "").await;
        let at = cursor(&head);
        let (status, body) = poll(&s, &bob, &format!("cursor={at}&timeout_ms=1000")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"frames": [], "cursor": at}));
        let (_, body) = poll(&s, &bob, &format!("cursor={at}&timeout_ms=0")).await;
        assert_eq!(body, json!({"frames": [], "cursor": at}));
        // Other people's conversations do not wake Bob's poll.
        let waiting = spawn_poll(&s, &bob, &format!("cursor={at}&timeout_ms=1500"));
        wait_for_connections(&s, 1).await;
        send_rest(&s, &alice, &private, "p1", json!({"body": "not for Bob"})).await;
        let (status, body) = waiting.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(frames(&body), Vec::<Value>::new(), "{body}");
    }
}

each_backend! {
    async fn bad_cursors_and_timeouts_are_refused(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        s.conversation(&alice, "group", &[&bob]).await;
        let (_, head) = poll(&s, &bob, "").await;
        let at = cursor(&head);
        let (status, body) = poll(&s, &bob, &format!("cursor={}&timeout_ms=0", at + 1000)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "cursor_out_of_range");
        let (status, body) = poll(&s, &bob, &format!("cursor={}&timeout_ms=0", at + 1)).await;
        assert_eq!(status, 400, "one past the head is ahead too: {body}");
        assert_eq!(body["error"]["code"], "cursor_out_of_range");
        for bad in ["timeout_ms=30001", "timeout_ms=-1", "timeout_ms=soon", "cursor=x", "since=3"] {
            let query = if bad.starts_with("cursor") { bad.to_owned() } else { format!("cursor={at}&{bad}") };
            let (status, body) = poll(&s, &bob, &query).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["error"]["code"], "invalid_request", "{bad}: {body}");
        }
        // The longest allowed wait is accepted; with events to catch up on it answers at once.
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), poll(&s, &bob, "cursor=0&timeout_ms=30000"))
            .await
            .expect("catching up does not wait");
        assert_eq!(status, 200, "{body}");
        assert_eq!(frames(&body).len(), 1);
        assert_eq!(frames(&body)[0]["kind"], "conversation.created");
        assert_eq!(cursor(&body), at);
    }
}

each_backend! {
    async fn a_resumed_poll_and_a_resumed_websocket_replay_the_same_frames(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let (_, head) = poll(&s, &bob, "").await;
        let start = cursor(&head);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let first = send_rest(&s, &alice, &conv, "t1", json!({"body": "K 3.1"})).await;
        let second = send_rest(&s, &alice, &conv, "t2", json!({"body": "Na 131"})).await;
        let id = first["message"]["id"].as_str().unwrap();
        let (status, _) = s
            .call(Method::PATCH, &format!("/api/v1/messages/{id}"), Some(&alice), Some(json!({"body": "K 5.1"})))
            .await;
        assert_eq!(status, 200);
        let recalled = second["message"]["id"].as_str().unwrap();
        let (status, _) =
            s.call(Method::POST, &format!("/api/v1/messages/{recalled}/recall"), Some(&alice), None).await;
        assert_eq!(status, 200);
        let (_, head) = poll(&s, &bob, "").await;
        let last = cursor(&head);
        let (mut b, _) = s.connect(&bob, Some(start)).await;
        let over_ws = ws_events_until(&mut b, last).await;
        assert_eq!(over_ws.len(), 5);
        let over_poll = poll_until(&s, &bob, start, last).await;
        assert_eq!(over_poll, over_ws);
        // The recalled text is in neither.
        assert!(!serde_json::to_string(&over_poll).unwrap().contains("Na 131"));
    }
}

each_backend! {
    async fn typing_reaches_long_polling_members_only(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let (mut a, _) = s.connect(&alice, None).await;
        let (_, head) = poll(&s, &bob, "").await;
        let at = cursor(&head);
        let bobs = spawn_poll(&s, &bob, &format!("cursor={at}&timeout_ms=5000"));
        let carols = spawn_poll(&s, &carol, &format!("cursor={at}&timeout_ms=1500"));
        wait_for_connections(&s, 3).await;
        a.send(json!({"type": "typing", "conversation_id": conv})).await;
        let (status, body) = bobs.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(frames(&body), vec![json!({"type": "typing", "conversation_id": conv, "user_id": alice.id})]);
        // Ephemeral frames do not move the cursor.
        assert_eq!(cursor(&body), at);
        let (status, body) = carols.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(frames(&body), Vec::<Value>::new(), "a non-member saw typing: {body}");
    }
}
