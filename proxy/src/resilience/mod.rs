//! Resilience mechanisms, each testable alone with paused tokio time: the retry budget, backoff,
//! the circuit breaker and outlier ejection.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod outlier;
