//! [`Notifier`]: the configured channels behind one `send`, for the service that knows each
//! recipient's targets; and [`NotifyConfig`], the `[notify]` table.

use std::sync::Arc;

use medhub_core::Clock;
use serde::Deserialize;

use crate::backoff::{RetryConfig, RetryPolicy};
use crate::channel::{Channel, ChannelKind, IdempotencyKey, Outcome, SendError, Sent};
use crate::error::NotifyError;
use crate::mail::{EmailAddress, EmailChannel, EmailConfig, PagerChannel, PagerConfig, PagerId, SmtpConfig, SmtpRelay};
use crate::notice::{Notice, NoticeSettings};
use crate::sms::{PhoneNumber, SmsChannel, SmsConfig};
use crate::webpush::{PushSubscription, WebPushChannel, WebPushConfig};

/// `[notify]`: notifications outside medhub. Each channel is off until its table is present.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The web client's public base URL, `https://` only, without query or fragment, at most
    /// 64 bytes ("https://medhub.example.org"). Links are `{public_base_url}/c/{conversation id}`.
    /// Required.
    pub public_base_url: String,
    /// Show the titles of conversations that are not linked to a patient ("Ward 7 on-call").
    /// Off: every conversation is named by its kind only ("Group conversation"). A patient's
    /// conversation is never named by its title, whatever this says. Default: true.
    #[serde(default = "yes")]
    pub show_conversation_titles: bool,
    /// Retries of failed sends. Default: see [`RetryConfig`].
    #[serde(default)]
    pub retry: RetryConfig,
    /// Web Push. Default: off.
    #[serde(default)]
    pub webpush: Option<WebPushConfig>,
    /// The SMTP relay of the e-mail and pager channels. Default: unset (neither can be on).
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// E-mail (needs `smtp`). Default: off.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    /// Pagers through an e-mail gateway (needs `smtp`). Default: off.
    #[serde(default)]
    pub pager: Option<PagerConfig>,
    /// SMS through a provider's HTTP API. Default: off.
    #[serde(default)]
    pub sms: Option<SmsConfig>,
}

fn yes() -> bool {
    true
}

/// Where one notice goes: a target of one channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    WebPush(PushSubscription),
    Email(EmailAddress),
    Sms(PhoneNumber),
    Pager(PagerId),
}

impl Target {
    pub fn channel(&self) -> ChannelKind {
        match self {
            Target::WebPush(_) => ChannelKind::WebPush,
            Target::Email(_) => ChannelKind::Email,
            Target::Sms(_) => ChannelKind::Sms,
            Target::Pager(_) => ChannelKind::Pager,
        }
    }
}

/// The result of one attempt on one channel: what the delivery trace records and the metrics
/// count (`channel`, `outcome()`).
#[derive(Clone, Debug, PartialEq)]
#[must_use = "a delivery's outcome is recorded and, when it failed, retried or surfaced"]
pub struct Delivery {
    pub channel: ChannelKind,
    pub result: Result<Sent, SendError>,
}

impl Delivery {
    pub fn outcome(&self) -> Outcome {
        match &self.result {
            Ok(_) => Outcome::Sent,
            Err(e) => e.outcome(),
        }
    }
}

/// Every configured channel.
#[derive(Debug)]
pub struct Notifier {
    settings: NoticeSettings,
    retry: RetryPolicy,
    webpush: Option<WebPushChannel>,
    email: Option<EmailChannel>,
    pager: Option<PagerChannel>,
    sms: Option<SmsChannel>,
}

impl Notifier {
    pub fn new(config: &NotifyConfig, clock: Arc<dyn Clock>) -> Result<Self, NotifyError> {
        let settings = NoticeSettings::new(&config.public_base_url, config.show_conversation_titles)?;
        let relay = config.smtp.as_ref().map(SmtpRelay::new).transpose()?.map(Arc::new);
        let needs_smtp = |field| NotifyError::Config { field, problem: "needs notify.smtp" };
        let email = match (&config.email, &relay) {
            (Some(c), Some(r)) => Some(EmailChannel::new(c, r.clone())?),
            (Some(_), None) => return Err(needs_smtp("notify.email")),
            (None, _) => None,
        };
        let pager = match (&config.pager, &relay) {
            (Some(c), Some(r)) => {
                Some(PagerChannel::new(c, config.email.as_ref().map(|e| e.from.as_str()), r.clone())?)
            }
            (Some(_), None) => return Err(needs_smtp("notify.pager")),
            (None, _) => None,
        };
        Ok(Self {
            settings,
            retry: RetryPolicy::new(&config.retry)?,
            webpush: config.webpush.as_ref().map(|c| WebPushChannel::new(c, clock.clone())).transpose()?,
            email,
            pager,
            sms: config.sms.as_ref().map(|c| SmsChannel::new(c, clock.clone())).transpose()?,
        })
    }

    /// What notices are built with ([`Notice::new`]).
    pub fn settings(&self) -> &NoticeSettings {
        &self.settings
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The Web Push channel, for its VAPID public key and to check new subscriptions.
    pub fn webpush(&self) -> Option<&WebPushChannel> {
        self.webpush.as_ref()
    }

    /// The channels that are on.
    pub fn channels(&self) -> Vec<ChannelKind> {
        let on = [self.webpush.is_some(), self.email.is_some(), self.sms.is_some(), self.pager.is_some()];
        ChannelKind::ALL.into_iter().zip(on).filter_map(|(k, on)| on.then_some(k)).collect()
    }

    /// One attempt to send `notice` to `target`. A target of a channel that is off is a
    /// permanent failure.
    pub async fn send(&self, notice: &Notice, target: &Target, key: &IdempotencyKey) -> Delivery {
        let off = || Err(SendError::permanent("channel not configured"));
        let result = match target {
            Target::WebPush(t) => match &self.webpush {
                Some(c) => c.send(notice, t, key).await,
                None => off(),
            },
            Target::Email(t) => match &self.email {
                Some(c) => c.send(notice, t, key).await,
                None => off(),
            },
            Target::Sms(t) => match &self.sms {
                Some(c) => c.send(notice, t, key).await,
                None => off(),
            },
            Target::Pager(t) => match &self.pager {
                Some(c) => c.send(notice, t, key).await,
                None => off(),
            },
        };
        let delivery = Delivery { channel: target.channel(), result };
        // Safe fields only: the channel, the outcome and a reason made of fixed text and codes.
        match &delivery.result {
            Ok(_) => tracing::debug!(channel = delivery.channel.as_str(), key = %key, "notice sent"),
            Err(e) => tracing::info!(
                channel = delivery.channel.as_str(),
                outcome = e.outcome().as_str(),
                reason = e.reason(),
                key = %key,
                "notice not sent"
            ),
        }
        delivery
    }
}

#[cfg(test)]
mod tests {
    use medhub_core::SystemClock;
    use medhub_core::model::{ConversationKind, Priority};

    use super::*;
    use crate::notice::NoticeKind;
    use crate::testing::{conversation, user};

    fn parse(toml_like_json: serde_json::Value) -> Result<NotifyConfig, serde_json::Error> {
        serde_json::from_value(toml_like_json)
    }

    #[test]
    fn a_minimal_config_has_no_channels_and_refuses_to_send() {
        let c = parse(serde_json::json!({"public_base_url": "https://medhub.example.org"})).unwrap();
        assert!(c.show_conversation_titles);
        assert_eq!(c.retry, RetryConfig::default());
        let n = Notifier::new(&c, Arc::new(SystemClock)).unwrap();
        assert!(n.channels().is_empty());
        let notice = Notice::new(
            n.settings(),
            Some(&user("Dr A")),
            &conversation(ConversationKind::Group, Some("W"), None),
            Priority::Urgent,
            NoticeKind::NewMessage,
        );
        let target = Target::Sms(PhoneNumber::parse("+447700900123").unwrap());
        let d = block_on(n.send(&notice, &target, &IdempotencyKey::new("k").unwrap()));
        assert_eq!(d.channel, ChannelKind::Sms);
        assert_eq!(d.outcome(), Outcome::Permanent);
        assert_eq!(d.result.unwrap_err().reason(), "channel not configured");
    }

    #[test]
    fn every_channel_from_config() {
        let c = parse(serde_json::json!({
            "public_base_url": "https://medhub.example.org",
            "webpush": {
                "vapid_private_key": crate::webpush::VapidKey::generate().unwrap().private_base64url(),
                "subject": "mailto:it@hospital.example",
            },
            "smtp": {"host": "relay.hospital.example", "tls": "implicit", "username": "medhub", "password": "pw"},
            "email": {"from": "medhub <medhub@hospital.example>"},
            "pager": {"gateway": "{pager}@pager.hospital.example"},
            "sms": {"url": "https://sms.example/v1/messages", "bearer_token": "t", "sender_id": "medhub"},
        }))
        .unwrap();
        let n = Notifier::new(&c, Arc::new(SystemClock)).unwrap();
        assert_eq!(n.channels(), ChannelKind::ALL.to_vec());
        assert!(n.webpush().is_some());
        let shown = format!("{c:?}");
        assert!(!shown.contains("\"pw\"") && !shown.contains("\"t\""), "{shown}");
    }

    #[test]
    fn mail_channels_need_smtp_and_unknown_keys_are_refused() {
        let c = parse(serde_json::json!({
            "public_base_url": "https://medhub.example.org",
            "email": {"from": "medhub@hospital.example"},
        }))
        .unwrap();
        assert!(Notifier::new(&c, Arc::new(SystemClock)).is_err());
        assert!(parse(serde_json::json!({"public_base_url": "https://m.example", "sms_url": "x"})).is_err());
    }

    /// Runs a future on a small runtime of its own.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }
}
