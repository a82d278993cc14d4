//! The workload certificate: the first one with the join token, then renewed at half-life over
//! mTLS with the current one (ztunnel's schedule), with backoff on failure and the old
//! certificate kept until it expires. The private key never leaves the proxy: a CSR travels.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use weft_certs::SpiffeId;
use weft_proto::v1 as pb;

use crate::context::ProxyContext;
use crate::resilience::backoff::ExpBackoff;

/// Keeps a valid certificate installed for the life of the proxy; publishes each new expiry.
pub async fn run(ctx: Arc<ProxyContext>, expiry: watch::Sender<i64>) {
    let mut backoff = ExpBackoff::new(Duration::from_millis(500), Duration::from_secs(150));
    loop {
        let now = unix_now();
        let current = ctx.identity.current();
        let (use_token, wait) = match &current {
            None => (true, Duration::ZERO),
            Some(id) if id.not_after_unix <= now => (true, Duration::ZERO),
            Some(id) => {
                let start = id.installed_unix.max(id.not_before_unix);
                let refresh_at = start + (id.not_after_unix - start) / 2;
                (false, Duration::from_secs(refresh_at.saturating_sub(now).max(0) as u64))
            }
        };
        if !wait.is_zero() {
            // Sleep in slices so that a changed wall clock (suspend, NTP step) is noticed.
            tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
            continue;
        }
        match certify(&ctx, use_token).await {
            Ok(not_after) => {
                backoff.reset();
                ctx.metrics.cert_expiry.with(&[]).set(not_after);
                ctx.readiness.set_cert();
                expiry.send_replace(not_after * 1000);
                tracing::info!(expires_unix = not_after, renewal = !use_token, "workload certificate installed");
            }
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!("certificate request failed (retrying in {wait:?}): {e:#}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn unix_now() -> i64 {
    crate::http::deadline::unix_now_ms() / 1000
}

/// One certificate request. Returns the new certificate's expiry (Unix seconds).
async fn certify(ctx: &ProxyContext, use_token: bool) -> anyhow::Result<i64> {
    let id = SpiffeId::new(&ctx.trust_domain, &ctx.cfg.namespace, &ctx.cfg.service)?;
    let (key, csr) = weft_certs::ca::workload_csr(&id)?;
    let token = if use_token {
        std::fs::read_to_string(&ctx.cfg.token_file)
            .map_err(|e| anyhow::anyhow!("reading --token-file {}: {e}", ctx.cfg.token_file.display()))?
            .trim()
            .to_string()
    } else {
        String::new()
    };
    let conn = super::connect::connect(ctx, !use_token).await?;
    let mut client = pb::identity_client::IdentityClient::new(conn.channel);
    let resp = client
        .certify(pb::CertifyRequest { identity: id.to_string(), token, csr_der: csr })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let chain: Vec<CertificateDer<'static>> = resp.cert_chain_der.into_iter().map(CertificateDer::from).collect();
    let installed = ctx.identity.install(chain, PrivateKeyDer::Pkcs8(key)).map_err(anyhow::Error::msg)?;
    if installed.id != id {
        anyhow::bail!("the controller issued {} instead of {id}", installed.id);
    }
    if !resp.trust_bundle_der.is_empty() {
        let bundle = resp.trust_bundle_der.into_iter().map(CertificateDer::from).collect();
        if let Err(e) = ctx.bundle.replace(bundle) {
            tracing::warn!("ignoring the controller's trust bundle: {e}");
        }
    }
    Ok(installed.not_after_unix)
}
