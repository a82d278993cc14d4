//! Weft's benchmark: open-loop load with coordinated-omission correction, topologies (no proxy, a
//! bare TLS floor, Weft, Envoy, linkerd2-proxy), resource sampling and reports.
#![forbid(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod control_plane;
pub mod load;
pub mod netns;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod procs;
pub mod progress;
pub mod relay;
pub mod report;
pub mod resources;
pub mod runner;
pub mod session;
pub mod standin;
pub mod topology;
