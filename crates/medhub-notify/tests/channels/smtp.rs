//! E-mail and pager through a real SMTP server (aiosmtpd): STARTTLS with AUTH and a private CA,
//! implicit TLS, plain text to a loopback relay, and the server's 4xx and 5xx answers.

use std::sync::Arc;

use medhub_core::model::{ConversationKind, Priority};
use medhub_notify::{
    Channel, EmailAddress, EmailChannel, EmailConfig, IdempotencyKey, Notice, NoticeKind, Outcome, PagerChannel,
    PagerConfig, PagerId, SendError, SmtpRelay, SmtpTls, render,
};

use mail_parser::MimeHeaders;

use crate::peers::{Pki, SmtpMode, SmtpPeer, SmtpPeerOptions, conversation, user};
use crate::{parse_mail, settings, smtp_config};

const FROM: &str = "medhub <medhub@hospital.example>";

fn notice(priority: Priority, kind: NoticeKind) -> Notice {
    Notice::new(
        &settings(),
        Some(&user("Dr Alice Smith")),
        &conversation(ConversationKind::Channel, Some("Ward 7 on-call"), None),
        priority,
        kind,
    )
}

fn email(relay: SmtpRelay) -> EmailChannel {
    EmailChannel::new(&EmailConfig { from: FROM.into() }, Arc::new(relay)).unwrap()
}

#[tokio::test]
async fn starttls_with_auth_and_a_private_ca_delivers_a_real_mail() {
    let pki = Pki::new();
    let peer = SmtpPeer::start(SmtpPeerOptions {
        mode: SmtpMode::Starttls,
        pki: Some(&pki),
        auth: Some("medhub:s3cret-pw"),
        data_reply: None,
    })
    .await;
    let relay =
        SmtpRelay::new(&smtp_config(&peer, SmtpTls::Starttls, Some(&pki), Some(("medhub", "s3cret-pw")))).unwrap();
    let channel = email(relay);
    let n = notice(Priority::Critical, NoticeKind::NewMessage);
    let key = IdempotencyKey::new("0190f00d-email-1").unwrap();
    let to = EmailAddress::parse("bob@ward7.hospital.example").unwrap();

    let sent = channel.send(&n, &to, &key).await.unwrap();
    assert_eq!(sent.channel, medhub_notify::ChannelKind::Email);

    let got = peer.messages();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.mail_from, "medhub@hospital.example");
    assert_eq!(m.rcpt_tos, ["bob@ward7.hospital.example"]);
    assert!(m.tls.as_deref().is_some_and(|v| v.starts_with("TLSv1.")), "no TLS: {:?}", m.tls);
    assert_eq!(m.auth_login.as_deref(), Some("medhub"));

    let mail = parse_mail(&m.data);
    let expected = render::email(&n);
    let from = mail.from().and_then(|a| a.first()).unwrap();
    assert_eq!(from.address(), Some("medhub@hospital.example"));
    assert_eq!(from.name(), Some("medhub"));
    assert_eq!(mail.to().and_then(|a| a.first()).and_then(|a| a.address()), Some("bob@ward7.hospital.example"));
    assert_eq!(mail.subject(), Some(expected.subject.as_str()));
    assert_eq!(mail.subject(), Some("[medhub] CRITICAL: new message from Dr Alice Smith"));
    assert_eq!(mail.body_text(0).unwrap().replace("\r\n", "\n").trim_end(), expected.body.trim_end());
    assert_eq!(mail.message_id(), Some("0190f00d-email-1@hospital.example"));
    assert_eq!(mail.header_raw("X-Medhub-Notice-Id").map(str::trim), Some("0190f00d-email-1"));
    assert_eq!(mail.header_raw("Auto-Submitted").map(str::trim), Some("auto-generated"));
    assert!(mail.content_type().is_some_and(|c| c.ctype() == "text" && c.subtype() == Some("plain")));
    // The password went over TLS, and nowhere into the message.
    assert!(!String::from_utf8_lossy(&m.data).contains("s3cret-pw"));
}

#[tokio::test]
async fn implicit_tls_delivers_a_pager_mail_to_the_gateway() {
    let pki = Pki::new();
    let peer =
        SmtpPeer::start(SmtpPeerOptions { mode: SmtpMode::Implicit, pki: Some(&pki), auth: None, data_reply: None })
            .await;
    let relay = Arc::new(SmtpRelay::new(&smtp_config(&peer, SmtpTls::Implicit, Some(&pki), None)).unwrap());
    let pager = PagerChannel::new(
        &PagerConfig {
            gateway: "{pager}@pager.hospital.example".into(),
            from: Some("pager-out@hospital.example".into()),
        },
        None,
        relay,
    )
    .unwrap();
    let n = notice(Priority::Urgent, NoticeKind::EscalatedToYou);
    pager.send(&n, &PagerId::parse("5550142").unwrap(), &IdempotencyKey::new("page-1").unwrap()).await.unwrap();

    let got = peer.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_tos, ["5550142@pager.hospital.example"]);
    assert_eq!(got[0].mail_from, "pager-out@hospital.example");
    assert!(got[0].tls.is_some());
    let mail = parse_mail(&got[0].data);
    assert_eq!(mail.subject(), Some("medhub URGENT"));
    let body = mail.body_text(0).unwrap().trim_end().to_owned();
    assert_eq!(body, render::pager(&n).body);
    assert_eq!(body, format!("URGENT: Dr Alice Smith in Ward 7 on-call - escalated to you. {}", n.link()));
}

#[tokio::test]
async fn plain_smtp_to_a_loopback_relay() {
    let peer =
        SmtpPeer::start(SmtpPeerOptions { mode: SmtpMode::Plain, pki: None, auth: None, data_reply: None }).await;
    let channel = email(SmtpRelay::new(&smtp_config(&peer, SmtpTls::None, None, None)).unwrap());
    let n = notice(Priority::Routine, NoticeKind::Handoff);
    channel
        .send(&n, &EmailAddress::parse("bob@ward7.hospital.example").unwrap(), &IdempotencyKey::new("p1").unwrap())
        .await
        .unwrap();
    let got = peer.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tls, None);
    assert_eq!(parse_mail(&got[0].data).subject(), Some("[medhub] Handoff from Dr Alice Smith"));
}

#[tokio::test]
async fn a_relay_whose_certificate_is_not_trusted_gets_nothing() {
    let pki = Pki::new();
    let peer =
        SmtpPeer::start(SmtpPeerOptions { mode: SmtpMode::Starttls, pki: Some(&pki), auth: None, data_reply: None })
            .await;
    // No extra CA: the private CA is unknown, so the TLS handshake fails.
    let channel = email(SmtpRelay::new(&smtp_config(&peer, SmtpTls::Starttls, None, None)).unwrap());
    let n = notice(Priority::Critical, NoticeKind::NewMessage);
    let to = EmailAddress::parse("bob@ward7.hospital.example").unwrap();
    let e = channel.send(&n, &to, &IdempotencyKey::new("t1").unwrap()).await.unwrap_err();
    assert_eq!(e.outcome(), Outcome::Retryable, "{e}");
    assert_eq!(e.reason(), "smtp tls failed");

    // STARTTLS required of a server that does not offer it sends nothing (no downgrade to
    // plain text), and implicit TLS to a server that speaks plain text fails its handshake.
    let plain =
        SmtpPeer::start(SmtpPeerOptions { mode: SmtpMode::Plain, pki: None, auth: None, data_reply: None }).await;
    let starttls = email(SmtpRelay::new(&smtp_config(&plain, SmtpTls::Starttls, Some(&pki), None)).unwrap());
    let e = starttls.send(&n, &to, &IdempotencyKey::new("t2").unwrap()).await.unwrap_err();
    assert_eq!((e.outcome(), e.reason()), (Outcome::Permanent, "smtp relay lacks STARTTLS or a usable AUTH"));
    let implicit = email(SmtpRelay::new(&smtp_config(&plain, SmtpTls::Implicit, Some(&pki), None)).unwrap());
    let e = implicit.send(&n, &to, &IdempotencyKey::new("t3").unwrap()).await.unwrap_err();
    assert_eq!((e.outcome(), e.reason()), (Outcome::Retryable, "smtp tls failed"));

    assert!(peer.messages().is_empty());
    assert!(plain.messages().is_empty());
}

#[tokio::test]
async fn smtp_4xx_is_retryable_and_5xx_permanent_without_the_servers_words() {
    let n = notice(Priority::Critical, NoticeKind::NewMessage);
    let to = EmailAddress::parse("bob@ward7.hospital.example").unwrap();
    for (reply, outcome, reason) in [
        ("451 4.3.0 Try again later", Outcome::Retryable, "smtp reply 451"),
        ("550 5.1.1 <bob@ward7.hospital.example>: no such user", Outcome::Permanent, "smtp reply 550"),
    ] {
        let peer =
            SmtpPeer::start(SmtpPeerOptions { mode: SmtpMode::Plain, pki: None, auth: None, data_reply: Some(reply) })
                .await;
        let channel = email(SmtpRelay::new(&smtp_config(&peer, SmtpTls::None, None, None)).unwrap());
        let e = channel.send(&n, &to, &IdempotencyKey::new("r1").unwrap()).await.unwrap_err();
        assert_eq!(e.outcome(), outcome, "{reply}: {e}");
        assert_eq!(e.reason(), reason);
        assert!(matches!(e, SendError::Retryable { retry_after: None, .. } | SendError::Permanent { .. }));
        assert!(!e.to_string().contains("bob"), "{e}");
        assert!(peer.messages().is_empty());
    }
}

#[tokio::test]
async fn an_unreachable_relay_is_retryable() {
    let port = crate::peers::free_port();
    let relay = SmtpRelay::new(&medhub_notify::SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(port),
        tls: SmtpTls::None,
        username: None,
        password: None,
        extra_root_ca_file: None,
        helo_name: None,
        timeout_secs: 5,
    })
    .unwrap();
    let e = email(relay)
        .send(
            &notice(Priority::Urgent, NoticeKind::NewMessage),
            &EmailAddress::parse("bob@ward7.hospital.example").unwrap(),
            &IdempotencyKey::new("u1").unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.outcome(), Outcome::Retryable, "{e}");
}
