//! Per-session token bucket. Pure: the caller passes the time, so the refill rule is testable
//! without sleeping.

use std::time::{Duration, Instant};

/// Holds up to `burst` tokens, refilled at `per_sec` tokens a second; each frame takes one.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    /// Tokens are counted in thousandths so that refilling is integer math.
    millitokens: u64,
    capacity_millitokens: u64,
    per_sec: u64,
    last_refill: Instant,
}

impl TokenBucket {
    /// A full bucket. `per_sec == 0` disables limiting; `burst` is at least 1.
    pub(crate) fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        let capacity_millitokens = u64::from(burst.max(1)) * 1000;
        Self {
            millitokens: capacity_millitokens,
            capacity_millitokens,
            per_sec: u64::from(per_sec),
            last_refill: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        // Refill by whole elapsed milliseconds (rate x ms = millitokens, exact in integers) and
        // move the clock by exactly that much, so sub-millisecond remainders are not lost.
        let elapsed_ms = u64::try_from(now.saturating_duration_since(self.last_refill).as_millis())
            .unwrap_or(u64::MAX);
        if elapsed_ms > 0 {
            let earned = elapsed_ms.saturating_mul(self.per_sec);
            self.millitokens = self
                .millitokens
                .saturating_add(earned)
                .min(self.capacity_millitokens);
            self.last_refill += Duration::from_millis(elapsed_ms);
        }
        if self.millitokens >= 1000 {
            self.millitokens -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        assert!((0..3).all(|_| bucket.try_take(start)));
        assert!(!bucket.try_take(start));
        // 10 per second: one token every 100 ms.
        assert!(!bucket.try_take(start + Duration::from_millis(99)));
        assert!(bucket.try_take(start + Duration::from_millis(100)));
        assert!(!bucket.try_take(start + Duration::from_millis(150)));
        assert!(bucket.try_take(start + Duration::from_millis(200)));
    }

    #[test]
    fn refill_stops_at_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 2, start);
        let later = start + Duration::from_secs(60);
        assert!(bucket.try_take(later));
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(0, 1, now);
        assert!((0..10_000).all(|_| bucket.try_take(now)));
    }
}
