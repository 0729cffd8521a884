//! E-mail and pager: a notice as a plain-text mail through the hospital's SMTP relay (STARTTLS,
//! implicit TLS, or plain text to a relay on this machine). A pager is reached through an
//! e-mail-to-pager gateway address, with a shorter ASCII text.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use crate::channel::{Channel, ChannelKind, IdempotencyKey, Reason, SendError, Sent};
use crate::error::NotifyError;
use crate::notice::Notice;
use crate::render::{self, MailText};
use crate::secret::Secret;

/// How the connection to the relay is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587 or 25).
    Starttls,
    /// TLS from the first byte (port 465, "SMTPS").
    Implicit,
    /// No TLS. Only to a relay on this machine (a loopback host), and without credentials.
    None,
}

/// `[notify.smtp]`: the relay that e-mail and pager notices go through.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The relay's host name (checked against its certificate) or address. Required.
    pub host: String,
    /// Default: 587 for starttls, 465 for implicit, 25 for none.
    #[serde(default)]
    pub port: Option<u16>,
    /// "starttls", "implicit" or "none". Default: "starttls".
    #[serde(default = "default_tls")]
    pub tls: SmtpTls,
    /// User name for SMTP AUTH (PLAIN or LOGIN, over TLS only). Default: unset (no AUTH).
    #[serde(default)]
    pub username: Option<String>,
    /// Password for SMTP AUTH; never logged. Default: unset.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A PEM file of CA certificates trusted besides the system's, for a relay with a
    /// certificate from the hospital's own CA. Default: unset.
    #[serde(default)]
    pub extra_root_ca_file: Option<PathBuf>,
    /// The name medhub gives in EHLO. Default: this machine's host name.
    #[serde(default)]
    pub helo_name: Option<String>,
    /// The time limit of each SMTP command, in seconds. Default: 30.
    #[serde(default = "default_smtp_timeout")]
    pub timeout_secs: u64,
}

fn default_tls() -> SmtpTls {
    SmtpTls::Starttls
}

fn default_smtp_timeout() -> u64 {
    30
}

/// `[notify.email]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The sender: an address, or a name and an address ("medhub <medhub@hospital.example>").
    /// Required.
    pub from: String,
}

/// `[notify.pager]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerConfig {
    /// The gateway's address, with `{pager}` where the pager number goes
    /// ("{pager}@pager.hospital.example"). Required.
    pub gateway: String,
    /// The sender; some gateways accept mail only from known senders. Default: `email.from`
    /// when e-mail is configured, otherwise required.
    #[serde(default)]
    pub from: Option<String>,
}

/// The SMTP relay, shared by the e-mail and pager channels. One connection per mail (no pool):
/// notices are few, and a fresh connection never inherits a broken one.
pub struct SmtpRelay {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SmtpRelay")
    }
}

impl SmtpRelay {
    pub fn new(config: &SmtpConfig) -> Result<Self, NotifyError> {
        let host = config.host.trim();
        if host.is_empty() {
            return Err(NotifyError::Config { field: "notify.smtp.host", problem: "is required" });
        }
        let port = config.port.unwrap_or(match config.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        });
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password.expose().to_owned())),
            (None, None) => None,
            _ => {
                return Err(NotifyError::Config {
                    field: "notify.smtp.password",
                    problem: "and notify.smtp.username go together",
                });
            }
        };
        let tls = match config.tls {
            SmtpTls::None => {
                let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    return Err(NotifyError::Config {
                        field: "notify.smtp.tls",
                        problem: "may be \"none\" only for a relay on this machine (localhost or a loopback address)",
                    });
                }
                if credentials.is_some() {
                    return Err(NotifyError::Config {
                        field: "notify.smtp.tls",
                        problem: "\"none\" would send the password in clear; remove the credentials or use TLS",
                    });
                }
                Tls::None
            }
            SmtpTls::Starttls => Tls::Required(tls_parameters(host, config)?),
            SmtpTls::Implicit => Tls::Wrapper(tls_parameters(host, config)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(config.timeout_secs.max(1))));
        if let Some(name) = &config.helo_name {
            builder = builder.hello_name(ClientId::Domain(name.trim().to_owned()));
        }
        if let Some(credentials) = credentials {
            builder = builder.credentials(credentials);
        }
        Ok(Self { transport: builder.build() })
    }

    async fn send(&self, message: Message) -> Result<(), SendError> {
        self.transport.send(message).await.map(|_| ()).map_err(|e| classify(&e))
    }
}

fn tls_parameters(host: &str, config: &SmtpConfig) -> Result<TlsParameters, NotifyError> {
    let mut params = TlsParameters::builder(host.to_owned());
    if let Some(path) = &config.extra_root_ca_file {
        let pem = std::fs::read(path)
            .map_err(|source| NotifyError::ConfigFile { field: "notify.smtp.extra_root_ca_file", source })?;
        let cert = Certificate::from_pem(&pem).map_err(|_| NotifyError::Config {
            field: "notify.smtp.extra_root_ca_file",
            problem: "is not a PEM certificate",
        })?;
        params = params.add_root_certificate(cert);
    }
    params.build_rustls().map_err(|_| NotifyError::Config { field: "notify.smtp", problem: "TLS could not be set up" })
}

/// SMTP 4xx, timeouts, connection and TLS failures may work later; 5xx will not. The reason
/// has the reply code only: the server's text often repeats the address.
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let code = e.status().map(u16::from);
    if e.is_permanent() {
        SendError::Permanent {
            reason: code.map_or(Reason::fixed("smtp permanent failure"), |c| Reason::code("smtp reply", c)),
        }
    } else if e.is_transient() {
        SendError::Retryable {
            reason: code.map_or(Reason::fixed("smtp transient failure"), |c| Reason::code("smtp reply", c)),
            retry_after: None,
        }
    } else if e.is_timeout() {
        SendError::retry("smtp timed out")
    } else if e.is_tls() || tls_failure(e) {
        SendError::retry("smtp tls failed")
    } else if e.is_client() {
        // lettre refuses to go on: the relay offers no STARTTLS though it is required, or no
        // AUTH mechanism medhub can use. Retrying changes neither.
        SendError::permanent("smtp relay lacks STARTTLS or a usable AUTH")
    } else if e.is_response() {
        SendError::retry("smtp answer unreadable")
    } else {
        SendError::retry("smtp connection failed")
    }
}

/// Whether a rustls error is among `e`'s causes (lettre reports a failed handshake, an
/// untrusted certificate included, as a connection error).
fn tls_failure(e: &lettre::transport::smtp::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        source = err.source();
    }
    false
}

fn mailbox(field: &'static str, raw: &str) -> Result<Mailbox, NotifyError> {
    raw.trim().parse::<Mailbox>().map_err(|_| NotifyError::Config { field, problem: "is not an e-mail address" })
}

/// A message of plain text, with a `Message-ID` and `X-Medhub-Notice-Id` from the idempotency
/// key (the same on every attempt, so a mailbox or gateway that deduplicates shows it once),
/// and `Auto-Submitted` so that out-of-office replies stay away.
fn message(from: &Mailbox, to: Address, text: MailText, key: &IdempotencyKey) -> Result<Message, SendError> {
    const NOTICE_ID: HeaderName = HeaderName::new_from_ascii_str("X-Medhub-Notice-Id");
    const AUTO_SUBMITTED: HeaderName = HeaderName::new_from_ascii_str("Auto-Submitted");
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(text.subject)
        .message_id(Some(format!("<{key}@{}>", from.email.domain())))
        .raw_header(HeaderValue::new(NOTICE_ID, key.to_string()))
        .raw_header(HeaderValue::new(AUTO_SUBMITTED, "auto-generated".to_owned()))
        .header(ContentType::TEXT_PLAIN)
        .body(text.body)
        .map_err(|_| SendError::permanent("mail could not be built"))
}

/// An e-mail address. `Debug` shows the domain only.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailAddress(Address);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, NotifyError> {
        raw.trim()
            .parse::<Address>()
            .map(EmailAddress)
            .map_err(|_| NotifyError::InvalidTarget { what: "e-mail address", problem: "not an address" })
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress(…@{})", self.0.domain())
    }
}

/// The e-mail channel.
#[derive(Debug)]
pub struct EmailChannel {
    relay: Arc<SmtpRelay>,
    from: Mailbox,
}

impl EmailChannel {
    pub fn new(config: &EmailConfig, relay: Arc<SmtpRelay>) -> Result<Self, NotifyError> {
        Ok(Self { relay, from: mailbox("notify.email.from", &config.from)? })
    }
}

impl Channel for EmailChannel {
    type Target = EmailAddress;

    const KIND: ChannelKind = ChannelKind::Email;

    async fn send(&self, notice: &Notice, target: &EmailAddress, key: &IdempotencyKey) -> Result<Sent, SendError> {
        let message = message(&self.from, target.0.clone(), render::email(notice), key)?;
        self.relay.send(message).await?;
        Ok(Sent::new(ChannelKind::Email, None))
    }
}

/// A pager's number at the gateway: 1-32 of `A-Z a-z 0-9 . - _`.
#[derive(Clone, PartialEq, Eq)]
pub struct PagerId(String);

impl PagerId {
    pub fn parse(raw: &str) -> Result<Self, NotifyError> {
        let raw = raw.trim();
        let ok = !raw.is_empty()
            && raw.len() <= 32
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if ok {
            Ok(PagerId(raw.to_owned()))
        } else {
            Err(NotifyError::InvalidTarget { what: "pager id", problem: "1-32 of A-Z, a-z, 0-9, '.', '-' and '_'" })
        }
    }
}

impl fmt::Debug for PagerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PagerId(…)")
    }
}

/// The pager channel: a short ASCII mail to the gateway address.
#[derive(Debug)]
pub struct PagerChannel {
    relay: Arc<SmtpRelay>,
    from: Mailbox,
    gateway: String,
}

impl PagerChannel {
    /// `email_from` is the e-mail channel's sender, used when the pager has none of its own.
    pub fn new(config: &PagerConfig, email_from: Option<&str>, relay: Arc<SmtpRelay>) -> Result<Self, NotifyError> {
        let from = match (&config.from, email_from) {
            (Some(from), _) => mailbox("notify.pager.from", from)?,
            (None, Some(from)) => mailbox("notify.email.from", from)?,
            (None, None) => {
                return Err(NotifyError::Config {
                    field: "notify.pager.from",
                    problem: "is required without notify.email",
                });
            }
        };
        let gateway = config.gateway.trim().to_owned();
        let bad = NotifyError::Config {
            field: "notify.pager.gateway",
            problem: "must be an address with {pager} once in its local part, as {pager}@pager.hospital.example",
        };
        let (local, _) = gateway.split_once('@').ok_or(NotifyError::Config {
            field: "notify.pager.gateway",
            problem: "must be an address with {pager} once in its local part, as {pager}@pager.hospital.example",
        })?;
        if gateway.matches("{pager}").count() != 1 || !local.contains("{pager}") {
            return Err(bad);
        }
        gateway.replace("{pager}", "0").parse::<Address>().map_err(|_| bad)?;
        Ok(Self { relay, from, gateway })
    }

    fn address(&self, pager: &PagerId) -> Result<Address, SendError> {
        self.gateway.replace("{pager}", &pager.0).parse().map_err(|_| SendError::permanent("pager address invalid"))
    }
}

impl Channel for PagerChannel {
    type Target = PagerId;

    const KIND: ChannelKind = ChannelKind::Pager;

    async fn send(&self, notice: &Notice, target: &PagerId, key: &IdempotencyKey) -> Result<Sent, SendError> {
        let message = message(&self.from, self.address(target)?, render::pager(notice), key)?;
        self.relay.send(message).await?;
        Ok(Sent::new(ChannelKind::Pager, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(host: &str, tls: SmtpTls) -> SmtpConfig {
        SmtpConfig {
            host: host.into(),
            port: None,
            tls,
            username: None,
            password: None,
            extra_root_ca_file: None,
            helo_name: None,
            timeout_secs: 5,
        }
    }

    #[test]
    fn plain_smtp_only_on_loopback_and_never_with_a_password() {
        assert!(SmtpRelay::new(&smtp("127.0.0.1", SmtpTls::None)).is_ok());
        assert!(SmtpRelay::new(&smtp("localhost", SmtpTls::None)).is_ok());
        assert!(SmtpRelay::new(&smtp("::1", SmtpTls::None)).is_ok());
        assert!(SmtpRelay::new(&smtp("relay.hospital.example", SmtpTls::None)).is_err());
        assert!(SmtpRelay::new(&smtp("10.1.2.3", SmtpTls::None)).is_err());
        let mut with_password = smtp("127.0.0.1", SmtpTls::None);
        with_password.username = Some("medhub".into());
        with_password.password = Some(Secret::new("hunter2"));
        let e = SmtpRelay::new(&with_password).unwrap_err().to_string();
        assert!(!e.contains("hunter2"));
        assert!(SmtpRelay::new(&smtp("relay.hospital.example", SmtpTls::Starttls)).is_ok());
        assert!(SmtpRelay::new(&smtp("relay.hospital.example", SmtpTls::Implicit)).is_ok());
        let mut half = smtp("relay.hospital.example", SmtpTls::Starttls);
        half.username = Some("medhub".into());
        assert!(SmtpRelay::new(&half).is_err());
    }

    #[test]
    fn tls_modes_are_named_in_lowercase() {
        #[derive(Deserialize)]
        struct W {
            tls: SmtpTls,
        }
        for (s, t) in [("starttls", SmtpTls::Starttls), ("implicit", SmtpTls::Implicit), ("none", SmtpTls::None)] {
            let w: W = serde_json::from_str(&format!("{{\"tls\":\"{s}\"}}")).unwrap();
            assert_eq!(w.tls, t);
        }
    }

    #[test]
    fn pager_gateways_and_ids() {
        let relay = Arc::new(SmtpRelay::new(&smtp("127.0.0.1", SmtpTls::None)).unwrap());
        let pager = |g: &str| {
            PagerChannel::new(
                &PagerConfig { gateway: g.into(), from: None },
                Some("medhub@hospital.example"),
                relay.clone(),
            )
        };
        let p = pager("{pager}@pager.hospital.example").unwrap();
        assert_eq!(
            p.address(&PagerId::parse("5551234").unwrap()).unwrap().to_string(),
            "5551234@pager.hospital.example"
        );
        assert!(pager("pager.hospital.example").is_err());
        assert!(pager("pager@{pager}.example").is_err());
        assert!(pager("{pager}{pager}@pager.example").is_err());
        assert!(
            PagerChannel::new(&PagerConfig { gateway: "{pager}@p.example".into(), from: None }, None, relay.clone())
                .is_err()
        );
        assert!(PagerId::parse("555 1234").is_err());
        assert!(PagerId::parse("a@b").is_err());
        assert!(PagerId::parse("").is_err());
        assert_eq!(format!("{:?}", PagerId::parse("5551234").unwrap()), "PagerId(…)");
        assert_eq!(format!("{:?}", EmailAddress::parse("bob@ward7.example").unwrap()), "EmailAddress(…@ward7.example)");
    }

    #[test]
    fn messages_carry_the_key_and_plain_text() {
        let from: Mailbox = "medhub <medhub@hospital.example>".parse().unwrap();
        let key = IdempotencyKey::new("k123").unwrap();
        let text = MailText { subject: "[medhub] Hi".into(), body: "line\n".into() };
        let m = message(&from, "bob@ward7.example".parse().unwrap(), text, &key).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(raw.contains("Message-ID: <k123@hospital.example>\r\n"), "{raw}");
        assert!(raw.contains("X-Medhub-Notice-Id: k123\r\n"));
        assert!(raw.contains("Auto-Submitted: auto-generated\r\n"));
        assert!(raw.contains("Content-Type: text/plain; charset=utf-8\r\n"));
        assert!(raw.ends_with("line\r\n"));
    }
}
