//! `weft-controller`: the control plane binary.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use weft_controller::mesh::parse_duration;
use weft_controller::ControllerConfig;

/// The Weft control plane: discovery, policy and certificates for Weft proxies.
#[derive(Parser, Debug)]
#[command(name = "weft-controller", version)]
struct Args {
    /// The mesh file (YAML); watched and hot-reloaded.
    #[arg(long, env = "WEFT_CONTROLLER_MESH")]
    mesh: PathBuf,
    /// Directory holding the root CA (ca.crt, ca.key) made by `weft ca init`.
    #[arg(long, env = "WEFT_CONTROLLER_CA_DIR")]
    ca_dir: PathBuf,
    /// Where proxies connect (gRPC over TLS).
    #[arg(long, env = "WEFT_CONTROLLER_GRPC_ADDR", default_value = "0.0.0.0:7070")]
    grpc_addr: String,
    /// Admin HTTP: /metrics, /ready, /live, /api/v1/state.
    #[arg(long, env = "WEFT_CONTROLLER_ADMIN_ADDR", default_value = "0.0.0.0:7071")]
    admin_addr: String,
    /// Lifetime of workload certificates (rotated by proxies at half-life).
    #[arg(long, env = "WEFT_CONTROLLER_CERT_TTL", default_value = "24h")]
    cert_ttl: String,
    /// How long a workload's endpoint stays after its proxy's stream ends.
    #[arg(long, env = "WEFT_CONTROLLER_ENDPOINT_GRACE", default_value = "10s")]
    endpoint_grace: String,
    /// After a (re)start, how long proxies keep endpoints they already held, so that every proxy
    /// can reconnect before anything is removed. Longer than the proxies' 15 s maximum backoff.
    #[arg(long, env = "WEFT_CONTROLLER_RESTART_HOLDDOWN", default_value = "20s")]
    restart_holddown: String,
    /// Registered instances per identity, at most (a join token is multi-use: this bounds what one
    /// leaked token can register).
    #[arg(long, env = "WEFT_CONTROLLER_MAX_INSTANCES_PER_IDENTITY", default_value_t = 100)]
    max_instances_per_identity: usize,
    /// Serve /api/v1/state and /log-level to any address, not only loopback.
    #[arg(long, env = "WEFT_CONTROLLER_ADMIN_OPEN")]
    admin_open: bool,
    /// Log filter (error, warn, info, debug, trace, or per-module directives).
    #[arg(long, env = "WEFT_CONTROLLER_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format: text or json.
    #[arg(long, env = "WEFT_CONTROLLER_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Kubernetes mode: services, endpoints and identities from the API server (in-cluster
    /// account, or --kubeconfig), pods' service-account tokens instead of join tokens.
    #[arg(long, env = "WEFT_CONTROLLER_KUBERNETES")]
    kubernetes: bool,
    #[command(flatten)]
    webhook: weft_controller::webhook::WebhookArgs,
}

impl Args {
    /// Checks every value and reports all problems at once.
    fn validate(&self) -> Result<ControllerConfig, Vec<String>> {
        let mut problems = Vec::new();
        let mut addr = |flag: &str, v: &str| {
            v.parse::<SocketAddr>().map_err(|_| problems.push(format!("--{flag} {v:?}: expected IP:port"))).ok()
        };
        let grpc_addr = addr("grpc-addr", &self.grpc_addr);
        let admin_addr = addr("admin-addr", &self.admin_addr);
        let mut duration =
            |flag: &str, v: &str| parse_duration(v).map_err(|e| problems.push(format!("--{flag}: {e}"))).ok();
        let cert_ttl = duration("cert-ttl", &self.cert_ttl);
        let endpoint_grace = duration("endpoint-grace", &self.endpoint_grace);
        let restart_holddown = duration("restart-holddown", &self.restart_holddown);
        if let Some(ttl) = cert_ttl {
            if ttl < std::time::Duration::from_secs(2) {
                problems.push("--cert-ttl: must be at least 2s".into());
            }
        }
        if !self.mesh.is_file() {
            problems.push(format!("--mesh {}: no such file", self.mesh.display()));
        }
        for f in ["ca.crt", "ca.key"] {
            if !self.ca_dir.join(f).is_file() {
                problems.push(format!(
                    "--ca-dir {}: {f} is missing (create the CA with `weft ca init`)",
                    self.ca_dir.display()
                ));
            }
        }
        if self.max_instances_per_identity == 0 {
            problems.push("--max-instances-per-identity: must be at least 1".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            problems.push(format!("--log-format {:?}: expected text or json", self.log_format));
        }
        let webhook = self.webhook.config(&self.ca_dir).map_err(|e| problems.extend(e)).ok().flatten();
        match (grpc_addr, admin_addr, cert_ttl, endpoint_grace, restart_holddown) {
            (Some(grpc_addr), Some(admin_addr), Some(cert_ttl), Some(endpoint_grace), Some(restart_holddown))
                if problems.is_empty() =>
            {
                Ok(ControllerConfig {
                    mesh: self.mesh.clone(),
                    ca_dir: self.ca_dir.clone(),
                    grpc_addr,
                    admin_addr,
                    cert_ttl,
                    endpoint_grace,
                    restart_holddown,
                    max_instances_per_identity: self.max_instances_per_identity,
                    admin_open: self.admin_open,
                    webhook,
                    kubernetes: self.kubernetes.then(|| weft_controller::kubernetes::KubernetesConfig {
                        kubeconfig: self.webhook.kubeconfig.clone(),
                    }),
                })
            }
            _ => Err(problems),
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let cfg = match args.validate() {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("weft-controller: invalid configuration:\n  {}", problems.join("\n  "));
            return std::process::ExitCode::from(2);
        }
    };
    let log = match weft_telemetry::logging::init(&args.log_level, args.log_format == "json") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("weft-controller: --log-level: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    weft_certs::tls::install_provider();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    match rt.block_on(weft_controller::run(cfg, log, shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-controller: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
