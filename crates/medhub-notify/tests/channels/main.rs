//! The channels against real peers on loopback: e-mail and pager through a real SMTP server
//! (PyPI aiosmtpd) with STARTTLS, implicit TLS and plain text, Web Push through a real push
//! service emulator (npm web-push-testing) that checks the VAPID token and decrypts the
//! payload, and SMS through a provider API that records every request. `phi.rs` checks, on the
//! bytes every peer received, that no message body or patient data left medhub.
//!
//! Peers are started per test on free ports and killed when dropped (`peers.rs`). Without
//! python3 (and venv) or Node.js these tests fail; they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peers;
mod phi;
mod sms;
mod smtp;
mod webpush;

use medhub_notify::{NoticeSettings, SmtpConfig, SmtpTls};

use crate::peers::{Pki, SmtpPeer};

/// The base of every link in these tests.
pub const BASE: &str = "https://medhub.hospital.example";

pub fn settings() -> NoticeSettings {
    NoticeSettings::new(BASE, true).unwrap()
}

/// The relay settings for `peer`, trusting `pki`'s CA when given.
pub fn smtp_config(peer: &SmtpPeer, tls: SmtpTls, pki: Option<&Pki>, login: Option<(&str, &str)>) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(peer.port),
        tls,
        username: login.map(|(u, _)| u.to_owned()),
        password: login.map(|(_, p)| medhub_notify::Secret::new(p)),
        extra_root_ca_file: pki.map(|p| p.ca.clone()),
        helo_name: Some("medhub.hospital.example".into()),
        timeout_secs: 20,
    }
}

/// Parses a received message with a real MIME parser.
pub fn parse_mail(data: &[u8]) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default().parse(data).expect("a MIME message")
}
