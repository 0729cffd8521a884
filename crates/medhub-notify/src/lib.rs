//! Notifications outside medhub (Web Push, e-mail, SMS, pager) that carry no patient data by
//! construction.
//!
//! A channel can send only a [`Notice`]: who, how urgent, which conversation, why, and a link
//! to it. A notice has no field for a message body or patient data, and its one constructor
//! reads only the safe parts of the sender's and the conversation's records. Each channel
//! renders the notice its own way ([`render`]) and classifies what happened ([`SendError`]:
//! retry, give up, or forget the push subscription); [`RetryPolicy`] says when to retry. The
//! caller (the service) owns the delivery queue, the delivery trace and the metrics.

pub mod backoff;
pub mod channel;
pub mod error;
mod http;
pub mod mail;
pub mod notice;
pub mod notifier;
pub mod render;
pub mod secret;
pub mod sms;
#[cfg(test)]
mod testing;
pub mod webpush;

pub use backoff::{GiveUp, NextStep, RetryConfig, RetryPolicy};
pub use channel::{Channel, ChannelKind, IdempotencyKey, Outcome, Reason, SendError, Sent};
pub use error::NotifyError;
pub use mail::{
    EmailAddress, EmailChannel, EmailConfig, PagerChannel, PagerConfig, PagerId, SmtpConfig, SmtpRelay, SmtpTls,
};
pub use notice::{Label, Link, Notice, NoticeKind, NoticeSettings};
pub use notifier::{Delivery, Notifier, NotifyConfig, Target};
pub use secret::Secret;
pub use sms::{PhoneNumber, SmsChannel, SmsConfig};
pub use webpush::{PushSubscription, VapidKey, WebPushChannel, WebPushConfig};
