//! Telemetry shared by the proxy and the controller: a Prometheus metrics registry, logging with a
//! runtime-adjustable level, a small admin HTTP server, and handing freed memory back.
// One call into the allocator (`memory::trim`) is the only unsafe code, allowed where it is.
#![deny(unsafe_code)]

pub mod admin;
pub mod log_limit;
pub mod logging;
pub mod memory;
pub mod metrics;

pub use metrics::{Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramVec, Registry};
