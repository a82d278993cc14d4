//! `Identity.Certify`: signs the proxy's CSR for its local name. The token is only required to be
//! non-empty (real Linkerd checks it with a Kubernetes TokenReview; there is no Kubernetes here).

use std::time::UNIX_EPOCH;

use linkerd2_proxy_api::identity::{identity_server, CertifyRequest, CertifyResponse};
use tonic::{Request, Response, Status};

use crate::pki::DnsSigner;

pub struct Identity {
    pub signer: DnsSigner,
}

#[tonic::async_trait]
impl identity_server::Identity for Identity {
    async fn certify(&self, req: Request<CertifyRequest>) -> Result<Response<CertifyResponse>, Status> {
        let req = req.into_inner();
        if req.token.is_empty() {
            return Err(Status::invalid_argument("empty token"));
        }
        let (leaf, not_after) = self
            .signer
            .sign(&req.certificate_signing_request, &req.identity)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        let secs = not_after.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        eprintln!("stand-in: certified {}", req.identity);
        Ok(Response::new(CertifyResponse {
            leaf_certificate: leaf,
            intermediate_certificates: vec![],
            valid_until: Some(prost_types::Timestamp { seconds: secs as i64, nanos: 0 }),
        }))
    }
}
