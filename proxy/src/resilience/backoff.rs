//! Exponential backoff with full jitter: each wait is uniform in `[0, min(max, base × 2^n)]`, so
//! that many clients retrying at once spread out instead of synchronising.

use std::time::Duration;

/// The full-jitter wait before retry number `attempt` (0-based), given a uniform `rand01`.
pub fn full_jitter(base: Duration, max: Duration, attempt: u32, rand01: f64) -> Duration {
    let cap = base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX)).min(max);
    cap.mul_f64(rand01.clamp(0.0, 1.0))
}

/// A reconnect backoff that doubles from `base` to `max` and resets on success.
#[derive(Debug, Clone)]
pub struct ExpBackoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl ExpBackoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, attempt: 0 }
    }

    /// The next wait: half fixed, half jittered, so waits still grow while never synchronising.
    pub fn next_wait(&mut self) -> Duration {
        let cap = self.base.saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        cap / 2 + cap.mul_f64(rand::random::<f64>() / 2.0)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_is_bounded_by_the_exponential_cap() {
        let (b, m) = (Duration::from_millis(25), Duration::from_millis(250));
        assert_eq!(full_jitter(b, m, 0, 1.0), Duration::from_millis(25));
        assert_eq!(full_jitter(b, m, 2, 1.0), Duration::from_millis(100));
        assert_eq!(full_jitter(b, m, 10, 1.0), Duration::from_millis(250));
        assert_eq!(full_jitter(b, m, 3, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(b, m, 40, 0.5), Duration::from_millis(125));
    }

    #[test]
    fn reconnect_backoff_doubles_to_its_cap_and_resets() {
        let mut b = ExpBackoff::new(Duration::from_millis(10), Duration::from_secs(15));
        let waits: Vec<_> = (0..15).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(5) && waits[0] <= Duration::from_millis(10));
        assert!(waits[3] >= Duration::from_millis(40) && waits[3] <= Duration::from_millis(80));
        assert!(waits[14] >= Duration::from_millis(7500) && waits[14] <= Duration::from_secs(15));
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(10));
    }
}
