//! End-to-end tests: the real `weft`, `weft-controller` and `weft-proxy` binaries, real TLS, test
//! applications in this process. One test binary (one link) with a module per area.

mod bench;
mod compose;
mod control_plane_bench;
mod core;
mod kubernetes;
mod playground;
mod resilience;
mod security;
mod transparent;
