//! Shift handoff in the I-PASS format (clinical workflows, issue 5 §4).
//!
//! The outgoing clinician *gives* a handoff to the incoming one: for each patient an I-PASS
//! note (Illness severity, Patient summary, Action list, Situation awareness and
//! contingency planning), plus the conversations that go with the shift. The receiver
//! *accepts* it with the last letter, the Synthesis by receiver: their own summary of each
//! patient, which is what makes I-PASS a closed loop rather than a note left behind. Only
//! then does the shift's work move: the receiver joins the conversations and the patients'
//! care teams. A handoff nobody accepted within [`HANDOFF_TTL`] expires, and the giver may
//! cancel one until it is accepted.
//!
//! These rules are pure; the service stores the handoff, moves memberships and audits each
//! step.

use jiff::{SignedDuration, Timestamp};

use crate::DomainError;
use crate::ids::{ConversationId, HandoffId, OrgId, UserId};
use crate::patient::PatientRef;

/// Patients in one handoff: a busy ward's census is about 30; twice that leaves room for a
/// night covering two wards, and bounds the note a receiver must read and acknowledge.
pub const MAX_PATIENTS: usize = 60;
/// Conversations handed over with a shift.
pub const MAX_CONVERSATIONS: usize = 100;
/// A patient summary, situation awareness or synthesis: a few paragraphs, not a chart.
pub const MAX_TEXT_CHARS: usize = 4000;
/// To-do items per patient, and the length of one.
pub const MAX_ACTIONS: usize = 30;
pub const MAX_ACTION_CHARS: usize = 500;
/// How long a handoff waits for its receiver: longer than any shift, so a handoff given at
/// the end of one shift is still there at the start of the next; after that it is stale.
pub const HANDOFF_TTL: SignedDuration = SignedDuration::from_hours(16);

/// I-PASS "I": how ill the patient is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    Stable,
    /// Needs watching: could get worse.
    Watcher,
    Unstable,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Stable => "stable",
            Severity::Watcher => "watcher",
            Severity::Unstable => "unstable",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "stable" => Some(Severity::Stable),
            "watcher" => Some(Severity::Watcher),
            "unstable" => Some(Severity::Unstable),
            _ => None,
        }
    }
}

/// I-PASS "A": one to-do item for the receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionItem {
    pub text: String,
    pub done: bool,
}

/// The I-PASS note about one patient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatientNote {
    pub patient: PatientRef,
    pub severity: Severity,
    /// "P": the patient summary.
    pub summary: String,
    pub actions: Vec<ActionItem>,
    /// "S": situation awareness and contingency planning ("if the potassium is below 3.5…").
    pub awareness: String,
    /// "S": the receiver's synthesis, set when the handoff is accepted.
    pub synthesis: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffState {
    /// Given, waiting for the receiver.
    Given,
    Accepted,
    Cancelled,
    /// Not accepted within [`HANDOFF_TTL`].
    Expired,
}

impl HandoffState {
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffState::Given => "given",
            HandoffState::Accepted => "accepted",
            HandoffState::Cancelled => "cancelled",
            HandoffState::Expired => "expired",
        }
    }

    /// The stored states (`expired` is derived from the time, never stored).
    pub fn parse(s: &str) -> Option<HandoffState> {
        match s {
            "given" => Some(HandoffState::Given),
            "accepted" => Some(HandoffState::Accepted),
            "cancelled" => Some(HandoffState::Cancelled),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handoff {
    pub id: HandoffId,
    pub org: OrgId,
    pub from: UserId,
    pub to: UserId,
    pub created_at: Timestamp,
    pub patients: Vec<PatientNote>,
    pub conversations: Vec<ConversationId>,
    /// As stored: `Given`, `Accepted` or `Cancelled`; see [`Handoff::state_at`].
    pub state: HandoffState,
    /// When it was accepted or cancelled.
    pub closed_at: Option<Timestamp>,
}

impl Handoff {
    pub fn expires_at(&self) -> Timestamp {
        self.created_at.saturating_add(HANDOFF_TTL).unwrap_or(self.created_at)
    }

    /// The state at `now`: a handoff still given past its expiry has expired.
    pub fn state_at(&self, now: Timestamp) -> HandoffState {
        match self.state {
            HandoffState::Given if now >= self.expires_at() => HandoffState::Expired,
            s => s,
        }
    }

    /// Whether `user` may see it: its giver and its receiver.
    pub fn involves(&self, user: UserId) -> bool {
        user == self.from || user == self.to
    }
}

/// What the giver writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub to: UserId,
    pub patients: Vec<PatientNote>,
    pub conversations: Vec<ConversationId>,
}

fn invalid(reason: &'static str) -> DomainError {
    DomainError::InvalidHandoff { reason }
}

/// Free text of a note: trimmed, not empty when `required`, at most `max` characters, and
/// no control characters other than line feed and tab.
fn text(raw: &str, max: usize, required: bool, what: &'static str) -> Result<String, DomainError> {
    let t = raw.trim();
    if t.is_empty() && required {
        return Err(invalid(what));
    }
    if t.chars().count() > max || t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(what));
    }
    Ok(t.to_owned())
}

/// Checks and normalises a draft from `from` into a given handoff.
pub fn give(id: HandoffId, org: OrgId, from: UserId, draft: Draft, now: Timestamp) -> Result<Handoff, DomainError> {
    if draft.to == from {
        return Err(invalid("a handoff goes to someone else"));
    }
    if draft.patients.is_empty() && draft.conversations.is_empty() {
        return Err(invalid("a handoff needs at least one patient or conversation"));
    }
    if draft.patients.len() > MAX_PATIENTS {
        return Err(invalid("too many patients in one handoff (at most 60)"));
    }
    if draft.conversations.len() > MAX_CONVERSATIONS {
        return Err(invalid("too many conversations in one handoff (at most 100)"));
    }
    let mut seen = std::collections::HashSet::new();
    if !draft.conversations.iter().all(|c| seen.insert(*c)) {
        return Err(invalid("a conversation is listed twice"));
    }
    let mut patients = Vec::with_capacity(draft.patients.len());
    let mut refs = std::collections::HashSet::new();
    for p in draft.patients {
        if !refs.insert(p.patient.clone()) {
            return Err(invalid("a patient is listed twice"));
        }
        if p.actions.len() > MAX_ACTIONS {
            return Err(invalid("too many action items for one patient (at most 30)"));
        }
        let actions = p
            .actions
            .into_iter()
            .map(|a| {
                let text = text(
                    &a.text,
                    MAX_ACTION_CHARS,
                    true,
                    "an action item is empty, too long or has control characters",
                )?;
                Ok(ActionItem { text, done: a.done })
            })
            .collect::<Result<Vec<_>, DomainError>>()?;
        patients.push(PatientNote {
            patient: p.patient,
            severity: p.severity,
            summary: text(
                &p.summary,
                MAX_TEXT_CHARS,
                true,
                "a patient summary is empty, too long or has control characters",
            )?,
            actions,
            awareness: text(
                &p.awareness,
                MAX_TEXT_CHARS,
                false,
                "situation awareness is too long or has control characters",
            )?,
            synthesis: None,
        });
    }
    Ok(Handoff {
        id,
        org,
        from,
        to: draft.to,
        created_at: now,
        patients,
        conversations: draft.conversations,
        state: HandoffState::Given,
        closed_at: None,
    })
}

/// The receiver accepts with a synthesis of every patient in the handoff. Someone who is
/// not part of the handoff gets `not_found`; the giver cannot accept their own.
pub fn accept(
    h: &Handoff,
    by: UserId,
    synthesis: &[(PatientRef, String)],
    now: Timestamp,
) -> Result<Handoff, DomainError> {
    if !h.involves(by) {
        return Err(DomainError::HandoffNotFound);
    }
    if by != h.to {
        return Err(DomainError::Forbidden);
    }
    if h.state_at(now) != HandoffState::Given {
        return Err(DomainError::HandoffClosed);
    }
    let mut out = h.clone();
    for (patient, _) in synthesis {
        if !h.patients.iter().any(|p| &p.patient == patient) {
            return Err(invalid("a synthesis names a patient that is not in the handoff"));
        }
    }
    for note in &mut out.patients {
        let mut given = synthesis.iter().filter(|(p, _)| *p == note.patient);
        let (Some((_, s)), None) = (given.next(), given.next()) else {
            return Err(invalid("the receiver's synthesis is needed once for every patient"));
        };
        note.synthesis =
            Some(text(s, MAX_TEXT_CHARS, true, "a synthesis is empty, too long or has control characters")?);
    }
    out.state = HandoffState::Accepted;
    out.closed_at = Some(now);
    Ok(out)
}

/// The giver withdraws a handoff that is still waiting.
pub fn cancel(h: &Handoff, by: UserId, now: Timestamp) -> Result<Handoff, DomainError> {
    if !h.involves(by) {
        return Err(DomainError::HandoffNotFound);
    }
    if by != h.from {
        return Err(DomainError::Forbidden);
    }
    if h.state_at(now) != HandoffState::Given {
        return Err(DomainError::HandoffClosed);
    }
    Ok(Handoff { state: HandoffState::Cancelled, closed_at: Some(now), ..h.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn note(p: &str) -> PatientNote {
        PatientNote {
            patient: PatientRef::parse(p).unwrap(),
            severity: Severity::Watcher,
            summary: "  72M, day 2 after CABG, AF with fast rate overnight  ".into(),
            actions: vec![ActionItem { text: "repeat potassium at 06:00".into(), done: false }],
            awareness: "if rate > 130: call cardiology on-call".into(),
            synthesis: None,
        }
    }

    fn draft(to: UserId) -> Draft {
        Draft { to, patients: vec![note("MRN-1"), note("MRN-2")], conversations: vec![ConversationId::new_v7()] }
    }

    fn given() -> (Handoff, UserId, UserId) {
        let (from, to) = (UserId::new_v7(), UserId::new_v7());
        (give(HandoffId::new_v7(), OrgId::new_v7(), from, draft(to), at(0)).unwrap(), from, to)
    }

    fn synth(h: &Handoff) -> Vec<(PatientRef, String)> {
        h.patients.iter().map(|p| (p.patient.clone(), format!("got it: {}", p.patient))).collect()
    }

    #[test]
    fn a_given_handoff_is_normalised_and_waits_for_its_receiver() {
        let (h, from, to) = given();
        assert_eq!((h.from, h.to, h.state), (from, to, HandoffState::Given));
        assert_eq!(h.patients[0].summary, "72M, day 2 after CABG, AF with fast rate overnight");
        assert_eq!(h.state_at(at(60)), HandoffState::Given);
        assert_eq!(h.expires_at(), at(16 * 3600));
        assert_eq!(h.state_at(at(16 * 3600 - 1)), HandoffState::Given);
        assert_eq!(h.state_at(at(16 * 3600)), HandoffState::Expired);
    }

    #[test]
    fn bad_drafts_are_refused_with_a_reason() {
        let from = UserId::new_v7();
        let to = UserId::new_v7();
        let go = |d: Draft| give(HandoffId::new_v7(), OrgId::new_v7(), from, d, at(0));
        let reason = |r: Result<Handoff, DomainError>| match r {
            Err(DomainError::InvalidHandoff { reason }) => reason,
            other => panic!("expected invalid_handoff, got {other:?}"),
        };
        assert!(reason(go(Draft { to: from, ..draft(to) })).contains("someone else"));
        assert!(reason(go(Draft { to, patients: vec![], conversations: vec![] })).contains("at least one"));
        let mut d = draft(to);
        d.patients.push(note("MRN-1"));
        assert!(reason(go(d)).contains("patient is listed twice"));
        let c = ConversationId::new_v7();
        assert!(reason(go(Draft { conversations: vec![c, c], ..draft(to) })).contains("conversation is listed twice"));
        let mut d = draft(to);
        d.patients[0].summary = " \n ".into();
        assert!(reason(go(d)).contains("summary"));
        let mut d = draft(to);
        d.patients[0].summary = "x".repeat(MAX_TEXT_CHARS + 1);
        assert!(reason(go(d)).contains("summary"));
        let mut d = draft(to);
        d.patients[0].awareness = "bell\u{7}".into();
        assert!(reason(go(d)).contains("awareness"));
        let mut d = draft(to);
        d.patients[0].actions = vec![ActionItem { text: "x".into(), done: false }; MAX_ACTIONS + 1];
        assert!(reason(go(d)).contains("action items"));
        let mut d = draft(to);
        d.patients[0].actions[0].text = String::new();
        assert!(reason(go(d)).contains("action item"));
        let many = (0..=MAX_PATIENTS).map(|i| note(&format!("MRN-{i}"))).collect();
        assert!(reason(go(Draft { patients: many, ..draft(to) })).contains("too many patients"));
        let convs = (0..=MAX_CONVERSATIONS).map(|_| ConversationId::new_v7()).collect();
        assert!(reason(go(Draft { conversations: convs, ..draft(to) })).contains("too many conversations"));
        // Limits themselves are fine; so is an empty awareness (nothing to plan for).
        let mut d = draft(to);
        d.patients[0].summary = "y".repeat(MAX_TEXT_CHARS);
        d.patients[0].awareness = String::new();
        assert!(go(d).is_ok());
        // A handoff of conversations only (a charge nurse's open threads) is fine.
        assert!(go(Draft { patients: vec![], ..draft(to) }).is_ok());
    }

    #[test]
    fn only_the_receiver_accepts_with_a_synthesis_of_every_patient() {
        let (h, from, to) = given();
        let s = synth(&h);
        assert_eq!(accept(&h, UserId::new_v7(), &s, at(10)), Err(DomainError::HandoffNotFound));
        assert_eq!(accept(&h, from, &s, at(10)), Err(DomainError::Forbidden));
        let missing = &s[..1];
        assert!(matches!(accept(&h, to, missing, at(10)), Err(DomainError::InvalidHandoff { .. })));
        let mut twice = s.clone();
        twice.push(s[0].clone());
        assert!(matches!(accept(&h, to, &twice, at(10)), Err(DomainError::InvalidHandoff { .. })));
        let mut stranger = s.clone();
        stranger.push((PatientRef::parse("MRN-9").unwrap(), "who?".into()));
        assert!(matches!(accept(&h, to, &stranger, at(10)), Err(DomainError::InvalidHandoff { .. })));
        let mut blank = s.clone();
        blank[1].1 = "   ".into();
        assert!(matches!(accept(&h, to, &blank, at(10)), Err(DomainError::InvalidHandoff { .. })));

        let done = accept(&h, to, &s, at(10)).unwrap();
        assert_eq!((done.state, done.closed_at), (HandoffState::Accepted, Some(at(10))));
        assert_eq!(done.patients[1].synthesis.as_deref(), Some("got it: MRN-2"));
        // Accepted stays accepted, also past the expiry, and cannot be accepted again.
        assert_eq!(done.state_at(at(100_000)), HandoffState::Accepted);
        assert_eq!(accept(&done, to, &s, at(11)), Err(DomainError::HandoffClosed));
        assert_eq!(cancel(&done, from, at(11)), Err(DomainError::HandoffClosed));
    }

    #[test]
    fn a_handoff_of_conversations_only_is_accepted_without_a_synthesis() {
        let (from, to) = (UserId::new_v7(), UserId::new_v7());
        let d = Draft { patients: vec![], ..draft(to) };
        let h = give(HandoffId::new_v7(), OrgId::new_v7(), from, d, at(0)).unwrap();
        assert_eq!(accept(&h, to, &[], at(1)).unwrap().state, HandoffState::Accepted);
    }

    #[test]
    fn the_giver_cancels_until_accepted_and_nobody_acts_on_an_expired_one() {
        let (h, from, to) = given();
        assert_eq!(cancel(&h, to, at(5)), Err(DomainError::Forbidden));
        assert_eq!(cancel(&h, UserId::new_v7(), at(5)), Err(DomainError::HandoffNotFound));
        let c = cancel(&h, from, at(5)).unwrap();
        assert_eq!((c.state, c.closed_at), (HandoffState::Cancelled, Some(at(5))));
        assert_eq!(accept(&c, to, &synth(&h), at(6)), Err(DomainError::HandoffClosed));

        let late = at(16 * 3600);
        assert_eq!(accept(&h, to, &synth(&h), late), Err(DomainError::HandoffClosed));
        assert_eq!(cancel(&h, from, late), Err(DomainError::HandoffClosed));
    }

    #[test]
    fn states_and_severities_round_trip_their_names() {
        for s in [Severity::Stable, Severity::Watcher, Severity::Unstable] {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
        for s in [HandoffState::Given, HandoffState::Accepted, HandoffState::Cancelled] {
            assert_eq!(HandoffState::parse(s.as_str()), Some(s));
        }
        assert_eq!(HandoffState::parse("expired"), None, "derived, never stored");
        assert_eq!(Severity::parse("Stable"), None);
    }
}
