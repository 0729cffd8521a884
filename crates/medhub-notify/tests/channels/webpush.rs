//! Web Push through a real push service emulator (npm web-push-testing): it verifies the VAPID
//! token against the key the subscription was made with, decrypts the aes128gcm payload with
//! the subscription's private key, and answers 410 for an expired subscription.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use medhub_core::model::{ConversationKind, Priority};
use medhub_core::{Clock, ManualClock, SystemClock};
use medhub_notify::{
    Channel, IdempotencyKey, Notice, NoticeKind, Outcome, PushSubscription, Secret, SendError, VapidKey,
    WebPushChannel, WebPushConfig, render,
};
use serde_json::Value;

use crate::peers::{PushPeer, conversation, user};
use crate::settings;

pub fn config(key: &VapidKey) -> WebPushConfig {
    WebPushConfig {
        vapid_private_key: Secret::new(key.private_base64url()),
        subject: "mailto:medhub-ops@hospital.example".into(),
        ttl_secs: 1800,
        allowed_endpoint_hosts: vec![],
        allow_loopback_http: true,
        timeout_secs: 10,
    }
}

fn notice(priority: Priority) -> Notice {
    Notice::new(
        &settings(),
        Some(&user("Dr Alice Smith")),
        &conversation(ConversationKind::Group, Some("Ward 7 on-call"), None),
        priority,
        NoticeKind::NewMessage,
    )
}

#[tokio::test]
async fn the_push_service_verifies_vapid_and_decrypts_the_payload() {
    let peer = PushPeer::start().await;
    let key = VapidKey::generate().unwrap();
    let channel = WebPushChannel::new(&config(&key), Arc::new(SystemClock)).unwrap();
    assert_eq!(channel.public_key(), key.public_base64url());
    let sub = peer.subscribe(channel.public_key()).await;
    let target = PushSubscription::from_json(&sub.json.to_string()).unwrap();
    channel.check_endpoint(&target).unwrap();

    let n = notice(Priority::Critical);
    let before = Timestamp::now().as_second();
    let sent = channel.send(&n, &target, &IdempotencyKey::new("push-1").unwrap()).await.unwrap();
    assert_eq!(sent.channel, medhub_notify::ChannelKind::WebPush);

    // The emulator decrypted exactly the rendered notice.
    let got = peer.notifications(&sub.client_hash).await;
    assert_eq!(got.len(), 1);
    let payload: Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(payload, serde_json::to_value(render::push_payload(&n)).unwrap());
    assert_eq!(payload["title"], "CRITICAL: Dr Alice Smith");
    assert_eq!(payload["url"], n.link().as_str());

    // What RFC 8030 and 8292 ask of the request, beyond what the emulator checks itself.
    let requests = peer.requests().await;
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r["status"], 201);
    assert_eq!(r["contentEncoding"], "aes128gcm");
    assert_eq!(r["contentType"], "application/octet-stream");
    assert_eq!(r["ttl"], "1800");
    assert_eq!(r["urgency"], "high");
    assert_eq!(r["topic"].as_str().unwrap().len(), 32);
    assert_eq!(r["authorizationScheme"], "vapid");
    assert_eq!(r["k"], key.public_base64url());
    assert_eq!(r["token"]["header"], serde_json::json!({"typ": "JWT", "alg": "ES256"}));
    let claims = &r["token"]["claims"];
    assert_eq!(claims["aud"], peer.origin.as_str());
    assert_eq!(claims["sub"], "mailto:medhub-ops@hospital.example");
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp > before && exp <= Timestamp::now().as_second() + 24 * 3600, "exp {exp}");
    // Padded: the body's size does not follow the names' lengths.
    assert_eq!((r["bodyLength"].as_u64().unwrap() - 86 - 16) % 256, 0);

    // A retry of the same delivery has the same Topic; routine notices are not urgent.
    channel.send(&notice(Priority::Routine), &target, &IdempotencyKey::new("push-1").unwrap()).await.unwrap();
    let requests = peer.requests().await;
    assert_eq!(requests[1]["topic"], requests[0]["topic"]);
    assert_eq!(requests[1]["urgency"], "normal");
    assert_eq!(peer.notifications(&sub.client_hash).await.len(), 2);
}

#[tokio::test]
async fn an_expired_subscription_is_gone() {
    let peer = PushPeer::start().await;
    let key = VapidKey::generate().unwrap();
    let channel = WebPushChannel::new(&config(&key), Arc::new(SystemClock)).unwrap();
    let sub = peer.subscribe(channel.public_key()).await;
    let target = PushSubscription::from_json(&sub.json.to_string()).unwrap();
    let k = IdempotencyKey::new("gone-1").unwrap();
    channel.send(&notice(Priority::Urgent), &target, &k).await.unwrap();

    peer.expire(&sub.client_hash).await;
    let e = channel.send(&notice(Priority::Urgent), &target, &k).await.unwrap_err();
    assert_eq!(e, SendError::Gone);
    assert_eq!(e.outcome(), Outcome::Gone);
    assert_eq!(peer.requests().await.last().unwrap()["status"], 410);
    assert_eq!(peer.notifications(&sub.client_hash).await.len(), 1);
}

#[tokio::test]
async fn a_wrong_vapid_key_is_refused() {
    let peer = PushPeer::start().await;
    let subscribed_with = VapidKey::generate().unwrap();
    let sub = peer.subscribe(subscribed_with.public_base64url()).await;
    let target = PushSubscription::from_json(&sub.json.to_string()).unwrap();

    let other = VapidKey::generate().unwrap();
    let channel = WebPushChannel::new(&config(&other), Arc::new(SystemClock)).unwrap();
    let e = channel.send(&notice(Priority::Critical), &target, &IdempotencyKey::new("w1").unwrap()).await.unwrap_err();
    assert_eq!(e.outcome(), Outcome::Permanent, "{e}");
    assert_eq!(e.reason(), "push http status 400");
    assert!(peer.notifications(&sub.client_hash).await.is_empty());

    // The right key works for the same subscription.
    let right = WebPushChannel::new(&config(&subscribed_with), Arc::new(SystemClock)).unwrap();
    right.send(&notice(Priority::Critical), &target, &IdempotencyKey::new("w2").unwrap()).await.unwrap();
    assert_eq!(peer.notifications(&sub.client_hash).await.len(), 1);
}

#[tokio::test]
async fn an_expired_vapid_token_is_refused() {
    let peer = PushPeer::start().await;
    let key = VapidKey::generate().unwrap();
    // A server clock two days slow signs tokens that expired a day and a half ago.
    let clock = Arc::new(ManualClock::new(Timestamp::now() - SignedDuration::from_hours(48)));
    let channel = WebPushChannel::new(&config(&key), clock.clone()).unwrap();
    let sub = peer.subscribe(channel.public_key()).await;
    let target = PushSubscription::from_json(&sub.json.to_string()).unwrap();
    let e = channel.send(&notice(Priority::Critical), &target, &IdempotencyKey::new("x1").unwrap()).await.unwrap_err();
    assert_eq!(e.outcome(), Outcome::Permanent, "{e}");
    assert!(peer.notifications(&sub.client_hash).await.is_empty());

    clock.set(Timestamp::now());
    assert!(clock.now() > Timestamp::now() - SignedDuration::from_mins(1));
    channel.send(&notice(Priority::Critical), &target, &IdempotencyKey::new("x2").unwrap()).await.unwrap();
    assert_eq!(peer.notifications(&sub.client_hash).await.len(), 1);
}

#[tokio::test]
async fn a_push_service_that_is_down_is_retryable() {
    let key = VapidKey::generate().unwrap();
    let channel = WebPushChannel::new(&config(&key), Arc::new(SystemClock)).unwrap();
    let ua = VapidKey::generate().unwrap();
    let endpoint = format!("http://127.0.0.1:{}/notify/nobody", crate::peers::free_port());
    let target = PushSubscription::new(&endpoint, ua.public_base64url(), "BTBZMqHH6r4Tts7J_aSIgg").unwrap();
    let e = channel.send(&notice(Priority::Critical), &target, &IdempotencyKey::new("d1").unwrap()).await.unwrap_err();
    assert_eq!(e.outcome(), Outcome::Retryable, "{e}");
    assert_eq!(e.reason(), "push service unreachable");
}

/// The emulator checks the token's signature, not only that `k` is the subscribed key: a
/// request whose token another key signed is refused, though `k` and the payload are right.
/// (Built by hand: the channel cannot send such a request.)
#[tokio::test]
async fn a_token_signed_by_another_key_is_refused() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use medhub_notify::webpush::ece;

    let peer = PushPeer::start().await;
    let subscribed_with = VapidKey::generate().unwrap();
    let sub = peer.subscribe(subscribed_with.public_base64url()).await;
    let endpoint = sub.json["endpoint"].as_str().unwrap().to_owned();
    let ua =
        p256::PublicKey::from_sec1_bytes(&B64.decode(sub.json["keys"]["p256dh"].as_str().unwrap()).unwrap()).unwrap();
    let auth: [u8; 16] = B64.decode(sub.json["keys"]["auth"].as_str().unwrap()).unwrap().try_into().unwrap();
    let body =
        ece::encrypt(b"{\"v\":1}", &ua, &auth, &p256::SecretKey::from_slice(&[42; 32]).unwrap(), &[7; 16], 0).unwrap();
    let exp = Timestamp::now().as_second() + 3600;
    let origin = peer.origin.clone();

    let post = |authorization: String| {
        let (endpoint, body) = (endpoint.clone(), body.clone());
        async move {
            reqwest::Client::new()
                .post(endpoint)
                .header("TTL", "60")
                .header("Content-Encoding", "aes128gcm")
                .header("Content-Type", "application/octet-stream")
                .header("Authorization", authorization)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let forged = VapidKey::generate().unwrap().authorization(&origin, exp, "mailto:x@hospital.example").unwrap();
    let forged = format!("{}k={}", forged.split("k=").next().unwrap(), subscribed_with.public_base64url());
    assert_eq!(post(forged).await, 400);
    assert!(peer.notifications(&sub.client_hash).await.is_empty());

    let genuine = subscribed_with.authorization(&origin, exp, "mailto:x@hospital.example").unwrap();
    assert_eq!(post(genuine).await, 201);
    assert_eq!(peer.notifications(&sub.client_hash).await, ["{\"v\":1}"]);
}
