//! Helpers for Weft's end-to-end tests: starting the real binaries, small test applications, and
//! reading metrics.
#![forbid(unsafe_code)]

pub mod apps;
pub mod attack;
pub mod harness;
pub mod kube_api;
pub mod kubelet;
pub mod netns;
pub mod webhook_client;
