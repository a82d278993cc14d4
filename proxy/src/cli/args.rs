//! Command-line flags (each with a `WEFT_PROXY_*` environment twin) and their validation into a
//! [`ProxyConfig`], reporting every problem at once.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{parse_duration, AccessLog, AppProbe, ProxyConfig, Upstream};

#[derive(Parser, Debug)]
#[command(name = "weft-proxy", about = "The Weft sidecar proxy", args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Install the iptables rules that send this network namespace's TCP through the proxy.
    Init(crate::cli::init::InitArgs),
    /// Wait for the local proxy to be ready, run CMD, exit with its status.
    Await(crate::cli::await_cmd::AwaitArgs),
    /// GET a URL and exit 0 on a 2xx answer (a healthcheck for images without curl).
    Probe(crate::cli::probe::ProbeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The controller's discovery address, e.g. https://127.0.0.1:7070.
    #[arg(long, env = "WEFT_PROXY_CONTROLLER")]
    pub controller: Option<String>,
    /// The trust anchor(s) (PEM; the CA certificate from `weft ca init`).
    #[arg(long, env = "WEFT_PROXY_TRUST_ANCHOR")]
    pub trust_anchor: Option<PathBuf>,
    /// The join token file (`weft ca token`), used for the first certificate.
    #[arg(long, env = "WEFT_PROXY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A projected Kubernetes service-account token (audience weft.io/identity), presented for the
    /// first certificate when no --token-file is given.
    #[arg(long, env = "WEFT_PROXY_IDENTITY_TOKEN_FILE")]
    pub identity_token_file: Option<PathBuf>,
    /// The service this workload is; its identity is spiffe://TD/ns/NAMESPACE/sa/SERVICE.
    #[arg(long, env = "WEFT_PROXY_SERVICE")]
    pub service: Option<String>,
    #[arg(long, env = "WEFT_PROXY_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// The workload's version label (for traffic splits).
    #[arg(long, env = "WEFT_PROXY_VERSION", default_value = "")]
    pub version: String,
    /// This instance's name (default: host name and pid).
    #[arg(long, env = "WEFT_PROXY_INSTANCE")]
    pub instance: Option<String>,
    /// Where the local application listens.
    #[arg(long, env = "WEFT_PROXY_APP")]
    pub app: Option<String>,
    /// Where peer proxies connect over mTLS (default: port 4143 on all IPv4 and IPv6 addresses).
    #[arg(long, env = "WEFT_PROXY_INBOUND")]
    pub inbound: Option<String>,
    /// The address peers dial (default: this host's address towards the controller, inbound port).
    #[arg(long, env = "WEFT_PROXY_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// NAME=ADDR or NAMESPACE/NAME=ADDR: a local listener through which the app reaches that
    /// service (repeatable; a bare NAME is in this workload's namespace).
    #[arg(long = "upstream", env = "WEFT_PROXY_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Vec<String>,
    /// Let --upstream listen on a non-loopback address (anyone who reaches it calls with this
    /// workload's identity).
    #[arg(long, env = "WEFT_PROXY_ALLOW_REMOTE_UPSTREAMS")]
    pub allow_remote_upstreams: bool,
    /// Transparent mode: serve iptables-redirected traffic on --outbound and the inbound port.
    #[arg(long, env = "WEFT_PROXY_TRANSPARENT")]
    pub transparent: bool,
    /// The outbound listener that iptables feeds (transparent mode).
    #[arg(long, env = "WEFT_PROXY_OUTBOUND", default_value = "127.0.0.1:4140")]
    pub outbound: String,
    /// Admin HTTP: /metrics, /live, /ready for anyone; /config, /log-level, POST /shutdown from
    /// loopback (unless --admin-open).
    #[arg(long, env = "WEFT_PROXY_ADMIN", default_value = "0.0.0.0:4191")]
    pub admin: String,
    /// Serve /config, /log-level and POST /shutdown to any address, not only loopback.
    #[arg(long, env = "WEFT_PROXY_ADMIN_OPEN")]
    pub admin_open: bool,
    /// Kubelet probes the admin port answers for the app: http:PORT/PATH (GET
    /// /app-probe/http/PORT/PATH) or tcp:PORT (GET /app-probe/tcp/PORT); comma-separated.
    #[arg(long = "app-probe", env = "WEFT_PROXY_APP_PROBES", value_delimiter = ',')]
    pub app_probes: Vec<String>,
    /// Ports whose connections are opaque TCP without detection (server-speaks-first protocols),
    /// added to the built-in list; comma-separated.
    #[arg(long, env = "WEFT_PROXY_OPAQUE_PORTS", value_delimiter = ',')]
    pub opaque_ports: Vec<u16>,
    /// Requests from peers served at once, at most; beyond: 503 with x-weft-overloaded.
    #[arg(long, env = "WEFT_PROXY_MAX_INBOUND_REQUESTS", default_value_t = 1024)]
    pub max_inbound_requests: usize,
    /// An HTTP connection with no request in progress for this long is closed (`0s`: never).
    #[arg(long, env = "WEFT_PROXY_IDLE_TIMEOUT", default_value = "1h")]
    pub idle_timeout: String,
    /// A request body that moves no byte for this long fails (`0s`: never).
    #[arg(long, env = "WEFT_PROXY_STREAM_IDLE_TIMEOUT", default_value = "5m")]
    pub stream_idle_timeout: String,
    /// Data-plane threads.
    #[arg(long, env = "WEFT_PROXY_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Largest accepted request/response header section, HTTP/1 and HTTP/2 alike.
    #[arg(long, env = "WEFT_PROXY_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// How long to wait for a client's first bytes before treating a connection as opaque TCP.
    #[arg(long, env = "WEFT_PROXY_DETECT_TIMEOUT", default_value = "500ms")]
    pub detect_timeout: String,
    /// How long a client may take to send a request's headers; also how long an idle keep-alive
    /// HTTP/1 connection from the app stays open (hyper starts this clock when it waits for the
    /// next request).
    #[arg(long, env = "WEFT_PROXY_HEADER_READ_TIMEOUT", default_value = "30s")]
    pub header_read_timeout: String,
    /// Connect timeout towards peers and the app: long enough to ride out one lost SYN (the
    /// first retransmission leaves after 1 s), which a burst that fills the app's accept queue
    /// causes.
    #[arg(long, env = "WEFT_PROXY_CONNECT_TIMEOUT", default_value = "3s")]
    pub connect_timeout: String,
    /// Idle pooled connections to the app are closed after this; keep it below the app's own
    /// keep-alive timeout (Node's is 5 s) so the proxy never reuses a connection the app is closing.
    #[arg(long, env = "WEFT_PROXY_POOL_IDLE_TIMEOUT", default_value = "3s")]
    pub pool_idle_timeout: String,
    /// Opaque TCP and upgraded HTTP connections with no byte moving either way for this long are
    /// closed (`0s`: never).
    #[arg(long, env = "WEFT_PROXY_TCP_IDLE_TIMEOUT", default_value = "1h")]
    pub tcp_idle_timeout: String,
    /// On shutdown, how long to keep serving after withdrawing this endpoint (callers move away
    /// meanwhile) before closing the inbound listener.
    #[arg(long, env = "WEFT_PROXY_SHUTDOWN_DELAY", default_value = "2s")]
    pub shutdown_delay: String,
    /// Longest wait for open connections to finish on shutdown.
    #[arg(long, env = "WEFT_PROXY_SHUTDOWN_GRACE", default_value = "30s")]
    pub shutdown_grace: String,
    #[arg(long, env = "WEFT_PROXY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// text or json.
    #[arg(long, env = "WEFT_PROXY_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// off or json (one JSON line per request on stdout).
    #[arg(long, env = "WEFT_PROXY_ACCESS_LOG", default_value = "off")]
    pub access_log: String,
}

pub const DEFAULT_INBOUND_PORT: u16 = 4143;

impl RunArgs {
    /// Checks every flag and reports all problems at once.
    pub fn validate(&self) -> Result<ProxyConfig, Vec<String>> {
        let mut p: Vec<String> = Vec::new();
        let mut required = |flag: &str, v: &Option<String>| {
            if v.is_none() {
                p.push(format!("--{flag} is required"));
            }
        };
        required("controller", &self.controller);
        required("service", &self.service);
        if self.trust_anchor.is_none() {
            p.push("--trust-anchor is required".into());
        }
        if self.token_file.is_none() && self.identity_token_file.is_none() {
            p.push("--token-file (or --identity-token-file) is required".into());
        }
        let controller = self.controller.as_deref().and_then(|c| match parse_controller_url(c) {
            Ok(x) => Some(x),
            Err(e) => {
                p.push(format!("--controller {c:?}: {e}"));
                None
            }
        });
        let trust_anchor_pem = self.trust_anchor.as_ref().and_then(|f| match std::fs::read(f) {
            Ok(pem) => match weft_certs::pem::certs(&pem) {
                Ok(_) => Some(pem),
                Err(e) => {
                    p.push(format!("--trust-anchor {}: {e}", f.display()));
                    None
                }
            },
            Err(e) => {
                p.push(format!("--trust-anchor {}: {e}", f.display()));
                None
            }
        });
        for (flag, f) in [("token-file", &self.token_file), ("identity-token-file", &self.identity_token_file)] {
            if let Some(f) = f.as_ref().filter(|f| !f.is_file()) {
                p.push(format!("--{flag} {}: no such file", f.display()));
            }
        }
        let own_service = self.service.as_ref().and_then(|s| match weft_certs::ServiceKey::new(&self.namespace, s) {
            Ok(k) => Some(k.to_string()),
            Err(e) => {
                p.push(format!("--service/--namespace: {e}"));
                None
            }
        });
        if let Some(i) = self.instance.as_deref().filter(|i| !weft_certs::provenance::valid_instance(i)) {
            p.push(format!("--instance {i:?}: use letters, digits, '.', '-', '_' and ':'"));
        }
        let mut addr = |flag: &str, v: &str| -> Option<SocketAddr> {
            match v.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    p.push(format!("--{flag} {v:?}: expected IP:port"));
                    None
                }
            }
        };
        let app = self.app.as_deref().and_then(|a| addr("app", a));
        let inbound = match &self.inbound {
            Some(i) => addr("inbound", i),
            None => Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), DEFAULT_INBOUND_PORT)),
        };
        let advertise = self.advertise_addr.as_deref().and_then(|a| addr("advertise-addr", a));
        let outbound = addr("outbound", &self.outbound);
        let admin = addr("admin", &self.admin);
        let mut upstreams = Vec::new();
        for u in &self.upstreams {
            let Some((name, a)) = u.split_once('=').filter(|(n, _)| !n.is_empty()) else {
                p.push(format!("--upstream {u:?}: expected NAME=IP:PORT or NAMESPACE/NAME=IP:PORT"));
                continue;
            };
            let service = match weft_certs::ServiceKey::parse(name, &self.namespace) {
                Ok(k) => k.to_string(),
                Err(e) => {
                    p.push(format!("--upstream {u:?}: {e}"));
                    continue;
                }
            };
            match a.parse::<SocketAddr>() {
                Ok(listen) if !listen.ip().is_loopback() && !self.allow_remote_upstreams => p.push(format!(
                    "--upstream {u:?}: {listen} is not a loopback address; anyone who reaches it would call {service} \
                     with this workload's identity (add --allow-remote-upstreams if that is what you want)"
                )),
                Ok(listen) => upstreams.push(Upstream { service, listen }),
                Err(_) => p.push(format!("--upstream {u:?}: {a:?} is not IP:port")),
            }
        }
        let mut app_probes = Vec::new();
        for a in &self.app_probes {
            match AppProbe::parse(a) {
                Ok(probe) => app_probes.push(probe),
                Err(e) => p.push(format!("--app-probe {e}")),
            }
        }
        if self.max_inbound_requests == 0 {
            p.push("--max-inbound-requests: must be at least 1".into());
        }
        if app.is_none() && !self.transparent && self.app.is_none() {
            p.push("--app is required unless --transparent is set".into());
        }
        if self.workers == 0 || self.workers > 64 {
            p.push(format!("--workers {}: expected 1 to 64", self.workers));
        }
        if !(8 * 1024..=1024 * 1024).contains(&self.max_header_bytes) {
            p.push(format!("--max-header-bytes {}: expected 8192 to 1048576", self.max_header_bytes));
        }
        let mut dur = |flag: &str, v: &str| -> Option<Duration> {
            match parse_duration(v) {
                Ok(d) => Some(d),
                Err(e) => {
                    p.push(format!("--{flag}: {e}"));
                    None
                }
            }
        };
        let detect_timeout = dur("detect-timeout", &self.detect_timeout);
        let header_read_timeout = dur("header-read-timeout", &self.header_read_timeout);
        let connect_timeout = dur("connect-timeout", &self.connect_timeout);
        let pool_idle_timeout = dur("pool-idle-timeout", &self.pool_idle_timeout);
        let tcp_idle_timeout = dur("tcp-idle-timeout", &self.tcp_idle_timeout);
        let shutdown_grace = dur("shutdown-grace", &self.shutdown_grace);
        let shutdown_delay = dur("shutdown-delay", &self.shutdown_delay);
        let idle_timeout = dur("idle-timeout", &self.idle_timeout);
        let stream_idle_timeout = dur("stream-idle-timeout", &self.stream_idle_timeout);
        if self.opaque_ports.contains(&0) {
            p.push("--opaque-ports: 0 is not a port".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            p.push(format!("--log-format {:?}: expected text or json", self.log_format));
        }
        let access_log = match self.access_log.as_str() {
            "off" => Some(AccessLog::Off),
            "json" => Some(AccessLog::Json),
            other => {
                p.push(format!("--access-log {other:?}: expected off or json"));
                None
            }
        };
        if !p.is_empty() {
            return Err(p);
        }
        let (
            Some((controller_host, controller_port)),
            Some(service),
            Some(own_service),
            Some(inbound),
            Some(outbound),
            Some(admin),
        ) = (controller, self.service.clone(), own_service, inbound, outbound, admin)
        else {
            return Err(vec!["invalid configuration".into()]);
        };
        let instance = self.instance.clone().unwrap_or_else(default_instance);
        Ok(ProxyConfig {
            controller_host,
            controller_port,
            trust_anchor_pem: trust_anchor_pem.unwrap_or_default(),
            token_file: self.token_file.clone(),
            identity_token_file: self.identity_token_file.clone(),
            service,
            namespace: self.namespace.clone(),
            own_service,
            version: self.version.clone(),
            instance,
            app,
            inbound,
            advertise,
            upstreams,
            transparent: self.transparent,
            outbound,
            admin,
            workers: self.workers,
            max_header_bytes: self.max_header_bytes,
            detect_timeout: detect_timeout.unwrap_or_default(),
            header_read_timeout: header_read_timeout.unwrap_or_default(),
            connect_timeout: connect_timeout.unwrap_or_default(),
            pool_idle_timeout: pool_idle_timeout.unwrap_or_default(),
            tcp_idle_timeout: tcp_idle_timeout.unwrap_or_default(),
            shutdown_grace: shutdown_grace.unwrap_or_default(),
            shutdown_delay: shutdown_delay.unwrap_or_default(),
            access_log: access_log.unwrap_or(AccessLog::Off),
            admin_open: self.admin_open,
            app_probes,
            opaque_ports: self.opaque_ports.clone(),
            max_inbound_requests: self.max_inbound_requests,
            idle_timeout: idle_timeout.unwrap_or_default(),
            stream_idle_timeout: stream_idle_timeout.unwrap_or_default(),
        })
    }
}

/// `https://HOST:PORT` → (HOST, PORT).
fn parse_controller_url(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("https://").ok_or("expected https://HOST:PORT")?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, p) = v6.split_once("]:").ok_or("expected https://[IPv6]:PORT")?;
        (h.to_string(), p)
    } else {
        let (h, p) = rest.rsplit_once(':').ok_or("a port is required")?;
        (h.to_string(), p)
    };
    let port = port.parse::<u16>().map_err(|_| format!("{port:?} is not a port"))?;
    if host.is_empty() || port == 0 {
        return Err("host and port are required".into());
    }
    Ok((host, port))
}

/// Host name and pid: unique per process, since several instances may share a host.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_namespaced_and_loopback_unless_allowed() {
        let base = ["weft-proxy", "--namespace", "shop", "--upstream", "bar=127.0.0.1:4140", "--upstream"];
        let parse = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).unwrap().run
        };
        let problems = parse(&["other/baz=0.0.0.0:4141"]).validate().unwrap_err().join("\n");
        assert!(problems.contains("not a loopback address"), "{problems}");
        let problems =
            parse(&["other/baz=0.0.0.0:4141", "--allow-remote-upstreams"]).validate().unwrap_err().join("\n");
        assert!(!problems.contains("loopback"), "{problems}");
        let problems = parse(&["a/b/c=127.0.0.1:1"]).validate().unwrap_err().join("\n");
        assert!(problems.contains("a/b/c"), "{problems}");
    }

    #[test]
    fn app_probes_parse() {
        assert_eq!(
            AppProbe::parse("http:8080/healthz?x=1").unwrap(),
            AppProbe::Http { port: 8080, path: "/healthz?x=1".into() }
        );
        assert_eq!(AppProbe::parse("tcp:5432").unwrap(), AppProbe::Tcp { port: 5432 });
        for bad in ["http:8080", "http:/x", "tcp:0", "udp:53", "http:80/a b"] {
            assert!(AppProbe::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn opaque_ports_are_a_comma_separated_list_of_ports() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["weft-proxy", "--namespace", "shop"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|c| c.run)
        };
        assert_eq!(parse(&["--opaque-ports", "9000,9001"]).unwrap().opaque_ports, [9000, 9001]);
        assert!(parse(&["--opaque-ports", "9000,x"]).is_err());
        assert!(parse(&["--opaque-ports", "70000"]).is_err());
        let problems = parse(&["--opaque-ports", "0"]).unwrap().validate().unwrap_err().join("\n");
        assert!(problems.contains("--opaque-ports"), "{problems}");
    }

    #[test]
    fn controller_urls() {
        assert_eq!(parse_controller_url("https://127.0.0.1:7070").unwrap(), ("127.0.0.1".into(), 7070));
        assert_eq!(parse_controller_url("https://controller:7070/").unwrap(), ("controller".into(), 7070));
        assert_eq!(parse_controller_url("https://[::1]:7070").unwrap(), ("::1".into(), 7070));
        assert!(parse_controller_url("http://x:1").is_err());
        assert!(parse_controller_url("https://x").is_err());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let cli = Cli::try_parse_from([
            "weft-proxy",
            "--controller",
            "http://nope",
            "--upstream",
            "bar",
            "--admin",
            "nowhere",
            "--detect-timeout",
            "fast",
            "--workers",
            "0",
        ])
        .unwrap();
        let problems = cli.run.validate().unwrap_err().join("\n");
        for needle in [
            "--controller",
            "--service",
            "--trust-anchor",
            "--token-file",
            "--upstream",
            "--admin",
            "--detect-timeout",
            "--workers",
            "--app",
        ] {
            assert!(problems.contains(needle), "{needle} missing from:\n{problems}");
        }
    }
}
