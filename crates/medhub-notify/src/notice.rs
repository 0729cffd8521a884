//! [`Notice`]: the only thing a channel can send. It says who, how urgent, which
//! conversation, and where to open it. It has no field for a message body or patient data,
//! and its one constructor takes the sender and the conversation records and keeps only
//! their safe parts.

use std::fmt;

use medhub_core::ConversationId;
use medhub_core::model::{Conversation, ConversationKind, Priority, User};
use reqwest::Url;

use crate::error::NotifyError;

/// The longest display name a notice carries (sender and conversation), in Unicode scalar
/// values. Longer names are cut on a character boundary and end with "…". Lock screens show
/// about this much; SMS and pager texts shorten names further to fit their limits.
pub const MAX_LABEL_CHARS: usize = 48;

/// The longest public base URL, in bytes, so that a link (base + "/c/" + a 36-character id)
/// always fits an SMS with room for the names.
pub const MAX_BASE_URL_LEN: usize = 64;

/// What every notice shares: the web client's base URL and whether conversation titles are
/// shown (`public_base_url` and `show_conversation_titles` of [`crate::NotifyConfig`]).
#[derive(Clone, Debug)]
pub struct NoticeSettings {
    base: String,
    show_conversation_titles: bool,
}

impl NoticeSettings {
    /// Checks the base URL: `https`, a host, no user, query or fragment, at most
    /// [`MAX_BASE_URL_LEN`] bytes.
    pub fn new(public_base_url: &str, show_conversation_titles: bool) -> Result<Self, NotifyError> {
        let raw = public_base_url.trim().trim_end_matches('/');
        let bad = |why: &'static str| NotifyError::Config { field: "notify.public_base_url", problem: why };
        let url = Url::parse(raw).map_err(|_| bad("is not a URL"))?;
        if url.scheme() != "https" {
            return Err(bad("must start with https://"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not carry a user name or password"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        if raw.len() > MAX_BASE_URL_LEN {
            return Err(bad("is longer than 64 bytes"));
        }
        // Url normalises ("HTTPS://X" → "https://x/"); links use its form.
        let base = url.as_str().trim_end_matches('/').to_owned();
        Ok(Self { base, show_conversation_titles })
    }

    /// The link to a conversation in the web client.
    pub fn link(&self, conversation: ConversationId) -> Link {
        Link(format!("{}/c/{}", self.base, conversation.as_uuid().hyphenated()))
    }
}

/// Why the notice is sent. Fixed phrases, never free text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// A message arrived.
    NewMessage,
    /// An unacknowledged message was escalated to the recipient.
    EscalatedToYou,
    /// Responsibility for a patient or a shift was handed to the recipient.
    Handoff,
}

impl NoticeKind {
    /// The stable name (push payload `kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::NewMessage => "new_message",
            NoticeKind::EscalatedToYou => "escalated",
            NoticeKind::Handoff => "handoff",
        }
    }

    /// The phrase shown to people.
    pub fn phrase(self) -> &'static str {
        match self {
            NoticeKind::NewMessage => "new message",
            NoticeKind::EscalatedToYou => "escalated to you",
            NoticeKind::Handoff => "handoff",
        }
    }
}

/// A display name cleaned for a lock screen or a mail header: control and bidirectional
/// formatting characters removed, white space collapsed, at most [`MAX_LABEL_CHARS`].
#[derive(Clone, PartialEq, Eq)]
pub struct Label(String);

impl Label {
    fn new(raw: &str, fallback: &'static str) -> Self {
        let mut out = String::with_capacity(raw.len().min(MAX_LABEL_CHARS * 4));
        let mut space = false;
        for c in raw.chars() {
            if c.is_whitespace() || c.is_control() {
                space = true;
            } else if is_invisible_format(c) {
                continue;
            } else {
                if space && !out.is_empty() {
                    out.push(' ');
                }
                space = false;
                out.push(c);
            }
        }
        if out.is_empty() {
            return Label(fallback.to_owned());
        }
        Label(shorten(&out, MAX_LABEL_CHARS, "…"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters that change how text is laid out without showing: bidirectional overrides
/// (which can make a name read backwards), zero-width characters, the BOM.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `s` cut to at most `max` characters, ending with `ellipsis` when cut.
pub(crate) fn shorten(s: &str, max: usize, ellipsis: &str) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let keep = max.saturating_sub(ellipsis.chars().count());
    let mut out: String = s.chars().take(keep).collect();
    out.truncate(out.trim_end().len());
    out.push_str(ellipsis);
    out
}

/// An `https` link to a conversation in the web client: the configured base and the
/// conversation's id, nothing else (no query, so nothing else can ride along).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link(String);

impl Link {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a notification says: who, how urgent, which conversation, why, and a link.
///
/// **Invariant: a notice carries no message body and no patient data.** There is no field for
/// either, and [`Notice::new`] reads only the sender's display name, the conversation's id,
/// kind and title, and whether it is linked to a patient. A patient's conversation is called
/// "Patient conversation", never by its title (titles are free text and may name the patient);
/// its patient reference is not read at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    sender: Label,
    priority: Priority,
    conversation: Label,
    kind: NoticeKind,
    link: Link,
}

/// The name of a patient's conversation in every notice.
pub const PATIENT_CONVERSATION_LABEL: &str = "Patient conversation";

impl Notice {
    /// The notice for `priority` news of `kind` from `sender` (`None`: medhub itself, as for
    /// an automatic escalation) in `conversation`.
    pub fn new(
        settings: &NoticeSettings,
        sender: Option<&User>,
        conversation: &Conversation,
        priority: Priority,
        kind: NoticeKind,
    ) -> Self {
        let sender = match sender {
            Some(user) => Label::new(&user.display_name, "A colleague"),
            None => Label::new("medhub", "medhub"),
        };
        let by_kind = match conversation.kind {
            ConversationKind::Direct => "Direct message",
            ConversationKind::Group => "Group conversation",
            ConversationKind::Channel => "Channel",
        };
        let conversation_label = if conversation.patient.is_some() {
            Label::new(PATIENT_CONVERSATION_LABEL, PATIENT_CONVERSATION_LABEL)
        } else if settings.show_conversation_titles
            && let Some(title) = &conversation.title
        {
            Label::new(title, by_kind)
        } else {
            Label::new(by_kind, by_kind)
        };
        Notice { sender, priority, conversation: conversation_label, kind, link: settings.link(conversation.id) }
    }

    pub fn sender(&self) -> &Label {
        &self.sender
    }

    pub fn priority(&self) -> Priority {
        self.priority
    }

    pub fn conversation(&self) -> &Label {
        &self.conversation
    }

    pub fn kind(&self) -> NoticeKind {
        self.kind
    }

    pub fn link(&self) -> &Link {
        &self.link
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{conversation, settings, user};

    #[test]
    fn base_url_rules() {
        let ok = |u: &str| NoticeSettings::new(u, true);
        assert_eq!(ok("https://medhub.example.org").unwrap().base, "https://medhub.example.org");
        assert_eq!(ok("HTTPS://Medhub.Example.org/app/").unwrap().base, "https://medhub.example.org/app");
        for bad in [
            "http://medhub.example.org",
            "medhub.example.org",
            "https://u:p@medhub.example.org",
            "https://medhub.example.org/?x=1",
            "https://medhub.example.org/#x",
            "https://a-very-long-host-name-for-a-hospital-network.example.org/medhub/web",
        ] {
            assert!(ok(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn links_are_base_and_id_only() {
        let s = settings();
        let c = conversation(ConversationKind::Group, Some("Ward 7"), None);
        let link = s.link(c.id);
        assert_eq!(link.as_str(), format!("https://medhub.example.org/c/{}", c.id));
        assert!(!link.as_str().contains('?'));
    }

    #[test]
    fn labels_are_cleaned_and_bounded() {
        assert_eq!(Label::new("  Dr\n\tAlice \u{202E}Smith  ", "x").as_str(), "Dr Alice Smith");
        assert_eq!(Label::new("\u{200B}\r\n", "fallback").as_str(), "fallback");
        let long = "é".repeat(100);
        let l = Label::new(&long, "x");
        assert_eq!(l.as_str().chars().count(), MAX_LABEL_CHARS);
        assert!(l.as_str().ends_with('…'));
        // Cutting never splits a character, whatever the scripts.
        for s in ["日本語の名前".repeat(20), "👩‍⚕️".repeat(40), "a".repeat(49)] {
            let l = Label::new(&s, "x");
            assert!(l.as_str().chars().count() <= MAX_LABEL_CHARS);
        }
        assert_eq!(Label::new(&"a".repeat(48), "x").as_str(), "a".repeat(48));
    }

    #[test]
    fn patient_conversations_are_never_named_by_title() {
        let s = settings();
        let c = conversation(ConversationKind::Group, Some("Jane Doe bed 4"), Some("MRN-123"));
        let n = Notice::new(&s, Some(&user("Dr Alice Smith")), &c, Priority::Critical, NoticeKind::NewMessage);
        assert_eq!(n.conversation().as_str(), PATIENT_CONVERSATION_LABEL);
        assert_eq!(n.sender().as_str(), "Dr Alice Smith");
        assert_eq!(n.priority(), Priority::Critical);
    }

    #[test]
    fn titles_can_be_turned_off() {
        let s = NoticeSettings::new("https://medhub.example.org", false).unwrap();
        let c = conversation(ConversationKind::Channel, Some("Ward 7 on-call"), None);
        let n = Notice::new(&s, None, &c, Priority::Routine, NoticeKind::Handoff);
        assert_eq!(n.conversation().as_str(), "Channel");
        assert_eq!(n.sender().as_str(), "medhub");
        let shown = Notice::new(&settings(), None, &c, Priority::Routine, NoticeKind::Handoff);
        assert_eq!(shown.conversation().as_str(), "Ward 7 on-call");
        let direct = conversation(ConversationKind::Direct, None, None);
        let d = Notice::new(&settings(), None, &direct, Priority::Routine, NoticeKind::NewMessage);
        assert_eq!(d.conversation().as_str(), "Direct message");
    }
}
