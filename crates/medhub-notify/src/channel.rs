//! What every channel shares: the [`Channel`] trait, the idempotency key, and the outcome of
//! one send, classified so the caller knows whether to retry, give up or forget a target.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use uuid::Uuid;

use crate::error::NotifyError;
use crate::notice::Notice;

/// A way to reach someone outside medhub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    WebPush,
    Email,
    Sms,
    Pager,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 4] = [ChannelKind::WebPush, ChannelKind::Email, ChannelKind::Sms, ChannelKind::Pager];

    /// The stable name (metrics labels, the delivery trace).
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::WebPush => "webpush",
            ChannelKind::Email => "email",
            ChannelKind::Sms => "sms",
            ChannelKind::Pager => "pager",
        }
    }
}

/// Names one delivery (one notice, one recipient, one target) across all its attempts, so a
/// provider that received an attempt whose answer was lost does not deliver it twice: the
/// SMS `Idempotency-Key` header, the e-mail `Message-ID` and `X-Medhub-Notice-Id`, and the
/// Web Push `Topic` (a later attempt replaces an undelivered earlier one).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key, in ASCII characters.
    pub const MAX_LEN: usize = 64;

    /// A key chosen by the caller: 1-64 characters of `A-Z a-z 0-9 - _`.
    pub fn new(key: &str) -> Result<Self, NotifyError> {
        let ok = !key.is_empty()
            && key.len() <= Self::MAX_LEN
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok { Ok(Self(key.to_owned())) } else { Err(NotifyError::InvalidIdempotencyKey) }
    }

    /// The key of a delivery row's id.
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id.simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A send the channel's provider accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub channel: ChannelKind,
    /// The provider's id for it, when it returned one (the SMS provider's message id, the push
    /// service's message resource). Printable ASCII, at most 128 characters.
    pub provider_id: Option<String>,
}

impl Sent {
    pub(crate) fn new(channel: ChannelKind, provider_id: Option<&str>) -> Self {
        let provider_id = provider_id
            .map(str::trim)
            .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned);
        Sent { channel, provider_id }
    }
}

/// Why a send failed, in a few words that are safe to log and to show in the delivery trace:
/// fixed text and status codes only, made inside this crate. Never the payload, a token, an
/// address, or the text of a provider's answer (an SMTP server's "550 no such user <…>"
/// echoes the address).
#[derive(Clone, PartialEq, Eq)]
pub struct Reason(Cow<'static, str>);

impl Reason {
    pub(crate) const fn fixed(text: &'static str) -> Self {
        Reason(Cow::Borrowed(text))
    }

    /// "`what` `code`", as "http status 503" or "smtp reply 451".
    pub(crate) fn code(what: &'static str, code: impl Into<u32>) -> Self {
        Reason(Cow::Owned(format!("{what} {}", code.into())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How one send failed. Nothing is dropped: every variant is surfaced to the caller, who
/// records it in the delivery trace and counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// It may work later (a timeout, a refused connection, SMTP 4xx, HTTP 429 or 5xx). Retry
    /// with [`crate::RetryPolicy`], not before `retry_after` when the provider named a time.
    Retryable { reason: Reason, retry_after: Option<Duration> },
    /// It will not work by retrying (SMTP 5xx, HTTP 4xx, a rejected VAPID token, a target or
    /// configuration medhub refuses). Final: surface it and try the recipient's next channel.
    Permanent { reason: Reason },
    /// The push subscription no longer exists (HTTP 404 or 410): delete it.
    Gone,
}

impl SendError {
    pub(crate) fn retry(reason: &'static str) -> Self {
        SendError::Retryable { reason: Reason::fixed(reason), retry_after: None }
    }

    pub(crate) fn permanent(reason: &'static str) -> Self {
        SendError::Permanent { reason: Reason::fixed(reason) }
    }

    /// The outcome's name for metrics.
    pub fn outcome(&self) -> Outcome {
        match self {
            SendError::Retryable { .. } => Outcome::Retryable,
            SendError::Permanent { .. } => Outcome::Permanent,
            SendError::Gone => Outcome::Gone,
        }
    }

    /// The safe reason.
    pub fn reason(&self) -> &str {
        match self {
            SendError::Retryable { reason, .. } | SendError::Permanent { reason } => reason.as_str(),
            SendError::Gone => "subscription gone",
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.outcome().as_str())
    }
}

impl std::error::Error for SendError {}

/// The outcome of one send, as a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Sent,
    Retryable,
    Permanent,
    Gone,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Retryable => "retryable",
            Outcome::Permanent => "permanent",
            Outcome::Gone => "gone",
        }
    }
}

/// A way to send a [`Notice`] to one target. Implementations take nothing but the notice,
/// so nothing else can reach the provider.
pub trait Channel: Send + Sync {
    /// Where this channel sends to.
    type Target: Send + Sync;

    const KIND: ChannelKind;

    /// One attempt. The same `key` on every attempt of one delivery.
    fn send(
        &self,
        notice: &Notice,
        target: &Self::Target,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<Sent, SendError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKey::new("0190c0de-aaaa_bbbb").is_ok());
        assert!(IdempotencyKey::new(&"a".repeat(64)).is_ok());
        for bad in ["", "a b", "a\r\nX-Evil: 1", "ключ", &"a".repeat(65)] {
            assert!(IdempotencyKey::new(bad).is_err(), "{bad:?}");
        }
        let k = IdempotencyKey::from_uuid(Uuid::nil());
        assert_eq!(k.as_str(), "00000000000000000000000000000000");
        assert!(IdempotencyKey::new(k.as_str()).is_ok());
    }

    #[test]
    fn provider_ids_are_bounded_printable_ascii() {
        assert_eq!(Sent::new(ChannelKind::Sms, Some(" SM123 ")).provider_id.as_deref(), Some("SM123"));
        assert_eq!(Sent::new(ChannelKind::Sms, Some("a b")).provider_id, None);
        assert_eq!(Sent::new(ChannelKind::Sms, Some(&"x".repeat(129))).provider_id, None);
        assert_eq!(Sent::new(ChannelKind::Sms, Some("")).provider_id, None);
    }

    #[test]
    fn outcomes_have_stable_names() {
        let e = SendError::Retryable { reason: Reason::code("http status", 503u16), retry_after: None };
        assert_eq!(e.to_string(), "http status 503 (retryable)");
        assert_eq!(SendError::Gone.outcome().as_str(), "gone");
        assert_eq!(SendError::permanent("x").outcome(), Outcome::Permanent);
    }
}
