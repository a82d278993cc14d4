//! The Weft control plane: loads and watches the mesh file, keeps the registry of workloads, serves
//! the discovery stream and the identity service over TLS, and an admin API.
#![forbid(unsafe_code)]

pub mod admin;
pub mod connections;
pub mod discovery;
/// The fuzz targets' checks (`fuzz/`), replayed over their corpora by the ordinary tests.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod identity;
pub mod kubernetes;
pub mod mesh;
pub mod metrics;
pub mod policy;
pub mod registry;
pub mod snapshot;
pub mod state;
pub mod watch;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use weft_certs::tls::{self, SpiffeClientVerifier};
use weft_certs::{CertificateAuthority, IdentityStore, TrustBundle};
use weft_telemetry::logging::LogLevel;

use crate::state::{MeshState, Settings};

/// A validated controller configuration.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub mesh: PathBuf,
    pub ca_dir: PathBuf,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub cert_ttl: Duration,
    pub endpoint_grace: Duration,
    pub restart_holddown: Duration,
    /// Registered instances per identity, at most.
    pub max_instances_per_identity: usize,
    /// Serve `/api/v1/state` and `/log-level` to non-loopback callers too.
    pub admin_open: bool,
    /// The sidecar-injection webhook, when `--webhook-addr` is given.
    pub webhook: Option<weft_inject::webhook::WebhookConfig>,
    /// Kubernetes mode (`--kubernetes`): discovery and identity from the API server.
    pub kubernetes: Option<kubernetes::KubernetesConfig>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    cfg: ControllerConfig,
    log: LogLevel,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let ca = Arc::new(
        CertificateAuthority::load(&cfg.ca_dir)
            .with_context(|| format!("loading the CA from {}", cfg.ca_dir.display()))?,
    );
    let mesh = watch::load(&cfg.mesh, ca.trust_domain()).map_err(|problems| {
        anyhow::anyhow!("invalid mesh file {}:\n  {}", cfg.mesh.display(), problems.join("\n  "))
    })?;
    let initial_text = std::fs::read_to_string(&cfg.mesh).ok();
    let revoked = weft_certs::revocation::RevocationList::load(&cfg.ca_dir).map_err(anyhow::Error::msg)?;
    let metrics = metrics::ControllerMetrics::new();
    let client = match &cfg.kubernetes {
        Some(k) => Some(kubernetes::client(k).await?),
        None => None,
    };
    let state = MeshState::new(
        mesh,
        ca.clone(),
        Settings {
            cert_ttl: cfg.cert_ttl,
            endpoint_grace: cfg.endpoint_grace,
            // Kubernetes mode: a (re)started replica's view is whole once it has listed the
            // cluster, so proxies have nothing to wait for.
            restart_holddown: if client.is_some() { Duration::ZERO } else { cfg.restart_holddown },
            max_instances: cfg.max_instances_per_identity,
        },
        metrics,
    );
    state.metrics.revoked_tokens.with(&[]).set(revoked.len() as i64);
    state.set_revocations(revoked.clone());

    // The controller's own certificate, from its own CA, re-issued at half-life.
    let identity = IdentityStore::new();
    install_controller_cert(&ca, &identity, cfg.cert_ttl)?;
    let bundle = TrustBundle::new(vec![ca.cert_der().clone()]).map_err(anyhow::Error::msg)?;
    let verifier = SpiffeClientVerifier::new(bundle, ca.trust_domain(), false);
    let tls_config = Arc::new(tls::server_config(identity.clone(), verifier, &[tls::ALPN_H2]));

    let grpc_listener = tokio::net::TcpListener::bind(cfg.grpc_addr)
        .await
        .with_context(|| format!("binding --grpc-addr {}", cfg.grpc_addr))?;
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin_addr)
        .await
        .with_context(|| format!("binding --admin-addr {}", cfg.admin_addr))?;
    tracing::info!(
        grpc = %grpc_listener.local_addr()?, admin = %admin_listener.local_addr()?,
        trust_domain = %ca.trust_domain(), mesh = %cfg.mesh.display(),
        mode = if cfg.kubernetes.is_some() { "kubernetes" } else { "universal" }, "weft-controller started"
    );

    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let cluster = client.map(|c| kubernetes::Cluster::start(c, &state, &mut tasks));
    let router = grpc::GrpcRouter::new(
        identity::IdentityService { state: state.clone(), kubernetes: cluster.clone() },
        discovery::DiscoveryService { state: state.clone(), kubernetes: cluster.clone() },
    );
    tasks.spawn({
        let registry = state.metrics.registry.clone();
        async move {
            registry.upkeep_loop().await;
            Ok(())
        }
    });
    let grpc_metrics = state.metrics.clone();
    tasks.spawn(async move { grpc::serve(grpc_listener, tls_config, router, grpc_metrics).await });
    tasks.spawn({
        let (state, ready, open) = (state.clone(), ready.clone(), cfg.admin_open);
        async move {
            admin::serve(admin_listener, state, ready, log, open).await;
            Ok(())
        }
    });
    tasks.spawn({
        let (state, dir) = (state.clone(), cfg.ca_dir.clone());
        async move {
            watch::watch_revocations(dir, state, revoked).await;
            Ok(())
        }
    });
    // In Kubernetes mode the `weft-mesh` ConfigMap is watched through the API instead (the file
    // is that ConfigMap mounted, and lags it by the kubelet's sync period).
    if cfg.kubernetes.is_none() {
        tasks.spawn({
            let state = state.clone();
            let path = cfg.mesh.clone();
            async move {
                watch::watch(path, state, initial_text).await;
                Ok(())
            }
        });
    }
    tasks.spawn({
        let state = state.clone();
        async move {
            state.expire_loop().await;
            Ok(())
        }
    });
    tasks.spawn({
        let state = state.clone();
        async move {
            state.publish_loop().await;
            Ok(())
        }
    });
    tasks.spawn({
        let state = state.clone();
        async move {
            state.trim_loop().await;
            Ok(())
        }
    });
    tasks.spawn({
        let (ca, identity, ttl) = (ca.clone(), identity.clone(), cfg.cert_ttl);
        async move {
            loop {
                tokio::time::sleep(ttl / 2).await;
                if let Err(e) = install_controller_cert(&ca, &identity, ttl) {
                    tracing::error!("re-issuing the controller certificate failed: {e:#}");
                }
            }
        }
    });
    if let Some(webhook) = cfg.webhook.clone() {
        tasks.spawn(async move { weft_inject::webhook::run(webhook).await.map_err(anyhow::Error::from) });
    }
    match cluster {
        // Ready (and so in the controller Service's endpoints) once it has listed the cluster.
        Some(cluster) => {
            tasks.spawn(async move {
                cluster.synced().await;
                ready.store(true, Ordering::Relaxed);
                std::future::pending::<()>().await;
                Ok(())
            });
        }
        None => ready.store(true, Ordering::Relaxed),
    }

    tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
        Some(res) = tasks.join_next() => {
            match res {
                Ok(Ok(())) => anyhow::bail!("a controller task ended unexpectedly"),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a controller task failed: {e}")),
            }
        }
    }
}

fn install_controller_cert(ca: &CertificateAuthority, identity: &IdentityStore, ttl: Duration) -> anyhow::Result<()> {
    let issued = ca.issue_controller(ttl)?;
    identity.install(issued.chain, issued.key.into()).map_err(anyhow::Error::msg)?;
    Ok(())
}
