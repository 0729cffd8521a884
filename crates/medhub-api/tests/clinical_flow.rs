//! Clinical messaging end to end: acknowledgements with typed responses, the sender's
//! per-recipient status, edits with their history, recalls, membership events, typing and
//! presence, on both databases.

// Tests panic on anything unexpected; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use medhub_testkit::{FRAME_TIMEOUT, Settings, TestServer, TestUser, WsClient, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

fn send(conv: &str, txn: &str, body: &str) -> Value {
    json!({"type": "send", "conversation_id": conv, "client_txn_id": txn, "body": body})
}

async fn send_rest(s: &TestServer, user: &TestUser, conv: &str, txn: &str, body: &str, priority: &str) -> Value {
    let (status, answer) = s
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            user,
            json!({"client_txn_id": txn, "body": body, "priority": priority}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    answer["message"].clone()
}

/// Pings and asserts that nothing matching `unwanted` arrived first. Frames queued to the
/// connection before the ping are written before its `pong`, so this proves absence.
async fn assert_nothing(c: &mut WsClient, what: &str, unwanted: impl Fn(&Value) -> bool) {
    assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
    let seen: Vec<&Value> = c.backlog().iter().filter(|f| unwanted(f)).collect();
    assert!(seen.is_empty(), "{what}: {seen:?}");
}

/// Pings and returns the frames matching `wanted` that arrived before the `pong`.
async fn frames_before_pong(c: &mut WsClient, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
    let all: Vec<Value> = c.backlog().drain(..).collect();
    all.into_iter().filter(|f| wanted(f)).collect()
}

fn is_event(f: &Value) -> bool {
    f["type"] == "event"
}

fn status_row<'a>(status: &'a Value, user: &TestUser) -> &'a Value {
    status["recipients"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["user_id"] == json!(user.id)))
        .unwrap_or_else(|| panic!("no row for {}: {status}", user.username))
}

async fn message_status(s: &TestServer, user: &TestUser, msg: &str) -> (u16, Value) {
    s.get(&format!("/api/v1/messages/{msg}/status"), user).await
}

async fn receipt(s: &TestServer, user: &TestUser, conv: &str, body: Value) {
    let (status, answer) = s.post(&format!("/api/v1/conversations/{conv}/receipts"), user, body).await;
    assert_eq!(status, 200, "{answer}");
}

async fn wait_for_connections(s: &TestServer, n: i64) {
    let deadline = Instant::now() + FRAME_TIMEOUT;
    while s.services.metrics.connections.get() != n {
        assert!(Instant::now() < deadline, "{} connections, expected {n}", s.services.metrics.connections.get());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// --- acknowledgements and status --------------------------------------------------------------

each_backend! {
    async fn acknowledgements_carry_typed_responses_to_every_member(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol, dave) =
            (s.user("alice").await, s.user("bob").await, s.user("carol").await, s.user("dave").await);
        let (status, created) = s
            .post(
                "/api/v1/conversations",
                &alice,
                json!({"kind": "group", "title": "Bed 12",
                "members": [{"user_id": bob.id}, {"user_id": carol.id, "role": "read_only"}]}),
            )
            .await;
        assert_eq!(status, 201);
        let conv = created["conversation"]["id"].as_str().unwrap().to_owned();
        let (mut a, _) = s.connect(&alice, None).await;
        let (mut b, _) = s.connect(&bob, None).await;
        let (mut c, _) = s.connect(&carol, None).await;
        let (mut d, _) = s.connect(&dave, None).await;
        let mut critical = send(&conv, "crit-1", "Bed 12: SpO2 82%, please review now");
        critical["priority"] = json!("critical");
        let sent = a.request(critical).await;
        assert_eq!(sent["type"], "sent", "{sent}");
        assert_eq!(sent["message"]["requires_ack"], true);
        let msg = sent["message"]["id"].as_str().unwrap().to_owned();
        for client in [&mut a, &mut b, &mut c] {
            assert_eq!(client.next_event().await["message"]["id"], msg.as_str());
        }

        let ack_path = format!("/api/v1/messages/{msg}/ack");
        let (status, bobs) = s.post(&ack_path, &bob, json!({"response": {"kind": "accept"}})).await;
        assert_eq!(status, 200, "{bobs}");
        assert_eq!(bobs["ack"]["message_id"], msg.as_str());
        assert_eq!(bobs["ack"]["user_id"], json!(bob.id));
        assert_eq!(bobs["ack"]["response"], json!({"kind": "accept"}));
        // Read-only members acknowledge too: they are the ones being told.
        let carols = c
            .request(json!({"type": "ack", "message_id": msg, "response": {"kind": "call_back", "minutes": 10}}))
            .await;
        assert_eq!(carols["type"], "acked", "{carols}");
        assert_eq!(carols["ack"]["response"], json!({"kind": "call_back", "minutes": 10}));
        assert_eq!(carols["ack"]["user_id"], json!(carol.id));
        for client in [&mut a, &mut b, &mut c] {
            let first = client.next_event().await;
            let second = client.next_event().await;
            for (e, who, response) in [
                (&first, &bob, json!({"kind": "accept"})),
                (&second, &carol, json!({"kind": "call_back", "minutes": 10})),
            ] {
                assert_eq!(e["kind"], "message.acknowledged", "{e}");
                assert_eq!(e["message_id"], msg.as_str());
                assert_eq!(e["seq"], 1);
                assert_eq!(e["user_id"], json!(who.id));
                assert_eq!(e["actor_id"], json!(who.id));
                assert_eq!(e["response"], response);
            }
        }
        assert_nothing(&mut d, "a non-member saw acknowledgements", is_event).await;

        // Repeating the same answer changes nothing; a new answer replaces it and is announced.
        let (status, again) = s.post(&ack_path, &bob, json!({"response": {"kind": "accept"}})).await;
        assert_eq!(status, 200);
        assert_eq!(again, bobs);
        assert_nothing(&mut a, "a repeated acknowledgement was announced again", is_event).await;
        let (status, done) = s.post(&ack_path, &bob, json!({"response": {"kind": "done"}})).await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["ack"]["response"], json!({"kind": "done"}));
        let e = a.next_event().await;
        assert_eq!((e["kind"].as_str(), &e["response"]), (Some("message.acknowledged"), &json!({"kind": "done"})));
        let (_, st) = message_status(&s, &alice, &msg).await;
        assert_eq!(status_row(&st, &bob)["ack"]["response"], json!({"kind": "done"}));

        // What cannot be acknowledged.
        for (who, body, code) in [
            (&alice, json!({"response": {"kind": "accept"}}), "ack_by_sender"),
            (&bob, json!({"response": {"kind": "call_back", "minutes": 0}}), "invalid_call_back_minutes"),
            (&bob, json!({"response": {"kind": "call_back", "minutes": 1441}}), "invalid_call_back_minutes"),
            (&bob, json!({"response": {"kind": "maybe"}}), "bad_frame"),
            (&bob, json!({"response": {"kind": "call_back"}}), "bad_frame"),
            (&bob, json!({"response": "accept"}), "bad_frame"),
        ] {
            let (status, answer) = s.post(&ack_path, who, body.clone()).await;
            assert_eq!(status, 400, "{body}: {answer}");
            assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        }
        let routine = send_rest(&s, &alice, &conv, "routine-1", "Bed 12 sleeping", "routine").await;
        let (status, answer) = s
            .post(
                &format!("/api/v1/messages/{}/ack", routine["id"].as_str().unwrap()),
                &bob,
                json!({"response": {"kind": "accept"}}),
            )
            .await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"]["code"], "ack_not_required");
        // Once acknowledged, the text is what was acknowledged: no edits.
        let (status, answer) = s
            .call(Method::PATCH, &format!("/api/v1/messages/{msg}"), Some(&alice), Some(json!({"body": "SpO2 92%"})))
            .await;
        assert_eq!(status, 409, "{answer}");
        assert_eq!(answer["error"]["code"], "message_acknowledged");
        // Read-only members still cannot write.
        let (status, answer) = s
            .post(
                &format!("/api/v1/conversations/{conv}/messages"),
                &carol,
                json!({"client_txn_id": "c1", "body": "ok"}),
            )
            .await;
        assert_eq!(status, 403, "{answer}");
    }
}

each_backend! {
    async fn the_sender_follows_each_recipient_from_sent_to_acknowledged(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
        let conv = s.conversation(&alice, "group", &[&bob, &carol]).await;
        let (mut a, _) = s.connect(&alice, None).await;
        let (mut c, _) = s.connect(&carol, None).await;
        let m = send_rest(&s, &alice, &conv, "u1", "Bed 2 lactate 4.1", "urgent").await;
        let msg = m["id"].as_str().unwrap().to_owned();
        a.next_event().await;
        c.next_event().await;
        let state = |st: &Value, who: &TestUser| status_row(st, who)["state"].as_str().unwrap_or_default().to_owned();

        let (status, st) = message_status(&s, &alice, &msg).await;
        assert_eq!(status, 200, "{st}");
        assert_eq!(st["message_id"], msg.as_str());
        assert_eq!(st["seq"], 1);
        assert_eq!(st["requires_ack"], true);
        let mut who: Vec<String> =
            st["recipients"].as_array().unwrap().iter().map(|r| r["user_id"].as_str().unwrap().to_owned()).collect();
        who.sort();
        let mut expected = vec![bob.id.to_string(), carol.id.to_string()];
        expected.sort();
        assert_eq!(who, expected, "one row per recipient, the sender excluded");
        assert_eq!((state(&st, &bob), state(&st, &carol)), ("sent".into(), "sent".into()));
        assert_eq!(status_row(&st, &bob)["ack"], Value::Null);
        assert_eq!(status_row(&st, &bob)["left"], false);

        receipt(&s, &bob, &conv, json!({"delivered_seq": 1})).await;
        // The sender is told live; the other recipient is not.
        let e = a.next_event().await;
        assert_eq!(e["kind"], "receipt.updated");
        assert_eq!((&e["user_id"], &e["delivered_seq"], &e["read_seq"]), (&json!(bob.id), &json!(1), &json!(0)));
        let (_, st) = message_status(&s, &alice, &msg).await;
        assert_eq!((state(&st, &bob), state(&st, &carol)), ("delivered".into(), "sent".into()));
        receipt(&s, &bob, &conv, json!({"read_seq": 1})).await;
        assert_eq!(a.next_event().await["read_seq"], 1);
        let (_, st) = message_status(&s, &alice, &msg).await;
        assert_eq!((state(&st, &bob), state(&st, &carol)), ("read".into(), "sent".into()));
        let (status, _) =
            s.post(&format!("/api/v1/messages/{msg}/ack"), &bob, json!({"response": {"kind": "accept"}})).await;
        assert_eq!(status, 200);
        let (_, st) = message_status(&s, &alice, &msg).await;
        assert_eq!((state(&st, &bob), state(&st, &carol)), ("acknowledged".into(), "sent".into()));
        assert_eq!(status_row(&st, &bob)["ack"]["response"], json!({"kind": "accept"}));
        // Carol reads without ever sending a delivered receipt: reading implies delivery.
        receipt(&s, &carol, &conv, json!({"read_seq": 1})).await;
        let (_, st) = message_status(&s, &alice, &msg).await;
        assert_eq!((state(&st, &bob), state(&st, &carol)), ("acknowledged".into(), "read".into()));
        assert_nothing(&mut c, "bob's receipts reached a recipient who is not the sender", |f| {
            f["kind"] == "receipt.updated" && f["user_id"] == json!(bob.id)
        })
        .await;

        // Only the sender and the conversation's owners may look.
        let (status, body) = message_status(&s, &bob, &msg).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
        let bobs = send_rest(&s, &bob, &conv, "b1", "on it", "routine").await;
        let bobs_id = bobs["id"].as_str().unwrap();
        let (status, st) = message_status(&s, &alice, bobs_id).await;
        assert_eq!(status, 200, "an owner sees any message's status: {st}");
        assert_eq!(st["requires_ack"], false);
        assert_eq!(message_status(&s, &carol, bobs_id).await.0, 403);
        assert_eq!(message_status(&s, &bob, bobs_id).await.0, 200);

        // A recipient who leaves stays in the list, marked as gone.
        let (status, _) = s
            .call(Method::DELETE, &format!("/api/v1/conversations/{conv}/members/{}", carol.id), Some(&alice), None)
            .await;
        assert_eq!(status, 200);
        let (_, st) = message_status(&s, &alice, &msg).await;
        assert_eq!(status_row(&st, &carol)["left"], true, "{st}");
        assert_eq!(status_row(&st, &bob)["left"], false);
        assert_eq!(state(&st, &bob), "acknowledged");
        // Someone who joins later was never a recipient of it.
        let dave = s.user("dave").await;
        let (status, _) =
            s.post(&format!("/api/v1/conversations/{conv}/members"), &alice, json!({"user_id": dave.id})).await;
        assert_eq!(status, 201);
        let (_, st) = message_status(&s, &alice, &msg).await;
        assert_eq!(st["recipients"].as_array().map(Vec::len), Some(2), "{st}");
        assert!(st["recipients"].as_array().unwrap().iter().all(|r| r["user_id"] != json!(dave.id)), "{st}");
    }
}

// --- edits and recalls -------------------------------------------------------------------------

each_backend! {
    async fn edits_keep_every_revision(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let (mut a, _) = s.connect(&alice, None).await;
        let (mut b, _) = s.connect(&bob, None).await;
        let original = send_rest(&s, &alice, &conv, "k1", "Bed 5 K 3.1", "routine").await;
        let msg = original["id"].as_str().unwrap().to_owned();
        assert_eq!(original["revision"], 0);
        assert_eq!(original["edited_at"], Value::Null);
        let path = format!("/api/v1/messages/{msg}");

        let (status, first) = s.call(Method::PATCH, &path, Some(&alice), Some(json!({"body": "Bed 5 K 3.2"}))).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["message"]["revision"], 1);
        assert_eq!(first["message"]["body"], "Bed 5 K 3.2");
        assert!(first["message"]["edited_at"].is_string());
        let second =
            a.request(json!({"type": "edit", "message_id": msg, "body": "Bed 5 K 5.1 (haemolysed sample)"})).await;
        assert_eq!(second["type"], "edited", "{second}");
        assert_eq!(second["message"]["revision"], 2);

        assert_eq!(b.next_event().await["kind"], "message.created");
        for (revision, body, at) in [
            (1, "Bed 5 K 3.2", &first["message"]["edited_at"]),
            (2, "Bed 5 K 5.1 (haemolysed sample)", &second["message"]["edited_at"]),
        ] {
            let e = b.next_event().await;
            assert_eq!(e["kind"], "message.edited", "{e}");
            assert_eq!((&e["message_id"], &e["seq"], &e["revision"]), (&json!(msg), &json!(1), &json!(revision)));
            assert_eq!(e["body"], body);
            assert_eq!(&e["edited_at"], at);
        }

        let (status, revs) = s.get(&format!("{path}/revisions"), &bob).await;
        assert_eq!(status, 200, "{revs}");
        let got: Vec<(u64, &str)> = revs["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["revision"].as_u64().unwrap(), r["body"].as_str().unwrap()))
            .collect();
        assert_eq!(got, vec![(0, "Bed 5 K 3.1"), (1, "Bed 5 K 3.2"), (2, "Bed 5 K 5.1 (haemolysed sample)")]);
        assert_eq!(revs["revisions"][0]["written_at"], original["created_at"]);
        assert_eq!(revs["revisions"][1]["written_at"], first["message"]["edited_at"]);
        assert_eq!(revs["revisions"][2]["written_at"], second["message"]["edited_at"]);

        // Only the sender edits; unchanged text is not a revision; the usual body rules hold.
        let (status, body) = s.call(Method::PATCH, &path, Some(&bob), Some(json!({"body": "Bed 5 K 9.9"}))).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "not_sender");
        let (status, same) =
            s.call(Method::PATCH, &path, Some(&alice), Some(json!({"body": "Bed 5 K 5.1 (haemolysed sample)"}))).await;
        assert_eq!(status, 200);
        assert_eq!(same["message"]["revision"], 2);
        for (body, status_code, code) in
            [(" ".to_owned(), 400, "empty_body"), ("x".repeat(16 * 1024 + 1), 413, "message_too_large")]
        {
            let (status, answer) = s.call(Method::PATCH, &path, Some(&alice), Some(json!({"body": body}))).await;
            assert_eq!(status, status_code, "{answer}");
            assert_eq!(answer["error"]["code"], code);
        }
        assert_nothing(&mut b, "a no-op or refused edit was announced", is_event).await;
        let (_, revs) = s.get(&format!("{path}/revisions"), &alice).await;
        assert_eq!(revs["revisions"].as_array().map(Vec::len), Some(3));
        let (_, current) = s.get(&path, &bob).await;
        assert_eq!(current["message"]["body"], "Bed 5 K 5.1 (haemolysed sample)");
        assert_eq!(current["message"]["revision"], 2);
        let (_, page) = s.get(&format!("/api/v1/conversations/{conv}/messages"), &bob).await;
        assert_eq!(page["messages"][0], current["message"]);
    }
}

each_backend! {
    async fn a_recall_hides_the_text_on_every_path(db) {
        const SECRET: &str = "HIV positive";
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let (mut b, ready) = s.connect(&bob, None).await;
        let start = ready["cursor"].as_u64().unwrap();
        let m = send_rest(&s, &alice, &conv, "r1", &format!("Bed 4 is {SECRET}"), "urgent").await;
        let msg = m["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/messages/{msg}");
        let (status, _) = s
            .call(Method::PATCH, &path, Some(&alice), Some(json!({"body": format!("Bed 4 is {SECRET}, isolate")})))
            .await;
        assert_eq!(status, 200);
        send_rest(&s, &alice, &conv, "r2", "Bed 5 stable", "routine").await;
        for _ in 0..3 {
            b.next_event().await;
        }

        let (status, body) = s.call(Method::POST, &format!("{path}/recall"), Some(&bob), None).await;
        assert_eq!(status, 403, "a plain member cannot recall others' messages: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
        let (status, recalled) = s.call(Method::POST, &format!("{path}/recall"), Some(&alice), None).await;
        assert_eq!(status, 200, "{recalled}");
        assert_eq!(recalled["message"]["body"], Value::Null);
        assert_eq!(recalled["message"]["recalled"]["by"], json!(alice.id));
        let live = b.next_event().await;
        assert_eq!(live["kind"], "message.recalled");
        assert_eq!((&live["message_id"], &live["seq"]), (&json!(msg), &json!(1)));

        // Every way of reading it back, as a member and as the sender.
        let mut seen = vec![recalled.clone(), live.clone()];
        for who in [&alice, &bob] {
            let (status, one) = s.get(&path, who).await;
            assert_eq!(status, 200);
            assert_eq!(one["message"]["body"], Value::Null);
            assert!(one["message"]["recalled"].is_object());
            let (_, page) = s.get(&format!("/api/v1/conversations/{conv}/messages"), who).await;
            assert_eq!(page["messages"][0]["body"], Value::Null, "{page}");
            assert_eq!(page["messages"][1]["body"], "Bed 5 stable");
            let (status, revs) = s.get(&format!("{path}/revisions"), who).await;
            assert_eq!(status, 409, "{revs}");
            assert_eq!(revs["error"]["code"], "message_recalled");
            seen.extend([one, page, revs]);
        }
        let (_, st) = s.get(&format!("{path}/status"), &alice).await;
        seen.push(st);
        // A reconnecting WebSocket replays the creation and the edit without the text.
        let (mut replay, _) = s.connect(&bob, Some(start)).await;
        let mut replayed = Vec::new();
        for _ in 0..4 {
            replayed.push(replay.next_event().await);
        }
        let kinds: Vec<&str> = replayed.iter().filter_map(|e| e["kind"].as_str()).collect();
        assert_eq!(kinds, vec!["message.created", "message.edited", "message.created", "message.recalled"]);
        assert_eq!(replayed[0]["message"]["body"], Value::Null, "{}", replayed[0]);
        assert_eq!(replayed[1]["body"], Value::Null, "{}", replayed[1]);
        seen.extend(replayed);
        // So does the long poll.
        let (status, polled) = s.get(&format!("/api/v1/events?cursor={start}&timeout_ms=0"), &bob).await;
        assert_eq!(status, 200);
        assert_eq!(polled["frames"].as_array().map(Vec::len), Some(4), "{polled}");
        seen.push(polled);
        for v in &seen {
            assert!(!v.to_string().contains(SECRET), "recalled text leaked: {v}");
        }

        // A recalled message is closed to edits and acknowledgements; recalling again is a no-op.
        let (status, body) = s.call(Method::PATCH, &path, Some(&alice), Some(json!({"body": "Bed 4 ok"}))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("message_recalled")));
        let (status, body) = s.post(&format!("{path}/ack"), &bob, json!({"response": {"kind": "accept"}})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("message_recalled")));
        let (status, again) = s.call(Method::POST, &format!("{path}/recall"), Some(&alice), None).await;
        assert_eq!(status, 200);
        assert_eq!(again["message"]["recalled"], recalled["message"]["recalled"]);
        assert_nothing(&mut b, "a repeated recall was announced again", is_event).await;
        // Recalled messages are not unread.
        let (_, list) = s.get("/api/v1/conversations", &bob).await;
        assert_eq!(list["conversations"][0]["unread"], 1, "{list}");
        // An owner may recall anyone's message.
        let bobs = send_rest(&s, &bob, &conv, "b1", "wrong patient, sorry", "routine").await;
        let (status, r) = s
            .call(
                Method::POST,
                &format!("/api/v1/messages/{}/recall", bobs["id"].as_str().unwrap()),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["message"]["recalled"]["by"], json!(alice.id));
        assert_eq!(r["message"]["body"], Value::Null);
    }
}

// --- membership ------------------------------------------------------------------------------

each_backend! {
    async fn membership_events_reach_exactly_the_members(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol, dave) =
            (s.user("alice").await, s.user("bob").await, s.user("carol").await, s.user("dave").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let (mut a, _) = s.connect(&alice, None).await;
        let (mut b, _) = s.connect(&bob, None).await;
        let (mut c, ready) = s.connect(&carol, None).await;
        let (mut d, _) = s.connect(&dave, None).await;
        let start = ready["cursor"].as_u64().unwrap();
        let members = format!("/api/v1/conversations/{conv}/members");

        let (status, added) = s.post(&members, &alice, json!({"user_id": carol.id})).await;
        assert_eq!(status, 201);
        for client in [&mut a, &mut b, &mut c] {
            let e = client.next_event().await;
            assert_eq!(e["kind"], "member.added", "{e}");
            assert_eq!(
                (&e["user_id"], &e["role"], &e["cursor"]),
                (&json!(carol.id), &json!("member"), &added["cursor"])
            );
            assert_eq!(e["conversation_id"], conv.as_str());
        }
        send_rest(&s, &alice, &conv, "m1", "Handover at 19:00", "routine").await;
        for client in [&mut a, &mut b, &mut c] {
            assert_eq!(client.next_event().await["message"]["body"], "Handover at 19:00");
        }
        let (status, _) =
            s.call(Method::PATCH, &format!("{members}/{}", bob.id), Some(&alice), Some(json!({"role": "owner"}))).await;
        assert_eq!(status, 200);
        for client in [&mut a, &mut b, &mut c] {
            let e = client.next_event().await;
            assert_eq!(e["kind"], "member.role_changed", "{e}");
            assert_eq!((&e["user_id"], &e["role"]), (&json!(bob.id), &json!("owner")));
        }
        let (status, removed) = s.call(Method::DELETE, &format!("{members}/{}", carol.id), Some(&bob), None).await;
        assert_eq!(status, 200);
        // The removed member is told of her own removal, and then of nothing more.
        for client in [&mut a, &mut b, &mut c] {
            let e = client.next_event().await;
            assert_eq!(e["kind"], "member.removed", "{e}");
            assert_eq!(
                (&e["user_id"], &e["actor_id"], &e["cursor"]),
                (&json!(carol.id), &json!(bob.id), &removed["cursor"])
            );
        }
        send_rest(&s, &alice, &conv, "m2", "Bed 7 DNACPR confirmed", "routine").await;
        for client in [&mut a, &mut b] {
            assert_eq!(client.next_event().await["message"]["body"], "Bed 7 DNACPR confirmed");
        }
        let (status, _) = s
            .call(
                Method::PATCH,
                &format!("/api/v1/conversations/{conv}"),
                Some(&alice),
                Some(json!({"title": "Ward 7 (night)"})),
            )
            .await;
        assert_eq!(status, 200);
        for client in [&mut a, &mut b] {
            assert_eq!(client.next_event().await["kind"], "conversation.updated");
        }
        assert_nothing(&mut c, "a removed member still receives the conversation", is_event).await;
        assert_nothing(&mut d, "a non-member received the conversation", is_event).await;
        assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &carol).await.0, 404);
        assert_eq!(s.get(&format!("/api/v1/conversations/{conv}/messages"), &carol).await.0, 404);
        let (_, list) = s.get("/api/v1/conversations", &carol).await;
        assert_eq!(list["conversations"], json!([]));

        // Resuming gives the same answer as living through it.
        let (mut c2, _) = s.connect(&carol, Some(start)).await;
        let mut replayed = Vec::new();
        for _ in 0..4 {
            replayed.push(c2.next_event().await);
        }
        let kinds: Vec<&str> = replayed.iter().filter_map(|e| e["kind"].as_str()).collect();
        assert_eq!(kinds, vec!["member.added", "message.created", "member.role_changed", "member.removed"]);
        assert_nothing(&mut c2, "a removed member's replay went past her removal", is_event).await;
        let (_, polled) = s.get(&format!("/api/v1/events?cursor={start}&timeout_ms=0"), &carol).await;
        assert_eq!(polled["frames"].as_array().cloned(), Some(replayed));
        let (mut d2, _) = s.connect(&dave, Some(start)).await;
        assert_nothing(&mut d2, "a non-member's replay contains the conversation", is_event).await;
    }
}

each_backend! {
    async fn a_member_who_leaves_and_returns_gets_only_what_happened_while_a_member(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let (mut c, ready) = s.connect(&carol, None).await;
        let start = ready["cursor"].as_u64().unwrap();
        let members = format!("/api/v1/conversations/{conv}/members");
        let carol_path = format!("{members}/{}", carol.id);
        assert_eq!(s.post(&members, &alice, json!({"user_id": carol.id})).await.0, 201);
        send_rest(&s, &alice, &conv, "m1", "while a member", "routine").await;
        assert_eq!(s.call(Method::DELETE, &carol_path, Some(&alice), None).await.0, 200);
        send_rest(&s, &alice, &conv, "m2", "while away", "routine").await;
        let (status, _) = s
            .call(
                Method::PATCH,
                &format!("/api/v1/conversations/{conv}"),
                Some(&alice),
                Some(json!({"title": "renamed while away"})),
            )
            .await;
        assert_eq!(status, 200);
        let (status, _) =
            s.call(Method::PATCH, &format!("{members}/{}", bob.id), Some(&alice), Some(json!({"role": "owner"}))).await;
        assert_eq!(status, 200);
        assert_eq!(s.post(&members, &alice, json!({"user_id": carol.id, "role": "read_only"})).await.0, 201);
        let last = send_rest(&s, &alice, &conv, "m3", "welcome back", "routine").await;

        let mut live = Vec::new();
        for _ in 0..5 {
            live.push(c.next_event().await);
        }
        assert_nothing(&mut c, "carol saw what happened while she was away", is_event).await;
        let summary: Vec<(String, Value)> = live
            .iter()
            .map(|e| (e["kind"].as_str().unwrap_or_default().to_owned(), e["message"]["body"].clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("member.added".to_owned(), Value::Null),
                ("message.created".to_owned(), json!("while a member")),
                ("member.removed".to_owned(), Value::Null),
                ("member.added".to_owned(), Value::Null),
                ("message.created".to_owned(), json!("welcome back")),
            ]
        );
        assert_eq!(live[4]["message"]["id"], last["id"]);
        // The resume path (SQL over membership periods) agrees with the live path.
        let (mut again, _) = s.connect(&carol, Some(start)).await;
        let mut replayed = Vec::new();
        for _ in 0..5 {
            replayed.push(again.next_event().await);
        }
        assert_nothing(&mut again, "carol's replay includes what happened while she was away", is_event).await;
        assert_eq!(replayed, live);
        let (_, polled) = s.get(&format!("/api/v1/events?cursor={start}&timeout_ms=0"), &carol).await;
        assert_eq!(polled["frames"].as_array().cloned(), Some(live));
    }
}

// --- typing and presence ------------------------------------------------------------------------

each_backend! {
    async fn typing_reaches_the_other_members_and_never_channels(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
        let group = s.conversation(&alice, "group", &[&bob]).await;
        let channel = s.conversation(&alice, "channel", &[&bob]).await;
        let (mut a, _) = s.connect(&alice, None).await;
        let (mut b, _) = s.connect(&bob, None).await;
        let (mut c, _) = s.connect(&carol, None).await;
        let is_typing = |f: &Value| f["type"] == "typing";

        a.send(json!({"type": "typing", "conversation_id": group})).await;
        let t = b.next_of_type("typing").await;
        assert_eq!(t, json!({"type": "typing", "conversation_id": group, "user_id": alice.id}));
        assert_nothing(&mut a, "the typist's own connection was told it is typing", is_typing).await;
        assert_nothing(&mut c, "a non-member saw typing", is_typing).await;
        // Typing over REST reaches WebSocket members the same way.
        let (status, _) =
            s.call(Method::POST, &format!("/api/v1/conversations/{group}/typing"), Some(&bob), None).await;
        assert_eq!(status, 204);
        assert_eq!(
            a.next_of_type("typing").await,
            json!({"type": "typing", "conversation_id": group, "user_id": bob.id})
        );

        // Channels do not relay typing.
        a.send(json!({"type": "typing", "conversation_id": channel})).await;
        let (status, _) =
            s.call(Method::POST, &format!("/api/v1/conversations/{channel}/typing"), Some(&alice), None).await;
        assert_eq!(status, 204);
        // The REST call above has finished relaying when it answers; the frame sent first is
        // handled concurrently, so give it a moment before looking for it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_nothing(&mut b, "typing was relayed in a channel", |f| {
            f["type"] == "typing" && f["conversation_id"] == channel.as_str()
        })
        .await;

        // Strangers cannot type into a conversation (answered like a missing one).
        c.send(json!({"type": "typing", "conversation_id": group})).await;
        let e = c.next_of_type("error").await;
        assert_eq!(e["error"]["code"], "not_found", "{e}");
        let (status, _) =
            s.call(Method::POST, &format!("/api/v1/conversations/{group}/typing"), Some(&carol), None).await;
        assert_eq!(status, 404);
        assert_nothing(&mut b, "a stranger's typing was relayed", |f| {
            f["type"] == "typing" && f["user_id"] == json!(carol.id)
        })
        .await;
    }
}

each_backend! {
    async fn typing_is_not_echoed_to_the_typists_other_devices(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let group = s.conversation(&alice, "group", &[&bob]).await;
        let (mut desk, _) = s.connect(&alice, None).await;
        let (mut phone, _) = s.connect(&alice, None).await;
        let (mut b, _) = s.connect(&bob, None).await;
        let own = |f: &Value| f["type"] == "typing" && f["user_id"] == json!(alice.id);
        // Both paths are checked before asserting, so one failure does not hide the other.
        let mut leaks = Vec::new();
        // Over the WebSocket, from one device: the relay is done once Bob has the frame.
        desk.send(json!({"type": "typing", "conversation_id": group})).await;
        assert_eq!(b.next_of_type("typing").await["user_id"], json!(alice.id));
        for f in frames_before_pong(&mut phone, own).await {
            leaks.push(format!("WebSocket typing on the desktop reached alice's phone: {f}"));
        }
        // Over REST: when it answers, the relay is done.
        let (status, _) =
            s.call(Method::POST, &format!("/api/v1/conversations/{group}/typing"), Some(&alice), None).await;
        assert_eq!(status, 204);
        assert_eq!(b.next_of_type("typing").await["user_id"], json!(alice.id));
        for (name, c) in [("desktop", &mut desk), ("phone", &mut phone)] {
            for f in frames_before_pong(c, own).await {
                leaks.push(format!("REST typing reached alice's own {name}: {f}"));
            }
        }
        assert!(leaks.is_empty(), "the typist was told she is typing:\n{}", leaks.join("\n"));
    }
}

each_backend! {
    async fn presence_follows_connections(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
        let (_c, _) = s.connect(&carol, None).await;
        let (mut a, _) = s.connect(&alice, None).await;
        let state = a.request(json!({"type": "presence_subscribe", "user_ids": [bob.id, carol.id]})).await;
        assert_eq!(state["type"], "presence_state", "{state}");
        assert_eq!(
            state["users"],
            json!([
                {"user_id": bob.id, "status": "offline", "state": "offline", "on_call": false},
                {"user_id": carol.id, "status": "online", "state": "available", "on_call": false}
            ])
        );
        let is_presence = |f: &Value| f["type"] == "presence";

        let (b1, _) = s.connect(&bob, None).await;
        assert_eq!(
            a.next_of_type("presence").await,
            json!({"type": "presence", "user_id": bob.id, "status": "online", "state": "available", "on_call": false})
        );
        // A second device changes nothing; nor does closing one of two.
        let (b2, _) = s.connect(&bob, None).await;
        assert_nothing(&mut a, "a second connection announced bob again", is_presence).await;
        b1.close().await;
        wait_for_connections(&s, 3).await;
        assert_nothing(&mut a, "bob went offline while still connected on another device", is_presence).await;
        b2.close().await;
        assert_eq!(
            a.next_of_type("presence").await,
            json!({"type": "presence", "user_id": bob.id, "status": "offline", "state": "offline", "on_call": false})
        );

        // A new subscription replaces the old one.
        let state = a.request(json!({"type": "presence_subscribe", "user_ids": [carol.id]})).await;
        assert_eq!(state["users"], json!([{"user_id": carol.id, "status": "online", "state": "available", "on_call": false}]));
        let (_b3, _) = s.connect(&bob, None).await;
        assert_nothing(&mut a, "presence of a user no longer followed", is_presence).await;
        let too_many: Vec<uuid::Uuid> = (0..501).map(|_| uuid::Uuid::now_v7()).collect();
        let refused = a.request(json!({"type": "presence_subscribe", "user_ids": too_many})).await;
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(refused["error"]["code"], "invalid_request");
    }
}
