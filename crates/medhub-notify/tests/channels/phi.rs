//! No message body and no patient data leave medhub through any notification channel.
//!
//! The service holds a critical message whose body, patient name (in the conversation's
//! title) and patient id (MRN) are marker strings. It builds the notice the only way there is,
//! and sends it through every channel to a real peer. The test then reads the bytes each peer
//! actually received (the SMTP DATA of the e-mail and the pager mail, raw and MIME-decoded, the
//! push payload the push service decrypted and the request's headers and token, the SMS
//! provider's request body and headers) and checks that none contains a marker, and that each
//! says who, how urgent, which conversation, and links to it.
//!
//! That nothing in the crate can take a body or patient data is checked on its source: the
//! only domain types it reads are the ones listed in `ALLOWED_CORE`, and of a conversation's
//! patient link only whether there is one. And everything logged meanwhile, at `trace`, by
//! the crate and the libraries under it, holds none of it, nor a secret or an address.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use medhub_core::model::{ConversationKind, Message, Priority};
use medhub_core::{ClientTxnId, EventId, MessageId, Seq, SystemClock, Timestamp};
use medhub_notify::{
    EmailAddress, EmailConfig, IdempotencyKey, Notice, NoticeKind, Notifier, NotifyConfig, Outcome, PagerConfig,
    PagerId, PhoneNumber, PushSubscription, RetryConfig, SmtpTls, Target, VapidKey,
};

use crate::peers::{Pki, PushPeer, SmsPeer, SmtpMode, SmtpPeer, SmtpPeerOptions, conversation, user};
use crate::{BASE, parse_mail, smtp_config};

const BODY_MARKER: &str = "QX7-BODY-MARKER";
const PATIENT_NAME_MARKER: &str = "QX7-PATIENT-NAME";
const MRN_MARKER: &str = "QX7-MRN-48151623";

/// Everything logged in this test binary, at every level, `log` records included. It is the
/// process's global subscriber, so it also hears the other tests (which only adds to what is
/// checked).
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    fn get() -> Self {
        static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = LogCapture::default();
                let writer = capture.clone();
                tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::TRACE)
                    .with_writer(move || writer.clone())
                    .with_ansi(false)
                    .try_init()
                    .expect("the only global subscriber of this test binary");
                capture
            })
            .clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every place a notice went, and what arrived there.
struct Arrived {
    channel: &'static str,
    /// Everything the peer received for it, as text (headers, envelope, body, payload).
    text: String,
}

struct Peers {
    pki: Pki,
    smtp: SmtpPeer,
    push: PushPeer,
    sms: SmsPeer,
}

impl Peers {
    async fn start() -> Self {
        let pki = Pki::new();
        let smtp = SmtpPeer::start(SmtpPeerOptions {
            mode: SmtpMode::Starttls,
            pki: Some(&pki),
            auth: Some("medhub:smtp-pw-31337"),
            data_reply: None,
        })
        .await;
        let push = PushPeer::start().await;
        let sms = SmsPeer::start(vec![]).await;
        Peers { pki, smtp, push, sms }
    }

    fn config(&self, vapid: &VapidKey) -> NotifyConfig {
        NotifyConfig {
            public_base_url: BASE.into(),
            show_conversation_titles: true,
            retry: RetryConfig::default(),
            webpush: Some(crate::webpush::config(vapid)),
            smtp: Some(smtp_config(&self.smtp, SmtpTls::Starttls, Some(&self.pki), Some(("medhub", "smtp-pw-31337")))),
            email: Some(EmailConfig { from: "medhub <medhub@hospital.example>".into() }),
            pager: Some(PagerConfig { gateway: "{pager}@pager.hospital.example".into(), from: None }),
            sms: Some(crate::sms::config(&self.sms)),
        }
    }

    /// Sends `notice` through every channel and collects what each peer received.
    async fn send_everywhere(
        &self,
        notifier: &Notifier,
        vapid: &VapidKey,
        notice: &Notice,
        secrets: &mut Vec<String>,
    ) -> Vec<Arrived> {
        let sub = self.push.subscribe(vapid.public_base64url()).await;
        secrets.push(sub.client_hash.clone());
        let targets = [
            Target::WebPush(PushSubscription::from_json(&sub.json.to_string()).unwrap()),
            Target::Email(EmailAddress::parse("oncall@ward7.hospital.example").unwrap()),
            Target::Sms(PhoneNumber::parse("+447700900123").unwrap()),
            Target::Pager(PagerId::parse("5550142").unwrap()),
        ];
        let (mails_before, sms_before, pushes_before) =
            (self.smtp.messages().len(), self.sms.received().len(), self.push.requests().await.len());
        for target in &targets {
            let key = IdempotencyKey::from_uuid(uuid::Uuid::now_v7());
            let delivery = notifier.send(notice, target, &key).await;
            assert_eq!(delivery.outcome(), Outcome::Sent, "{:?}: {:?}", delivery.channel, delivery.result);
        }

        let mut arrived = Vec::new();
        for payload in self.push.notifications(&sub.client_hash).await {
            arrived.push(Arrived { channel: "webpush payload (decrypted by the push service)", text: payload });
        }
        for request in &self.push.requests().await[pushes_before..] {
            arrived.push(Arrived { channel: "webpush request (headers and token)", text: request.to_string() });
        }
        for mail in &self.smtp.messages()[mails_before..] {
            let pager = mail.rcpt_tos[0].starts_with("5550142@");
            let (channel, raw) =
                if pager { ("pager", "pager (raw SMTP DATA)") } else { ("email", "email (raw SMTP DATA)") };
            let parsed = parse_mail(&mail.data);
            let decoded = format!(
                "{}\n{}\n{}",
                parsed.subject().unwrap_or_default(),
                parsed.body_text(0).unwrap_or_default(),
                mail.rcpt_tos.join(",")
            );
            arrived.push(Arrived { channel: raw, text: String::from_utf8_lossy(&mail.data).into_owned() });
            arrived.push(Arrived { channel, text: decoded });
        }
        for request in &self.sms.received()[sms_before..] {
            let headers: Vec<String> = request.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            arrived.push(Arrived {
                channel: "sms",
                text: format!("{}\n\n{}", headers.join("\n"), String::from_utf8_lossy(&request.body)),
            });
        }
        let channels: std::collections::BTreeSet<&str> = arrived.iter().map(|a| a.channel).collect();
        assert_eq!(channels.len(), 7, "every channel delivered: {channels:?}");
        arrived
    }
}

/// The message the service holds: its body is clinical, and so is its conversation.
fn message(conversation: medhub_core::ConversationId, sender: medhub_core::UserId) -> Message {
    Message {
        id: MessageId::new_v7(),
        conversation,
        seq: Seq::new(3),
        sender,
        client_txn_id: ClientTxnId::parse("txn-1").unwrap(),
        body: format!("{BODY_MARKER}: {PATIENT_NAME_MARKER} ({MRN_MARKER}) K+ 6.9 mmol/L, repeat ECG now"),
        priority: Priority::Critical,
        reply_to: None,
        created_at: Timestamp::UNIX_EPOCH,
        revision: 0,
        edited_at: None,
        recall: None,
        event: EventId::new(9),
        request_hash: [0; 32],
        acknowledged: false,
        removal: None,
        erasure_requested_at: None,
    }
}

fn assert_clean(arrived: &[Arrived]) {
    for a in arrived {
        let lower = a.text.to_lowercase();
        for marker in [BODY_MARKER, PATIENT_NAME_MARKER, MRN_MARKER] {
            assert!(!lower.contains(&marker.to_lowercase()), "{marker} reached the {} peer:\n{}", a.channel, a.text);
        }
        // Nor any recognisable part of the body.
        assert!(
            !lower.contains("mmol") && !lower.contains("ecg"),
            "body text reached the {} peer:\n{}",
            a.channel,
            a.text
        );
    }
}

/// Who, how urgent, which conversation and the link, in what each channel shows (the decoded
/// mail, not its transfer encoding; the push payload, not the request's headers).
fn assert_says(arrived: &[Arrived], conversation_name: &str, link: &str) {
    for a in arrived.iter().filter(|a| !a.channel.starts_with("webpush request") && !a.channel.contains("raw")) {
        let lower = a.text.to_lowercase();
        assert!(a.text.contains("Dr Alice Smith"), "no sender in {}:\n{}", a.channel, a.text);
        assert!(lower.contains("critical"), "no priority in {}:\n{}", a.channel, a.text);
        assert!(a.text.contains(conversation_name), "no conversation in {}:\n{}", a.channel, a.text);
        assert!(a.text.contains(link), "no link in {}:\n{}", a.channel, a.text);
    }
}

#[tokio::test]
async fn no_body_or_patient_data_reaches_any_peer() {
    let logs = LogCapture::get();
    let peers = Peers::start().await;
    let vapid = VapidKey::generate().unwrap();
    let notifier = Notifier::new(&peers.config(&vapid), Arc::new(SystemClock)).unwrap();
    let sender = user("Dr Alice Smith");

    // A patient's conversation, titled with the patient's name.
    let patients =
        conversation(ConversationKind::Group, Some(&format!("{PATIENT_NAME_MARKER} bed 4")), Some(MRN_MARKER));
    let held = message(patients.id, sender.id);
    assert!(held.body.contains(BODY_MARKER));
    // The notice takes the records the service has and the message's priority: there is no
    // parameter for the body, and the title of a patient's conversation is not read.
    let notice = Notice::new(notifier.settings(), Some(&sender), &patients, held.priority, NoticeKind::NewMessage);
    // Not to be logged either: the secrets, and the addresses notices went to.
    let mut secrets = vec![
        vapid.private_base64url(),
        "smtp-pw-31337".to_owned(),
        "sms-token-abc".to_owned(),
        "oncall@ward7".to_owned(),
        "7700900123".to_owned(),
        "5550142".to_owned(),
    ];
    let arrived = peers.send_everywhere(&notifier, &vapid, &notice, &mut secrets).await;
    assert_clean(&arrived);
    assert_says(&arrived, "Patient conversation", notice.link().as_str());
    assert!(notice.link().as_str().starts_with(&format!("{BASE}/c/")));

    // A conversation that is not a patient's is named by its title, still without the body.
    let ward = conversation(ConversationKind::Channel, Some("Ward 7 on-call"), None);
    let held = message(ward.id, sender.id);
    let notice = Notice::new(notifier.settings(), Some(&sender), &ward, held.priority, NoticeKind::NewMessage);
    let arrived = peers.send_everywhere(&notifier, &vapid, &notice, &mut secrets).await;
    assert_clean(&arrived);
    assert_says(&arrived, "Ward 7 on-call", notice.link().as_str());

    let logged = logs.text();
    assert!(logged.contains("notice sent"), "the crate's own events were captured:\n{logged}");
    for secret in secrets.iter().map(String::as_str).chain([BODY_MARKER, PATIENT_NAME_MARKER, MRN_MARKER]) {
        assert!(!logged.contains(secret), "{secret} was logged:\n{logged}");
    }
}

/// The medhub-core items the crate's code (tests aside) may name. None of them holds a message
/// body or patient data except `Conversation`, of which only `patient.is_some()` is read.
const ALLOWED_CORE: &[&str] = &[
    "medhub_core::Clock",
    "medhub_core::ConversationId",
    "medhub_core::model::{Conversation, ConversationKind, Priority, User}",
    "medhub_core::model::Priority",
];

#[test]
fn the_crate_reads_no_body_and_no_patient_data() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("testing.rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 10, "{files:?}");
    let mut patient_reads = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests build records with every field; only the code that runs in medhub counts.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for line in code.lines().map(str::trim) {
            if line.starts_with("//") {
                continue;
            }
            if let Some(at) = line.find("medhub_core::") {
                let path = line[at..].trim_end_matches(';');
                assert!(ALLOWED_CORE.contains(&path), "{} names {path}", file.display());
            }
            // Types that carry a body or patient data cannot be named without a medhub_core
            // path (checked above); these catch a re-export or an alias all the same.
            for forbidden in ["MessageId", "PatientRef", "Recall", "AckResponse"] {
                assert!(!line.contains(forbidden), "{}: `{line}` names {forbidden}", file.display());
            }
            let patient_fields = line.matches("patient.").count() + line.matches("patient)").count();
            assert_eq!(
                patient_fields,
                line.matches("conversation.patient.is_some()").count(),
                "{}: `{line}` reads a patient field",
                file.display()
            );
            patient_reads += line.matches("conversation.patient.is_some()").count();
        }
    }
    assert_eq!(patient_reads, 1, "the patient link is read once, as a yes or no");
}
