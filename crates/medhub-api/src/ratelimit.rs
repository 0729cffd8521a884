//! A per-connection token bucket for client frames.

use std::time::Instant;

/// `rate` tokens per second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f32,
    burst: f32,
    tokens: f32,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = burst.max(1) as f32;
        Self { rate: rate as f32, burst, tokens: burst, last: now }
    }

    /// Takes one token if available.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        assert_eq!((0..8).filter(|_| b.take(t0)).count(), 5, "the burst");
        assert!(!b.take(t0));
        // 10/s refills one token per 100 ms.
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(120)));
        // Idle time never saves more than the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| b.take(later)).count(), 5);
    }
}
