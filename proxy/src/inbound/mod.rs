//! Inbound: peer proxies connect to the inbound port over mTLS (HTTP/2, HTTP/1.1 for upgrades, or
//! an opaque TCP tunnel); in transparent mode, connections redirected from app ports by iptables
//! arrive here too and are served in plaintext when the service's policy admits plaintext callers.

pub mod authorize;
pub mod http;
pub mod opaque;
pub mod plaintext;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use weft_certs::tls;

use crate::context::{drained, ProxyContext};
use crate::net::accept::accept_loop;
use crate::telemetry::metrics::RequestSeries;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is calling and how (one per connection).
pub struct Caller {
    /// The verified SPIFFE ID (None for plaintext).
    pub identity: Option<String>,
    /// What the app is told of it (`x-weft-client-id`), built once for the connection.
    pub client_id: ::http::HeaderValue,
    pub remote: SocketAddr,
    pub series: Arc<RequestSeries>,
}

impl Caller {
    pub fn new(ctx: &ProxyContext, identity: Option<String>, remote: SocketAddr) -> Self {
        let tls = if identity.is_some() { "true" } else { "false" };
        let series =
            RequestSeries::new(&ctx.metrics, "inbound", &ctx.cfg.own_service, tls, identity.as_deref().unwrap_or(""));
        let client_id = http::client_id_value(identity.as_deref());
        Self { identity, client_id, remote, series: Arc::new(series) }
    }

    pub fn tls(&self) -> &'static str {
        if self.identity.is_some() {
            "true"
        } else {
            "false"
        }
    }
}

/// Where the app is reached for this connection.
#[derive(Clone, Copy, Debug)]
pub struct AppTarget {
    pub ip: IpAddr,
    /// Used when a request names no port (plaintext callers, or no header).
    pub default_port: Option<u16>,
    /// The connection already named its port (a TCP tunnel's preamble, a redirected connection's
    /// original destination): requests on it may not name another.
    pub fixed: bool,
}

/// Whether a peer may ask for `port` on the app's address. In explicit mode: the `--app` port or
/// one of the service's declared target ports. In transparent mode: any port of the pod but the
/// proxy's own. Anything else would let a peer reach whatever listens on the app's address (with
/// `--app 127.0.0.1:…`, every loopback service, the admin port included).
pub fn port_allowed(ctx: &ProxyContext, port: u16) -> bool {
    if port == 0 {
        return false;
    }
    match ctx.cfg.app {
        Some(app) => {
            port == app.port()
                || ctx
                    .view()
                    .service(&ctx.cfg.own_service)
                    .and_then(|s| s.policy.as_ref().map(|p| p.ports.iter().any(|(_, t)| *t == port)))
                    .unwrap_or(false)
        }
        None => ![ctx.inbound_bound.port(), ctx.cfg.outbound.port(), ctx.cfg.admin.port()].contains(&port),
    }
}

/// This service's own policy, if held.
pub fn own_policy(ctx: &ProxyContext) -> Option<Arc<crate::state::policy::Policy>> {
    ctx.own_policy()
}

/// Accepts inbound connections until the drain starts.
pub async fn accept(ctx: Arc<ProxyContext>, listener: TcpListener) {
    let acceptor = TlsAcceptor::from(ctx.inbound_tls.clone());
    let inbound_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let drain = drained(ctx.drain.signal());
    accept_loop(ctx, listener, "inbound", drain, move |ctx, stream, remote| {
        let acceptor = acceptor.clone();
        async move { connection(&ctx, stream, remote, acceptor, inbound_port).await }
    })
    .await
}

async fn connection(
    ctx: &Arc<ProxyContext>,
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    inbound_port: u16,
) {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    if ctx.cfg.transparent {
        if let Some(orig) = crate::net::original_dst::original_dst(&stream) {
            if orig.port() != inbound_port {
                // Redirected from an app port: a client outside the mesh.
                crate::inbound::plaintext::connection(ctx, stream, remote, orig).await;
                return;
            }
        }
    }
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(t)) => t,
        Ok(Err(_)) | Err(_) => {
            crate::respond::close(&ctx.metrics, "inbound", &crate::respond::ProxyError::TlsHandshake, remote);
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let Some(identity) = tls::peer_identity(conn.peer_certificates()).map(|id| id.to_string()) else {
        return;
    };
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let caller = Arc::new(Caller::new(ctx, Some(identity), remote));
    let app = AppTarget {
        ip: ctx.cfg.app.map(|a| a.ip()).unwrap_or(local.ip()),
        default_port: ctx.cfg.app.map(|a| a.port()),
        fixed: false,
    };
    match alpn.as_deref() {
        Some(tls::ALPN_H2) => http::connection(ctx, tls, caller, app, crate::net::detect::Detected::Http2).await,
        Some(tls::ALPN_HTTP1) => http::connection(ctx, tls, caller, app, crate::net::detect::Detected::Http1).await,
        Some(tls::ALPN_TCP) => opaque::tunnel(ctx, tls, caller, app).await,
        other => {
            tracing::debug!(%remote, ?other, "inbound connection without a known ALPN; closing")
        }
    }
}
