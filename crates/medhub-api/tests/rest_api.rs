//! The REST API end to end: sign-in and sessions, the error format, conversations and
//! membership, history paging and sending, against a real server on both databases.

// Tests panic on anything unexpected; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medhub_core::model::SystemRole;
use medhub_testkit::{Closed, Settings, TestServer, TestUser, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

/// A password that satisfies the 12-character minimum.
const PASSWORD: &str = "correct horse battery";

/// Creates a user who signs in with a password (Argon2id: keep these few).
async fn password_user(s: &TestServer, username: &str, password: &str, must_change_password: bool) -> uuid::Uuid {
    s.password_user(username, SystemRole::User, password, must_change_password).await
}

/// A request built by hand, for what `TestServer::call` cannot express (headers, raw bodies).
async fn raw(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = req.send().await.unwrap_or_else(|e| panic!("request failed: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// Asserts the one error shape: `{"error":{"code":..,"message":..}}` and nothing else.
#[track_caller]
fn assert_error(body: &Value, code: &str) {
    let obj = body.as_object().unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["error"], "{body}");
    let err = body["error"].as_object().unwrap_or_else(|| panic!("`error` is not an object: {body}"));
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(err.keys().all(|k| ["code", "message", "correlation_id", "retry_after"].contains(&k.as_str())), "{body}");
}

fn seqs(page: &Value) -> Vec<u64> {
    page["messages"].as_array().map(|a| a.iter().filter_map(|m| m["seq"].as_u64()).collect()).unwrap_or_default()
}

fn conv_in_list<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["conversations"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("conversation {id} not listed: {list}"))
}

async fn send_rest(s: &TestServer, user: &TestUser, conv: &str, txn: &str, body: &str) -> (u16, Value) {
    s.post(&format!("/api/v1/conversations/{conv}/messages"), user, json!({"client_txn_id": txn, "body": body})).await
}

// --- sign-in and sessions ---------------------------------------------------------------------

each_backend! {
    async fn login_issues_a_working_token_and_bad_credentials_are_indistinguishable(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let id = password_user(&s, "nurse.joy", PASSWORD, false).await;
        let (status, body) = s.login("nurse.joy", PASSWORD).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user"]["id"], json!(id));
        assert_eq!(body["user"]["username"], "nurse.joy");
        assert_eq!(body["password_change_required"], false);
        assert!(body["token"].as_str().is_some_and(|t| t.starts_with("mh_")), "{body}");
        // A password alone is not enough: the account has no second factor yet.
        assert_eq!(body["state"], "mfa_enrollment_required");
        let joy = TestUser::from_login(&body);
        let (status, me) = s.get("/api/v1/me", &joy).await;
        assert_eq!(status, 403, "{me}");
        assert_error(&me, "mfa_enrollment_required");
        // With an authenticator enrolled, the same account gets a working session.
        let signed_in = s.sign_in("nurse.joy", PASSWORD, None).await;
        let (status, me) = s.get("/api/v1/me", &signed_in.user).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["user"]["id"], json!(id));
        let (status, body) = s.login("nurse.joy", PASSWORD).await;
        assert_eq!((status, &body["state"]), (200, &json!("mfa_required")), "{body}");
        // Usernames are case-insensitive at sign-in.
        let (status, _) = s.login("  Nurse.Joy ", PASSWORD).await;
        assert_eq!(status, 200);

        let (wrong_status, wrong) = s.login("nurse.joy", "not the password").await;
        let (unknown_status, unknown) = s.login("nobody.here", PASSWORD).await;
        assert_eq!(wrong_status, 401, "{wrong}");
        assert_error(&wrong, "invalid_credentials");
        // A guesser learns nothing about which usernames exist.
        assert_eq!((wrong_status, &wrong), (unknown_status, &unknown));
        // A user without a password cannot sign in with any password either.
        let bob = s.user("bob").await;
        let (status, nopass) = s.login(&bob.username, PASSWORD).await;
        assert_eq!((status, &nopass), (401, &wrong));
    }
}

each_backend! {
    async fn missing_or_garbage_tokens_are_unauthenticated(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let alice = s.user("alice").await;
        let conv = uuid::Uuid::now_v7();
        let http = reqwest::Client::new();
        let targets = [
            (Method::GET, "/api/v1/me".to_owned()),
            (Method::GET, "/api/v1/conversations".to_owned()),
            (Method::GET, "/api/v1/events".to_owned()),
            (Method::GET, format!("/api/v1/conversations/{conv}/messages")),
            (Method::POST, "/api/v1/auth/logout".to_owned()),
        ];
        let forged = format!("{}x", alice.token);
        let headers: [Option<String>; 5] = [
            None,
            Some("Bearer garbage".to_owned()),
            Some(format!("Bearer {forged}")),
            Some(format!("Basic {}", alice.token)),
            Some("Bearer".to_owned()),
        ];
        for (method, path) in &targets {
            for h in &headers {
                let mut req = http.request(method.clone(), s.url(path));
                if let Some(h) = h {
                    req = req.header("Authorization", h);
                }
                let (status, head, body) = raw(req).await;
                assert_eq!(status, 401, "{method} {path} with {h:?}: {body}");
                assert_error(&body, "unauthenticated");
                assert_eq!(
                    head.get("www-authenticate").and_then(|v| v.to_str().ok()),
                    Some("Bearer"),
                    "{method} {path} with {h:?}"
                );
            }
        }
        // The real token still works.
        assert_eq!(s.get("/api/v1/me", &alice).await.0, 200);
    }
}

each_backend! {
    async fn a_one_time_password_must_be_changed_before_anything_else(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let bob = s.user("bob").await;
        let conv = s.conversation(&bob, "group", &[]).await;
        let one_time = "temporary password 1";
        let new_password = "a much better password";
        let id = password_user(&s, "dr.new", one_time, true).await;
        let (status, body) = s.login("dr.new", one_time).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["password_change_required"], true);
        let newbie = TestUser::from_login(&body);
        assert_eq!(newbie.id, id);

        // Everything but the password change is refused with 403 password_change_required.
        let (c, m, u) = (conv.as_str(), uuid::Uuid::now_v7(), bob.id);
        let requests: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, "/api/v1/me".into(), None),
            (Method::GET, "/api/v1/users".into(), None),
            (Method::GET, format!("/api/v1/users/{u}"), None),
            (Method::GET, "/api/v1/conversations".into(), None),
            (
                Method::POST,
                "/api/v1/conversations".into(),
                Some(json!({"kind": "direct", "members": [{"user_id": u}]})),
            ),
            (Method::GET, format!("/api/v1/conversations/{c}"), None),
            (Method::PATCH, format!("/api/v1/conversations/{c}"), Some(json!({"title": "x"}))),
            (Method::POST, format!("/api/v1/conversations/{c}/members"), Some(json!({"user_id": u}))),
            (Method::PATCH, format!("/api/v1/conversations/{c}/members/{u}"), Some(json!({"role": "owner"}))),
            (Method::DELETE, format!("/api/v1/conversations/{c}/members/{u}"), None),
            (Method::GET, format!("/api/v1/conversations/{c}/messages"), None),
            (
                Method::POST,
                format!("/api/v1/conversations/{c}/messages"),
                Some(json!({"client_txn_id": "t", "body": "x"})),
            ),
            (Method::POST, format!("/api/v1/conversations/{c}/receipts"), Some(json!({"read_seq": 1}))),
            (Method::POST, format!("/api/v1/conversations/{c}/typing"), None),
            (Method::GET, format!("/api/v1/messages/{m}"), None),
            (Method::PATCH, format!("/api/v1/messages/{m}"), Some(json!({"body": "x"}))),
            (Method::POST, format!("/api/v1/messages/{m}/recall"), None),
            (Method::GET, format!("/api/v1/messages/{m}/revisions"), None),
            (Method::POST, format!("/api/v1/messages/{m}/ack"), Some(json!({"response": {"kind": "accept"}}))),
            (Method::GET, format!("/api/v1/messages/{m}/status"), None),
            (Method::GET, "/api/v1/events".into(), None),
        ];
        let mut wrong = Vec::new();
        for (method, path, body) in &requests {
            let (status, answer) = s.call(method.clone(), path, Some(&newbie), body.clone()).await;
            if status != 403 || answer["error"]["code"] != "password_change_required" {
                wrong.push(format!("{method} {path} -> {status} {answer}"));
            }
        }
        // (Asserted at the end, so that the rest of the flow is checked too.)
        // The real-time transport refuses it too: no WebSocket ticket.
        let (status, refused) = s.post("/api/v1/auth/ws-ticket", &newbie, json!({})).await;
        assert_eq!(status, 403, "{refused}");
        assert_error(&refused, "password_change_required");

        // The change itself checks the current password and the length rules.
        let change = |current: &str, new: &str| json!({"current_password": current, "new_password": new});
        let (status, body) = s.post("/api/v1/auth/password", &newbie, change("wrong password!!", new_password)).await;
        assert_eq!(status, 401, "{body}");
        assert_error(&body, "invalid_credentials");
        let (status, body) = s.post("/api/v1/auth/password", &newbie, change(one_time, "short")).await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, "password_length");
        let (status, body) = s.post("/api/v1/auth/password", &newbie, change(one_time, new_password)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "mfa_enrollment_required");

        // The same session enrols an authenticator and is then fully signed in.
        let (status, e) = s.post("/api/v1/auth/mfa/totp/enroll", &newbie, json!({})).await;
        assert_eq!(status, 200, "{e}");
        let code = s.totp_code(e["secret"].as_str().unwrap(), 0);
        let (status, c) = s.post("/api/v1/auth/mfa/totp/confirm", &newbie, json!({"code": code})).await;
        assert_eq!((status, &c["state"]), (200, &json!("active")), "{c}");
        let newbie = newbie.with_token(&c);
        let (status, me) = s.get("/api/v1/me", &newbie).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(s.get("/api/v1/conversations", &newbie).await.0, 200);
        let (_, ready) = s.connect(&newbie, None).await;
        assert_eq!(ready["user_id"], json!(id));
        // The one-time password no longer works; the new one does, without a change demanded.
        assert_eq!(s.login("dr.new", one_time).await.0, 401);
        let (status, body) = s.login("dr.new", new_password).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["password_change_required"], false);
        assert_eq!(body["state"], "mfa_required");
        assert!(wrong.is_empty(), "not refused with 403 password_change_required:\n{}", wrong.join("\n"));
    }
}

each_backend! {
    async fn logout_revokes_the_token_and_closes_its_connections(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let alice = s.user("alice").await;
        let phone = s.new_session(&alice).await;
        let (mut desk_ws, _) = s.connect(&alice, None).await;
        let (mut phone_ws, _) = s.connect(&phone, None).await;
        let unused_ticket = s.ws_ticket(&alice).await;
        let (status, body) = s.call(Method::POST, "/api/v1/auth/logout", Some(&alice), None).await;
        assert_eq!(status, 204, "{body}");
        assert_eq!(desk_ws.closed().await, Closed::Code(4003));
        let (status, body) = s.get("/api/v1/me", &alice).await;
        assert_eq!(status, 401, "{body}");
        assert_error(&body, "unauthenticated");
        let mut again = medhub_testkit::WsClient::open(&s.ws_url()).await.unwrap();
        again.send(json!({"type": "hello", "ticket": unused_ticket})).await;
        assert_eq!(again.next().await.unwrap()["error"]["code"], "unauthenticated");
        assert_eq!(again.closed().await, Closed::Code(4001));
        // Only that session ended: the other device stays signed in and connected.
        assert_eq!(s.get("/api/v1/me", &phone).await.0, 200);
        assert_eq!(phone_ws.request(json!({"type": "ping"})).await["type"], "pong");
        // Logging out twice is just unauthenticated.
        let (status, body) = s.call(Method::POST, "/api/v1/auth/logout", Some(&alice), None).await;
        assert_eq!(status, 401, "{body}");
    }
}

// --- the error format ------------------------------------------------------------------------

each_backend! {
    async fn malformed_requests_get_the_standard_error_body(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let http = reqwest::Client::new();
        let send_url = s.url(&format!("/api/v1/conversations/{conv}/messages"));
        let post = |body: String| {
            http.post(&send_url).bearer_auth(&alice.token).header("Content-Type", "application/json").body(body)
        };

        let (status, _, body) = raw(post("{not json".into())).await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, "bad_frame");
        let (status, _, body) = raw(post(r#"{"client_txn_id":"t1","body":"x","colour":"red"}"#.into())).await;
        assert_eq!(status, 400, "unknown field: {body}");
        assert_error(&body, "bad_frame");
        let (status, _, body) = raw(post(r#"{"client_txn_id":"t1"}"#.into())).await;
        assert_eq!(status, 400, "missing field: {body}");
        assert_error(&body, "bad_frame");
        let (status, _, body) = raw(post(r#"{"client_txn_id":"t1","body":"x","priority":"whenever"}"#.into())).await;
        assert_eq!(status, 400, "bad enum value: {body}");
        assert_error(&body, "bad_frame");
        let (status, _, body) =
            raw(http.post(&send_url).bearer_auth(&alice.token).body(r#"{"client_txn_id":"t1","body":"x"}"#)).await;
        assert_eq!(status, 400, "no content type: {body}");
        assert_error(&body, "bad_frame");
        // Over the 64 KiB HTTP body limit: refused before it is parsed.
        let huge = json!({"client_txn_id": "t1", "body": "x".repeat(65 * 1024)}).to_string();
        let (status, _, body) = raw(post(huge)).await;
        assert_eq!(status, 413, "{body}");
        assert_error(&body, "payload_too_large");

        for path in ["/api/v1/nope", "/api/v2/conversations", "/", "/api/v1/conversations/x/y/z"] {
            let (status, body) = s.get(path, &alice).await;
            assert_eq!(status, 404, "{path}: {body}");
            assert_error(&body, "not_found");
        }
        for (method, path) in [
            (Method::DELETE, "/api/v1/conversations".to_owned()),
            (Method::PUT, "/api/v1/me".to_owned()),
            (Method::GET, "/api/v1/auth/login".to_owned()),
            (Method::POST, "/healthz".to_owned()),
            (Method::DELETE, format!("/api/v1/conversations/{conv}/messages")),
        ] {
            let (status, body) = s.call(method.clone(), &path, Some(&alice), None).await;
            assert_eq!(status, 405, "{method} {path}: {body}");
            assert_error(&body, "method_not_allowed");
        }
        // A malformed id is answered like an id that does not exist.
        let (missing_status, missing) = s.get(&format!("/api/v1/conversations/{}", uuid::Uuid::now_v7()), &alice).await;
        assert_eq!(missing_status, 404);
        assert_error(&missing, "not_found");
        for path in [
            "/api/v1/conversations/not-a-uuid".to_owned(),
            "/api/v1/messages/123".to_owned(),
            "/api/v1/users/%20".to_owned(),
            format!("/api/v1/conversations/{conv}-1/messages"),
        ] {
            let (status, body) = s.get(&path, &alice).await;
            assert_eq!((status, &body), (404, &missing), "{path}");
        }
        let (status, body) =
            s.call(Method::DELETE, &format!("/api/v1/conversations/{conv}/members/nobody"), Some(&alice), None).await;
        assert_eq!((status, &body), (404, &missing));
        // Nothing was committed by any of it.
        let (_, page) = s.get(&format!("/api/v1/conversations/{conv}/messages"), &alice).await;
        assert_eq!(seqs(&page), Vec::<u64>::new());
    }
}

each_backend! {
    async fn strangers_and_missing_ids_get_byte_identical_404s(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, mallory) = (s.user("alice").await, s.user("bob").await, s.user("mallory").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let (status, sent) = s
            .post(
                &format!("/api/v1/conversations/{conv}/messages"),
                &alice,
                json!({"client_txn_id": "t1", "body": "Bed 4: K 6.2", "priority": "urgent"}),
            )
            .await;
        assert_eq!(status, 201, "{sent}");
        let msg = sent["message"]["id"].as_str().unwrap().to_owned();
        let (missing_conv, missing_msg) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
        let http = reqwest::Client::new();
        type Req = (Method, &'static str, Option<Value>);
        let conv_requests: Vec<Req> = vec![
            (Method::GET, "/api/v1/conversations/{}", None),
            (Method::PATCH, "/api/v1/conversations/{}", Some(json!({"title": "mine now"}))),
            (Method::GET, "/api/v1/conversations/{}/messages", None),
            (Method::POST, "/api/v1/conversations/{}/messages", Some(json!({"client_txn_id": "m1", "body": "hi"}))),
            (Method::POST, "/api/v1/conversations/{}/receipts", Some(json!({"read_seq": 1}))),
            (Method::POST, "/api/v1/conversations/{}/typing", None),
            (Method::POST, "/api/v1/conversations/{}/members", Some(json!({"user_id": mallory.id}))),
        ];
        let msg_requests: Vec<Req> = vec![
            (Method::GET, "/api/v1/messages/{}", None),
            (Method::PATCH, "/api/v1/messages/{}", Some(json!({"body": "changed"}))),
            (Method::POST, "/api/v1/messages/{}/recall", None),
            (Method::GET, "/api/v1/messages/{}/revisions", None),
            (Method::POST, "/api/v1/messages/{}/ack", Some(json!({"response": {"kind": "accept"}}))),
            (Method::GET, "/api/v1/messages/{}/status", None),
        ];
        for (requests, real, missing) in [(&conv_requests, &conv, &missing_conv), (&msg_requests, &msg, &missing_msg)] {
            for (method, template, body) in requests {
                let mut answers = Vec::new();
                for id in [real, missing] {
                    let mut req =
                        http.request(method.clone(), s.url(&template.replace("{}", id))).bearer_auth(&mallory.token);
                    if let Some(b) = body {
                        req = req.json(b);
                    }
                    let resp = req.send().await.unwrap();
                    let status = resp.status().as_u16();
                    answers.push((status, resp.bytes().await.unwrap()));
                }
                assert_eq!(answers[0].0, 404, "{method} {template}: {:?}", answers[0]);
                assert_eq!(answers[0], answers[1], "{method} {template}: a stranger can tell the id exists");
                let body: Value = serde_json::from_slice(&answers[0].1).unwrap();
                assert_error(&body, "not_found");
            }
        }
        // And none of it changed anything.
        let (_, detail) = s.get(&format!("/api/v1/conversations/{conv}"), &alice).await;
        assert_eq!(detail["conversation"]["title"], "Ward 7");
        assert_eq!(detail["conversation"]["member_count"], 2);
        let (_, m) = s.get(&format!("/api/v1/messages/{msg}"), &alice).await;
        assert_eq!(m["message"]["body"], "Bed 4: K 6.2");
    }
}

// --- users -------------------------------------------------------------------------------------

each_backend! {
    async fn the_user_directory_lists_and_finds_users(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let (status, list) = s.get("/api/v1/users", &alice).await;
        assert_eq!(status, 200, "{list}");
        let names: Vec<&str> =
            list["users"].as_array().unwrap().iter().filter_map(|u| u["username"].as_str()).collect();
        assert_eq!(names, vec!["admin", "alice", "bob"], "sorted by username");
        let (_, page) = s.get("/api/v1/users?after=admin&limit=1", &alice).await;
        let names: Vec<&str> =
            page["users"].as_array().unwrap().iter().filter_map(|u| u["username"].as_str()).collect();
        assert_eq!(names, vec!["alice"]);
        for bad in ["limit=0", "limit=501", "limit=ten", "sort=name"] {
            let (status, body) = s.get(&format!("/api/v1/users?{bad}"), &alice).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_error(&body, "invalid_request");
        }
        let (status, user) = s.get(&format!("/api/v1/users/{}", bob.id), &alice).await;
        assert_eq!(status, 200);
        assert_eq!(user["username"], "bob");
        assert_eq!(user["active"], true);
        assert_eq!(user["role"], "user");
        let (status, body) = s.get(&format!("/api/v1/users/{}", uuid::Uuid::now_v7()), &alice).await;
        assert_eq!(status, 404);
        assert_error(&body, "not_found");
    }
}

// --- conversations ----------------------------------------------------------------------------

each_backend! {
    async fn direct_group_and_channel_conversations_are_created_once(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol, dave) =
            (s.user("alice").await, s.user("bob").await, s.user("carol").await, s.user("dave").await);
        let direct = json!({"kind": "direct", "members": [{"user_id": bob.id}]});
        let (status, first) = s.post("/api/v1/conversations", &alice, direct.clone()).await;
        assert_eq!(status, 201, "{first}");
        let direct_id = first["conversation"]["id"].as_str().unwrap().to_owned();
        assert_eq!(first["conversation"]["kind"], "direct");
        assert_eq!(first["conversation"]["title"], Value::Null);
        assert_eq!(first["conversation"]["member_count"], 2);
        assert_eq!(first["conversation"]["role"], "member");
        let roles: Vec<&str> = first["members"].as_array().unwrap().iter().filter_map(|m| m["role"].as_str()).collect();
        assert_eq!(roles, vec!["member", "member"]);
        let (status, again) = s.post("/api/v1/conversations", &alice, direct).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["conversation"]["id"], direct_id.as_str());
        // The pair is unordered: Bob opening a chat with Alice finds the same one.
        let (status, reverse) =
            s.post("/api/v1/conversations", &bob, json!({"kind": "direct", "members": [{"user_id": alice.id}]})).await;
        assert_eq!(status, 200, "{reverse}");
        assert_eq!(reverse["conversation"]["id"], direct_id.as_str());

        for bad in [
            json!({"kind": "direct", "members": []}),
            json!({"kind": "direct", "members": [{"user_id": alice.id}]}),
            json!({"kind": "direct", "title": "private", "members": [{"user_id": carol.id}]}),
            json!({"kind": "direct", "members": [{"user_id": carol.id}, {"user_id": dave.id}]}),
        ] {
            let (status, body) = s.post("/api/v1/conversations", &alice, bad.clone()).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_error(&body, "direct_needs_two_members");
        }
        let (status, body) = s
            .post(
                "/api/v1/conversations",
                &alice,
                json!({"kind": "group", "title": "x", "members": [{"user_id": uuid::Uuid::now_v7()}]}),
            )
            .await;
        assert_eq!(status, 404, "unknown member: {body}");
        assert_error(&body, "not_found");
        let (status, body) = s
            .post("/api/v1/conversations", &alice, json!({"kind": "group", "title": "x".repeat(201), "members": []}))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, "invalid_title");

        let (status, group) = s
            .post(
                "/api/v1/conversations",
                &alice,
                json!({"kind": "group", "title": "Ward 7 nights",
                       "members": [{"user_id": bob.id}, {"user_id": carol.id, "role": "read_only"}]}),
            )
            .await;
        assert_eq!(status, 201, "{group}");
        let group_id = group["conversation"]["id"].as_str().unwrap().to_owned();
        assert_eq!(group["conversation"]["kind"], "group");
        assert_eq!(group["conversation"]["title"], "Ward 7 nights");
        assert_eq!(group["conversation"]["role"], "owner");
        assert_eq!(group["conversation"]["member_count"], 3);
        assert_eq!(group["conversation"]["created_by"], json!(alice.id));
        let role_of = |detail: &Value, who: uuid::Uuid| {
            detail["members"].as_array().unwrap().iter().find(|m| m["user_id"] == json!(who)).map(|m| m["role"].clone())
        };
        assert_eq!(role_of(&group, alice.id), Some(json!("owner")));
        assert_eq!(role_of(&group, bob.id), Some(json!("member")));
        assert_eq!(role_of(&group, carol.id), Some(json!("read_only")));
        assert_eq!(role_of(&group, dave.id), None);
        // Two groups with the same people are two groups.
        let (status, _) = s
            .post(
                "/api/v1/conversations",
                &alice,
                json!({"kind": "group", "title": "Ward 7 nights", "members": [{"user_id": bob.id}]}),
            )
            .await;
        assert_eq!(status, 201);
        let (status, channel) = s
            .post(
                "/api/v1/conversations",
                &alice,
                json!({"kind": "channel", "title": "Hospital-wide", "members": [{"user_id": dave.id}]}),
            )
            .await;
        assert_eq!(status, 201, "{channel}");
        assert_eq!(channel["conversation"]["kind"], "channel");
        let channel_id = channel["conversation"]["id"].as_str().unwrap().to_owned();

        let ids = |list: &Value| -> Vec<String> {
            let mut v: Vec<String> = list["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c["id"].as_str().map(str::to_owned))
                .collect();
            v.sort();
            v
        };
        let (_, carol_list) = s.get("/api/v1/conversations", &carol).await;
        assert_eq!(ids(&carol_list), vec![group_id.clone()]);
        let (_, dave_list) = s.get("/api/v1/conversations", &dave).await;
        assert_eq!(ids(&dave_list), vec![channel_id.clone()]);
        let (_, alice_list) = s.get("/api/v1/conversations", &alice).await;
        assert_eq!(ids(&alice_list).len(), 4);
        assert!(ids(&alice_list).contains(&direct_id));
        let (status, detail) = s.get(&format!("/api/v1/conversations/{group_id}"), &carol).await;
        assert_eq!(status, 200);
        assert_eq!(detail["conversation"]["role"], "read_only");
        assert_eq!(s.get(&format!("/api/v1/conversations/{group_id}"), &dave).await.0, 404);
    }
}

each_backend! {
    async fn concurrent_direct_creates_converge_on_one_conversation(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        // Both people open the chat at once, several times over (double taps, two devices).
        let mut tasks = Vec::new();
        for n in 0..8 {
            let (me, other) = if n % 2 == 0 { (&alice, &bob) } else { (&bob, &alice) };
            let url = s.url("/api/v1/conversations");
            let token = me.token.clone();
            let body = json!({"kind": "direct", "members": [{"user_id": other.id}]});
            tasks.push(tokio::spawn(async move {
                let resp = reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.unwrap();
                let status = resp.status().as_u16();
                let v: Value = resp.json().await.unwrap();
                (status, v["conversation"]["id"].as_str().map(str::to_owned))
            }));
        }
        let mut created = 0;
        let mut ids = std::collections::BTreeSet::new();
        for t in tasks {
            let (status, id) = t.await.unwrap();
            assert!(status == 201 || status == 200, "{status}");
            created += usize::from(status == 201);
            ids.insert(id.expect("an id"));
        }
        assert_eq!(ids.len(), 1, "one conversation: {ids:?}");
        assert_eq!(created, 1, "created exactly once");
        let (_, list) = s.get("/api/v1/conversations", &alice).await;
        assert_eq!(list["conversations"].as_array().map(Vec::len), Some(1), "{list}");
    }
}

each_backend! {
    async fn unread_counts_fall_as_receipts_arrive(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        for n in 1..=3 {
            assert_eq!(send_rest(&s, &alice, &conv, &format!("a{n}"), &format!("obs {n}")).await.0, 201);
        }
        assert_eq!(send_rest(&s, &bob, &conv, "b1", "seen").await.0, 201);
        let unread = |list: &Value| conv_in_list(list, &conv)["unread"].as_u64();
        let (_, list) = s.get("/api/v1/conversations", &bob).await;
        assert_eq!(unread(&list), Some(3), "his own message is not unread: {list}");
        assert_eq!(conv_in_list(&list, &conv)["last_seq"], 4);
        let (_, list) = s.get("/api/v1/conversations", &alice).await;
        assert_eq!(unread(&list), Some(1), "{list}");

        let receipts = format!("/api/v1/conversations/{conv}/receipts");
        let (status, saved) = s.post(&receipts, &bob, json!({"read_seq": 2})).await;
        assert_eq!(status, 200, "{saved}");
        assert_eq!(saved, json!({"delivered_seq": 2, "read_seq": 2}), "reading implies delivery");
        let (_, list) = s.get("/api/v1/conversations", &bob).await;
        assert_eq!(unread(&list), Some(1));
        assert_eq!(conv_in_list(&list, &conv)["read_seq"], 2);
        let (_, detail) = s.get(&format!("/api/v1/conversations/{conv}"), &bob).await;
        assert_eq!(detail["conversation"]["unread"], 1);
        let (_, saved) = s.post(&receipts, &bob, json!({"delivered_seq": 4, "read_seq": 4})).await;
        assert_eq!(saved, json!({"delivered_seq": 4, "read_seq": 4}));
        let (_, list) = s.get("/api/v1/conversations", &bob).await;
        assert_eq!(unread(&list), Some(0));
        // Watermarks never move back.
        let (status, saved) = s.post(&receipts, &bob, json!({"read_seq": 1})).await;
        assert_eq!(status, 200);
        assert_eq!(saved, json!({"delivered_seq": 4, "read_seq": 4}));
        let (status, body) = s.post(&receipts, &bob, json!({"read_seq": 5})).await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, "receipt_beyond_last_message");
        let (status, body) = s.post(&receipts, &bob, json!({})).await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, "empty_receipt");
        let (status, body) = s.post(&receipts, &bob, json!({"read_seq": -1})).await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, "bad_frame");
        // Alice's count is hers alone.
        let (_, list) = s.get("/api/v1/conversations", &alice).await;
        assert_eq!(unread(&list), Some(1));
    }
}

each_backend! {
    async fn owners_rename_and_plain_members_cannot(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let path = format!("/api/v1/conversations/{conv}");
        let (status, detail) = s.call(Method::PATCH, &path, Some(&alice), Some(json!({"title": "ICU handover"}))).await;
        assert_eq!(status, 200, "{detail}");
        assert_eq!(detail["conversation"]["title"], "ICU handover");
        let (status, body) = s.call(Method::PATCH, &path, Some(&bob), Some(json!({"title": "Bob's room"}))).await;
        assert_eq!(status, 403, "{body}");
        assert_error(&body, "forbidden");
        let (status, body) = s.call(Method::PATCH, &path, Some(&alice), Some(json!({"title": "x\u{7}y"}))).await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, "invalid_title");
        let (_, seen_by_bob) = s.get(&path, &bob).await;
        assert_eq!(seen_by_bob["conversation"]["title"], "ICU handover");
        // A direct conversation has no title to change.
        let direct = s.conversation(&alice, "direct", &[&bob]).await;
        let (status, body) = s
            .call(Method::PATCH, &format!("/api/v1/conversations/{direct}"), Some(&alice), Some(json!({"title": "us"})))
            .await;
        assert!(status == 403 || status == 409, "{status} {body}");
        let (_, d) = s.get(&format!("/api/v1/conversations/{direct}"), &alice).await;
        assert_eq!(d["conversation"]["title"], Value::Null);
    }
}

each_backend! {
    async fn membership_changes_answer_with_their_documented_codes(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol, dave) =
            (s.user("alice").await, s.user("bob").await, s.user("carol").await, s.user("dave").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let members = format!("/api/v1/conversations/{conv}/members");
        let member = |u: &TestUser| format!("{members}/{}", u.id);

        let (status, added) = s.post(&members, &alice, json!({"user_id": carol.id})).await;
        assert_eq!(status, 201, "{added}");
        assert!(added["cursor"].as_u64().is_some(), "{added}");
        let (status, body) = s.post(&members, &alice, json!({"user_id": carol.id})).await;
        assert_eq!(status, 409, "{body}");
        assert_error(&body, "already_member");
        let (status, body) = s.post(&members, &bob, json!({"user_id": dave.id})).await;
        assert_eq!(status, 403, "{body}");
        assert_error(&body, "forbidden");
        let (status, body) = s.post(&members, &alice, json!({"user_id": uuid::Uuid::now_v7()})).await;
        assert_eq!(status, 404, "{body}");
        assert_error(&body, "not_found");
        let (status, body) = s.post(&members, &alice, json!({"user_id": dave.id, "role": "admin"})).await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, "bad_frame");

        let (status, body) = s.call(Method::PATCH, &member(&dave), Some(&alice), Some(json!({"role": "owner"}))).await;
        assert_eq!(status, 404, "{body}");
        assert_error(&body, "not_member");
        let (status, body) = s.call(Method::DELETE, &member(&dave), Some(&alice), None).await;
        assert_eq!(status, 404, "{body}");
        assert_error(&body, "not_member");
        let (status, body) =
            s.call(Method::PATCH, &member(&carol), Some(&bob), Some(json!({"role": "read_only"}))).await;
        assert_eq!(status, 403, "{body}");
        assert_error(&body, "forbidden");
        let (status, body) = s.call(Method::DELETE, &member(&carol), Some(&bob), None).await;
        assert_eq!(status, 403, "{body}");
        assert_error(&body, "forbidden");

        // The only owner can neither step down nor leave while others remain.
        let (status, body) =
            s.call(Method::PATCH, &member(&alice), Some(&alice), Some(json!({"role": "member"}))).await;
        assert_eq!(status, 409, "{body}");
        assert_error(&body, "last_owner");
        let (status, body) = s.call(Method::DELETE, &member(&alice), Some(&alice), None).await;
        assert_eq!(status, 409, "{body}");
        assert_error(&body, "last_owner");
        // With a second owner she can.
        let (status, body) = s.call(Method::PATCH, &member(&bob), Some(&alice), Some(json!({"role": "owner"}))).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["cursor"].as_u64().is_some());
        let (status, body) = s.call(Method::PATCH, &member(&bob), Some(&alice), Some(json!({"role": "owner"}))).await;
        assert_eq!((status, &body), (200, &json!({"cursor": null})), "no change, no event");
        // A plain member may leave on its own.
        let (status, body) = s.call(Method::DELETE, &member(&carol), Some(&carol), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(s.get(&format!("/api/v1/conversations/{conv}"), &carol).await.0, 404);
        let (status, body) = s.call(Method::DELETE, &member(&alice), Some(&alice), None).await;
        assert_eq!(status, 200, "{body}");
        let (_, detail) = s.get(&format!("/api/v1/conversations/{conv}"), &bob).await;
        assert_eq!(detail["conversation"]["member_count"], 1, "{detail}");
        assert_eq!(detail["members"].as_array().map(Vec::len), Some(1));

        // The two people of a direct conversation are fixed.
        let direct = s.conversation(&alice, "direct", &[&bob]).await;
        let dmembers = format!("/api/v1/conversations/{direct}/members");
        let (status, body) = s.post(&dmembers, &alice, json!({"user_id": carol.id})).await;
        assert_eq!(status, 409, "{body}");
        assert_error(&body, "direct_members_fixed");
        for (who, target) in [(&alice, &bob), (&alice, &alice)] {
            let (status, body) = s.call(Method::DELETE, &format!("{dmembers}/{}", target.id), Some(who), None).await;
            assert_eq!(status, 409, "{body}");
            assert_error(&body, "direct_members_fixed");
        }
        let (status, body) = s
            .call(Method::PATCH, &format!("{dmembers}/{}", bob.id), Some(&alice), Some(json!({"role": "owner"})))
            .await;
        assert_eq!(status, 409, "{body}");
        assert_error(&body, "direct_members_fixed");
    }
}

each_backend! {
    async fn groups_stop_growing_at_their_member_limit(db) {
        let mut settings = Settings::default();
        settings.service.limits.group_max_members = 3;
        let s = TestServer::start_on(db, settings).await;
        let (alice, bob, carol, dave) =
            (s.user("alice").await, s.user("bob").await, s.user("carol").await, s.user("dave").await);
        let conv = s.conversation(&alice, "group", &[&bob, &carol]).await;
        let (status, body) =
            s.post(&format!("/api/v1/conversations/{conv}/members"), &alice, json!({"user_id": dave.id})).await;
        assert_eq!(status, 409, "{body}");
        assert_error(&body, "too_many_members");
        let (status, body) = s
            .post(
                "/api/v1/conversations",
                &alice,
                json!({"kind": "group", "title": "big",
                "members": [{"user_id": bob.id}, {"user_id": carol.id}, {"user_id": dave.id}]}),
            )
            .await;
        assert_eq!(status, 409, "{body}");
        assert_error(&body, "too_many_members");
    }
}

// --- history and sending ----------------------------------------------------------------------

each_backend! {
    async fn history_pages_in_both_directions(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let path = format!("/api/v1/conversations/{conv}/messages");
        let (_, empty) = s.get(&path, &bob).await;
        assert_eq!(empty, json!({"messages": [], "has_more": false}));
        for n in 1..=7 {
            assert_eq!(send_rest(&s, &alice, &conv, &format!("t{n}"), &format!("obs {n}")).await.0, 201);
        }
        let page = |q: &str| {
            let path = format!("{path}?{q}");
            let bob = bob.clone();
            let s = &s;
            async move {
                let (status, body) = s.get(&path, &bob).await;
                assert_eq!(status, 200, "{path}: {body}");
                (seqs(&body), body["has_more"].as_bool().unwrap())
            }
        };
        assert_eq!(page("").await, ((1..=7).collect(), false));
        // Newest first page, then walking back in time.
        assert_eq!(page("limit=3").await, (vec![5, 6, 7], true));
        assert_eq!(page("before=5&limit=3").await, (vec![2, 3, 4], true));
        assert_eq!(page("before=2&limit=3").await, (vec![1], false));
        assert_eq!(page("before=4&limit=3").await, (vec![1, 2, 3], false), "an exactly full last page");
        assert_eq!(page("before=1").await, (vec![], false));
        // Walking forward from a known point.
        assert_eq!(page("after=0&limit=3").await, (vec![1, 2, 3], true));
        assert_eq!(page("after=3&limit=3").await, (vec![4, 5, 6], true));
        assert_eq!(page("after=6&limit=3").await, (vec![7], false));
        assert_eq!(page("after=4&limit=3").await, (vec![5, 6, 7], false), "an exactly full last page");
        assert_eq!(page("after=7").await, (vec![], false));
        assert_eq!(page("limit=200").await, ((1..=7).collect(), false));
        let (_, body) = s.get(&format!("{path}?after=2&limit=1"), &bob).await;
        assert_eq!(body["messages"][0]["body"], "obs 3");
        assert_eq!(body["messages"][0]["sender_id"], json!(alice.id));

        for bad in ["before=5&after=2", "limit=0", "limit=201", "limit=-1", "before=x", "page=2"] {
            let (status, body) = s.get(&format!("{path}?{bad}"), &bob).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_error(&body, "invalid_request");
        }
    }
}

each_backend! {
    async fn sending_over_rest_is_idempotent_and_validated(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let other = s.conversation(&alice, "group", &[&carol]).await;
        let (mut b, _) = s.connect(&bob, None).await;
        let path = format!("/api/v1/conversations/{conv}/messages");

        let (status, first) =
            s.post(&path, &alice, json!({"client_txn_id": "t1", "body": "BP 80/40", "priority": "critical"})).await;
        assert_eq!(status, 201, "{first}");
        assert_eq!(first["duplicate"], false);
        assert_eq!(first["message"]["seq"], 1);
        assert_eq!(first["message"]["priority"], "critical");
        assert_eq!(first["message"]["requires_ack"], true);
        assert_eq!(first["message"]["client_txn_id"], "t1");
        // A REST send reaches WebSocket members like any other.
        let e = b.next_event().await;
        assert_eq!(e["kind"], "message.created");
        assert_eq!(e["message"], first["message"]);

        let (status, again) =
            s.post(&path, &alice, json!({"client_txn_id": "t1", "body": "BP 80/40", "priority": "critical"})).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["message"], first["message"]);
        let (status, body) = s.post(&path, &alice, json!({"client_txn_id": "t1", "body": "BP 90/50"})).await;
        assert_eq!(status, 409, "{body}");
        assert_error(&body, "idempotency_key_reused");
        // The same key from someone else is their own key.
        let (status, bobs) = s.post(&path, &bob, json!({"client_txn_id": "t1", "body": "coming"})).await;
        assert_eq!(status, 201, "{bobs}");
        assert_eq!(bobs["message"]["seq"], 2);

        let (status, body) =
            s.post(&path, &alice, json!({"client_txn_id": "big", "body": "x".repeat(16 * 1024 + 1)})).await;
        assert_eq!(status, 413, "{body}");
        assert_error(&body, "message_too_large");
        let (status, _) = s.post(&path, &alice, json!({"client_txn_id": "max", "body": "x".repeat(16 * 1024)})).await;
        assert_eq!(status, 201, "exactly the limit is fine");
        for blank in ["", "   ", "\n\t "] {
            let (status, body) = s.post(&path, &alice, json!({"client_txn_id": "blank", "body": blank})).await;
            assert_eq!(status, 400, "{blank:?}: {body}");
            assert_error(&body, "empty_body");
        }
        let (status, body) = s.post(&path, &alice, json!({"client_txn_id": "bad key!", "body": "x"})).await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, "invalid_client_txn_id");

        let first_id = first["message"]["id"].as_str().unwrap();
        let (_, elsewhere) = send_rest(&s, &alice, &other, "o1", "other ward").await;
        for parent in [json!(uuid::Uuid::now_v7()), elsewhere["message"]["id"].clone()] {
            let (status, body) =
                s.post(&path, &alice, json!({"client_txn_id": "r1", "body": "re", "reply_to": parent})).await;
            assert_eq!(status, 400, "{parent}: {body}");
            assert_error(&body, "invalid_reply_to");
        }
        let (status, reply) =
            s.post(&path, &bob, json!({"client_txn_id": "r1", "body": "on my way", "reply_to": first_id})).await;
        assert_eq!(status, 201, "{reply}");
        assert_eq!(reply["message"]["reply_to"], first_id);

        // Read-only members read but do not write.
        let (status, _) = s
            .call(
                Method::PATCH,
                &format!("/api/v1/conversations/{conv}/members/{}", bob.id),
                Some(&alice),
                Some(json!({"role": "read_only"})),
            )
            .await;
        assert_eq!(status, 200);
        let (status, body) = send_rest(&s, &bob, &conv, "ro", "may I?").await;
        assert_eq!(status, 403, "{body}");
        assert_error(&body, "forbidden");

        // Only the accepted sends are in the history, in order.
        let (_, page) = s.get(&path, &alice).await;
        assert_eq!(seqs(&page), vec![1, 2, 3, 4]);
        let bodies: Vec<&str> =
            page["messages"].as_array().unwrap().iter().filter_map(|m| m["body"].as_str()).collect();
        assert_eq!(bodies[0], "BP 80/40");
        assert_eq!(bodies[3], "on my way");
    }
}
