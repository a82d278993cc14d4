//! The mutating admission webhook: AdmissionReview v1 over HTTPS on its own port, served by the
//! controller (`weft-controller --webhook-addr`). It answers within a budget well inside the API
//! server's timeout, reads namespace annotations through a cache, and never denies a pod.

pub mod namespaces;
pub mod review;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use review::Injector;

use crate::settings::InjectSettings;

/// The path the webhook configuration calls.
pub const PATH: &str = "/inject";

/// Everything the webhook needs, from the controller's flags.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    /// The CA (`ca.crt`, `ca.key`) that issues the serving certificate.
    pub ca_dir: PathBuf,
    /// Names in the serving certificate (the Service's DNS name; IPs for tests).
    pub dns_names: Vec<String>,
    pub settings: InjectSettings,
    /// The trust anchor (PEM) injected pods get.
    pub trust_anchor: String,
    /// A kubeconfig for namespace reads; unset: in-cluster configuration, or `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// How long a namespace's annotations are reused.
    pub namespace_cache: Duration,
    /// The longest wait for the API server.
    pub api_timeout: Duration,
    /// The longest time one review may take (the API server's own limit is 10 s by default).
    pub budget: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("--webhook-settings {0}: {1}")]
    Settings(String, String),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Reads a settings file (`weft install` renders it into the `weft-injector` ConfigMap).
pub fn load_settings(path: &Path) -> Result<InjectSettings, WebhookError> {
    let err = |e: String| WebhookError::Settings(path.display().to_string(), e);
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let settings: InjectSettings = serde_norway::from_str(&text).map_err(|e| err(e.to_string()))?;
    let problems = settings.validate();
    if !problems.is_empty() {
        return Err(err(problems.join("; ")));
    }
    Ok(settings)
}

/// The namespace reader: the kube client if a configuration is found, else one that says why not.
pub async fn namespace_cache(cfg: &WebhookConfig) -> namespaces::NamespaceCache {
    let config = match &cfg.kubeconfig {
        Some(path) => match kube::config::Kubeconfig::read_from(path) {
            Ok(kc) => kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        None => kube::Config::infer().await.map_err(|e| e.to_string()),
    };
    let client = config.and_then(|c| kube::Client::try_from(c).map_err(|e| e.to_string()));
    match client {
        Ok(client) => namespaces::NamespaceCache::new(
            Arc::new(namespaces::KubeNamespaces(client)),
            cfg.namespace_cache,
            cfg.api_timeout,
        ),
        Err(e) => {
            let reason = format!("no Kubernetes API configuration ({e})");
            tracing::warn!("webhook: {reason}; only pods annotated weft.io/inject: enabled will be injected");
            namespaces::NamespaceCache::unavailable(reason)
        }
    }
}

/// Serves the webhook until the task is dropped.
pub async fn run(cfg: WebhookConfig) -> Result<(), WebhookError> {
    let ca = tls::CaFiles::load(&cfg.ca_dir)?;
    let cert = tls::ServingCert::new(ca.issue(&cfg.dns_names, tls::SERVING_CERT_TTL)?);
    let listener = tokio::net::TcpListener::bind(cfg.addr).await.map_err(|e| WebhookError::Bind(cfg.addr, e))?;
    let cache = namespace_cache(&cfg).await;
    let state = Arc::new(server::State {
        injector: Injector { settings: cfg.settings.clone(), trust_anchor: cfg.trust_anchor.clone() },
        namespaces: cache,
        budget: cfg.budget,
    });
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), names = ?cfg.dns_names, "webhook serving");
    let renew = {
        let (cert, names) = (cert.clone(), cfg.dns_names.clone());
        async move {
            loop {
                tokio::time::sleep(tls::SERVING_CERT_TTL / 2).await;
                match ca.issue(&names, tls::SERVING_CERT_TTL) {
                    Ok(next) => cert.replace(next),
                    Err(e) => tracing::error!("webhook: re-issuing the serving certificate failed: {e}"),
                }
            }
        }
    };
    tokio::select! {
        () = server::serve(listener, tls::server_config(cert), state) => Ok(()),
        () = renew => Ok(()),
    }
}
