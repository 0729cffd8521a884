//! Session rules: what a sign-in leads to, when a session expires, when a re-authentication
//! is fresh enough for a sensitive action, and how failed attempts are throttled.
//!
//! Everything here takes `now` as an argument, so the idle timeout can be tested at 14:59 and
//! 15:00 exactly.

use jiff::{SignedDuration, Timestamp};

use crate::model::SessionState;

/// The idle timeout when the organization has not chosen one.
pub const DEFAULT_IDLE_TIMEOUT: SignedDuration = SignedDuration::from_mins(15);
/// The shortest idle timeout an organization may choose.
pub const MIN_IDLE_TIMEOUT: SignedDuration = SignedDuration::from_mins(1);
/// The longest idle timeout an organization may choose.
pub const MAX_IDLE_TIMEOUT: SignedDuration = SignedDuration::from_hours(12);
/// A session ends this long after sign-in, however active it is.
pub const ABSOLUTE_LIFETIME: SignedDuration = SignedDuration::from_hours(12);
/// A second factor proven this recently allows a sensitive action without asking again.
pub const STEP_UP_WINDOW: SignedDuration = SignedDuration::from_mins(5);

/// Why a session is no longer valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No user activity for the idle timeout.
    Idle,
    /// The absolute lifetime is over.
    Absolute,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Idle => "idle_timeout",
            Expiry::Absolute => "absolute_lifetime",
        }
    }
}

/// Whether a session has expired at `now`. Idle expiry is reached when `now - last_activity`
/// *equals* the timeout: with 15 minutes, 14:59 after the last action passes and 15:00 fails.
pub fn expiry(
    last_activity: Timestamp,
    absolute_expires_at: Timestamp,
    idle_timeout: SignedDuration,
    now: Timestamp,
) -> Option<Expiry> {
    if now >= absolute_expires_at {
        return Some(Expiry::Absolute);
    }
    if now.duration_since(last_activity) >= idle_timeout {
        return Some(Expiry::Idle);
    }
    None
}

/// Checks an organization's idle timeout setting, given in whole minutes.
pub fn idle_timeout_from_minutes(minutes: i64) -> Option<SignedDuration> {
    let d = SignedDuration::from_mins(minutes);
    (MIN_IDLE_TIMEOUT..=MAX_IDLE_TIMEOUT).contains(&d).then_some(d)
}

/// The state a session starts in after a correct password. Every human account needs a
/// second factor: an account without one must enrol before it reaches anything else.
pub fn after_password(must_change_password: bool, mfa_enrolled: bool) -> SessionState {
    if must_change_password {
        SessionState::PasswordChangeRequired
    } else if mfa_enrolled {
        SessionState::MfaRequired
    } else {
        SessionState::MfaEnrollmentRequired
    }
}

/// The state after the one-time password was replaced.
pub fn after_password_change(state: SessionState, mfa_enrolled: bool) -> SessionState {
    match state {
        SessionState::PasswordChangeRequired => after_password(false, mfa_enrolled),
        other => other,
    }
}

/// Whether the second factor was proven recently enough for a sensitive action.
pub fn step_up_fresh(mfa_at: Option<Timestamp>, now: Timestamp) -> bool {
    match mfa_at {
        Some(at) => at <= now && now.duration_since(at) < STEP_UP_WINDOW,
        None => false,
    }
}

/// How failed attempts are throttled, per account and per client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed in a window before waits start.
    pub free_failures: u32,
    /// Failures older than this are forgotten (unless a wait is running).
    pub window: SignedDuration,
    /// The first wait; each further failure doubles it.
    pub first_wait: SignedDuration,
    /// The longest wait.
    pub max_wait: SignedDuration,
}

impl Default for ThrottlePolicy {
    /// Per account: five free failures in 15 minutes.
    fn default() -> Self {
        Self {
            free_failures: 5,
            window: SignedDuration::from_mins(15),
            first_wait: SignedDuration::from_secs(1),
            max_wait: SignedDuration::from_mins(15),
        }
    }
}

impl ThrottlePolicy {
    /// Per client address: a hospital's thousands of clinicians often reach the server
    /// through a few NAT addresses, so an address gets far more free failures than an
    /// account before it waits. It still stops a single host spraying passwords.
    pub fn per_address() -> Self {
        Self { free_failures: 100, ..Self::default() }
    }
}

/// The failure record of one throttle key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub failures: u32,
    pub window_start: Timestamp,
    pub locked_until: Option<Timestamp>,
}

impl ThrottlePolicy {
    /// `Err(wait)` while the key is locked out.
    pub fn check(&self, t: Option<&Throttle>, now: Timestamp) -> Result<(), SignedDuration> {
        match t.and_then(|t| t.locked_until) {
            Some(until) if until > now => Err(until.duration_since(now)),
            _ => Ok(()),
        }
    }

    /// The record after one more failure at `now`.
    pub fn failure(&self, t: Option<&Throttle>, now: Timestamp) -> Throttle {
        let fresh = Throttle { failures: 0, window_start: now, locked_until: None };
        let mut t = match t {
            // A window that ended with no wait running starts over.
            Some(t) if now < t.window_start || now.duration_since(t.window_start) < self.window => *t,
            Some(t) if t.locked_until.is_some_and(|u| u > now) => *t,
            _ => fresh,
        };
        t.failures = t.failures.saturating_add(1);
        if t.failures > self.free_failures {
            // (`window_start` may be in the future while a wait runs; see below.)
            let doublings = (t.failures - self.free_failures - 1).min(30);
            let wait = self.first_wait.checked_mul(1 << doublings).unwrap_or(self.max_wait).min(self.max_wait);
            t.locked_until = now.checked_add(wait).ok();
            // The record is forgotten only after a quiet window that starts when the wait
            // ends, so each failure after a wait doubles it again.
            t.window_start = t.locked_until.unwrap_or(now);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn the_idle_timeout_passes_at_14_59_and_fails_at_15_00() {
        let signed_in = at(0);
        let abs = signed_in.checked_add(ABSOLUTE_LIFETIME).unwrap();
        let idle = DEFAULT_IDLE_TIMEOUT;
        assert_eq!(expiry(signed_in, abs, idle, at(14 * 60 + 59)), None);
        assert_eq!(expiry(signed_in, abs, idle, at(15 * 60)), Some(Expiry::Idle));
        // Activity moves the start of the idle period.
        assert_eq!(expiry(at(600), abs, idle, at(600 + 14 * 60 + 59)), None);
        assert_eq!(expiry(at(600), abs, idle, at(600 + 15 * 60)), Some(Expiry::Idle));
        // A microsecond before the timeout is still inside it.
        let just_before = signed_in.checked_add(idle - SignedDuration::from_micros(1)).unwrap();
        assert_eq!(expiry(signed_in, abs, idle, just_before), None);
    }

    #[test]
    fn the_absolute_lifetime_wins_over_activity() {
        let abs = at(0).checked_add(ABSOLUTE_LIFETIME).unwrap();
        let just_active = abs.checked_sub(SignedDuration::from_secs(1)).unwrap();
        assert_eq!(expiry(just_active, abs, DEFAULT_IDLE_TIMEOUT, just_active), None);
        assert_eq!(expiry(just_active, abs, DEFAULT_IDLE_TIMEOUT, abs), Some(Expiry::Absolute));
    }

    #[test]
    fn idle_timeouts_outside_one_minute_to_twelve_hours_are_refused() {
        assert_eq!(idle_timeout_from_minutes(15), Some(DEFAULT_IDLE_TIMEOUT));
        assert_eq!(idle_timeout_from_minutes(1), Some(MIN_IDLE_TIMEOUT));
        assert_eq!(idle_timeout_from_minutes(720), Some(MAX_IDLE_TIMEOUT));
        assert_eq!(idle_timeout_from_minutes(0), None);
        assert_eq!(idle_timeout_from_minutes(-5), None);
        assert_eq!(idle_timeout_from_minutes(721), None);
    }

    #[test]
    fn a_password_alone_never_makes_a_session_active() {
        assert_eq!(after_password(true, true), SessionState::PasswordChangeRequired);
        assert_eq!(after_password(true, false), SessionState::PasswordChangeRequired);
        assert_eq!(after_password(false, true), SessionState::MfaRequired);
        assert_eq!(after_password(false, false), SessionState::MfaEnrollmentRequired);
        assert_eq!(
            after_password_change(SessionState::PasswordChangeRequired, false),
            SessionState::MfaEnrollmentRequired
        );
        assert_eq!(after_password_change(SessionState::PasswordChangeRequired, true), SessionState::MfaRequired);
        assert_eq!(after_password_change(SessionState::Active, true), SessionState::Active);
    }

    #[test]
    fn step_up_lasts_just_under_five_minutes() {
        assert!(!step_up_fresh(None, at(0)));
        assert!(step_up_fresh(Some(at(0)), at(0)));
        assert!(step_up_fresh(Some(at(0)), at(4 * 60 + 59)));
        assert!(!step_up_fresh(Some(at(0)), at(5 * 60)));
        // A proof from the future (clock trouble) does not count.
        assert!(!step_up_fresh(Some(at(10)), at(0)));
    }

    #[test]
    fn five_failures_are_free_then_waits_double_up_to_fifteen_minutes() {
        let p = ThrottlePolicy::default();
        let mut t: Option<Throttle> = None;
        for i in 0..5 {
            assert_eq!(p.check(t.as_ref(), at(i)), Ok(()));
            t = Some(p.failure(t.as_ref(), at(i)));
        }
        assert_eq!(t.map(|t| t.locked_until), Some(None));
        let mut now = at(10);
        let mut waits = Vec::new();
        for _ in 0..14 {
            assert_eq!(p.check(t.as_ref(), now), Ok(()));
            let next = p.failure(t.as_ref(), now);
            let until = next.locked_until.unwrap();
            waits.push(until.duration_since(now).as_secs());
            assert_eq!(p.check(Some(&next), now), Err(until.duration_since(now)));
            now = until;
            t = Some(next);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900, 900]);
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_window() {
        let p = ThrottlePolicy::default();
        let mut t = None;
        for i in 0..5 {
            t = Some(p.failure(t.as_ref(), at(i)));
        }
        let later = at(4 + 15 * 60);
        let t = p.failure(t.as_ref(), later);
        assert_eq!((t.failures, t.locked_until), (1, None));
    }
}
