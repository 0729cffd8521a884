//! What each channel shows, rendered from a [`Notice`] and nothing else: the Web Push JSON
//! payload, the e-mail subject and text, the SMS text and the pager text.

use medhub_core::model::Priority;
use serde::Serialize;

use crate::notice::{Notice, NoticeKind, shorten};

/// The longest SMS text, in GSM 03.38 septets when every character is in that alphabet (one
/// SMS), otherwise in UTF-16 units (sent as UCS-2, up to three concatenated SMS). Names are
/// shortened to fit; the link is never cut.
pub const SMS_MAX_UNITS: usize = 160;

/// The longest pager text, in ASCII characters (alphanumeric pagers show 7-bit text; letters
/// with diacritics are folded to their base letter, anything else becomes "?").
pub const PAGER_MAX_CHARS: usize = 160;

/// The Web Push payload (JSON, encrypted for the browser): what the service worker shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PushPayload<'a> {
    /// The payload format's version.
    pub v: u8,
    /// The notification's title: "CRITICAL: Dr Alice Smith".
    pub title: String,
    /// Its text: "New message in Ward 7 on-call".
    pub text: String,
    pub priority: &'static str,
    pub kind: &'static str,
    pub sender: &'a str,
    pub conversation: &'a str,
    /// Where a tap on the notification leads.
    pub url: &'a str,
}

/// The push payload of a notice.
pub fn push_payload(notice: &Notice) -> PushPayload<'_> {
    let title = match priority_word(notice.priority()) {
        Some(word) => format!("{word}: {}", notice.sender()),
        None => notice.sender().to_string(),
    };
    PushPayload {
        v: 1,
        title,
        text: format!("{} in {}", capitalised(notice.kind().phrase()), notice.conversation()),
        priority: notice.priority().as_str(),
        kind: notice.kind().as_str(),
        sender: notice.sender().as_str(),
        conversation: notice.conversation().as_str(),
        url: notice.link().as_str(),
    }
}

/// The push payload as the JSON bytes that are encrypted.
pub fn push_payload_json(notice: &Notice) -> Vec<u8> {
    // Serialising a struct of strings cannot fail; an empty object would still say nothing.
    serde_json::to_vec(&push_payload(notice)).unwrap_or_else(|_| b"{}".to_vec())
}

/// An e-mail's subject and plain-text body (lines end in `\n`; the mailer sends CRLF).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailText {
    pub subject: String,
    pub body: String,
}

/// The e-mail of a notice.
pub fn email(notice: &Notice) -> MailText {
    let headline = headline(notice);
    let subject = format!("[medhub] {headline}");
    let body = format!(
        "{headline}\n\
         \n\
         From:         {sender}\n\
         Conversation: {conversation}\n\
         Priority:     {priority}\n\
         \n\
         Open it in medhub (you will be asked to sign in):\n\
         {link}\n\
         \n\
         -- \n\
         medhub notifications never contain the message or patient information.\n",
        sender = notice.sender(),
        conversation = notice.conversation(),
        priority = notice.priority().as_str(),
        link = notice.link(),
    );
    MailText { subject, body }
}

/// "CRITICAL: new message from Dr Alice Smith", "New message from Dr Alice Smith".
fn headline(notice: &Notice) -> String {
    let what = match notice.kind() {
        NoticeKind::NewMessage => "new message from",
        NoticeKind::EscalatedToYou => "escalated to you, from",
        NoticeKind::Handoff => "handoff from",
    };
    match priority_word(notice.priority()) {
        Some(word) => format!("{word}: {what} {}", notice.sender()),
        None => format!("{} {}", capitalised(what), notice.sender()),
    }
}

/// The SMS text: "medhub CRITICAL: Dr Alice Smith in Ward 7 on-call - new message. <link>",
/// at most [`SMS_MAX_UNITS`].
pub fn sms_text(notice: &Notice) -> String {
    let head = match priority_word(notice.priority()) {
        Some(word) => format!("medhub {word}: "),
        None => "medhub: ".to_owned(),
    };
    let tail = format!(" - {}. {}", notice.kind().phrase(), notice.link());
    fit(&head, notice.sender().as_str(), " in ", notice.conversation().as_str(), &tail, SMS_MAX_UNITS, sms_units)
}

/// A pager e-mail's subject ("medhub CRITICAL") and text, ASCII only, the text at most
/// [`PAGER_MAX_CHARS`].
pub fn pager(notice: &Notice) -> MailText {
    let word = priority_word(notice.priority()).unwrap_or("routine");
    let head = format!("{word}: ");
    let tail = format!(" - {}. {}", notice.kind().phrase(), notice.link());
    let sender = fold_ascii(notice.sender().as_str());
    let conversation = fold_ascii(notice.conversation().as_str());
    let body = fit(&head, &sender, " in ", &conversation, &fold_ascii(&tail), PAGER_MAX_CHARS, str::len);
    MailText { subject: format!("medhub {word}"), body }
}

fn priority_word(priority: Priority) -> Option<&'static str> {
    match priority {
        Priority::Routine => None,
        Priority::Urgent => Some("URGENT"),
        Priority::Critical => Some("CRITICAL"),
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `head a mid b tail`, with `a` and `b` shortened (the longer first, ending "...") until the
/// whole measures at most `limit` by `units`. The fixed parts are never cut.
fn fit(head: &str, a: &str, mid: &str, b: &str, tail: &str, limit: usize, units: fn(&str) -> usize) -> String {
    let (mut a_len, mut b_len) = (a.chars().count(), b.chars().count());
    loop {
        let (a_cut, b_cut) = (shorten(a, a_len, "..."), shorten(b, b_len, "..."));
        let text = format!("{head}{a_cut}{mid}{b_cut}{tail}");
        // "..." is as short as a name gets.
        if units(&text) <= limit || (a_len <= 3 && b_len <= 3) {
            return text;
        }
        if a_len >= b_len {
            a_len -= 1;
        } else {
            b_len -= 1;
        }
    }
}

/// GSM 03.38's default alphabet (one septet each).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡\
    ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Its extension table (an escape and a septet each).
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{000C}";

/// The length of an SMS text: septets if it is all GSM 03.38, else UTF-16 units.
pub fn sms_units(text: &str) -> usize {
    let mut septets = 0;
    for c in text.chars() {
        if GSM_BASIC.contains(c) {
            septets += 1;
        } else if GSM_EXTENDED.contains(c) {
            septets += 2;
        } else {
            return text.encode_utf16().count();
        }
    }
    septets
}

/// Folds letters with diacritics to ASCII ("Łukasz Müller" → "Lukasz Muller"); any other
/// character outside ASCII becomes "?".
fn fold_ascii(s: &str) -> String {
    const FOLDS: [(&str, &str); 26] = [
        ("ÀÁÂÃÄÅĀĂĄ", "A"),
        ("àáâãäåāăą", "a"),
        ("ÇĆĈĊČ", "C"),
        ("çćĉċč", "c"),
        ("ÐĎĐ", "D"),
        ("ðďđ", "d"),
        ("ÈÉÊËĒĔĖĘĚ", "E"),
        ("èéêëēĕėęě", "e"),
        ("ĜĞĠĢ", "G"),
        ("ĝğġģ", "g"),
        ("ÌÍÎÏĨĪĬĮİ", "I"),
        ("ìíîïĩīĭįı", "i"),
        ("ŁĹĻĽĿ", "L"),
        ("łĺļľŀ", "l"),
        ("ÑŃŅŇ", "N"),
        ("ñńņň", "n"),
        ("ÒÓÔÕÖØŌŎŐ", "O"),
        ("òóôõöøōŏő", "o"),
        ("ŔŖŘ", "R"),
        ("ŕŗř", "r"),
        ("ŚŜŞŠ", "S"),
        ("śŝşš", "s"),
        ("ÙÚÛÜŨŪŬŮŰŲ", "U"),
        ("ùúûüũūŭůűų", "u"),
        ("ÝŸ", "Y"),
        ("ýÿ", "y"),
    ];
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
            continue;
        }
        let folded = match c {
            'ß' => "ss",
            'Æ' => "AE",
            'æ' => "ae",
            'Œ' => "OE",
            'œ' => "oe",
            'Þ' => "Th",
            'þ' => "th",
            '…' => "...",
            'Ź' | 'Ż' | 'Ž' => "Z",
            'ź' | 'ż' | 'ž' => "z",
            _ => FOLDS.iter().find(|(from, _)| from.contains(c)).map_or("?", |(_, to)| to),
        };
        out.push_str(folded);
    }
    out
}

#[cfg(test)]
mod tests {
    use medhub_core::model::ConversationKind;

    use super::*;
    use crate::notice::{MAX_BASE_URL_LEN, NoticeSettings};
    use crate::testing::{conversation, settings, user};

    fn notice(priority: Priority, kind: NoticeKind, sender: &str, title: &str) -> Notice {
        let c = conversation(ConversationKind::Group, Some(title), None);
        Notice::new(&settings(), Some(&user(sender)), &c, priority, kind)
    }

    #[test]
    fn push_payload_example() {
        let n = notice(Priority::Critical, NoticeKind::NewMessage, "Dr Alice Smith", "Ward 7 on-call");
        let json: serde_json::Value = serde_json::from_slice(&push_payload_json(&n)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "v": 1,
                "title": "CRITICAL: Dr Alice Smith",
                "text": "New message in Ward 7 on-call",
                "priority": "critical",
                "kind": "new_message",
                "sender": "Dr Alice Smith",
                "conversation": "Ward 7 on-call",
                "url": n.link().as_str(),
            })
        );
        let routine = notice(Priority::Routine, NoticeKind::Handoff, "Dr Alice Smith", "Ward 7");
        assert_eq!(push_payload(&routine).title, "Dr Alice Smith");
        assert_eq!(push_payload(&routine).text, "Handoff in Ward 7");
    }

    #[test]
    fn email_example() {
        let n = notice(Priority::Urgent, NoticeKind::EscalatedToYou, "Dr Alice Smith", "Ward 7 on-call");
        let m = email(&n);
        assert_eq!(m.subject, "[medhub] URGENT: escalated to you, from Dr Alice Smith");
        assert!(m.body.starts_with("URGENT: escalated to you, from Dr Alice Smith\n\nFrom:         Dr Alice Smith\n"));
        assert!(m.body.contains("Conversation: Ward 7 on-call\nPriority:     urgent\n"));
        assert!(m.body.contains(&format!("{}\n", n.link())));
        let routine = notice(Priority::Routine, NoticeKind::NewMessage, "Bob", "Ward 7");
        assert_eq!(email(&routine).subject, "[medhub] New message from Bob");
    }

    #[test]
    fn sms_example() {
        let n = notice(Priority::Critical, NoticeKind::NewMessage, "Dr Alice Smith", "Ward 7 on-call");
        assert_eq!(
            sms_text(&n),
            format!("medhub CRITICAL: Dr Alice Smith in Ward 7 on-call - new message. {}", n.link())
        );
        assert_eq!(sms_units(&sms_text(&n)), sms_text(&n).len());
    }

    #[test]
    fn pager_example() {
        let n = notice(Priority::Critical, NoticeKind::Handoff, "Dr Łukasz Müller", "Station Süd");
        let p = pager(&n);
        assert_eq!(p.subject, "medhub CRITICAL");
        assert_eq!(p.body, format!("CRITICAL: Dr Lukasz Muller in Station Sud - handoff. {}", n.link()));
        assert_eq!(fold_ascii("Æsa Þór 日本 ß"), "AEsa Thor ?? ss");
    }

    #[test]
    fn gsm_units() {
        assert_eq!(sms_units("abc"), 3);
        assert_eq!(sms_units("a€[x"), 6);
        assert_eq!(sms_units("Ωé"), 2);
        // One character outside the alphabet makes the whole text UCS-2.
        assert_eq!(sms_units("Łx€"), 3);
        assert_eq!(sms_units("👩"), 2);
    }

    #[test]
    fn sms_and_pager_fit_their_limits_with_the_link_whole() {
        let base = format!("https://{}.example.org", "h".repeat(MAX_BASE_URL_LEN - 20));
        assert_eq!(base.len(), MAX_BASE_URL_LEN);
        let long = NoticeSettings::new(&base, true).unwrap();
        let names = [
            "Dr Alice Smith".to_owned(),
            "W".repeat(48),
            "Łukasz Żółć ".repeat(4),
            "日本語".repeat(16),
            "€[]".repeat(16),
        ];
        for s in [settings(), long] {
            for sender in &names {
                for title in &names {
                    for priority in [Priority::Routine, Priority::Urgent, Priority::Critical] {
                        for kind in [NoticeKind::NewMessage, NoticeKind::EscalatedToYou, NoticeKind::Handoff] {
                            let c = conversation(ConversationKind::Channel, Some(title), None);
                            let n = Notice::new(&s, Some(&user(sender)), &c, priority, kind);
                            let sms = sms_text(&n);
                            assert!(sms_units(&sms) <= SMS_MAX_UNITS, "{sms} is {} units", sms_units(&sms));
                            assert!(sms.ends_with(n.link().as_str()), "{sms}");
                            let page = pager(&n).body;
                            assert!(page.is_ascii() && page.len() <= PAGER_MAX_CHARS, "{page}");
                            assert!(page.ends_with(n.link().as_str()), "{page}");
                        }
                    }
                }
            }
        }
    }
}
