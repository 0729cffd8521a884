//! Notification preferences (clinical workflows, issue 5 §7): which channels each priority
//! uses for a user, their quiet hours in their own time zone, and the one rule that decides,
//! for one notification to one user, what goes out now, what waits and until when, and what
//! goes to someone covering them.
//!
//! The rule, in order:
//! 1. Someone covering the user (coverage, docs/clinical.md "Coverage"): the notification goes
//!    to them instead.
//! 2. A critical message to someone on call goes out at once on every channel they chose for
//!    critical: it overrides do-not-disturb and quiet hours.
//! 3. Do-not-disturb (in procedure) or quiet hours: only the in-app notice now; the other
//!    channels when it ends. For a critical message to someone not on call the same holds:
//!    the escalation policy reaches whoever is on call meanwhile.
//! 4. A routine notification to someone off shift waits for their next shift (in-app now).
//! 5. Otherwise: now, on the channels chosen for the priority.
//!
//! In-app is always part of what goes out: the message is in the user's conversation anyway.

use jiff::civil::{self, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::DomainError;
use crate::escalation::{Channel, ChannelSet};
use crate::ids::UserId;
use crate::model::Priority;
use crate::presence::PresenceState;

/// The longest quiet hours: a night and a bit. Longer would hide a whole day's routine work.
pub const MAX_QUIET: SignedDuration = SignedDuration::from_hours(14);

/// The channels that reach someone who is not looking at medhub.
const INTERRUPTING: [Channel; 3] = [Channel::Push, Channel::Sms, Channel::Pager];

/// A daily window, in the user's zone, when only critical messages for whoever is on call
/// interrupt. `to` before `from` means the window ends the next morning.
#[derive(Clone, Debug, PartialEq)]
pub struct QuietHours {
    pub from: Time,
    pub to: Time,
    pub zone: TimeZone,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Preferences {
    pub routine: ChannelSet,
    pub urgent: ChannelSet,
    pub critical: ChannelSet,
    pub quiet: Option<QuietHours>,
}

impl Default for Preferences {
    /// In-app and push for routine work, adding e-mail for urgent, everything for critical.
    fn default() -> Self {
        Preferences {
            routine: ChannelSet::of(&[Channel::InApp, Channel::Push]),
            urgent: ChannelSet::of(&[Channel::InApp, Channel::Push, Channel::Email]),
            critical: ChannelSet::ALL,
            quiet: None,
        }
    }
}

impl Preferences {
    pub fn for_priority(&self, p: Priority) -> ChannelSet {
        match p {
            Priority::Routine => self.routine,
            Priority::Urgent => self.urgent,
            Priority::Critical => self.critical,
        }
        .with(Channel::InApp)
    }
}

fn invalid(reason: &'static str) -> DomainError {
    DomainError::InvalidPreferences { reason }
}

/// The length of a quiet window (across midnight when `to` is before `from`).
fn quiet_length(q: &QuietHours) -> SignedDuration {
    let day = SignedDuration::from_hours(24);
    let d = q.to.duration_since(q.from);
    if d.is_negative() { d + day } else { d }
}

/// Checks preferences: critical and urgent messages must be able to reach a phone (push, SMS
/// or pager), so nobody can switch off what escalation relies on; quiet hours are not empty
/// and last at most [`MAX_QUIET`].
pub fn validate(p: &Preferences) -> Result<(), DomainError> {
    let reaches_a_phone = |s: ChannelSet| INTERRUPTING.iter().any(|c| s.contains(*c));
    if !reaches_a_phone(p.critical) {
        return Err(invalid("critical messages need push, SMS or pager"));
    }
    if !reaches_a_phone(p.urgent) {
        return Err(invalid("urgent messages need push, SMS or pager"));
    }
    if let Some(q) = &p.quiet {
        if q.from == q.to {
            return Err(invalid("quiet hours start and end at different times"));
        }
        if quiet_length(q) > MAX_QUIET {
            return Err(invalid("quiet hours last at most 14 hours"));
        }
    }
    Ok(())
}

/// If `now` is in the quiet hours, when they end.
pub fn quiet_until(q: &QuietHours, now: Timestamp) -> Option<Timestamp> {
    let local = now.to_zoned(q.zone.clone()).datetime();
    let (t, day) = (local.time(), local.date());
    let end_day = if q.from < q.to {
        (t >= q.from && t < q.to).then_some(day)?
    } else if t >= q.from {
        day.tomorrow().ok()?
    } else if t < q.to {
        day
    } else {
        return None;
    };
    let end = civil::DateTime::from_parts(end_day, q.to);
    crate::schedule::local_to_instant(&q.zone, end).ok().filter(|e| *e > now)
}

/// What is known about the recipient when a notification is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Situation {
    pub presence: PresenceState,
    /// When the presence override (e.g. in procedure) ends, if one decides `presence`.
    pub presence_until: Option<Timestamp>,
    pub on_call: bool,
    /// Who covers the user now, if anyone.
    pub covered_by: Option<UserId>,
    /// When the user's next shift starts, if a schedule says.
    pub next_shift: Option<Timestamp>,
}

/// The decision for one notification to one user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Channels to use now (in-app always, unless redirected).
    pub now: ChannelSet,
    /// Channels to use later, and when.
    pub later: Option<(Timestamp, ChannelSet)>,
    /// Send it to this user instead (coverage).
    pub redirect: Option<UserId>,
    /// Why, for the delivery trace: `coverage`, `on_call_critical`, `do_not_disturb`,
    /// `quiet_hours`, `off_shift` or `preferences`.
    pub why: &'static str,
}

pub fn decide(prefs: &Preferences, priority: Priority, s: &Situation, now: Timestamp) -> Decision {
    let wanted = prefs.for_priority(priority);
    let in_app = ChannelSet::of(&[Channel::InApp]);
    let rest = ChannelSet::of(
        &Channel::ALL.iter().copied().filter(|c| *c != Channel::InApp && wanted.contains(*c)).collect::<Vec<_>>(),
    );
    if let Some(to) = s.covered_by {
        return Decision { now: ChannelSet::NONE, later: None, redirect: Some(to), why: "coverage" };
    }
    if priority == Priority::Critical && s.on_call {
        return Decision { now: wanted, later: None, redirect: None, why: "on_call_critical" };
    }
    let dnd = s.presence.do_not_disturb().then_some(s.presence_until).flatten();
    let quiet = prefs.quiet.as_ref().and_then(|q| quiet_until(q, now));
    let hold = match (dnd, quiet) {
        (Some(d), Some(q)) => Some((d.max(q), if d >= q { "do_not_disturb" } else { "quiet_hours" })),
        (Some(d), None) => Some((d, "do_not_disturb")),
        (None, Some(q)) => Some((q, "quiet_hours")),
        // In procedure with no known end (should not happen: overrides always end): in-app only.
        (None, None) if s.presence.do_not_disturb() => {
            return Decision { now: in_app, later: None, redirect: None, why: "do_not_disturb" };
        }
        (None, None) => None,
    };
    if let Some((until, why)) = hold {
        return Decision {
            now: in_app,
            later: Some((until, rest)).filter(|_| rest != ChannelSet::NONE),
            redirect: None,
            why,
        };
    }
    if priority == Priority::Routine && s.presence == PresenceState::OffShift {
        let later = s.next_shift.filter(|t| *t > now).map(|t| (t, rest)).filter(|_| rest != ChannelSet::NONE);
        return Decision { now: in_app, later, redirect: None, why: "off_shift" };
    }
    Decision { now: wanted, later: None, redirect: None, why: "preferences" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::time;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn night() -> QuietHours {
        QuietHours { from: time(22, 0, 0, 0), to: time(6, 30, 0, 0), zone: berlin() }
    }

    fn working() -> Situation {
        Situation {
            presence: PresenceState::Available,
            presence_until: None,
            on_call: false,
            covered_by: None,
            next_shift: None,
        }
    }

    #[test]
    fn quiet_hours_are_local_and_cross_midnight_and_daylight_saving() {
        let q = night();
        // 23:00 in Berlin in winter (UTC+1) is 22:00 UTC: quiet until 06:30 local, 05:30 UTC.
        assert_eq!(quiet_until(&q, at("2026-01-14T22:00:00Z")), Some(at("2026-01-15T05:30:00Z")));
        // 05:00 local: quiet until 06:30 the same morning.
        assert_eq!(quiet_until(&q, at("2026-01-15T04:00:00Z")), Some(at("2026-01-15T05:30:00Z")));
        // Exactly 06:30 local is not quiet any more; 21:59 is not yet.
        assert_eq!(quiet_until(&q, at("2026-01-15T05:30:00Z")), None);
        assert_eq!(quiet_until(&q, at("2026-01-15T20:59:00Z")), None);
        assert!(quiet_until(&q, at("2026-01-15T21:00:00Z")).is_some());
        // The night of the spring-forward (29 March 2026): 06:30 is summer time, UTC+2.
        assert_eq!(quiet_until(&q, at("2026-03-28T23:00:00Z")), Some(at("2026-03-29T04:30:00Z")));
        // Fall-back night (25 October 2026): 06:30 is winter time again, UTC+1.
        assert_eq!(quiet_until(&q, at("2026-10-24T23:00:00Z")), Some(at("2026-10-25T05:30:00Z")));
        // A daytime window (a lunch break 12:00-13:00).
        let lunch = QuietHours { from: time(12, 0, 0, 0), to: time(13, 0, 0, 0), zone: berlin() };
        assert_eq!(quiet_until(&lunch, at("2026-07-01T10:30:00Z")), Some(at("2026-07-01T11:00:00Z")));
        assert_eq!(quiet_until(&lunch, at("2026-07-01T11:00:00Z")), None);
    }

    #[test]
    fn preferences_must_keep_urgent_and_critical_reachable_and_quiet_hours_bounded() {
        let ok = Preferences { quiet: Some(night()), ..Preferences::default() };
        assert_eq!(validate(&ok), Ok(()));
        let mute = Preferences { critical: ChannelSet::of(&[Channel::InApp, Channel::Email]), ..ok.clone() };
        assert!(matches!(validate(&mute), Err(DomainError::InvalidPreferences { .. })));
        let mute = Preferences { urgent: ChannelSet::of(&[Channel::InApp]), ..ok.clone() };
        assert!(matches!(validate(&mute), Err(DomainError::InvalidPreferences { .. })));
        let pager_only = Preferences { critical: ChannelSet::of(&[Channel::Pager]), ..ok.clone() };
        assert_eq!(validate(&pager_only), Ok(()));
        let empty = QuietHours { from: time(8, 0, 0, 0), to: time(8, 0, 0, 0), zone: berlin() };
        assert!(validate(&Preferences { quiet: Some(empty), ..ok.clone() }).is_err());
        let long = QuietHours { from: time(18, 0, 0, 0), to: time(8, 1, 0, 0), zone: berlin() };
        assert!(validate(&Preferences { quiet: Some(long), ..ok.clone() }).is_err());
        let longest = QuietHours { from: time(18, 0, 0, 0), to: time(8, 0, 0, 0), zone: berlin() };
        assert_eq!(validate(&Preferences { quiet: Some(longest), ..ok }), Ok(()));
    }

    #[test]
    fn a_critical_message_overrides_quiet_hours_and_do_not_disturb_for_whoever_is_on_call() {
        let prefs = Preferences { quiet: Some(night()), ..Preferences::default() };
        let night_time = at("2026-01-14T23:00:00Z");
        let in_procedure = Situation {
            presence: PresenceState::InProcedure,
            presence_until: Some(at("2026-01-15T01:00:00Z")),
            on_call: true,
            ..working()
        };
        let d = decide(&prefs, Priority::Critical, &in_procedure, night_time);
        assert_eq!((d.now, d.later, d.why), (ChannelSet::ALL, None, "on_call_critical"));

        // Not on call: in-app now, the rest when both the procedure and the night end.
        let off_call = Situation { on_call: false, ..in_procedure };
        let d = decide(&prefs, Priority::Critical, &off_call, night_time);
        assert_eq!(d.now, ChannelSet::of(&[Channel::InApp]));
        let (when, later) = d.later.unwrap();
        assert_eq!((when, d.why), (at("2026-01-15T05:30:00Z"), "quiet_hours"));
        assert!(!later.contains(Channel::InApp) && later.contains(Channel::Pager));

        // Urgent during a procedure in the day: held until the procedure ends.
        let day = at("2026-01-15T10:00:00Z");
        let busy = Situation { presence_until: Some(at("2026-01-15T11:30:00Z")), ..off_call };
        let d = decide(&prefs, Priority::Urgent, &busy, day);
        assert_eq!(
            (d.now, d.later.map(|l| l.0), d.why),
            (ChannelSet::of(&[Channel::InApp]), Some(at("2026-01-15T11:30:00Z")), "do_not_disturb")
        );
        // Urgent while working: its channels now.
        let d = decide(&prefs, Priority::Urgent, &working(), day);
        assert_eq!((d.now, d.later, d.why), (prefs.urgent.with(Channel::InApp), None, "preferences"));
    }

    #[test]
    fn routine_work_for_someone_off_shift_waits_for_the_next_shift_or_goes_to_who_covers() {
        let prefs = Preferences::default();
        let now = at("2026-01-15T15:00:00Z");
        let off =
            Situation { presence: PresenceState::OffShift, next_shift: Some(at("2026-01-16T07:00:00Z")), ..working() };
        let d = decide(&prefs, Priority::Routine, &off, now);
        assert_eq!(d.now, ChannelSet::of(&[Channel::InApp]));
        assert_eq!(d.later, Some((at("2026-01-16T07:00:00Z"), ChannelSet::of(&[Channel::Push]))));
        assert_eq!(d.why, "off_shift");
        // No known next shift: in-app only, nothing silently dropped (it is in the conversation).
        let d = decide(&prefs, Priority::Routine, &Situation { next_shift: None, ..off }, now);
        assert_eq!((d.now, d.later), (ChannelSet::of(&[Channel::InApp]), None));
        // Urgent is not held for being off shift.
        let d = decide(&prefs, Priority::Urgent, &off, now);
        assert_eq!(d.why, "preferences");
        // Someone covering: everything goes to them, whatever the priority.
        let cover = UserId::new_v7();
        for p in [Priority::Routine, Priority::Urgent, Priority::Critical] {
            let d = decide(&prefs, p, &Situation { covered_by: Some(cover), on_call: true, ..off }, now);
            assert_eq!((d.redirect, d.now, d.why), (Some(cover), ChannelSet::NONE, "coverage"));
        }
    }

    #[test]
    fn in_app_is_always_among_the_channels() {
        let prefs = Preferences { routine: ChannelSet::of(&[Channel::Email]), ..Preferences::default() };
        assert!(prefs.for_priority(Priority::Routine).contains(Channel::InApp));
        let d = decide(&prefs, Priority::Routine, &working(), at("2026-01-15T10:00:00Z"));
        assert!(d.now.contains(Channel::InApp) && d.now.contains(Channel::Email));
    }
}
