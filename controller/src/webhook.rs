//! The controller's flags for the sidecar-injection webhook (`weft_inject::webhook`), off unless
//! `--webhook-addr` is given: `weft install` turns it on in the cluster.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use weft_inject::webhook::WebhookConfig;

#[derive(Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Serve the mutating admission webhook (HTTPS) on this address; off when unset.
    #[arg(long, env = "WEFT_CONTROLLER_WEBHOOK_ADDR")]
    pub webhook_addr: Option<String>,
    /// The injection settings (YAML; the `weft-injector` ConfigMap). Unset: the defaults.
    #[arg(long, env = "WEFT_CONTROLLER_WEBHOOK_SETTINGS")]
    pub webhook_settings: Option<PathBuf>,
    /// The trust anchor injected pods get (PEM). Unset: the CA's ca.crt.
    #[arg(long, env = "WEFT_CONTROLLER_WEBHOOK_TRUST_ANCHOR")]
    pub webhook_trust_anchor: Option<PathBuf>,
    /// Names in the webhook's serving certificate (comma-separated; IP addresses allowed).
    #[arg(
        long,
        env = "WEFT_CONTROLLER_WEBHOOK_DNS_NAMES",
        value_delimiter = ',',
        default_value = "weft-controller.weft-system.svc"
    )]
    pub webhook_dns_names: Vec<String>,
    /// The longest wait for the Kubernetes API when reading a namespace's annotations.
    #[arg(long, env = "WEFT_CONTROLLER_WEBHOOK_API_TIMEOUT", default_value = "2s")]
    pub webhook_api_timeout: String,
    /// A kubeconfig for the Kubernetes API (the webhook's namespace reads, and --kubernetes).
    /// Unset: the in-cluster account, or $KUBECONFIG.
    #[arg(long, env = "WEFT_CONTROLLER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

impl WebhookArgs {
    /// The webhook's configuration (None when off), or every problem found.
    pub fn config(&self, ca_dir: &Path) -> Result<Option<WebhookConfig>, Vec<String>> {
        let Some(addr) = &self.webhook_addr else { return Ok(None) };
        let mut p = Vec::new();
        let addr: Option<SocketAddr> =
            addr.parse().map_err(|_| p.push(format!("--webhook-addr {addr:?}: expected IP:port"))).ok();
        let settings = match &self.webhook_settings {
            Some(f) => weft_inject::webhook::load_settings(f).map_err(|e| p.push(e.to_string())).ok(),
            None => Some(Default::default()),
        };
        let anchor_file = self.webhook_trust_anchor.clone().unwrap_or_else(|| ca_dir.join("ca.crt"));
        let trust_anchor = std::fs::read_to_string(&anchor_file)
            .map_err(|e| p.push(format!("--webhook-trust-anchor {}: {e}", anchor_file.display())))
            .ok();
        let api_timeout = weft_proto::duration::parse_duration(&self.webhook_api_timeout)
            .map_err(|e| p.push(format!("--webhook-api-timeout: {e}")))
            .ok();
        if self.webhook_dns_names.iter().all(|n| n.trim().is_empty()) {
            p.push("--webhook-dns-names: at least one name".into());
        }
        match (addr, settings, trust_anchor, api_timeout) {
            (Some(addr), Some(settings), Some(trust_anchor), Some(api_timeout)) if p.is_empty() => {
                Ok(Some(WebhookConfig {
                    addr,
                    ca_dir: ca_dir.to_path_buf(),
                    dns_names: self.webhook_dns_names.clone(),
                    settings,
                    trust_anchor,
                    kubeconfig: self.kubeconfig.clone(),
                    namespace_cache: Duration::from_secs(5),
                    api_timeout,
                    budget: Duration::from_secs(5),
                }))
            }
            _ => Err(p),
        }
    }
}
