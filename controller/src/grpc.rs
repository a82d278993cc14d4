//! The controller's gRPC server: the router between the identity and discovery services, with the
//! per-connection and per-message bounds. Connections come from [`crate::connections`]; discovery
//! requires the workload certificate and is refused before any message is read.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;
use weft_proto::v1 as pb;

use crate::connections::PeerInfo;
use crate::discovery::DiscoveryService;
use crate::identity::IdentityService;
use crate::metrics::ControllerMetrics;

/// Streams per connection: a proxy holds one discovery stream; certificates come on their own
/// connections.
const MAX_STREAMS_PER_CONNECTION: u32 = 8;
/// A certificate request is a CSR and a token: a few hundred bytes.
const MAX_CERTIFY_BYTES: usize = 64 * 1024;
/// Discovery requests list what a proxy holds on reconnect: bounded, but large for a big mesh.
const MAX_DISCOVERY_BYTES: usize = 4 * 1024 * 1024;

type IdentitySrv = pb::identity_server::IdentityServer<IdentityService>;
type DiscoverySrv = pb::discovery_server::DiscoveryServer<DiscoveryService>;

/// Dispatches by gRPC service name.
#[derive(Clone)]
pub struct GrpcRouter {
    identity: IdentitySrv,
    discovery: DiscoverySrv,
}

impl GrpcRouter {
    pub fn new(identity: IdentityService, discovery: DiscoveryService) -> Self {
        Self {
            identity: IdentitySrv::new(identity).max_decoding_message_size(MAX_CERTIFY_BYTES),
            discovery: DiscoverySrv::new(discovery).max_decoding_message_size(MAX_DISCOVERY_BYTES),
        }
    }
}

impl Service<http::Request<Body>> for GrpcRouter {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path();
        let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        if service == <IdentitySrv as NamedService>::NAME {
            Box::pin(self.identity.call(req))
        } else if service == <DiscoverySrv as NamedService>::NAME {
            // Refused before a byte of the stream is read.
            let authenticated = req.extensions().get::<PeerInfo>().is_some_and(|p| p.identity.is_some());
            if !authenticated {
                return Box::pin(async {
                    Ok(tonic::Status::unauthenticated("the discovery stream requires the proxy's workload certificate")
                        .into_http())
                });
            }
            Box::pin(self.discovery.call(req))
        } else {
            Box::pin(async { Ok(tonic::Status::unimplemented("unknown service").into_http()) })
        }
    }
}

/// Serves `router` on `listener` with `tls` until the future is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: GrpcRouter,
    metrics: ControllerMetrics,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
        .http2_max_header_list_size(Some(16 * 1024))
        .serve_with_incoming(router, crate::connections::incoming(listener, tls, metrics))
        .await?;
    Ok(())
}
