//! When to try a failed send again: exponential backoff with full jitter, a cap, and a
//! number of attempts after which the failure is final. Pure: the caller supplies the random
//! number and does the waiting on its own clock.

use std::time::Duration;

use serde::Deserialize;

use crate::channel::SendError;
use crate::error::NotifyError;

/// `[notify.retry]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// The ceiling of the first wait, in milliseconds; it doubles with every attempt. Default: 2000.
    pub base_ms: u64,
    /// The largest ceiling, in seconds. Default: 300 (five minutes).
    pub cap_secs: u64,
    /// Attempts in all, the first included; after the last the failure is final. Default: 8
    /// (seven waits, drawn at random below 2, 4, 8 … 128 s: at most about four minutes of
    /// waiting, unless a provider's `Retry-After` asks for longer).
    pub max_attempts: u32,
    /// The longest `Retry-After` a provider can impose, in seconds; a longer one is cut to
    /// this. Default: 900.
    pub max_retry_after_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { base_ms: 2_000, cap_secs: 300, max_attempts: 8, max_retry_after_secs: 900 }
    }
}

/// [`RetryConfig`], checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    base: Duration,
    cap: Duration,
    max_attempts: u32,
    max_retry_after: Duration,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a failure is retried or surfaced as final, never dropped"]
pub enum NextStep {
    /// Try again after this long.
    Retry { after: Duration },
    /// Stop: the failure is final. Record it in the delivery trace, count it, and move on to
    /// the recipient's next channel or escalation.
    GiveUp(GiveUp),
}

/// Why retrying stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The provider refused for good.
    Permanent,
    /// The push subscription is gone: delete it.
    Gone,
    /// Every attempt failed with a retryable error.
    Exhausted,
}

impl GiveUp {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUp::Permanent => "permanent",
            GiveUp::Gone => "gone",
            GiveUp::Exhausted => "attempts_exhausted",
        }
    }
}

impl RetryPolicy {
    pub fn new(config: &RetryConfig) -> Result<Self, NotifyError> {
        let bad = |field, problem| Err(NotifyError::Config { field, problem });
        if config.base_ms == 0 {
            return bad("notify.retry.base_ms", "must be at least 1");
        }
        if config.cap_secs.saturating_mul(1000) < config.base_ms {
            return bad("notify.retry.cap_secs", "must not be below base_ms");
        }
        if config.max_attempts == 0 {
            return bad("notify.retry.max_attempts", "must be at least 1");
        }
        Ok(Self {
            base: Duration::from_millis(config.base_ms),
            cap: Duration::from_secs(config.cap_secs),
            max_attempts: config.max_attempts,
            max_retry_after: Duration::from_secs(config.max_retry_after_secs),
        })
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The longest wait after attempt `attempt` (1 for the first): `base × 2^(attempt-1)`, at
    /// most the cap.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let ms = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX).saturating_mul(factor);
        Duration::from_millis(ms).min(self.cap)
    }

    /// The wait after attempt `attempt`, drawn uniformly from zero to the ceiling
    /// ("full jitter", so that many failed sends do not come back in step) by `random`.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(random % ceiling.saturating_add(1))
    }

    /// What to do after `attempts_made` attempts (the first is 1), the last of which failed
    /// with `error`. A provider's `Retry-After` is a floor for the wait.
    pub fn next(&self, attempts_made: u32, error: &SendError, random: u64) -> NextStep {
        match error {
            SendError::Permanent { .. } => NextStep::GiveUp(GiveUp::Permanent),
            SendError::Gone => NextStep::GiveUp(GiveUp::Gone),
            SendError::Retryable { .. } if attempts_made >= self.max_attempts => NextStep::GiveUp(GiveUp::Exhausted),
            SendError::Retryable { retry_after, .. } => {
                let jittered = self.delay(attempts_made, random);
                let floor = retry_after.map_or(Duration::ZERO, |r| r.min(self.max_retry_after));
                NextStep::Retry { after: jittered.max(floor) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Reason;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(&RetryConfig::default()).unwrap()
    }

    fn retryable(after: Option<u64>) -> SendError {
        SendError::Retryable { reason: Reason::fixed("x"), retry_after: after.map(Duration::from_secs) }
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let p = policy();
        let secs: Vec<u64> = (1..=10).map(|a| p.ceiling(a).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(p.ceiling(0), Duration::from_secs(2));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn delays_are_full_jitter_within_the_ceiling() {
        let p = policy();
        assert_eq!(p.delay(3, 0), Duration::ZERO);
        assert_eq!(p.delay(3, 8_000), Duration::from_secs(8));
        assert_eq!(p.delay(3, 8_001), Duration::ZERO);
        assert_eq!(p.delay(3, u64::MAX), Duration::from_millis(u64::MAX % 8_001));
        // A simple deterministic sequence covers the range.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let (mut low, mut high) = (false, false);
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = p.delay(5, x);
            assert!(d <= Duration::from_secs(32));
            low |= d < Duration::from_secs(4);
            high |= d > Duration::from_secs(28);
        }
        assert!(low && high);
    }

    #[test]
    fn retry_after_is_a_floor_within_its_own_cap() {
        let p = policy();
        assert_eq!(p.next(1, &retryable(Some(30)), 0), NextStep::Retry { after: Duration::from_secs(30) });
        assert_eq!(p.next(1, &retryable(Some(1)), 2_000), NextStep::Retry { after: Duration::from_secs(2) });
        assert_eq!(p.next(1, &retryable(Some(86_400)), 0), NextStep::Retry { after: Duration::from_secs(900) });
    }

    #[test]
    fn failures_end_final_never_silently() {
        let p = policy();
        assert_eq!(p.next(1, &SendError::permanent("x"), 0), NextStep::GiveUp(GiveUp::Permanent));
        assert_eq!(p.next(1, &SendError::Gone, 0), NextStep::GiveUp(GiveUp::Gone));
        for attempt in 1..8 {
            assert!(matches!(p.next(attempt, &retryable(None), 7), NextStep::Retry { .. }));
        }
        assert_eq!(p.next(8, &retryable(None), 7), NextStep::GiveUp(GiveUp::Exhausted));
        assert_eq!(p.next(9, &retryable(None), 7), NextStep::GiveUp(GiveUp::Exhausted));
    }

    #[test]
    fn config_is_checked() {
        let bad = |c: RetryConfig| RetryPolicy::new(&c).is_err();
        assert!(bad(RetryConfig { base_ms: 0, ..RetryConfig::default() }));
        assert!(bad(RetryConfig { max_attempts: 0, ..RetryConfig::default() }));
        assert!(bad(RetryConfig { base_ms: 10_000, cap_secs: 5, ..RetryConfig::default() }));
        let one = RetryPolicy::new(&RetryConfig { max_attempts: 1, ..RetryConfig::default() }).unwrap();
        assert_eq!(one.next(1, &retryable(None), 0), NextStep::GiveUp(GiveUp::Exhausted));
    }
}
