//! What the proxy reports: its metrics and the access log.

pub(crate) mod access_log;
pub mod metrics;
