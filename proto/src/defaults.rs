//! The contract's policy defaults, in one place both planes import: what an absent section of the
//! mesh file means (the controller fills them in) and what a proxy assumes before it holds a policy.

use crate::v1 as pb;

/// Linkerd's retry budget: retries up to 20 % of requests plus 10 per second, over a 10 s window.
pub fn retry_budget() -> pb::RetryBudget {
    pb::RetryBudget { ratio: 0.2, min_per_second: 10, window_ms: 10_000 }
}

/// Retries after the first attempt when `retries` names no `max_retries` (Envoy's `num_retries`).
pub const MAX_RETRIES: u32 = 1;
/// Full-jitter backoff bounds when `retries` names none (Envoy's).
pub const BACKOFF_BASE_MS: u64 = 25;
pub const BACKOFF_MAX_MS: u64 = 250;
/// The conditions retried when `retries` names none.
pub const RETRY_ON: &[&str] = &["5xx", "reset", "connect-failure", "refused-stream"];

/// Envoy's per-upstream limits, with outlier ejection on.
pub fn circuit_breaker() -> pb::CircuitBreaker {
    pb::CircuitBreaker {
        max_connections: 1024,
        max_requests: 1024,
        max_pending: 0,
        max_concurrent_retries: 3,
        outlier: Some(outlier()),
    }
}

/// Ejection after 5 consecutive failures, for 30 s × times ejected (at most 300 s), at most half
/// of the endpoints at once.
pub fn outlier() -> pb::Outlier {
    pb::Outlier {
        enabled: true,
        consecutive_failures: 5,
        base_ejection_ms: 30_000,
        max_ejection_ms: 300_000,
        max_ejected_percent: 50,
    }
}
