//! A minimal stand-in for Linkerd's control plane, so linkerd2-proxy runs outside Kubernetes: it
//! signs the proxy's CSR with the benchmark's CA (Identity), allows all inbound traffic
//! (InboundServerPolicies), sends the server pod's address as a meshed endpoint with mTLS, HTTP/2
//! and opaque transport plus the benchmark's shared timeout/retry/failure-accrual settings
//! (OutboundPolicies), and rejects what the proxy does not need (Destination). One runs per pod on
//! the pod's loopback, where linkerd2-proxy talks plaintext gRPC to its control plane.

mod identity;
mod policy;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use linkerd2_proxy_api::destination::destination_server::DestinationServer;
use linkerd2_proxy_api::identity::identity_server::IdentityServer;
use linkerd2_proxy_api::inbound::inbound_server_policies_server::InboundServerPoliciesServer;
use linkerd2_proxy_api::outbound::outbound_policies_server::OutboundPoliciesServer;
use tonic::server::NamedService;

pub use self::policy::{inbound_server, outbound_policy};

#[derive(Debug, Clone, clap::Args)]
pub struct StandinArgs {
    /// Where the proxy's control-plane clients connect (the pod's loopback).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The CA that signs the proxies' certificates (`ca.crt`, `ca.key`).
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// ADDR=NAME: a meshed destination and the identity its proxy presents (repeatable).
    #[arg(long = "meshed")]
    pub meshed: Vec<String>,
    /// The peer proxies' inbound port (opaque transport).
    #[arg(long, default_value_t = 4143)]
    pub inbound_port: u16,
}

/// What the stand-in knows: which destinations are meshed, and by whom.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub meshed: HashMap<SocketAddr, String>,
    pub inbound_port: u16,
}

impl Directory {
    pub fn parse(meshed: &[String], inbound_port: u16) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        for m in meshed {
            let (addr, name) = m.split_once('=').with_context(|| format!("--meshed {m}: expected ADDR=NAME"))?;
            map.insert(addr.parse().with_context(|| format!("--meshed {m}"))?, name.to_string());
        }
        Ok(Self { meshed: map, inbound_port })
    }
}

/// `weft bench standin`: serves until killed.
pub fn main(args: StandinArgs) -> anyhow::Result<()> {
    let signer = crate::pki::DnsSigner::load(&args.ca_dir)?;
    let dir = Arc::new(Directory::parse(&args.meshed, args.inbound_port)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        eprintln!("linkerd stand-in control plane on {} ({} meshed destinations)", args.listen, dir.meshed.len());
        serve(listener, signer, dir).await
    })
}

/// Serves the four services on `listener` (plaintext HTTP/2).
pub async fn serve(
    listener: tokio::net::TcpListener,
    signer: crate::pki::DnsSigner,
    dir: Arc<Directory>,
) -> anyhow::Result<()> {
    let router = Router {
        identity: IdentityServer::new(identity::Identity { signer }),
        inbound: InboundServerPoliciesServer::new(policy::Inbound),
        outbound: OutboundPoliciesServer::new(policy::Outbound { dir }),
        destination: DestinationServer::new(policy::Destination),
    };
    tonic::transport::Server::builder()
        .serve_with_incoming(router, tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

/// Routes each call to its service by the first segment of the path (tonic's own router would pull
/// in axum for four fixed services).
#[derive(Clone)]
struct Router {
    identity: IdentityServer<identity::Identity>,
    inbound: InboundServerPoliciesServer<policy::Inbound>,
    outbound: OutboundPoliciesServer<policy::Outbound>,
    destination: DestinationServer<policy::Destination>,
}

type Body = tonic::body::Body;

impl tower::Service<http::Request<Body>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let service = req.uri().path().trim_start_matches('/').split('/').next().unwrap_or_default().to_string();
        if service == <IdentityServer<identity::Identity> as NamedService>::NAME {
            Box::pin(self.identity.call(req))
        } else if service == <InboundServerPoliciesServer<policy::Inbound> as NamedService>::NAME {
            Box::pin(self.inbound.call(req))
        } else if service == <OutboundPoliciesServer<policy::Outbound> as NamedService>::NAME {
            Box::pin(self.outbound.call(req))
        } else if service == <DestinationServer<policy::Destination> as NamedService>::NAME {
            Box::pin(self.destination.call(req))
        } else {
            Box::pin(async { Ok(tonic::Status::unimplemented("unknown service").into_http()) })
        }
    }
}

#[cfg(test)]
mod tests;
