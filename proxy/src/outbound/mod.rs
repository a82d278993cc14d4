//! Outbound: traffic from the local app to the mesh, through explicit `--upstream` listeners or
//! (transparent mode) the listener iptables feeds.

pub mod http;
pub mod opaque;
pub mod transparent;
pub mod upgrade;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use weft_proto::contract::OPAQUE_PORTS;

use crate::context::{drained, ProxyContext};
use crate::net::accept::accept_loop;
use crate::net::detect::{self, Detected, Outcome, Prefixed};
use crate::net::relay::Relay;
use crate::respond::ProxyError;
pub(crate) use crate::route::Target;
use crate::state::policy::Protocol;

/// Accepts connections for one `--upstream NAME=ADDR` listener until the drain ends it.
pub async fn accept_upstream(ctx: Arc<ProxyContext>, listener: TcpListener, service: String) {
    let target = Arc::new(Target::new(&ctx.metrics, service, None, None));
    // Outbound keeps serving during the drain: the app may still be finishing its work.
    let never = std::future::pending();
    accept_loop(ctx, listener, "outbound", never, move |ctx, stream, _| {
        let target = target.clone();
        async move {
            let opaque_port = explicit_port(&ctx, &target.service);
            connection(&ctx, stream, target, opaque_port).await;
        }
    })
    .await
}

/// The port that decides "opaque" for an explicit upstream: the service's first target port,
/// else its first endpoint's app port.
fn explicit_port(ctx: &ProxyContext, service: &str) -> Option<u16> {
    let view = ctx.view();
    let svc = view.service(service)?;
    svc.policy
        .as_ref()
        .and_then(|p| p.first_target_port())
        .or_else(|| svc.endpoints.first().and_then(|e| e.app_ports.first().copied()))
}

/// How a connection to a service must be read, from its declared protocol and the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `protocol: tcp` or an opaque port: bytes, no detection.
    Opaque,
    /// `protocol: http|http2|grpc`: HTTP, never opaque.
    Http,
    /// Nothing declared: detect from the first bytes.
    Detect,
}

impl Framing {
    /// `extra_opaque` is the operator's `--opaque-ports`, read as the built-in list is.
    pub fn of(protocol: Protocol, port: Option<u16>, extra_opaque: &[u16]) -> Self {
        let opaque_port = port.is_some_and(|p| OPAQUE_PORTS.contains(&p) || extra_opaque.contains(&p));
        // A declared protocol wins over the port: HTTP is never tunnelled unread.
        match protocol {
            Protocol::Tcp => Framing::Opaque,
            Protocol::Http1 | Protocol::Http2 | Protocol::Grpc => Framing::Http,
            Protocol::Detect if opaque_port => Framing::Opaque,
            Protocol::Detect => Framing::Detect,
        }
    }
}

/// Serves one outbound connection: HTTP (either version) or opaque TCP.
pub async fn connection<T>(ctx: &Arc<ProxyContext>, mut io: T, target: Arc<Target>, port: Option<u16>)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let protocol = ctx.view().service(&target.service).map_or(Protocol::Detect, |s| s.protocol());
    let framing = Framing::of(protocol, port, &ctx.cfg.opaque_ports);
    let first_byte = (framing == Framing::Detect).then_some(ctx.cfg.detect_timeout);
    let (detected, prefix) = match framing {
        Framing::Opaque => {
            opaque::proxy(ctx, &mut io, &target, Relay::Plain).await;
            return;
        }
        Framing::Http | Framing::Detect => match detect::detect(&mut io, first_byte, ctx.cfg.header_read_timeout).await
        {
            Ok(Outcome::Known(Detected::Opaque, prefix)) => {
                let mut io = Prefixed::new(prefix, io);
                opaque::proxy(ctx, &mut io, &target, Relay::Plain).await;
                return;
            }
            Ok(Outcome::Known(d, prefix)) => (d, prefix),
            // Silent: a server-speaks-first protocol, or a client that will speak later.
            Ok(Outcome::Silent) => match opaque::proxy(ctx, &mut io, &target, Relay::Guarded).await {
                Some((d, held)) => (d, held),
                None => return,
            },
            Err(_) => return crate::respond::close(&ctx.metrics, "outbound", &ProxyError::DetectTimeout, "the app"),
        },
    };
    let io = Prefixed::new(prefix, io);
    http_connection(ctx, io, target, detected).await
}

/// Serves outbound HTTP in the version the client speaks.
async fn http_connection<T>(ctx: &Arc<ProxyContext>, io: T, target: Arc<Target>, version: Detected)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let c = ctx.clone();
    match version {
        Detected::Http2 => {
            crate::net::http_server::http2(ctx, "outbound", io, move |req| http::handle(c.clone(), target.clone(), req))
                .await
        }
        _ => crate::net::http_server::http1(ctx, io, move |req| http::handle(c.clone(), target.clone(), req)).await,
    }
}

/// Passes a connection to a destination outside the mesh straight through (transparent mode).
pub async fn passthrough<T>(ctx: &Arc<ProxyContext>, mut io: T, dst: std::net::SocketAddr)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    ctx.metrics.tcp_connections.with(&["outbound", "", "", "false", "false"]).inc();
    let _ = crate::net::relay::connect_and_relay(ctx, &mut io, dst, "outbound", Relay::Plain).await;
}

/// Resolves when the drain started and the grace period is over.
pub async fn drained_then_grace(ctx: &ProxyContext) {
    drained(ctx.drain.signal()).await;
    tokio::time::sleep(ctx.cfg.shutdown_grace).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_protocol_wins_then_built_in_and_operator_opaque_ports() {
        assert_eq!(Framing::of(Protocol::Detect, Some(5432), &[]), Framing::Opaque);
        assert_eq!(Framing::of(Protocol::Detect, Some(9000), &[]), Framing::Detect);
        assert_eq!(Framing::of(Protocol::Detect, Some(9000), &[9000]), Framing::Opaque);
        assert_eq!(Framing::of(Protocol::Detect, None, &[9000]), Framing::Detect);
        assert_eq!(Framing::of(Protocol::Http1, Some(9000), &[9000]), Framing::Http);
        assert_eq!(Framing::of(Protocol::Grpc, Some(5432), &[]), Framing::Http);
        assert_eq!(Framing::of(Protocol::Tcp, Some(80), &[]), Framing::Opaque);
    }
}
