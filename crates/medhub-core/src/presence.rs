//! Presence (clinical workflows, issue 5 §1): whether a clinician can be reached now.
//!
//! A user's state is derived, in this order, from:
//! 1. a manual override the user set, until it expires: `busy`, `in_procedure` (do not
//!    disturb: notifications wait, except critical ones for whoever is on call) or
//!    `off_shift`, or `available` to say so while not connected;
//! 2. their connections: anyone with a live connection is `available`;
//! 3. their schedules: someone on an on-call schedule who is not on call now is `off_shift`;
//! 4. otherwise `offline`.
//!
//! Overrides always expire ([`MAX_OVERRIDE`]): a forgotten "in procedure" must not silence a
//! clinician for days.

use jiff::{SignedDuration, Timestamp};

use crate::DomainError;

/// The shortest override: a minute.
pub const MIN_OVERRIDE: SignedDuration = SignedDuration::from_mins(1);
/// The longest override: a long shift. After that the state is derived again.
pub const MAX_OVERRIDE: SignedDuration = SignedDuration::from_hours(16);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PresenceState {
    Available,
    Busy,
    /// Do not disturb.
    InProcedure,
    OffShift,
    Offline,
}

impl PresenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceState::Available => "available",
            PresenceState::Busy => "busy",
            PresenceState::InProcedure => "in_procedure",
            PresenceState::OffShift => "off_shift",
            PresenceState::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<PresenceState> {
        match s {
            "available" => Some(PresenceState::Available),
            "busy" => Some(PresenceState::Busy),
            "in_procedure" => Some(PresenceState::InProcedure),
            "off_shift" => Some(PresenceState::OffShift),
            "offline" => Some(PresenceState::Offline),
            _ => None,
        }
    }

    /// Whether notifications should wait (except what overrides do-not-disturb).
    pub fn do_not_disturb(self) -> bool {
        self == PresenceState::InProcedure
    }
}

/// A state the user set by hand, until `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceOverride {
    pub state: PresenceState,
    pub set_at: Timestamp,
    pub until: Timestamp,
}

/// Checks a requested override: any state but `offline` (being unreachable is not something
/// to announce by hand: sign out instead), for [`MIN_OVERRIDE`] to [`MAX_OVERRIDE`].
pub fn override_for(
    state: PresenceState,
    lasting: SignedDuration,
    now: Timestamp,
) -> Result<PresenceOverride, DomainError> {
    if state == PresenceState::Offline {
        return Err(DomainError::InvalidPresence { reason: "offline cannot be set by hand; sign out instead" });
    }
    if lasting < MIN_OVERRIDE || lasting > MAX_OVERRIDE {
        return Err(DomainError::InvalidPresence { reason: "an override lasts 1 to 960 minutes" });
    }
    let until =
        now.saturating_add(lasting).map_err(|_| DomainError::InvalidPresence { reason: "time out of range" })?;
    Ok(PresenceOverride { state, set_at: now, until })
}

/// What presence is derived from, for one user at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PresenceFacts {
    pub connected: bool,
    pub manual: Option<PresenceOverride>,
    /// `Some(true)` on call now, `Some(false)` on some on-call schedule but not on call now,
    /// `None` on no schedule.
    pub on_call: Option<bool>,
}

/// The derived state and, when an override decides it, until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presence {
    pub state: PresenceState,
    pub until: Option<Timestamp>,
    pub on_call: bool,
}

pub fn derive(facts: PresenceFacts, now: Timestamp) -> Presence {
    let on_call = facts.on_call == Some(true);
    if let Some(m) = facts.manual.filter(|m| now < m.until) {
        return Presence { state: m.state, until: Some(m.until), on_call };
    }
    let state = if facts.connected {
        PresenceState::Available
    } else if facts.on_call == Some(false) {
        PresenceState::OffShift
    } else {
        PresenceState::Offline
    };
    Presence { state, until: None, on_call }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn overrides_win_until_they_expire_then_connections_and_schedules_decide() {
        let busy = override_for(PresenceState::InProcedure, SignedDuration::from_mins(90), at(0)).unwrap();
        assert_eq!(busy.until, at(90 * 60));
        let facts = PresenceFacts { connected: true, manual: Some(busy), on_call: Some(true) };
        let p = derive(facts, at(60));
        assert_eq!((p.state, p.until, p.on_call), (PresenceState::InProcedure, Some(at(5400)), true));
        assert!(p.state.do_not_disturb());
        // At the expiry instant the override no longer holds.
        assert_eq!(derive(facts, at(5400)).state, PresenceState::Available);
        assert_eq!(derive(facts, at(5400)).until, None);
        let away = PresenceFacts { connected: false, ..facts };
        assert_eq!(derive(away, at(5400)).state, PresenceState::Offline, "on call, not connected: offline, on_call");
        assert!(derive(away, at(5400)).on_call);
        let off = PresenceFacts { on_call: Some(false), ..away };
        assert_eq!(derive(off, at(5400)).state, PresenceState::OffShift);
        let unscheduled = PresenceFacts { on_call: None, ..away };
        assert_eq!(derive(unscheduled, at(5400)).state, PresenceState::Offline);
        assert_eq!(derive(unscheduled, at(0)).state, PresenceState::InProcedure, "the override still holds");
        // Connected beats "off shift" from the schedule: someone working is reachable.
        assert_eq!(derive(PresenceFacts { connected: true, ..off }, at(5400)).state, PresenceState::Available);
        // "available" by hand while not connected.
        let here = override_for(PresenceState::Available, SignedDuration::from_mins(5), at(0)).unwrap();
        assert_eq!(derive(PresenceFacts { manual: Some(here), ..off }, at(1)).state, PresenceState::Available);
    }

    #[test]
    fn overrides_are_bounded_and_never_offline() {
        let bad = |s, m| override_for(s, SignedDuration::from_mins(m), at(0)).is_err();
        assert!(bad(PresenceState::Offline, 10));
        assert!(bad(PresenceState::Busy, 0));
        assert!(bad(PresenceState::Busy, 16 * 60 + 1));
        assert!(!bad(PresenceState::Busy, 1));
        assert!(!bad(PresenceState::OffShift, 16 * 60));
        assert!(override_for(PresenceState::Busy, SignedDuration::from_secs(59), at(0)).is_err());
    }

    #[test]
    fn states_round_trip_their_names() {
        for s in [
            PresenceState::Available,
            PresenceState::Busy,
            PresenceState::InProcedure,
            PresenceState::OffShift,
            PresenceState::Offline,
        ] {
            assert_eq!(PresenceState::parse(s.as_str()), Some(s));
        }
        assert_eq!(PresenceState::parse("dnd"), None);
    }
}
