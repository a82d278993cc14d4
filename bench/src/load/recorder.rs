//! What a load run measured: HdrHistograms (microseconds) of latency from the *intended* send time
//! (coordinated-omission corrected) and from the actual send time (uncorrected), successes, errors
//! by kind, slots never sent, and the summary the reports are made of.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histograms hold (longer ones are clamped): far beyond any request timeout.
const MAX_US: u64 = 120_000_000;
/// Error details kept verbatim for the report (the rest are only counted).
const KEPT_ERRORS: usize = 5;

/// Latency percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// The result of one load run, as the load process reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadSummary {
    pub target_rate: f64,
    pub connections: usize,
    pub protocol: String,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Successful requests scheduled in the measured window (their latencies are the histograms).
    pub requests: u64,
    /// Successful requests scheduled during warm-up (not in the histograms).
    pub warmup_requests: u64,
    /// Successes completed inside the measured window, per second of it: the achieved rate.
    pub actual_qps: f64,
    /// Failed requests of every kind (non-2xx, transport errors, timeouts, short bodies), warm-up included.
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub first_errors: Vec<String>,
    /// Slots the generator could not send before the end of the run (the target could not keep up).
    pub unsent: u64,
    pub corrected: Latency,
    pub uncorrected: Latency,
    /// How late the pacing thread released its slots (diagnostic: the generator's own health).
    pub pacer_max_late_us: u64,
    pub pacer_late_over_1ms: u64,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
}

/// Collects one run's measurements.
pub struct Recorder {
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
    measure_start: Instant,
    measure_end: Instant,
    requests: u64,
    warmup_requests: u64,
    completed_in_window: u64,
    errors: BTreeMap<String, u64>,
    first_errors: Vec<String>,
    unsent: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Recorder {
    pub fn new(measure_start: Instant, measure_end: Instant) -> Self {
        let h = || Histogram::new_with_bounds(1, MAX_US, 3).expect("histogram bounds");
        Self {
            corrected: h(),
            uncorrected: h(),
            measure_start,
            measure_end,
            requests: 0,
            warmup_requests: 0,
            completed_in_window: 0,
            errors: BTreeMap::new(),
            first_errors: vec![],
            unsent: 0,
        }
    }

    /// A successful request: scheduled at `intended`, written at `sent`, answered at `done`.
    pub fn success(&mut self, intended: Instant, sent: Instant, done: Instant) {
        if done >= self.measure_start && done <= self.measure_end {
            self.completed_in_window += 1;
        }
        if intended < self.measure_start {
            self.warmup_requests += 1;
            return;
        }
        self.requests += 1;
        self.corrected.saturating_record(micros(done.saturating_duration_since(intended)));
        self.uncorrected.saturating_record(micros(done.saturating_duration_since(sent)));
    }

    pub fn error(&mut self, kind: &str, detail: impl Into<String>) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
        if self.first_errors.len() < KEPT_ERRORS {
            self.first_errors.push(format!("{kind}: {}", detail.into()));
        }
    }

    pub fn unsent(&mut self) {
        self.unsent += 1;
    }

    pub fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The summary; `rate`, `connections`, `protocol`, times and pacer figures are filled by the caller.
    pub fn summary(&self) -> LoadSummary {
        let window = self.measure_end.saturating_duration_since(self.measure_start).as_secs_f64();
        LoadSummary {
            requests: self.requests,
            warmup_requests: self.warmup_requests,
            actual_qps: if window > 0.0 { self.completed_in_window as f64 / window } else { 0.0 },
            errors: self.errors(),
            errors_by_kind: self.errors.clone(),
            first_errors: self.first_errors.clone(),
            unsent: self.unsent,
            corrected: Latency::of(&self.corrected),
            uncorrected: Latency::of(&self.uncorrected),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn latency_is_timed_from_the_intended_send_and_from_the_actual_send() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, t0 + ms(10_000));
        // 90 requests on time answering in 1 ms; 10 that had to wait 500 ms for a connection, then
        // answered in 1 ms.
        for i in 0..90 {
            let at = t0 + ms(i);
            r.success(at, at, at + ms(1));
        }
        for i in 0..10 {
            let at = t0 + ms(100 + i);
            r.success(at, at + ms(500), at + ms(501));
        }
        let s = r.summary();
        assert_eq!(s.requests, 100);
        // hdrhistogram reports the highest value equivalent to the percentile's bucket (3 digits).
        assert!((1000..=1001).contains(&s.uncorrected.p99_us), "{:?}", s.uncorrected);
        assert!((1000..=1001).contains(&s.corrected.p50_us), "{:?}", s.corrected);
        assert!((501_000..=501_500).contains(&s.corrected.p99_us), "{:?}", s.corrected);
        assert!((500_500..=501_500).contains(&s.corrected.max_us), "{:?}", s.corrected);
        assert!((s.corrected.mean_us - (90.0 * 1000.0 + 10.0 * 501_000.0) / 100.0).abs() < 600.0);
    }

    #[test]
    fn warmup_is_not_measured_but_counts_towards_throughput_in_the_window() {
        let t0 = Instant::now();
        let (start, end) = (t0 + ms(1000), t0 + ms(2000));
        let mut r = Recorder::new(start, end);
        // Scheduled in warm-up, completed in the window: throughput yes, latency no.
        r.success(t0 + ms(999), t0 + ms(999), t0 + ms(1001));
        // Measured, completed in the window.
        for i in 0..9 {
            let at = start + ms(10 * i);
            r.success(at, at, at + ms(1));
        }
        // Measured, completed after the window (a backlog): latency yes, throughput no.
        r.success(end - ms(1), end - ms(1), end + ms(5));
        let s = r.summary();
        assert_eq!(s.warmup_requests, 1);
        assert_eq!(s.requests, 10);
        assert!((s.actual_qps - 10.0).abs() < 1e-9, "{}", s.actual_qps);
    }

    #[test]
    fn errors_are_counted_by_kind_and_a_few_are_kept() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, t0 + ms(1));
        for i in 0..7 {
            r.error("status 503", format!("request {i}"));
        }
        r.error("timeout", "no answer in 10s");
        let s = r.summary();
        assert_eq!(s.errors, 8);
        assert_eq!(s.errors_by_kind["status 503"], 7);
        assert_eq!(s.first_errors.len(), 5);
        assert_eq!(s.first_errors[0], "status 503: request 0");
    }
}
