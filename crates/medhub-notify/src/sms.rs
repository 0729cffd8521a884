//! SMS through the hospital's SMS provider: a JSON POST to a configured URL, with a bearer
//! token and an `Idempotency-Key` that stays the same across retries of one delivery.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use medhub_core::Clock;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};

use crate::channel::{Channel, ChannelKind, IdempotencyKey, SendError, Sent};
use crate::error::NotifyError;
use crate::http::{self, Prefix};
use crate::notice::Notice;
use crate::render;
use crate::secret::Secret;

/// `[notify.sms]`.
///
/// The request medhub sends:
///
/// ```text
/// POST {url}
/// Authorization: Bearer {bearer_token}
/// Idempotency-Key: {key, the same on every attempt of one delivery}
/// Content-Type: application/json
///
/// {"to": "+447700900123", "text": "medhub CRITICAL: …", "from": "{sender_id}"}
/// ```
///
/// A 2xx answer is success; a JSON body with a string `id` is kept as the provider's message
/// id. 429 and 5xx are retried (after `Retry-After` when given); other statuses are final.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// The provider's endpoint for sending one message; `https://`, or `http://` on a
    /// loopback address only (a local gateway); no credentials or query in it. Required.
    pub url: String,
    /// The bearer token; never logged. Default: unset (no `Authorization` header).
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// The sender name or number the provider shows (`from`). Default: unset (the provider's
    /// default).
    #[serde(default)]
    pub sender_id: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's. Default: unset.
    #[serde(default)]
    pub extra_root_ca_file: Option<PathBuf>,
    /// The time limit of one request, in seconds. Default: 10.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    10
}

const PREFIX: Prefix = Prefix {
    timeout: "sms request timed out",
    connect: "sms provider unreachable",
    other: "sms request failed",
    status: "sms http status",
};

/// The most of a provider's answer that is read (for its message id).
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// A phone number in E.164 form: "+", then 7 to 15 digits, the first not 0. `Debug` shows the
/// last two digits only.
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Accepts spaces, dots, dashes and parentheses between digits ("+44 7700 900123").
    pub fn parse(raw: &str) -> Result<Self, NotifyError> {
        let bad = NotifyError::InvalidTarget { what: "phone number", problem: "not E.164 (+ and 7-15 digits)" };
        let raw = raw.trim();
        let digits = raw
            .strip_prefix('+')
            .ok_or(NotifyError::InvalidTarget { what: "phone number", problem: "not E.164 (+ and 7-15 digits)" })?;
        let mut out = String::from("+");
        for c in digits.chars() {
            match c {
                '0'..='9' => out.push(c),
                ' ' | '.' | '-' | '(' | ')' => {}
                _ => return Err(bad),
            }
        }
        let n = out.len() - 1;
        if !(7..=15).contains(&n) || out.as_bytes().get(1) == Some(&b'0') {
            return Err(bad);
        }
        Ok(PhoneNumber(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber(…{})", &self.0[self.0.len().saturating_sub(2)..])
    }
}

#[derive(Serialize)]
struct Request<'a> {
    to: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
}

#[derive(Deserialize)]
struct Answer {
    id: Option<serde_json::Value>,
}

/// The SMS channel.
pub struct SmsChannel {
    url: Url,
    token: Option<Secret>,
    sender_id: Option<String>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for SmsChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsChannel").field("origin", &self.url.origin().ascii_serialization()).finish_non_exhaustive()
    }
}

impl SmsChannel {
    pub fn new(config: &SmsConfig, clock: Arc<dyn Clock>) -> Result<Self, NotifyError> {
        let bad = |problem| NotifyError::Config { field: "notify.sms.url", problem };
        let url = Url::parse(config.url.trim()).map_err(|_| bad("is not a URL"))?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err(bad("must be https:// (http:// only on a loopback address)")),
        }
        // A key in the URL would end up wherever the URL is shown; it goes in bearer_token.
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(bad("must not carry credentials or a query; put the key in bearer_token"));
        }
        if let Some(token) = &config.bearer_token
            && (token.expose().is_empty() || !token.expose().bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(NotifyError::Config { field: "notify.sms.bearer_token", problem: "must be printable ASCII" });
        }
        let ca = config.extra_root_ca_file.as_deref().map(|p| ("notify.sms.extra_root_ca_file", p));
        Ok(Self {
            url,
            token: config.bearer_token.clone(),
            sender_id: config.sender_id.clone().filter(|s| !s.trim().is_empty()),
            http: http::client(Duration::from_secs(config.timeout_secs.max(1)), ca)?,
            clock,
        })
    }
}

impl Channel for SmsChannel {
    type Target = PhoneNumber;

    const KIND: ChannelKind = ChannelKind::Sms;

    async fn send(&self, notice: &Notice, target: &PhoneNumber, key: &IdempotencyKey) -> Result<Sent, SendError> {
        let text = render::sms_text(notice);
        let body = Request { to: target.as_str(), text: &text, from: self.sender_id.as_deref() };
        let body = serde_json::to_vec(&body).map_err(|_| SendError::permanent("sms request could not be built"))?;
        let mut request = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key.as_str())
            .body(body);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        let mut response = request.send().await.map_err(|e| http::transport_error(PREFIX, &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(http::status_error(&PREFIX, status, response.headers(), self.clock.now()));
        }
        // The provider accepted it; its id is a nicety, so a body that cannot be read is no failure.
        let mut answer = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                answer.clear();
                break;
            }
            answer.extend_from_slice(&chunk);
        }
        let id = serde_json::from_slice::<Answer>(&answer).ok().and_then(|a| match a.id {
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
        Ok(Sent::new(ChannelKind::Sms, id.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use medhub_core::SystemClock;

    use super::*;

    #[test]
    fn phone_numbers_are_e164() {
        assert_eq!(PhoneNumber::parse("+44 7700 900123").unwrap().as_str(), "+447700900123");
        assert_eq!(PhoneNumber::parse("+1 (555) 010-9999").unwrap().as_str(), "+15550109999");
        for bad in ["07700900123", "+0447700900123", "+12345", "+1234567890123456", "+44 77x0", "", "+"] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{:?}", PhoneNumber::parse("+447700900123").unwrap()), "PhoneNumber(…23)");
    }

    #[test]
    fn provider_urls_are_https_or_loopback() {
        let config = |url: &str| SmsConfig {
            url: url.into(),
            bearer_token: Some(Secret::new("tok")),
            sender_id: None,
            extra_root_ca_file: None,
            timeout_secs: 5,
        };
        let make = |url: &str| SmsChannel::new(&config(url), Arc::new(SystemClock));
        assert!(make("https://sms.example/v1/messages").is_ok());
        assert!(make("http://127.0.0.1:9000/send").is_ok());
        assert!(make("http://[::1]:9000/send").is_ok());
        assert!(make("http://sms.example/send").is_err());
        assert!(make("https://user:pw@sms.example/send").is_err());
        assert!(make("https://sms.example/send?api_key=abc").is_err());
        let mut bad_token = config("https://sms.example/send");
        bad_token.bearer_token = Some(Secret::new("a\nb"));
        assert!(SmsChannel::new(&bad_token, Arc::new(SystemClock)).is_err());
        let shown = format!("{:?}", make("https://sms.example/v1/messages").unwrap());
        assert!(!shown.contains("tok"), "{shown}");
    }
}
