//! Telemetry shared by the proxy and the controller: a Prometheus metrics registry, logging with a
//! runtime-adjustable level, and a small admin HTTP server.
#![forbid(unsafe_code)]

pub mod admin;
pub mod log_limit;
pub mod logging;
pub mod metrics;

pub use metrics::{Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramVec, Registry};
