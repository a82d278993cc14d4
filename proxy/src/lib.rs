//! The Weft sidecar proxy: mTLS between workloads, discovery and policy from the controller,
//! request-level load balancing, retries with budgets, deadlines, circuit breaking, metrics.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod app_probe;
pub mod args;
pub mod await_cmd;
pub mod balance;
pub mod config;
pub mod context;
pub mod control;
pub mod detect;
pub mod http;
pub mod inbound;
pub mod init;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod pool;
pub mod probe;
pub mod resilience;
pub mod run;
pub mod serve;
pub mod tcp;
pub mod transparent;
pub mod upgrade;
pub mod view;
