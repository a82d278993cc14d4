//! The proxy's validated startup configuration (from flags and environment).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use weft_proto::duration::parse_duration;

/// A local listener through which the app reaches one service.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The service, `NS/NAME` (a bare `NAME` on the command line is in the proxy's namespace).
    pub service: String,
    pub listen: SocketAddr,
}

/// A kubelet probe the admin port answers for the app (`--app-probe`), so that probes keep working
/// when the app's ports only take mTLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppProbe {
    /// `http:PORT/PATH`: a GET of PATH on the app's PORT.
    Http { port: u16, path: String },
    /// `tcp:PORT`: a TCP connect to the app's PORT.
    Tcp { port: u16 },
}

impl AppProbe {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected http:PORT/PATH or tcp:PORT");
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        if let Some(rest) = s.strip_prefix("http:") {
            let (p, path) = rest.split_at(rest.find('/').ok_or_else(bad)?);
            if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(bad());
            }
            return Ok(AppProbe::Http { port: port(p)?, path: path.to_string() });
        }
        if let Some(p) = s.strip_prefix("tcp:") {
            return Ok(AppProbe::Tcp { port: port(p)? });
        }
        Err(bad())
    }
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
    /// The join token (universal mode); None when only an identity token is given.
    pub token_file: Option<PathBuf>,
    /// A projected service-account token (Kubernetes), presented when there is no join token.
    pub identity_token_file: Option<PathBuf>,
    pub service: String,
    pub namespace: String,
    /// This workload's service, `NS/NAME`: the name of its own policy.
    pub own_service: String,
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
    /// Serve `/config`, `/log-level` and `POST /shutdown` to non-loopback callers too.
    pub admin_open: bool,
    pub app_probes: Vec<AppProbe>,
    /// Ports read as opaque TCP besides `weft_proto::contract::OPAQUE_PORTS` (`--opaque-ports`).
    pub opaque_ports: Vec<u16>,
    /// Requests from peers being served at once, at most (beyond: 503 overloaded).
    pub max_inbound_requests: usize,
    /// An HTTP connection with no request in progress for this long is closed (zero: never).
    pub idle_timeout: Duration,
    /// A request body that moves no byte for this long fails (zero: never).
    pub stream_idle_timeout: Duration,
}
