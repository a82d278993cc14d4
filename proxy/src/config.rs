//! The proxy's validated startup configuration (from flags and environment).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use weft_proto::duration::parse_duration;

#[derive(Clone, Debug)]
pub struct Upstream {
    pub service: String,
    pub listen: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Json,
}

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub controller_host: String,
    pub controller_port: u16,
    pub trust_anchor_pem: Vec<u8>,
    pub token_file: PathBuf,
    pub service: String,
    pub namespace: String,
    pub version: String,
    pub instance: String,
    pub app: Option<SocketAddr>,
    pub inbound: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub upstreams: Vec<Upstream>,
    pub transparent: bool,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    pub workers: usize,
    pub max_header_bytes: usize,
    pub detect_timeout: Duration,
    pub header_read_timeout: Duration,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
    pub access_log: AccessLog,
}
