//! The control-plane API (discovery and identity) and the demo echo service, generated from `proto/`.
#![forbid(unsafe_code)]

/// The control-plane API.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("weft.v1");
}

/// The demo echo service (tests, playground, benchmark).
#[allow(clippy::all, missing_docs)]
pub mod demo {
    tonic::include_proto!("weft.demo.v1");
}

pub mod codec;
pub mod contract;
pub mod defaults;
pub mod duration;

/// Type URLs of the discovery resource types.
pub mod types {
    pub const SERVICE: &str = "type.weft.dev/weft.v1.ServicePolicy";
    pub const ENDPOINTS: &str = "type.weft.dev/weft.v1.EndpointSet";
    pub const DIRECTORY: &str = "type.weft.dev/weft.v1.Directory";
    /// Every type, in the order a proxy needs them: endpoints before the policies that use them
    /// ("make before break").
    pub const ALL: [&str; 3] = [ENDPOINTS, SERVICE, DIRECTORY];
}
