//! The retry budget (Linkerd's and tower's `TpsBudget`): over a sliding window, retries may use a
//! standing reserve of `min_per_second × window` plus `ratio` × the requests made. A retry takes
//! its share when it is decided, before its backoff, so retries waiting in backoff count.

use std::collections::VecDeque;
use std::sync::Mutex;

#[cfg(test)]
use tokio::time::Duration;
use tokio::time::Instant;

use crate::state::policy::BudgetConfig;

const SLOTS: u32 = 10;

#[derive(Debug)]
pub struct RetryBudget {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    config: BudgetConfig,
    /// (slot start, requests, retries), oldest first.
    slots: VecDeque<(Instant, u64, u64)>,
}

impl RetryBudget {
    pub fn new(config: BudgetConfig) -> Self {
        Self { state: Mutex::new(State { config, slots: VecDeque::new() }) }
    }

    fn with<R>(&self, config: &BudgetConfig, now: Instant, f: impl FnOnce(&mut State) -> R) -> R {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.config != *config {
            // A new policy starts a new account.
            s.config = *config;
            s.slots.clear();
        }
        let window = s.config.window;
        while s.slots.front().is_some_and(|(start, _, _)| now.duration_since(*start) >= window) {
            s.slots.pop_front();
        }
        let slot_len = window / SLOTS;
        if s.slots.back().is_none_or(|(start, _, _)| now.duration_since(*start) >= slot_len) {
            s.slots.push_back((now, 0, 0));
        }
        f(&mut s)
    }

    /// Records a request (an original attempt).
    pub fn deposit(&self, config: &BudgetConfig, now: Instant) {
        self.with(config, now, |s| {
            if let Some(last) = s.slots.back_mut() {
                last.1 += 1;
            }
        });
    }

    /// Takes one retry from the budget if it allows one.
    pub fn try_withdraw(&self, config: &BudgetConfig, now: Instant) -> bool {
        self.with(config, now, |s| {
            let (requests, retries) = s.slots.iter().fold((0u64, 0u64), |(a, b), (_, r, t)| (a + r, b + t));
            let reserve = f64::from(s.config.min_per_second) * s.config.window.as_secs_f64();
            let allowed = reserve + s.config.ratio * requests as f64;
            if (retries as f64) + 1.0 <= allowed + 1e-9 {
                if let Some(last) = s.slots.back_mut() {
                    last.2 += 1;
                }
                true
            } else {
                false
            }
        })
    }
}

/// The most attempts a backend can see over `t` at `rate` req/s when every attempt fails: the
/// contract's bound, which the tests hold the budget to.
#[cfg(test)]
pub fn max_attempts(rate: f64, t: Duration, cfg: &BudgetConfig) -> f64 {
    let secs = t.as_secs_f64();
    let windows = (secs / cfg.window.as_secs_f64()).ceil();
    rate * secs * (1.0 + cfg.ratio) + f64::from(cfg.min_per_second) * cfg.window.as_secs_f64() * windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ratio: f64, min: u32) -> BudgetConfig {
        BudgetConfig { ratio, min_per_second: min, window: Duration::from_secs(10) }
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_alone_allows_min_per_second_times_window() {
        let c = cfg(0.2, 10);
        let b = RetryBudget::new(c);
        let now = Instant::now();
        let granted = (0..1000).filter(|_| b.try_withdraw(&c, now)).count();
        assert_eq!(granted, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_add_ratio_of_themselves() {
        let c = cfg(0.2, 0);
        let b = RetryBudget::new(c);
        let now = Instant::now();
        for _ in 0..100 {
            b.deposit(&c, now);
        }
        let granted = (0..1000).filter(|_| b.try_withdraw(&c, now)).count();
        assert_eq!(granted, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides() {
        let c = cfg(0.0, 1);
        let b = RetryBudget::new(c);
        let now = Instant::now();
        assert_eq!((0..100).filter(|_| b.try_withdraw(&c, now)).count(), 10);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.try_withdraw(&c, Instant::now()), "still inside the window");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!((0..100).filter(|_| b.try_withdraw(&c, Instant::now())).count(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_backend_sees_at_most_the_contract_bound() {
        // R = 50 req/s for T = 30 s, every attempt fails, unlimited retries per request.
        let c = cfg(0.2, 10);
        let b = RetryBudget::new(c);
        let (rate, secs) = (50u64, 30u64);
        let mut attempts = 0u64;
        for _ in 0..rate * secs {
            let now = Instant::now();
            b.deposit(&c, now);
            attempts += 1;
            while b.try_withdraw(&c, now) {
                attempts += 1;
            }
            tokio::time::advance(Duration::from_millis(1000 / rate)).await;
        }
        let bound = max_attempts(rate as f64, Duration::from_secs(secs), &c);
        assert!(attempts as f64 <= bound, "{attempts} > {bound}");
        assert!(attempts as f64 >= (rate * secs) as f64 * 1.15, "the budget should be used: {attempts}");
    }
}
