//! The pacing thread: releases request slots at fixed intervals from an OS thread (tokio's timers
//! have millisecond granularity), sleeping until just before each slot and spinning the rest, so
//! that slots are on time to a few microseconds when the machine lets us run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

/// The part of each wait spent spinning instead of sleeping: covers the kernel's timer slack.
pub const SPIN: Duration = Duration::from_micros(80);

/// A request slot: its sequence number and the instant it should be sent.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    pub seq: u64,
    pub intended: Instant,
}

/// The schedule: `count` slots `interval` apart from `start`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub interval: Duration,
    pub count: u64,
}

impl Schedule {
    /// Slots for `rate` per second over `length`, starting at `start`.
    pub fn at_rate(start: Instant, rate: f64, length: Duration) -> Self {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        let count = (rate * length.as_secs_f64()).round() as u64;
        Self { start, interval: Duration::from_secs_f64(1.0 / rate), count }
    }

    pub fn intended(&self, seq: u64) -> Instant {
        // Computed from the start each time (never by adding up intervals), so rounding never drifts.
        self.start + Duration::from_secs_f64(self.interval.as_secs_f64() * seq as f64)
    }
}

/// What the pacer observed about itself: how late it released slots.
#[derive(Debug, Default, Clone, Copy)]
pub struct PacerStats {
    pub released: u64,
    pub max_late: Duration,
    /// Slots released more than 1 ms late (the thread was not scheduled in time).
    pub late_over_1ms: u64,
}

/// Sleeps then spins until `t`.
pub fn pace_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Starts the pacing thread. It stops at the end of the schedule, when `stop` is set, or when the
/// receiver is gone.
pub fn spawn(schedule: Schedule, tx: UnboundedSender<Tick>, stop: Arc<AtomicBool>) -> JoinHandle<PacerStats> {
    std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            let mut stats = PacerStats::default();
            for seq in 0..schedule.count {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let intended = schedule.intended(seq);
                pace_until(intended);
                let late = Instant::now().saturating_duration_since(intended);
                stats.max_late = stats.max_late.max(late);
                if late > Duration::from_millis(1) {
                    stats.late_over_1ms += 1;
                }
                if tx.send(Tick { seq, intended }).is_err() {
                    break;
                }
                stats.released += 1;
            }
            stats
        })
        .expect("pacer thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_counts_and_spaces_slots_without_drift() {
        let t0 = Instant::now();
        let s = Schedule::at_rate(t0, 1000.0, Duration::from_secs(5));
        assert_eq!(s.count, 5000);
        assert_eq!(s.interval, Duration::from_millis(1));
        assert_eq!(s.intended(0), t0);
        assert_eq!(s.intended(4999) - t0, Duration::from_millis(4999));
        let s = Schedule::at_rate(t0, 3.0, Duration::from_secs(1));
        assert_eq!(s.count, 3);
        let third = s.intended(3) - t0;
        assert!(third.abs_diff(Duration::from_secs(1)) < Duration::from_micros(1), "{third:?}");
    }

    #[test]
    fn pacer_releases_every_slot_in_order_and_on_time() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let start = Instant::now() + Duration::from_millis(5);
        let s = Schedule::at_rate(start, 2000.0, Duration::from_millis(200));
        let h = spawn(s, tx, Arc::new(AtomicBool::new(false)));
        let stats = h.join().unwrap();
        assert_eq!(stats.released, 400);
        let mut seqs = vec![];
        while let Ok(t) = rx.try_recv() {
            assert_eq!(t.intended, s.intended(t.seq));
            seqs.push(t.seq);
        }
        assert_eq!(seqs, (0..400).collect::<Vec<_>>());
        // The whole schedule took its nominal length (generous margin: 2 shared cores).
        assert!(Instant::now() >= s.intended(399));
        assert!(Instant::now() < s.intended(399) + Duration::from_millis(500));
    }
}
