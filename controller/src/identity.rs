//! The identity service: signs workload CSRs. A first certificate needs a join token for exactly
//! the identity asked (universal mode) or, in Kubernetes mode, the pod's service-account token,
//! which the API server checks; a renewal is authenticated by the current certificate over mTLS
//! instead. Either way the join token behind it (recorded in the certificate) must not be revoked
//! — in Kubernetes mode, the pod it records must still exist — and the new certificate records it
//! again.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use weft_certs::provenance::Provenance;
use weft_certs::{CaError, SpiffeId};
use weft_proto::v1 as pb;

use crate::connections::PeerInfo;
use crate::kubernetes::Cluster;
use crate::state::MeshState;

pub struct IdentityService {
    pub state: Arc<MeshState>,
    /// Kubernetes mode.
    pub kubernetes: Option<Arc<Cluster>>,
}

#[tonic::async_trait]
impl pb::identity_server::Identity for IdentityService {
    async fn certify(&self, request: Request<pb::CertifyRequest>) -> Result<Response<pb::CertifyResponse>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let req = request.into_inner();
        let metrics = &self.state.metrics;
        let refuse = |reason: &'static str, status: Status| {
            metrics.certify_refused.with(&[reason]).inc();
            weft_telemetry::log_limit::warn("certificate-refused", || {
                format!(
                    "certificate for {:?} refused (peer {:?}): {}",
                    req.identity,
                    peer.as_ref().map(|p| p.addr),
                    status.message()
                )
            });
            status
        };
        let asked: SpiffeId = req
            .identity
            .parse()
            .map_err(|e| refuse("invalid", Status::invalid_argument(format!("invalid identity: {e}"))))?;
        let ca = &self.state.ca;
        let (kind, provenance) = match peer.as_ref().and_then(|p| p.identity.as_ref()) {
            Some(current) => {
                if current != &asked {
                    return Err(refuse(
                        "identity-mismatch",
                        Status::permission_denied(format!(
                            "a renewal must be for {current}, the client certificate's identity"
                        )),
                    ));
                }
                ca.check_workload_identity(&asked)
                    .map_err(|e| refuse("reserved", Status::permission_denied(e.to_string())))?;
                let provenance = peer.as_ref().and_then(|p| p.provenance.clone());
                if let Some(p) = provenance.as_ref().filter(|p| self.state.is_revoked(&p.token_id)) {
                    return Err(refuse(
                        "revoked",
                        Status::permission_denied(format!("join token {} was revoked", p.token_id)),
                    ));
                }
                if let Some(k) = &self.kubernetes {
                    k.renewal(current, provenance.as_ref()).await.map_err(|(reason, s)| refuse(reason, s))?;
                }
                ("renewal", provenance)
            }
            None if self.kubernetes.is_some() && req.identity_token.is_empty() => {
                return Err(refuse(
                    "token",
                    Status::unauthenticated(
                        "this controller runs in Kubernetes mode and takes the pod's service-account token \
                         (--identity-token-file), not a join token (join tokens are for universal mode)",
                    ),
                ));
            }
            None if self.kubernetes.is_some() => {
                ca.check_workload_identity(&asked)
                    .map_err(|e| refuse("reserved", Status::permission_denied(e.to_string())))?;
                let k = self.kubernetes.as_ref().expect("checked");
                let provenance =
                    k.certify(&req.identity_token, &asked).await.map_err(|(reason, s)| refuse(reason, s))?;
                ("service-account", Some(provenance))
            }
            None if req.token.is_empty() && !req.identity_token.is_empty() => {
                return Err(refuse(
                    "token",
                    Status::unauthenticated(
                        "this controller takes join tokens (universal mode), not service-account tokens: \
                         give the proxy a join token with --token-file",
                    ),
                ));
            }
            None => {
                let claims = ca.verify_join_token(&req.token, &asked).map_err(|e| match e {
                    CaError::Reserved(_) | CaError::WrongTrustDomain { .. } => {
                        refuse("reserved", Status::permission_denied(e.to_string()))
                    }
                    _ => refuse("token", Status::unauthenticated(format!("join token refused: {e}"))),
                })?;
                if self.state.is_revoked(&claims.jti) {
                    return Err(refuse(
                        "revoked",
                        Status::unauthenticated(format!("join token refused: join token {} was revoked", claims.jti)),
                    ));
                }
                ("token", Some(Provenance { token_id: claims.jti, instance: claims.instance }))
            }
        };
        let issued = ca
            .sign_csr(&req.csr_der, &asked, self.state.settings.cert_ttl, provenance.as_ref())
            .map_err(|e| refuse("csr", Status::invalid_argument(e.to_string())))?;
        metrics.certificates_issued.with(&[kind]).inc();
        tracing::info!(identity = %asked, kind, "certificate issued");
        Ok(Response::new(pb::CertifyResponse {
            cert_chain_der: issued.chain.iter().map(|c| c.to_vec()).collect(),
            trust_bundle_der: vec![ca.cert_der().to_vec()],
            expires_at_unix_ms: issued.not_after_unix * 1000,
        }))
    }
}
