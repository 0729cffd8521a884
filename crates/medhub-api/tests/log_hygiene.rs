//! Logs never contain message bodies, passwords or tokens, even at the most verbose level.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use medhub_core::model::SystemRole;
use medhub_service::auth::NewUser;
use medhub_store::Backend;
use medhub_testkit::{LogCapture, Settings, TestServer};
use serde_json::json;

async fn exercise(backend: Backend, capture: &LogCapture) -> Vec<String> {
    let s = TestServer::start_with(backend, Settings::default()).await;
    let password = "SECRET-PASSWORD-4b1d9c";
    let auth = s.services.auth.clone();
    s.on_server(async move {
        auth.bootstrap("Log Hospital", "admin").await.unwrap();
        auth.create_user(NewUser {
            username: "nurse".into(),
            display_name: "Nurse".into(),
            role: SystemRole::User,
            password: Some(password.into()),
            must_change_password: false,
        })
        .await
        .unwrap();
    })
    .await;
    let bob = s.user("bob").await;
    let signed_in = s.sign_in("nurse", password, None).await;
    let token = signed_in.user.token.clone();
    let wrong = s
        .call(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "nurse", "password": "WRONG-PASSWORD-77aa"})),
        )
        .await;
    assert_eq!(wrong.0, 401);
    // A second sign-in with the authenticator, a wrong code and a step-up with a recovery code.
    let again = s.sign_in("nurse", password, Some(&signed_in.totp_secret)).await;
    let (status, _) = s.post("/api/v1/auth/step-up", &again.user, json!({"code": "000000"})).await;
    assert!(status == 401 || status == 204);
    let recovery = signed_in.recovery_codes[0].clone();
    let (status, body) = s.post("/api/v1/auth/step-up", &again.user, json!({"recovery_code": recovery})).await;
    assert_eq!(status, 204, "{body}");
    let ticket = s.ws_ticket(&again.user).await;
    let nurse = signed_in.user.clone();
    let conv = s.conversation(&nurse, "direct", &[&bob]).await;
    let (mut ws, _) = s.connect(&nurse, None).await;
    let body = "PATIENT-BODY-Jane-Doe-MRN-99812";
    let sent = ws.request(json!({"type": "send", "conversation_id": conv, "client_txn_id": "t1", "body": body})).await;
    assert_eq!(sent["type"], "sent");
    let edit =
        ws.request(json!({"type": "edit", "message_id": sent["message"]["id"], "body": "PATIENT-EDIT-Jane-Doe"})).await;
    assert_eq!(edit["type"], "edited");
    // Errors, too, must not echo bodies into the log.
    let bad = ws.request(json!({"type": "send", "conversation_id": uuid::Uuid::now_v7(), "client_txn_id": "t2", "body": "PATIENT-REJECTED-body"})).await;
    assert_eq!(bad["type"], "error");
    let (_, page) = s.get(&format!("/api/v1/conversations/{conv}/messages"), &nurse).await;
    assert_eq!(page["messages"][0]["body"], "PATIENT-EDIT-Jane-Doe");
    drop(ws);
    drop(s);
    assert!(!capture.text().is_empty(), "the capture saw the server's logs");
    vec![
        password.to_owned(),
        "WRONG-PASSWORD-77aa".to_owned(),
        token,
        again.user.token,
        bob.token,
        signed_in.totp_secret.clone(),
        recovery,
        ticket,
        body.to_owned(),
        "PATIENT-EDIT".to_owned(),
        "PATIENT-REJECTED".to_owned(),
        "Jane-Doe".to_owned(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_reaches_the_log_on_either_backend() {
    let capture = LogCapture::install();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let secrets = exercise(backend, &capture).await;
        let log = capture.text();
        for secret in secrets {
            if let Some(pos) = log.find(&secret) {
                let start = log[..pos].rfind('\n').map_or(0, |i| i + 1);
                let end = log[pos..].find('\n').map_or(log.len(), |i| pos + i);
                panic!("{backend:?}: the log contains {secret:?} in: {}", &log[start..end]);
            }
        }
    }
}
