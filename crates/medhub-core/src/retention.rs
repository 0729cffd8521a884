//! Retention and legal hold (issue 4 §6): which content is past its retention, which a legal
//! hold keeps, and what a GDPR erasure does to one message. Plain functions over plain facts;
//! the store gathers the facts and the service applies the decisions (docs/retention.md).
//!
//! - A **policy** says how long an organization keeps the messages of one class of
//!   conversation ([`RetentionClass`]): clinical (linked to a patient), direct, group or
//!   channel. A class without a policy is kept for ever: nothing is removed unless someone
//!   chose a period.
//! - A message is **past retention** when it was created more than the policy's days before
//!   now (days of 24 hours, on the service clock).
//! - A **legal hold** keeps everything it covers, whatever the policy says: a conversation;
//!   every conversation about a patient; or a user's content: what they sent and what they
//!   could see (the messages of conversations they were a member of when the message was
//!   sent).
//! - A **GDPR erasure** of a user removes the messages they wrote, except clinical content
//!   under retention and content under a legal hold, which are kept and flagged (GDPR art.
//!   17(3)(b), (c) and (e)).

use jiff::{SignedDuration, Timestamp};

use crate::DomainError;
use crate::ids::{ConversationId, LegalHoldId, UserId};
use crate::model::ConversationKind;
use crate::patient::PatientRef;

/// The longest retention any class may have: 100 years.
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// The shortest retention of non-clinical content.
pub const MIN_RETENTION_DAYS: u32 = 1;
/// The shortest retention of clinical content: 6 years (6 × 365 days). Medical-record laws
/// ask for 6 to 30 years depending on the country; this floor only stops a slip of the
/// keyboard (30 days instead of 3650) from deleting patient records.
pub const MIN_CLINICAL_RETENTION_DAYS: u32 = 2_190;
/// Bounds of a legal hold's reason, and of the reason given when lifting one.
pub const MIN_HOLD_REASON_CHARS: usize = 10;
pub const MAX_HOLD_REASON_CHARS: usize = 1000;

/// The class of a conversation, for retention: one policy per class and organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetentionClass {
    /// Linked to a patient (`patient_ref`): clinical content, part of the medical record.
    Clinical,
    Direct,
    Group,
    Channel,
}

impl RetentionClass {
    pub const ALL: [RetentionClass; 4] =
        [RetentionClass::Clinical, RetentionClass::Direct, RetentionClass::Group, RetentionClass::Channel];

    /// The class of a conversation of this kind, linked to a patient or not.
    pub fn of(kind: ConversationKind, patient_linked: bool) -> Self {
        match (kind, patient_linked) {
            (_, true) => RetentionClass::Clinical,
            (ConversationKind::Direct, false) => RetentionClass::Direct,
            (ConversationKind::Group, false) => RetentionClass::Group,
            (ConversationKind::Channel, false) => RetentionClass::Channel,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RetentionClass::Clinical => "clinical",
            RetentionClass::Direct => "direct",
            RetentionClass::Group => "group",
            RetentionClass::Channel => "channel",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The shortest retention this class may have.
    pub fn min_days(self) -> u32 {
        match self {
            RetentionClass::Clinical => MIN_CLINICAL_RETENTION_DAYS,
            _ => MIN_RETENTION_DAYS,
        }
    }
}

/// How long an organization keeps one class of content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub class: RetentionClass,
    pub days: u32,
}

impl RetentionPolicy {
    /// Checks the period for the class: between its minimum and [`MAX_RETENTION_DAYS`].
    pub fn new(class: RetentionClass, days: i64) -> Result<Self, DomainError> {
        let err =
            DomainError::InvalidRetention { class: class.as_str(), min: class.min_days(), max: MAX_RETENTION_DAYS };
        let days = u32::try_from(days).map_err(|_| err.clone())?;
        if days < class.min_days() || days > MAX_RETENTION_DAYS {
            return Err(err);
        }
        Ok(RetentionPolicy { class, days })
    }

    /// Content created before this instant is past retention.
    pub fn cutoff(&self, now: Timestamp) -> Timestamp {
        let keep = SignedDuration::from_hours(24 * i64::from(self.days));
        now.checked_sub(keep).unwrap_or(Timestamp::MIN)
    }
}

/// The policy for a class, if the organization set one.
pub fn policy_for(policies: &[RetentionPolicy], class: RetentionClass) -> Option<RetentionPolicy> {
    policies.iter().copied().find(|p| p.class == class)
}

/// The oldest cutoff among the policies: no content created after it can be past retention,
/// so the store looks only below it. `None` when there is no policy at all.
pub fn latest_cutoff(policies: &[RetentionPolicy], now: Timestamp) -> Option<Timestamp> {
    policies.iter().map(|p| p.cutoff(now)).max()
}

/// What a legal hold covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HoldScope {
    /// Every message of one conversation.
    Conversation(ConversationId),
    /// Every message of the organization's conversations about this patient.
    Patient(PatientRef),
    /// A custodian's content: the messages they sent and the messages they could see
    /// (sent while they were a member of the conversation). Their account cannot be erased.
    User(UserId),
}

impl HoldScope {
    pub fn kind_str(&self) -> &'static str {
        match self {
            HoldScope::Conversation(_) => "conversation",
            HoldScope::Patient(_) => "patient",
            HoldScope::User(_) => "user",
        }
    }

    /// The scope's subject as an id: what an audit record may name (a patient reference is
    /// the EHR's id, never a name).
    pub fn subject(&self) -> String {
        match self {
            HoldScope::Conversation(c) => c.to_string(),
            HoldScope::Patient(p) => p.to_string(),
            HoldScope::User(u) => u.to_string(),
        }
    }
}

/// An active (not lifted) legal hold, as the rules need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveHold {
    pub id: LegalHoldId,
    pub scope: HoldScope,
}

/// What is known about one message when deciding its retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentFacts {
    pub class: RetentionClass,
    pub conversation: ConversationId,
    pub patient: Option<PatientRef>,
    pub sender: UserId,
    /// Users under a legal hold who could see the message (members when it was sent). The
    /// store fills only held users, so that this stays short.
    pub held_audience: Vec<UserId>,
    pub created_at: Timestamp,
}

/// The first active hold that covers the message, if any.
pub fn covering_hold(facts: &ContentFacts, holds: &[ActiveHold]) -> Option<LegalHoldId> {
    holds
        .iter()
        .find(|h| match &h.scope {
            HoldScope::Conversation(c) => *c == facts.conversation,
            HoldScope::Patient(p) => facts.patient.as_ref() == Some(p),
            HoldScope::User(u) => facts.sender == *u || facts.held_audience.contains(u),
        })
        .map(|h| h.id)
}

/// Why a message is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// The organization has no policy for the class: kept for ever.
    NoPolicy,
    /// Not past its retention yet.
    WithinRetention,
    /// A legal hold covers it.
    Held(LegalHoldId),
}

/// What the expiry job does with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Past retention and not held: its content goes.
    Remove,
    Keep(Kept),
}

/// The expiry rule: content past its class's retention goes, unless a legal hold covers it.
pub fn expiry(facts: &ContentFacts, policies: &[RetentionPolicy], holds: &[ActiveHold], now: Timestamp) -> Expiry {
    let Some(policy) = policy_for(policies, facts.class) else {
        return Expiry::Keep(Kept::NoPolicy);
    };
    if facts.created_at >= policy.cutoff(now) {
        return Expiry::Keep(Kept::WithinRetention);
    }
    match covering_hold(facts, holds) {
        Some(id) => Expiry::Keep(Kept::Held(id)),
        None => Expiry::Remove,
    }
}

/// What a GDPR erasure does with one message the erased user wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Erasure {
    /// Non-clinical and not held (or clinical past its retention): its content goes now.
    Remove,
    /// Kept and flagged "erasure requested": clinical content under retention (GDPR art.
    /// 17(3)(b) and (c)). The expiry job removes it when its retention ends.
    KeepClinical,
    /// Kept and flagged: a legal hold covers it (art. 17(3)(e)).
    KeepHeld(LegalHoldId),
}

/// The erasure rule for one message of the erased user.
pub fn erasure(facts: &ContentFacts, policies: &[RetentionPolicy], holds: &[ActiveHold], now: Timestamp) -> Erasure {
    if let Some(id) = covering_hold(facts, holds) {
        return Erasure::KeepHeld(id);
    }
    if facts.class == RetentionClass::Clinical && expiry(facts, policies, holds, now) != Expiry::Remove {
        return Erasure::KeepClinical;
    }
    Erasure::Remove
}

/// Checks a legal hold's reason (or a lifting reason): 10-1000 characters without control
/// characters other than line breaks; trimmed.
pub fn hold_reason(raw: &str) -> Result<String, DomainError> {
    let t = raw.trim();
    let n = t.chars().count();
    let bad = t.chars().any(|c| c.is_control() && c != '\n' && c != '\r');
    if !(MIN_HOLD_REASON_CHARS..=MAX_HOLD_REASON_CHARS).contains(&n) || bad {
        return Err(DomainError::InvalidHoldReason { min: MIN_HOLD_REASON_CHARS, max: MAX_HOLD_REASON_CHARS });
    }
    Ok(t.to_owned())
}

/// The username and display name an erased account takes: derived from its id, so they are
/// unique, stable and say nothing about the person.
pub fn pseudonym(user: UserId) -> (String, String) {
    let hex = user.as_uuid().simple().to_string();
    (format!("erased-{hex}"), format!("Erased user {}", &hex[hex.len() - 8..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days_ago: i64, now: Timestamp) -> Timestamp {
        now.checked_sub(SignedDuration::from_hours(24 * days_ago)).unwrap()
    }

    fn facts(class: RetentionClass, created_at: Timestamp) -> ContentFacts {
        ContentFacts {
            class,
            conversation: ConversationId::new_v7(),
            patient: (class == RetentionClass::Clinical).then(|| PatientRef::parse("pat-1").unwrap()),
            sender: UserId::new_v7(),
            held_audience: vec![],
            created_at,
        }
    }

    #[test]
    fn classes_follow_kind_and_patient_link() {
        assert_eq!(RetentionClass::of(ConversationKind::Group, true), RetentionClass::Clinical);
        assert_eq!(RetentionClass::of(ConversationKind::Group, false), RetentionClass::Group);
        assert_eq!(RetentionClass::of(ConversationKind::Direct, false), RetentionClass::Direct);
        assert_eq!(RetentionClass::of(ConversationKind::Channel, false), RetentionClass::Channel);
        for c in RetentionClass::ALL {
            assert_eq!(RetentionClass::parse(c.as_str()), Some(c));
        }
        assert_eq!(RetentionClass::parse("Clinical"), None);
    }

    #[test]
    fn policies_are_bounded_per_class() {
        assert_eq!(RetentionPolicy::new(RetentionClass::Clinical, 3650).unwrap().days, 3650);
        assert!(matches!(
            RetentionPolicy::new(RetentionClass::Clinical, 30),
            Err(DomainError::InvalidRetention { class: "clinical", min: 2190, max: 36_500 })
        ));
        assert!(RetentionPolicy::new(RetentionClass::Clinical, 2190).is_ok());
        assert!(RetentionPolicy::new(RetentionClass::Direct, 1).is_ok());
        assert!(RetentionPolicy::new(RetentionClass::Direct, 0).is_err());
        assert!(RetentionPolicy::new(RetentionClass::Group, -5).is_err());
        assert!(RetentionPolicy::new(RetentionClass::Channel, 36_501).is_err());
        assert!(RetentionPolicy::new(RetentionClass::Channel, i64::MAX).is_err());
    }

    #[test]
    fn content_goes_only_past_its_own_class_policy() {
        let now: Timestamp = "2036-01-01T00:00:00Z".parse().unwrap();
        let policies = [
            RetentionPolicy::new(RetentionClass::Clinical, 3650).unwrap(),
            RetentionPolicy::new(RetentionClass::Direct, 30).unwrap(),
        ];
        // Direct: 31 days old goes, 29 days old stays; exactly at the cutoff stays.
        assert_eq!(expiry(&facts(RetentionClass::Direct, at(31, now)), &policies, &[], now), Expiry::Remove);
        assert_eq!(
            expiry(&facts(RetentionClass::Direct, at(29, now)), &policies, &[], now),
            Expiry::Keep(Kept::WithinRetention)
        );
        assert_eq!(
            expiry(&facts(RetentionClass::Direct, at(30, now)), &policies, &[], now),
            Expiry::Keep(Kept::WithinRetention)
        );
        // Clinical: ten years.
        assert_eq!(
            expiry(&facts(RetentionClass::Clinical, at(3000, now)), &policies, &[], now),
            Expiry::Keep(Kept::WithinRetention)
        );
        assert_eq!(expiry(&facts(RetentionClass::Clinical, at(3651, now)), &policies, &[], now), Expiry::Remove);
        // No policy for groups: kept for ever.
        assert_eq!(
            expiry(&facts(RetentionClass::Group, at(99_999, now)), &policies, &[], now),
            Expiry::Keep(Kept::NoPolicy)
        );
        assert_eq!(latest_cutoff(&policies, now), Some(at(30, now)));
        assert_eq!(latest_cutoff(&[], now), None);
    }

    #[test]
    fn each_kind_of_hold_keeps_what_it_covers_and_nothing_else() {
        let now: Timestamp = "2036-01-01T00:00:00Z".parse().unwrap();
        let policies = [
            RetentionPolicy::new(RetentionClass::Clinical, 2190).unwrap(),
            RetentionPolicy::new(RetentionClass::Group, 1).unwrap(),
        ];
        let old = facts(RetentionClass::Clinical, at(4000, now));
        let hold = |scope| ActiveHold { id: LegalHoldId::new_v7(), scope };
        let on_conv = hold(HoldScope::Conversation(old.conversation));
        let on_patient = hold(HoldScope::Patient(PatientRef::parse("pat-1").unwrap()));
        let on_other_patient = hold(HoldScope::Patient(PatientRef::parse("pat-2").unwrap()));
        let on_sender = hold(HoldScope::User(old.sender));
        let witness = UserId::new_v7();
        let on_witness = hold(HoldScope::User(witness));
        assert_eq!(expiry(&old, &policies, std::slice::from_ref(&on_conv), now), Expiry::Keep(Kept::Held(on_conv.id)));
        assert_eq!(
            expiry(&old, &policies, std::slice::from_ref(&on_patient), now),
            Expiry::Keep(Kept::Held(on_patient.id))
        );
        assert_eq!(
            expiry(&old, &policies, std::slice::from_ref(&on_sender), now),
            Expiry::Keep(Kept::Held(on_sender.id))
        );
        assert_eq!(expiry(&old, &policies, std::slice::from_ref(&on_other_patient), now), Expiry::Remove);
        // A held user who could not see the message does not keep it; one who could, does.
        assert_eq!(expiry(&old, &policies, std::slice::from_ref(&on_witness), now), Expiry::Remove);
        let seen = ContentFacts { held_audience: vec![witness], ..old.clone() };
        assert_eq!(
            expiry(&seen, &policies, std::slice::from_ref(&on_witness), now),
            Expiry::Keep(Kept::Held(on_witness.id))
        );
        // A patient hold does not reach a conversation that is not about the patient.
        let group = facts(RetentionClass::Group, at(10, now));
        assert_eq!(expiry(&group, &policies, std::slice::from_ref(&on_patient), now), Expiry::Remove);
    }

    #[test]
    fn erasure_keeps_clinical_content_under_retention_and_held_content() {
        let now: Timestamp = "2036-01-01T00:00:00Z".parse().unwrap();
        let policies = [RetentionPolicy::new(RetentionClass::Clinical, 3650).unwrap()];
        let clinical = facts(RetentionClass::Clinical, at(10, now));
        assert_eq!(erasure(&clinical, &policies, &[], now), Erasure::KeepClinical);
        // Without a clinical policy, clinical content is kept for ever: still kept.
        assert_eq!(erasure(&clinical, &[], &[], now), Erasure::KeepClinical);
        // Clinical content past its retention would be expired anyway: it goes now.
        let ancient = facts(RetentionClass::Clinical, at(4000, now));
        assert_eq!(erasure(&ancient, &policies, &[], now), Erasure::Remove);
        // Non-clinical content goes, whatever its own retention says.
        let chat = facts(RetentionClass::Direct, at(1, now));
        assert_eq!(erasure(&chat, &policies, &[], now), Erasure::Remove);
        let hold = ActiveHold { id: LegalHoldId::new_v7(), scope: HoldScope::Conversation(chat.conversation) };
        assert_eq!(erasure(&chat, &policies, std::slice::from_ref(&hold), now), Erasure::KeepHeld(hold.id));
    }

    #[test]
    fn reasons_and_pseudonyms() {
        assert_eq!(
            hold_reason("  Case 2026-114: malpractice claim, bed 4  ").unwrap(),
            "Case 2026-114: malpractice claim, bed 4"
        );
        assert!(hold_reason("lawsuit").is_err());
        assert!(hold_reason(&"x".repeat(1001)).is_err());
        assert!(hold_reason("Case 1234\u{0}hidden").is_err());
        assert!(hold_reason("Case 1234\nsecond line").is_ok());
        let u = UserId::new_v7();
        let (name, display) = pseudonym(u);
        assert!(crate::validate::username(&name).is_ok(), "{name}");
        assert_eq!(name.len(), 39);
        assert!(display.starts_with("Erased user "));
        assert_eq!(pseudonym(u), (name, display));
    }
}
