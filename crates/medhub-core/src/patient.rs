//! Patient scope: who may read a conversation linked to a patient, and the rules of
//! break-glass (emergency access, HIPAA 164.312(a)(2)(ii)).
//!
//! A conversation may carry a [`PatientRef`]. Its members read it as always. Besides them,
//! the patient's care team may read it, and so may a user with an open break-glass grant on
//! it. Everyone else gets the same `not_found` as for an id that does not exist.

use jiff::{SignedDuration, Timestamp};

use crate::DomainError;

/// The longest patient reference: FHIR's limit on resource ids.
pub const MAX_PATIENT_REF_LEN: usize = 64;
/// How long break-glass access lasts unless the organization says otherwise.
pub const DEFAULT_BREAK_GLASS: SignedDuration = SignedDuration::from_mins(60);
/// The shortest and longest break-glass access an organization may configure.
pub const MIN_BREAK_GLASS: SignedDuration = SignedDuration::from_mins(5);
pub const MAX_BREAK_GLASS: SignedDuration = SignedDuration::from_hours(24);
/// A reason must say something a reviewer can check ("emergency" alone is not a reason).
pub const MIN_REASON_CHARS: usize = 10;
pub const MAX_REASON_CHARS: usize = 1000;

/// The patient a conversation is about: the EHR's patient id (a FHIR `Patient` id, an MRN
/// or similar), `[A-Za-z0-9.-]`, 1-64 characters. It identifies; it never names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PatientRef(String);

impl PatientRef {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_PATIENT_REF_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if ok { Ok(PatientRef(raw.to_owned())) } else { Err(DomainError::InvalidPatientRef) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PatientRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a user may read a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A member: everything its conversation role allows.
    Member,
    /// On the linked patient's care team: read only.
    CareTeam,
    /// Emergency access, open until the grant expires: read only.
    BreakGlass,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Member => "member",
            Access::CareTeam => "care_team",
            Access::BreakGlass => "break_glass",
        }
    }
}

/// What is known about one user and one conversation when deciding access.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccessFacts {
    pub member: bool,
    /// The conversation is linked to a patient.
    pub patient_linked: bool,
    /// The user is on that patient's care team now.
    pub on_care_team: bool,
    /// When the user's latest open break-glass grant on this conversation ends.
    pub break_glass_until: Option<Timestamp>,
}

/// Who may read: members always; for a patient's conversation also the care team, and a
/// break-glass grant until (not including) its end. `None` means "not found".
pub fn access(f: AccessFacts, now: Timestamp) -> Option<Access> {
    if f.member {
        return Some(Access::Member);
    }
    if !f.patient_linked {
        return None;
    }
    if f.on_care_team {
        return Some(Access::CareTeam);
    }
    match f.break_glass_until {
        Some(until) if now < until => Some(Access::BreakGlass),
        _ => None,
    }
}

/// Checks a break-glass reason: trimmed, 10-1000 characters, no control characters other
/// than line breaks.
pub fn break_glass_reason(raw: &str) -> Result<String, DomainError> {
    let t = raw.trim();
    let n = t.chars().count();
    let bad = t.chars().any(|c| c.is_control() && c != '\n' && c != '\r');
    if !(MIN_REASON_CHARS..=MAX_REASON_CHARS).contains(&n) || bad {
        return Err(DomainError::InvalidReason { min: MIN_REASON_CHARS, max: MAX_REASON_CHARS });
    }
    Ok(t.to_owned())
}

/// Checks an organization's break-glass duration, in minutes.
pub fn break_glass_duration(minutes: i64) -> Result<SignedDuration, DomainError> {
    let d = SignedDuration::from_mins(minutes);
    if d < MIN_BREAK_GLASS || d > MAX_BREAK_GLASS {
        return Err(DomainError::InvalidBreakGlassDuration {
            min: MIN_BREAK_GLASS.as_mins(),
            max: MAX_BREAK_GLASS.as_mins(),
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn patient_refs_are_fhir_ids() {
        assert_eq!(PatientRef::parse("pat-123.A").unwrap().as_str(), "pat-123.A");
        assert!(PatientRef::parse(&"a".repeat(64)).is_ok());
        for bad in ["", " x", "a/b", "Jane Doe", "x\n", &"a".repeat(65), "é"] {
            assert_eq!(PatientRef::parse(bad), Err(DomainError::InvalidPatientRef), "{bad:?}");
        }
    }

    #[test]
    fn members_always_read_others_only_a_patients_conversation_with_a_reason() {
        let now = at(0);
        let member = AccessFacts { member: true, ..Default::default() };
        assert_eq!(access(member, now), Some(Access::Member));
        // Not linked to a patient: neither care teams nor break-glass reach it.
        let unlinked = AccessFacts { on_care_team: true, break_glass_until: Some(at(60)), ..Default::default() };
        assert_eq!(access(unlinked, now), None);
        let linked = AccessFacts { patient_linked: true, ..Default::default() };
        assert_eq!(access(linked, now), None);
        assert_eq!(access(AccessFacts { on_care_team: true, ..linked }, now), Some(Access::CareTeam));
        assert_eq!(access(AccessFacts { member: true, on_care_team: true, ..linked }, now), Some(Access::Member));
    }

    #[test]
    fn break_glass_ends_exactly_at_its_end() {
        let start = at(0);
        let until = start.checked_add(DEFAULT_BREAK_GLASS).unwrap();
        let f = AccessFacts { patient_linked: true, break_glass_until: Some(until), ..Default::default() };
        // 59:59 still open; 60:00 closed.
        assert_eq!(access(f, at(3599)), Some(Access::BreakGlass));
        assert_eq!(access(f, at(3600)), None);
        assert_eq!(access(f, at(7200)), None);
    }

    #[test]
    fn reasons_must_say_something() {
        assert_eq!(
            break_glass_reason("  Cardiac arrest in bay 4, attending unreachable \n").unwrap(),
            "Cardiac arrest in bay 4, attending unreachable"
        );
        for bad in ["", "emergency", "         ", "code\u{7}blue now please"] {
            assert!(break_glass_reason(bad).is_err(), "{bad:?}");
        }
        assert!(break_glass_reason(&"x".repeat(1001)).is_err());
        assert!(break_glass_reason("line one\nline two").is_ok());
    }

    #[test]
    fn durations_stay_within_bounds() {
        assert_eq!(break_glass_duration(60).unwrap(), DEFAULT_BREAK_GLASS);
        assert!(break_glass_duration(4).is_err());
        assert!(break_glass_duration(5).is_ok());
        assert!(break_glass_duration(1440).is_ok());
        assert!(break_glass_duration(1441).is_err());
    }
}
