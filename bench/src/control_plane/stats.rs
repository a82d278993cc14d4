//! Percentiles over the proxies that had to see something, in milliseconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Proxies that saw it in time.
    pub count: usize,
    /// Proxies that had to.
    pub expected: usize,
}

impl Latency {
    pub fn of(samples: &[Duration], expected: usize) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if ms.is_empty() {
                return 0.0;
            }
            let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
            round(ms[rank - 1])
        };
        Self { p50: pick(0.50), p99: pick(0.99), max: pick(1.0), count: ms.len(), expected }
    }

    pub fn complete(&self) -> bool {
        self.count == self.expected
    }
}

/// Microsecond precision is plenty for figures in milliseconds.
pub fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let s: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = Latency::of(&s, 100);
        assert_eq!((l.p50, l.p99, l.max, l.count), (50.0, 99.0, 100.0, 100));
        assert!(l.complete());
        let one = Latency::of(&[Duration::from_micros(1500)], 2);
        assert_eq!((one.p50, one.p99, one.max), (1.5, 1.5, 1.5));
        assert!(!one.complete());
        assert_eq!(Latency::of(&[], 0).max, 0.0);
    }
}
