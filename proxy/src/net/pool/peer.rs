//! Connections to peer proxies over mTLS. HTTP goes over one multiplexed HTTP/2 connection per
//! peer (HTTP/1 from the app is carried this way too); upgrades and opaque TCP get their own
//! connections with their own ALPN. Each connection checks that the peer presents exactly the
//! identity the controller announced for that endpoint.

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use weft_certs::tls::{self, IdentityStore, TrustBundle};
use weft_certs::SpiffeId;

use super::ConnSlot;
use crate::http::Body;

/// Which protocol a peer connection carries.
#[derive(Clone, Copy, Debug)]
pub enum Alpn {
    H2,
    Http1,
    Tcp,
}

/// Why a request to a peer failed; decides whether retrying is safe.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The request never left this proxy (TCP, TLS or identity failure).
    #[error("connect failed: {0}")]
    Connect(String),
    /// The peer refused the stream before processing it (HTTP/2 REFUSED_STREAM).
    #[error("stream refused")]
    Refused,
    /// The request may have reached the app.
    #[error("reset: {0}")]
    Reset(String),
}

pub struct PeerConnector {
    h2: Arc<ClientConfig>,
    h1: Arc<ClientConfig>,
    tcp: Arc<ClientConfig>,
    connect_timeout: Duration,
}

impl PeerConnector {
    pub fn new(
        identity: Arc<IdentityStore>,
        bundle: TrustBundle,
        trust_domain: &str,
        connect_timeout: Duration,
    ) -> Self {
        let mk = |alpn: &[u8]| {
            let mut cfg = tls::client_config(Some(identity.clone()), bundle.clone(), trust_domain, &[alpn]);
            // Resumption would skip the client certificate on reconnect; peers are few and long-lived.
            cfg.resumption = rustls::client::Resumption::disabled();
            Arc::new(cfg)
        };
        Self { h2: mk(tls::ALPN_H2), h1: mk(tls::ALPN_HTTP1), tcp: mk(tls::ALPN_TCP), connect_timeout }
    }

    /// Dials a peer proxy and checks its identity.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: &SpiffeId,
        alpn: Alpn,
    ) -> Result<TlsStream<TcpStream>, SendError> {
        let cfg = match alpn {
            Alpn::H2 => self.h2.clone(),
            Alpn::Http1 => self.h1.clone(),
            Alpn::Tcp => self.tcp.clone(),
        };
        let connect = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| SendError::Connect(format!("{addr}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let tls = TlsConnector::from(cfg)
                .connect(tls::server_name_for(addr.ip()), tcp)
                .await
                .map_err(|e| SendError::Connect(format!("TLS with {addr}: {e}")))?;
            match tls::peer_identity(tls.get_ref().1.peer_certificates()) {
                Some(id) if &id == expected => Ok(tls),
                Some(id) => Err(SendError::Connect(format!("{addr} presented {id}, expected {expected}"))),
                None => Err(SendError::Connect(format!("{addr} presented no identity"))),
            }
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| SendError::Connect(format!("{addr}: connect timed out")))?
    }
}

/// Multiplexed HTTP/2 connections to peers.
pub struct PeerPool {
    connector: Arc<PeerConnector>,
    max_header_list_size: u32,
}

impl PeerPool {
    pub fn new(connector: Arc<PeerConnector>, max_header_list_size: u32) -> Self {
        Self { connector, max_header_list_size }
    }

    pub fn connector(&self) -> &Arc<PeerConnector> {
        &self.connector
    }

    async fn sender(
        &self,
        slot: &ConnSlot,
        addr: SocketAddr,
        identity: &SpiffeId,
    ) -> Result<SendRequest<Body>, SendError> {
        slot.get_or_connect(|| async {
            let tls = self.connector.connect(addr, identity, Alpn::H2).await?;
            super::h2_handshake(tls, addr, self.max_header_list_size).await.map_err(SendError::Connect)
        })
        .await
    }

    /// Sends a request to the peer proxy at `addr`. A request that could not be handed to a
    /// connection (it closed meanwhile) is tried once more on a fresh one. Also returns the time
    /// spent getting a connection ready, which is not the peer's latency.
    pub async fn send(
        &self,
        slot: &ConnSlot,
        addr: SocketAddr,
        identity: &SpiffeId,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Duration), SendError> {
        let mut req = req;
        let started = tokio::time::Instant::now();
        for attempt in 0..2 {
            let mut sender = self.sender(slot, addr, identity).await?;
            if sender.ready().await.is_err() {
                continue;
            }
            let setup = started.elapsed();
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, setup)),
                Err(mut e) => match e.take_message() {
                    Some(back) if attempt == 0 => {
                        req = back;
                        continue;
                    }
                    Some(_) => return Err(SendError::Connect(format!("{addr}: connection closed before sending"))),
                    None => return Err(classify(e.into_error())),
                },
            }
        }
        Err(SendError::Connect(format!("{addr}: no usable connection")))
    }
}

/// Maps a hyper error on a sent request to whether the peer may have processed it.
pub fn classify(e: hyper::Error) -> SendError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            if h2e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return SendError::Refused;
            }
        }
        src = s.source();
    }
    SendError::Reset(e.to_string())
}
