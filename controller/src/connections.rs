//! Connections to the controller's gRPC port, before any RPC: TLS with the controller's
//! certificate, bounded before anyone is authenticated — handshakes in flight, the time to finish
//! the handshake and to send the HTTP/2 preface. Client certificates are optional only so that a
//! first-time proxy can present a join token: a connection without one lives at most
//! [`UNAUTHENTICATED_LIFETIME`], and few of them may exist at once. Each connection says who is on
//! the other end ([`PeerInfo`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use weft_certs::provenance::Provenance;
use weft_certs::SpiffeId;

use crate::metrics::ControllerMetrics;

/// The TLS handshake and the HTTP/2 preface must both arrive within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once, at most; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// Connections without a client certificate (first certificates with a join token) at once.
const MAX_UNAUTHENTICATED: usize = 64;
/// How long a connection without a client certificate may stay: one `Certify` takes milliseconds.
pub const UNAUTHENTICATED_LIFETIME: Duration = Duration::from_secs(30);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Who is on the other end of a gRPC connection; in every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The verified SPIFFE ID of the client certificate, if one was presented.
    pub identity: Option<SpiffeId>,
    /// The join token behind that certificate, if it records one.
    pub provenance: Option<Provenance>,
}

pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
    /// The HTTP/2 preface, read ahead to check it arrives in time; replayed to the server.
    preface: Bytes,
    /// For connections without a client certificate: when they are cut off.
    expires: Option<Pin<Box<tokio::time::Sleep>>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl TlsConn {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.expires.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }
}

fn lifetime_over() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "unauthenticated connection lifetime over")
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        if self.preface.has_remaining() {
            let n = self.preface.len().min(buf.remaining());
            buf.put_slice(&self.preface[..n]);
            self.preface.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
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
        if self.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TLS connections on `listener` within the limits above; the stream of them is what the
/// gRPC server serves.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    metrics: ControllerMetrics,
) -> ReceiverStream<io::Result<TlsConn>> {
    let acceptor = TlsAcceptor::from(tls);
    let (tx, rx) = mpsc::channel::<io::Result<TlsConn>>(64);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let unauthenticated = Arc::new(Semaphore::new(MAX_UNAUTHENTICATED));
    tokio::spawn(async move {
        loop {
            // Waiting for a handshake slot leaves new connections in the kernel's backlog.
            let Ok(slot) = handshakes.clone().acquire_owned().await else { return };
            let (tcp, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, unauthenticated, metrics) =
                (acceptor.clone(), tx.clone(), unauthenticated.clone(), metrics.clone());
            // Handshakes run on their own tasks: a slow client must not hold up the accept loop.
            tokio::spawn(async move {
                let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&acceptor, tcp, addr)).await;
                drop(slot);
                let refuse = |reason: &'static str| {
                    metrics.connections_refused.with(&[reason]).inc();
                    weft_telemetry::log_limit::debug("grpc-connection-refused", || format!("{addr}: {reason}"));
                };
                let mut conn = match conn {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => return refuse(e),
                    Err(_) => return refuse("handshake-timeout"),
                };
                if conn.info.identity.is_none() {
                    match unauthenticated.try_acquire_owned() {
                        Ok(permit) => {
                            conn._permit = Some(permit);
                            conn.expires = Some(Box::pin(tokio::time::sleep(UNAUTHENTICATED_LIFETIME)));
                        }
                        Err(_) => return refuse("too-many-unauthenticated"),
                    }
                }
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The TLS handshake, then the HTTP/2 preface (read ahead: a client that never sends it is cut off
/// here, not held by the server for ever).
async fn handshake(acceptor: &TlsAcceptor, tcp: TcpStream, addr: SocketAddr) -> Result<TlsConn, &'static str> {
    let mut stream = acceptor.accept(tcp).await.map_err(|_| "tls-handshake")?;
    let mut preface = [0u8; 24];
    stream.read_exact(&mut preface).await.map_err(|_| "no-preface")?;
    if preface[..] != *H2_PREFACE {
        return Err("not-http2");
    }
    let certs = stream.get_ref().1.peer_certificates();
    let identity = weft_certs::tls::peer_identity(certs);
    let provenance = certs.and_then(|c| c.first()).and_then(Provenance::of_cert);
    Ok(TlsConn {
        stream,
        info: PeerInfo { addr, identity, provenance },
        preface: Bytes::copy_from_slice(&preface),
        expires: None,
        _permit: None,
    })
}
