//! The controller's gRPC server over TLS (a certificate from its own CA, client certificates
//! optional so that first-time proxies can present a join token), and the router between the
//! identity and discovery services.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::Connected;
use tower::Service;
use weft_certs::SpiffeId;
use weft_proto::v1 as pb;

use crate::discovery::DiscoveryService;
use crate::identity::IdentityService;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a gRPC connection; in every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The verified SPIFFE ID of the client certificate, if one was presented.
    pub identity: Option<SpiffeId>,
}

pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

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
        Self { identity: IdentitySrv::new(identity), discovery: DiscoverySrv::new(discovery) }
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
            Box::pin(self.discovery.call(req))
        } else {
            Box::pin(async { Ok(tonic::Status::unimplemented("unknown service").into_http()) })
        }
    }
}

/// Serves `router` on `listener` with `tls` until the future is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, router: GrpcRouter) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let (tx, rx) = mpsc::channel::<io::Result<TlsConn>>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            // Handshakes run on their own tasks: a slow client must not hold up the accept loop.
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let identity = weft_certs::tls::peer_identity(stream.get_ref().1.peer_certificates());
                        let _ = tx.send(Ok(TlsConn { stream, info: PeerInfo { addr, identity } })).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                }
            });
        }
    });
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .serve_with_incoming(router, ReceiverStream::new(rx))
        .await?;
    Ok(())
}
