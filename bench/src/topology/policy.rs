//! The one set of resilience settings every proxy in the benchmark is given, so that each pays for
//! the same features: a request timeout, retries with a budget, a circuit breaker and outlier
//! ejection (Weft's mesh file, Envoy's route and cluster, linkerd2-proxy's route and backend).
//! Nothing fails in a clean run, so these only cost what checking them costs.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub timeout: Duration,
    pub max_retries: u32,
    pub per_try_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub budget_ratio: f64,
    pub budget_min_per_second: u32,
    pub max_connections: u32,
    pub max_requests: u32,
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
}

pub const POLICY: Policy = Policy {
    timeout: Duration::from_secs(5),
    max_retries: 2,
    per_try_timeout: Duration::from_secs(2),
    backoff_base: Duration::from_millis(25),
    backoff_max: Duration::from_millis(250),
    budget_ratio: 0.2,
    budget_min_per_second: 10,
    max_connections: 1024,
    max_requests: 1024,
    consecutive_failures: 5,
    base_ejection: Duration::from_secs(30),
    max_ejection: Duration::from_secs(300),
    max_ejected_percent: 50,
};

/// Seconds as Envoy and YAML durations want them ("0.025s").
pub fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Milliseconds as Weft's mesh file wants them ("25ms").
pub fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}
