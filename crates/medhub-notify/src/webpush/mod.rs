//! Web Push (RFC 8030): the notice's JSON payload encrypted for the browser (RFC 8291), posted
//! to the subscription's push service with a VAPID token (RFC 8292).

pub mod ece;
pub mod vapid;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use medhub_core::Clock;
use medhub_core::model::Priority;
use p256::PublicKey;
use reqwest::Url;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, LOCATION};
use serde::Deserialize;
use sha2_011::{Digest, Sha256};

pub use self::vapid::VapidKey;
use crate::channel::{Channel, ChannelKind, IdempotencyKey, SendError, Sent};
use crate::error::NotifyError;
use crate::http::{self, Prefix};
use crate::notice::Notice;
use crate::render;
use crate::secret::Secret;

/// `[notify.webpush]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushConfig {
    /// The VAPID private key: a P-256 scalar, 32 bytes, base64url. Browsers subscribe with its
    /// public key, so changing it makes every subscription useless. Required.
    pub vapid_private_key: Secret,
    /// Who runs this server, for the push services: `mailto:` or `https:` ("mailto:it@hospital.example").
    /// Required.
    pub subject: String,
    /// How long a push service keeps a notification for a device that is offline, in seconds.
    /// Default: 3600.
    #[serde(default = "default_ttl")]
    pub ttl_secs: u32,
    /// The push services medhub may post to: a subscription's endpoint host must be one of these
    /// or end with "." and one of them. An empty list allows every `https` host. Subscriptions
    /// come from browsers, so without a list a user could make medhub post to any address it can
    /// reach. Default: the push services of Chrome, Firefox, Edge and Safari.
    #[serde(default = "default_hosts")]
    pub allowed_endpoint_hosts: Vec<String>,
    /// Also allow `http://` endpoints on loopback addresses (tests, a local push relay).
    /// Default: false.
    #[serde(default)]
    pub allow_loopback_http: bool,
    /// The time limit of one request, in seconds. Default: 10.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_ttl() -> u32 {
    3600
}

fn default_hosts() -> Vec<String> {
    ["fcm.googleapis.com", "push.services.mozilla.com", "notify.windows.com", "push.apple.com"]
        .map(str::to_owned)
        .to_vec()
}

fn default_timeout() -> u64 {
    10
}

/// How long a VAPID token is valid (RFC 8292 §2: at most 24 hours).
const TOKEN_LIFETIME_SECS: i64 = 12 * 3600;
/// The padded plaintext is a multiple of this, so the body's size hides the names' lengths.
const PAD_TO: usize = 256;

const PREFIX: Prefix = Prefix {
    timeout: "push request timed out",
    connect: "push service unreachable",
    other: "push request failed",
    status: "push http status",
};

/// A browser's push subscription: its endpoint at a push service and its encryption keys.
/// `Debug` shows the endpoint's origin only: the full URL lets anyone push to the device.
#[derive(Clone, PartialEq)]
pub struct PushSubscription {
    endpoint: Url,
    p256dh: PublicKey,
    auth: [u8; 16],
}

impl PushSubscription {
    /// From the subscription's parts: the endpoint URL and the base64url `p256dh` key and
    /// `auth` secret.
    pub fn new(endpoint: &str, p256dh: &str, auth: &str) -> Result<Self, NotifyError> {
        let bad = |problem| NotifyError::InvalidTarget { what: "push subscription", problem };
        let endpoint = Url::parse(endpoint).map_err(|_| bad("the endpoint is not a URL"))?;
        if !matches!(endpoint.scheme(), "https" | "http") || endpoint.host_str().is_none() {
            return Err(bad("the endpoint is not an http(s) URL"));
        }
        let key = B64.decode(p256dh.trim_end_matches('=')).map_err(|_| bad("p256dh is not base64url"))?;
        if key.len() != 65 {
            return Err(bad("p256dh is not an uncompressed P-256 point"));
        }
        let p256dh = PublicKey::from_sec1_bytes(&key).map_err(|_| bad("p256dh is not a P-256 point"))?;
        let auth = B64.decode(auth.trim_end_matches('=')).map_err(|_| bad("auth is not base64url"))?;
        let auth: [u8; 16] = auth.try_into().map_err(|_| bad("auth is not 16 bytes"))?;
        Ok(Self { endpoint, p256dh, auth })
    }

    /// From the JSON a browser's `PushSubscription.toJSON()` gives:
    /// `{"endpoint": "...", "keys": {"p256dh": "...", "auth": "..."}}`.
    pub fn from_json(json: &str) -> Result<Self, NotifyError> {
        #[derive(Deserialize)]
        struct Keys {
            p256dh: String,
            auth: String,
        }
        #[derive(Deserialize)]
        struct Json {
            endpoint: String,
            keys: Keys,
        }
        let j: Json = serde_json::from_str(json)
            .map_err(|_| NotifyError::InvalidTarget { what: "push subscription", problem: "not subscription JSON" })?;
        Self::new(&j.endpoint, &j.keys.p256dh, &j.keys.auth)
    }

    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }
}

impl fmt::Debug for PushSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushSubscription").field("origin", &self.endpoint.origin().ascii_serialization()).finish()
    }
}

/// The Web Push channel.
pub struct WebPushChannel {
    key: VapidKey,
    subject: String,
    ttl_secs: u32,
    allowed_hosts: Vec<String>,
    allow_loopback_http: bool,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for WebPushChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebPushChannel").field("key", &self.key).field("allowed_hosts", &self.allowed_hosts).finish()
    }
}

impl WebPushChannel {
    pub fn new(config: &WebPushConfig, clock: Arc<dyn Clock>) -> Result<Self, NotifyError> {
        let key = VapidKey::from_base64url(config.vapid_private_key.expose())?;
        let subject = config.subject.trim();
        let contact = subject
            .strip_prefix("mailto:")
            .map(|address| address.contains('@'))
            .or_else(|| Url::parse(subject).ok().map(|u| u.scheme() == "https"));
        if contact != Some(true) || subject.chars().any(char::is_control) {
            return Err(NotifyError::Config {
                field: "notify.webpush.subject",
                problem: "must be a mailto: address or an https: URL",
            });
        }
        if config.ttl_secs == 0 {
            return Err(NotifyError::Config { field: "notify.webpush.ttl_secs", problem: "must be at least 1" });
        }
        let allowed_hosts = config
            .allowed_endpoint_hosts
            .iter()
            .map(|h| h.trim().trim_start_matches('.').to_ascii_lowercase())
            .collect();
        Ok(Self {
            key,
            subject: subject.to_owned(),
            ttl_secs: config.ttl_secs,
            allowed_hosts,
            allow_loopback_http: config.allow_loopback_http,
            http: http::client(Duration::from_secs(config.timeout_secs.max(1)), None)?,
            clock,
        })
    }

    /// The VAPID public key, base64url: what the web client passes to
    /// `pushManager.subscribe({applicationServerKey})`.
    pub fn public_key(&self) -> &str {
        self.key.public_base64url()
    }

    /// Whether medhub may post to this subscription's endpoint. Check it when a browser
    /// registers a subscription; every send checks it again.
    pub fn check_endpoint(&self, subscription: &PushSubscription) -> Result<(), NotifyError> {
        let bad = |problem| NotifyError::InvalidTarget { what: "push subscription", problem };
        let url = &subscription.endpoint;
        let host =
            url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "http" if self.allow_loopback_http && loopback => Ok(()),
            "http" => Err(bad("the endpoint is not https")),
            _ if loopback && self.allow_loopback_http => Ok(()),
            _ if self.allowed_hosts.is_empty() => Ok(()),
            _ if self.allowed_hosts.iter().any(|a| host == *a || host.ends_with(&format!(".{a}"))) => Ok(()),
            _ => Err(bad("the endpoint's host is not an allowed push service")),
        }
    }

    fn authorization(&self, endpoint: &Url) -> Result<String, SendError> {
        let audience = endpoint.origin().ascii_serialization();
        let expires = self.clock.now().as_second().saturating_add(TOKEN_LIFETIME_SECS);
        self.key
            .authorization(&audience, expires, &self.subject)
            .map_err(|_| SendError::permanent("vapid signing failed"))
    }
}

/// RFC 8030 §5.3: critical and urgent notices wake the device.
fn urgency(priority: Priority) -> &'static str {
    match priority {
        Priority::Critical | Priority::Urgent => "high",
        Priority::Routine => "normal",
    }
}

/// RFC 8030 §5.4: at most 32 base64url characters. A retry replaces an earlier attempt the
/// push service still holds, so the device shows it once.
fn topic(key: &IdempotencyKey) -> String {
    let digest = Sha256::digest(key.as_str().as_bytes());
    B64.encode(&digest[..24])
}

impl Channel for WebPushChannel {
    type Target = PushSubscription;

    const KIND: ChannelKind = ChannelKind::WebPush;

    async fn send(&self, notice: &Notice, target: &PushSubscription, key: &IdempotencyKey) -> Result<Sent, SendError> {
        self.check_endpoint(target).map_err(|_| SendError::permanent("push endpoint not allowed"))?;
        let plaintext = render::push_payload_json(notice);
        let sender = vapid::random_secret().map_err(|_| SendError::retry("no random source"))?;
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|_| SendError::retry("no random source"))?;
        let body = ece::encrypt(&plaintext, &target.p256dh, &target.auth, &sender, &salt, PAD_TO)
            .map_err(|_| SendError::permanent("push payload too large"))?;
        let response = self
            .http
            .post(target.endpoint.clone())
            .header("TTL", self.ttl_secs.to_string())
            .header("Urgency", urgency(notice.priority()))
            .header("Topic", topic(key))
            .header(CONTENT_ENCODING, "aes128gcm")
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::AUTHORIZATION, self.authorization(&target.endpoint)?)
            .body(body)
            .send()
            .await
            .map_err(|e| http::transport_error(PREFIX, &e))?;
        let status = response.status();
        if status.is_success() {
            let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok());
            return Ok(Sent::new(ChannelKind::WebPush, location));
        }
        match status.as_u16() {
            404 | 410 => Err(SendError::Gone),
            _ => Err(http::status_error(&PREFIX, status, response.headers(), self.clock.now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use medhub_core::SystemClock;

    use super::*;

    fn config(hosts: &[&str], loopback: bool) -> WebPushConfig {
        WebPushConfig {
            vapid_private_key: Secret::new(VapidKey::generate().unwrap().private_base64url()),
            subject: "mailto:it@hospital.example".into(),
            ttl_secs: 60,
            allowed_endpoint_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            allow_loopback_http: loopback,
            timeout_secs: 5,
        }
    }

    fn subscription(endpoint: &str) -> PushSubscription {
        let ua = VapidKey::generate().unwrap();
        PushSubscription::new(endpoint, ua.public_base64url(), "BTBZMqHH6r4Tts7J_aSIgg").unwrap()
    }

    #[test]
    fn endpoints_must_be_allowed_push_services() {
        let channel = WebPushChannel::new(
            &config(&["push.services.mozilla.com", "fcm.googleapis.com"], false),
            Arc::new(SystemClock),
        )
        .unwrap();
        let ok = |e: &str| channel.check_endpoint(&subscription(e)).is_ok();
        assert!(ok("https://updates.push.services.mozilla.com/wpush/v2/abc"));
        assert!(ok("https://fcm.googleapis.com/fcm/send/abc"));
        assert!(!ok("https://evilpush.services.mozilla.com.example/x"));
        assert!(!ok("https://fcm.googleapis.com.evil.example/x"));
        assert!(!ok("https://10.0.0.5/x"));
        assert!(!ok("http://fcm.googleapis.com/x"));
        assert!(!ok("http://127.0.0.1:8090/notify/x"));

        let local = WebPushChannel::new(&config(&[], true), Arc::new(SystemClock)).unwrap();
        assert!(local.check_endpoint(&subscription("http://127.0.0.1:8090/notify/x")).is_ok());
        assert!(local.check_endpoint(&subscription("http://[::1]:8090/notify/x")).is_ok());
        assert!(local.check_endpoint(&subscription("http://localhost:8090/notify/x")).is_ok());
        assert!(local.check_endpoint(&subscription("http://10.0.0.5/x")).is_err());
        assert!(local.check_endpoint(&subscription("https://anything.example/x")).is_ok());
    }

    #[test]
    fn subscriptions_are_checked_and_not_shown() {
        let ua = VapidKey::generate().unwrap();
        let json = serde_json::json!({
            "endpoint": "https://fcm.googleapis.com/fcm/send/secret-token",
            "expirationTime": null,
            "keys": {"p256dh": ua.public_base64url(), "auth": "BTBZMqHH6r4Tts7J_aSIgg"},
        });
        let s = PushSubscription::from_json(&json.to_string()).unwrap();
        assert_eq!(format!("{s:?}"), "PushSubscription { origin: \"https://fcm.googleapis.com\" }");
        assert!(PushSubscription::new("ftp://x/y", ua.public_base64url(), "BTBZMqHH6r4Tts7J_aSIgg").is_err());
        assert!(PushSubscription::new("https://x/y", "AAAA", "BTBZMqHH6r4Tts7J_aSIgg").is_err());
        assert!(PushSubscription::new("https://x/y", ua.public_base64url(), "AAAA").is_err());
        assert!(PushSubscription::from_json("{}").is_err());
    }

    #[test]
    fn subjects_and_headers() {
        let mut c = config(&[], false);
        c.subject = "it@hospital.example".into();
        assert!(WebPushChannel::new(&c, Arc::new(SystemClock)).is_err());
        c.subject = "http://hospital.example".into();
        assert!(WebPushChannel::new(&c, Arc::new(SystemClock)).is_err());
        c.subject = "https://hospital.example/contact".into();
        assert!(WebPushChannel::new(&c, Arc::new(SystemClock)).is_ok());
        assert_eq!(urgency(Priority::Critical), "high");
        assert_eq!(urgency(Priority::Routine), "normal");
        let t = topic(&IdempotencyKey::new("abc").unwrap());
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
