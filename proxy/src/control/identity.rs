//! The workload certificate: the first one with the join token, then renewed at half-life over
//! mTLS with the current one (ztunnel's schedule), with backoff on failure and the old
//! certificate kept until it expires. The private key never leaves the proxy: a CSR travels. A
//! first certificate the controller refuses for good (a wrong, expired, revoked or forged token)
//! stops the proxy with the reason; other failures are retried and shown by `/ready`.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{mpsc, watch};
use weft_certs::SpiffeId;
use weft_proto::v1 as pb;

use crate::context::ProxyContext;
use crate::resilience::backoff::ExpBackoff;

/// Why a certificate request failed.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// The controller refused the credential itself: asking again cannot help.
    #[error("the controller refused this proxy's credential: {0}")]
    Refused(String),
    #[error("{0:#}")]
    Transient(anyhow::Error),
}

impl From<anyhow::Error> for CertifyError {
    fn from(e: anyhow::Error) -> Self {
        CertifyError::Transient(e)
    }
}

/// Keeps a valid certificate installed for the life of the proxy; publishes each new expiry. A
/// permanent refusal of the first certificate is sent on `fatal`.
pub async fn run(ctx: Arc<ProxyContext>, expiry: watch::Sender<i64>, fatal: mpsc::UnboundedSender<String>) {
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
                ctx.readiness.set_problem(None);
                expiry.send_replace(not_after * 1000);
                tracing::info!(expires_unix = not_after, renewal = !use_token, "workload certificate installed");
            }
            Err(CertifyError::Refused(reason)) if use_token => {
                let _ = fatal.send(format!("the first certificate was refused: {reason}"));
                return;
            }
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!("certificate request failed (retrying in {wait:?}): {e}");
                ctx.readiness.set_problem(Some(format!("certificate request failed: {e}")));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Whether an issued chain is for exactly the identity asked.
fn check_issued(chain: &[CertificateDer<'_>], asked: &SpiffeId) -> anyhow::Result<()> {
    let leaf = chain.first().ok_or_else(|| anyhow::anyhow!("the controller sent an empty certificate chain"))?;
    let issued = weft_certs::x509::spiffe_id(leaf)?;
    anyhow::ensure!(&issued == asked, "the controller issued {issued} instead of {asked}; not installed");
    Ok(())
}

fn unix_now() -> i64 {
    crate::http::deadline::unix_now_ms() / 1000
}

/// The credential for a first certificate: the join token, else the service-account token.
fn credential(ctx: &ProxyContext) -> anyhow::Result<(String, String)> {
    let read = |flag: &str, f: &std::path::Path| {
        std::fs::read_to_string(f)
            .map(|t| t.trim().to_string())
            .map_err(|e| anyhow::anyhow!("reading --{flag} {}: {e}", f.display()))
    };
    match (&ctx.cfg.token_file, &ctx.cfg.identity_token_file) {
        (Some(f), _) => Ok((read("token-file", f)?, String::new())),
        (None, Some(f)) => Ok((String::new(), read("identity-token-file", f)?)),
        (None, None) => anyhow::bail!("no --token-file or --identity-token-file"),
    }
}

/// One certificate request. Returns the new certificate's expiry (Unix seconds).
async fn certify(ctx: &ProxyContext, use_token: bool) -> Result<i64, CertifyError> {
    let id = SpiffeId::new(&ctx.trust_domain, &ctx.cfg.namespace, &ctx.cfg.service).map_err(anyhow::Error::from)?;
    let (key, csr) = weft_certs::ca::workload_csr(&id).map_err(anyhow::Error::from)?;
    let (token, identity_token) = if use_token { credential(ctx)? } else { (String::new(), String::new()) };
    let conn = super::connect::connect(ctx, !use_token).await?;
    let mut client = pb::identity_client::IdentityClient::new(conn.channel);
    let resp = client
        .certify(pb::CertifyRequest { identity: id.to_string(), token, csr_der: csr, identity_token })
        .await
        .map_err(|s| {
            let msg = format!("{}: {}", s.code(), s.message());
            match s.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::InvalidArgument => {
                    CertifyError::Refused(msg)
                }
                _ => CertifyError::Transient(anyhow::anyhow!(msg)),
            }
        })?
        .into_inner();
    let chain: Vec<CertificateDer<'static>> = resp.cert_chain_der.into_iter().map(CertificateDer::from).collect();
    // The identity is checked before the certificate is put in use.
    check_issued(&chain, &id)?;
    let installed = ctx.identity.install(chain, PrivateKeyDer::Pkcs8(key)).map_err(anyhow::Error::msg)?;
    if !resp.trust_bundle_der.is_empty() {
        let bundle = resp.trust_bundle_der.into_iter().map(CertificateDer::from).collect();
        if let Err(e) = ctx.bundle.replace(bundle) {
            tracing::warn!("ignoring the controller's trust bundle: {e}");
        }
    }
    Ok(installed.not_after_unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_for_another_identity_is_not_installed() {
        let dir = std::env::temp_dir().join(format!("weft-issued-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = weft_certs::CertificateAuthority::init(&dir, "weft.local").unwrap();
        let foo = SpiffeId::new("weft.local", "default", "foo").unwrap();
        let bar = SpiffeId::new("weft.local", "default", "bar").unwrap();
        let issued = ca.issue_direct(&bar, Duration::from_secs(60)).unwrap();
        assert!(check_issued(&issued.chain, &bar).is_ok());
        let err = check_issued(&issued.chain, &foo).unwrap_err().to_string();
        assert!(err.contains("instead of"), "{err}");
        assert!(check_issued(&[], &foo).is_err());
    }
}
