//! Outlier ejection per endpoint: N consecutive failures eject it for `base × times ejected`
//! (capped); when its time is up it returns on probation and stays only if its next request
//! succeeds — one more failure ejects it again, for longer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::time::{Duration, Instant};

use crate::state::policy::OutlierConfig;

/// Two flags keep the per-request path lock-free in the common case (a healthy endpoint):
/// `ejected` mirrors whether an ejection is set, `quiet` whether there is nothing to reset on a
/// success.
#[derive(Debug)]
pub struct OutlierState {
    inner: Mutex<Inner>,
    ejected: AtomicBool,
    quiet: AtomicBool,
}

impl Default for OutlierState {
    fn default() -> Self {
        Self { inner: Mutex::default(), ejected: AtomicBool::new(false), quiet: AtomicBool::new(true) }
    }
}

#[derive(Debug, Default)]
struct Inner {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
    probation: bool,
}

/// What a failure did.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Counted,
    Ejected(Duration),
}

impl OutlierState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the endpoint may take traffic now.
    pub fn available(&self, now: Instant) -> bool {
        if !self.ejected.load(Ordering::Acquire) {
            return true;
        }
        let mut s = self.lock();
        match s.ejected_until {
            Some(t) if now < t => false,
            Some(_) => {
                s.ejected_until = None;
                s.probation = true;
                self.quiet.store(false, Ordering::Release);
                self.ejected.store(false, Ordering::Release);
                true
            }
            None => true,
        }
    }

    /// Whether an ejection has been recorded at all (cheap; its time may be up).
    pub fn maybe_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.maybe_ejected() && self.lock().ejected_until.is_some_and(|t| now < t)
    }

    pub fn on_success(&self) {
        if self.quiet.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.lock();
        s.consecutive_failures = 0;
        if s.probation {
            s.probation = false;
            s.times_ejected = s.times_ejected.saturating_sub(1);
        }
        self.quiet.store(true, Ordering::Release);
    }

    /// Records a failure; ejects when the threshold is reached (or on probation) and
    /// `may_eject` (the share of ejected endpoints is below the cap) says so. The caller works that
    /// out beforehand: it reads every endpoint's state, this one's included.
    pub fn on_failure(&self, cfg: &OutlierConfig, now: Instant, may_eject: bool) -> Verdict {
        if !cfg.enabled {
            return Verdict::Counted;
        }
        let mut s = self.lock();
        if s.ejected_until.is_some_and(|t| now < t) {
            return Verdict::Counted;
        }
        s.consecutive_failures += 1;
        self.quiet.store(false, Ordering::Release);
        if (s.probation || s.consecutive_failures >= cfg.consecutive_failures) && may_eject {
            s.times_ejected = s.times_ejected.saturating_add(1);
            let d = cfg.base_ejection.saturating_mul(s.times_ejected).min(cfg.max_ejection);
            s.ejected_until = Some(now + d);
            self.ejected.store(true, Ordering::Release);
            s.consecutive_failures = 0;
            s.probation = false;
            return Verdict::Ejected(d);
        }
        Verdict::Counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            enabled: true,
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_n_consecutive_failures_for_base_times_count() {
        let o = OutlierState::default();
        let c = cfg();
        let now = Instant::now();
        assert_eq!(o.on_failure(&c, now, true), Verdict::Counted);
        o.on_success();
        assert_eq!(o.on_failure(&c, now, true), Verdict::Counted);
        assert_eq!(o.on_failure(&c, now, true), Verdict::Counted);
        assert_eq!(o.on_failure(&c, now, true), Verdict::Ejected(Duration::from_secs(30)));
        assert!(!o.available(Instant::now()));
        tokio::time::advance(Duration::from_secs(30)).await;
        // Back on probation: one failure ejects again, for twice as long.
        assert!(o.available(Instant::now()));
        assert_eq!(o.on_failure(&c, Instant::now(), true), Verdict::Ejected(Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(o.available(Instant::now()));
        // A success on probation keeps it in.
        o.on_success();
        assert_eq!(o.on_failure(&c, Instant::now(), true), Verdict::Counted);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_is_capped_and_can_be_refused() {
        let o = OutlierState::default();
        let c = OutlierConfig { consecutive_failures: 1, max_ejection: Duration::from_secs(45), ..cfg() };
        for expected in [30, 45, 45] {
            assert_eq!(o.on_failure(&c, Instant::now(), true), Verdict::Ejected(Duration::from_secs(expected)));
            tokio::time::advance(Duration::from_secs(expected)).await;
            assert!(o.available(Instant::now()));
        }
        // When too many endpoints are out already, it stays in.
        let fresh = OutlierState::default();
        assert_eq!(fresh.on_failure(&c, Instant::now(), false), Verdict::Counted);
        assert!(fresh.available(Instant::now()));
    }
}
