//! The Weft sidecar proxy: mTLS between workloads, discovery and policy from the controller,
//! request-level load balancing, retries with budgets, deadlines, circuit breaking, metrics.
// No unsafe code here: the one allocator call (malloc_trim) is `weft_telemetry::memory`'s.
#![forbid(unsafe_code)]

pub mod admin;
pub(crate) mod attempt;
pub(crate) mod classify;
pub mod cli;
pub mod config;
pub(crate) mod context;
pub(crate) mod control;
/// The fuzz targets' checks (`fuzz/`), replayed over their corpora by the ordinary tests.
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod http;
pub(crate) mod inbound;
pub(crate) mod net;
pub(crate) mod outbound;
pub(crate) mod resilience;
pub(crate) mod respond;
pub(crate) mod route;
pub mod run;
pub(crate) mod state;
pub(crate) mod telemetry;
