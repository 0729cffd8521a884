//! SMS through a provider API on loopback that records every request: the request's shape,
//! the idempotency key across a retry, and how each answer is classified.

use std::sync::Arc;
use std::time::Duration;

use medhub_core::SystemClock;
use medhub_core::model::{ConversationKind, Priority};
use medhub_notify::{
    Channel, IdempotencyKey, NextStep, Notice, NoticeKind, Outcome, PhoneNumber, RetryConfig, RetryPolicy, Secret,
    SendError, SmsChannel, SmsConfig, render,
};
use serde_json::json;

use crate::peers::{Reply, SmsPeer, conversation, user};
use crate::settings;

pub fn config(peer: &SmsPeer) -> SmsConfig {
    SmsConfig {
        url: peer.url.clone(),
        bearer_token: Some(Secret::new("sms-token-abc")),
        sender_id: Some("medhub".into()),
        extra_root_ca_file: None,
        timeout_secs: 10,
    }
}

fn notice() -> Notice {
    Notice::new(
        &settings(),
        Some(&user("Dr Alice Smith")),
        &conversation(ConversationKind::Channel, Some("Ward 7 on-call"), None),
        Priority::Critical,
        NoticeKind::NewMessage,
    )
}

fn to() -> PhoneNumber {
    PhoneNumber::parse("+44 7700 900123").unwrap()
}

#[tokio::test]
async fn the_provider_gets_json_a_bearer_token_and_the_idempotency_key() {
    let peer = SmsPeer::start(vec![Reply::ok("SM-42")]).await;
    let channel = SmsChannel::new(&config(&peer), Arc::new(SystemClock)).unwrap();
    let n = notice();
    let sent = channel.send(&n, &to(), &IdempotencyKey::new("0190-sms-1").unwrap()).await.unwrap();
    assert_eq!(sent.provider_id.as_deref(), Some("SM-42"));

    let got = peer.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.headers["authorization"], "Bearer sms-token-abc");
    assert_eq!(r.headers["idempotency-key"], "0190-sms-1");
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.json(), json!({"to": "+447700900123", "text": render::sms_text(&n), "from": "medhub"}));
    assert_eq!(
        r.json()["text"],
        format!("medhub CRITICAL: Dr Alice Smith in Ward 7 on-call - new message. {}", n.link())
    );
}

#[tokio::test]
async fn a_retry_after_503_sends_the_same_idempotency_key() {
    let peer = SmsPeer::start(vec![Reply::status(503), Reply::ok("SM-2")]).await;
    let channel = SmsChannel::new(&config(&peer), Arc::new(SystemClock)).unwrap();
    let policy = RetryPolicy::new(&RetryConfig::default()).unwrap();
    let key = IdempotencyKey::new("0190-sms-retry").unwrap();
    let n = notice();

    let first = channel.send(&n, &to(), &key).await.unwrap_err();
    assert!(matches!(first, SendError::Retryable { retry_after: None, .. }), "{first}");
    assert_eq!(first.reason(), "sms http status 503");
    let NextStep::Retry { after } = policy.next(1, &first, 1_500) else { panic!("503 is retried") };
    assert_eq!(after, Duration::from_millis(1_500));

    let sent = channel.send(&n, &to(), &key).await.unwrap();
    assert_eq!(sent.provider_id.as_deref(), Some("SM-2"));
    let got = peer.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].headers["idempotency-key"], "0190-sms-retry");
    assert_eq!(got[1].headers["idempotency-key"], "0190-sms-retry");
    assert_eq!(got[0].body, got[1].body);
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_providers_delay() {
    let limited = Reply { status: 429, headers: vec![("retry-after", "7".into())], body: "{}".into() };
    let peer = SmsPeer::start(vec![limited]).await;
    let channel = SmsChannel::new(&config(&peer), Arc::new(SystemClock)).unwrap();
    let e = channel.send(&notice(), &to(), &IdempotencyKey::new("rl").unwrap()).await.unwrap_err();
    match &e {
        SendError::Retryable { retry_after, .. } => assert_eq!(*retry_after, Some(Duration::from_secs(7))),
        other => panic!("429 must be retryable: {other}"),
    }
    assert_eq!(e.reason(), "sms http status 429");
    // The jittered wait is never shorter than what the provider asked.
    let policy = RetryPolicy::new(&RetryConfig::default()).unwrap();
    assert_eq!(policy.next(1, &e, 0), NextStep::Retry { after: Duration::from_secs(7) });
}

#[tokio::test]
async fn a_refused_request_is_permanent_and_a_missing_provider_retryable() {
    let peer = SmsPeer::start(vec![
        Reply::status(400),
        Reply::status(401),
        Reply { status: 500, headers: vec![], body: "".into() },
    ])
    .await;
    let channel = SmsChannel::new(&config(&peer), Arc::new(SystemClock)).unwrap();
    let key = IdempotencyKey::new("bad").unwrap();
    for (outcome, reason) in [
        (Outcome::Permanent, "sms http status 400"),
        (Outcome::Permanent, "sms http status 401"),
        (Outcome::Retryable, "sms http status 500"),
    ] {
        let e = channel.send(&notice(), &to(), &key).await.unwrap_err();
        assert_eq!((e.outcome(), e.reason()), (outcome, reason));
        assert!(!e.to_string().contains("sms-token-abc"));
    }
    // A 2xx without a readable id is still sent.
    let sent = channel.send(&notice(), &to(), &key).await.unwrap();
    assert_eq!(sent.provider_id.as_deref(), Some("SM-default"));

    let url = format!("http://127.0.0.1:{}/v1/messages", crate::peers::free_port());
    let gone = SmsChannel::new(&SmsConfig { url, ..config(&peer) }, Arc::new(SystemClock)).unwrap();
    let e = gone.send(&notice(), &to(), &key).await.unwrap_err();
    assert_eq!((e.outcome(), e.reason()), (Outcome::Retryable, "sms provider unreachable"));
}
