//! Transparent mode, inbound: a connection iptables redirected from an app port comes from outside
//! the mesh (peers dial the inbound port itself). It is served in plaintext only when the service's
//! policy admits plaintext callers, framed as its protocol says.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::context::ProxyContext;
use crate::inbound::authorize::{authorize, Refusal};
use crate::inbound::{AppTarget, Caller};
use crate::net::detect::{self, Detected, Outcome, Prefixed};
use crate::outbound::Framing;
use crate::respond::ProxyError;
use crate::state::policy::Protocol;

/// A redirected connection to an app port from a client outside the mesh: served in plaintext when
/// the service's policy admits plaintext callers, as its protocol says.
pub(crate) async fn connection(ctx: &Arc<ProxyContext>, stream: TcpStream, remote: SocketAddr, orig: SocketAddr) {
    let policy = crate::inbound::own_policy(ctx);
    match authorize(policy.as_deref(), None) {
        Ok(()) => {}
        // HTTP callers that are merely not in an allow list are told so per request (403).
        Err(Refusal::Unauthorized) if policy.as_ref().is_some_and(|p| p.protocol != Protocol::Tcp) => {}
        Err(r) => return crate::respond::close(&ctx.metrics, "inbound", &r.into(), remote),
    }
    let (ns, name) = ctx.cfg.own_service.split_once('/').unwrap_or(("", ""));
    ctx.metrics.tcp_connections.with(&["inbound", name, ns, "false", "false"]).inc();
    let caller = Arc::new(Caller::new(ctx, None, remote));
    let app = AppTarget { ip: orig.ip(), default_port: Some(orig.port()), fixed: true };
    let protocol = policy.as_ref().map_or(Protocol::Detect, |p| p.protocol);
    let framing = Framing::of(protocol, Some(orig.port()), &ctx.cfg.opaque_ports);
    if framing == Framing::Opaque && policy.as_ref().is_some_and(|p| p.allow.is_some()) {
        // Bytes can't be told "403": a plaintext caller of a service with an allow list is closed.
        return crate::respond::close(&ctx.metrics, "inbound", &ProxyError::Unauthorized, remote);
    }
    let mut stream = stream;
    match framing {
        Framing::Detect => match detect::detect(&mut stream, Some(ctx.cfg.detect_timeout), ctx.cfg.header_read_timeout)
            .await
        {
            Ok(Outcome::Known(Detected::Opaque, prefix)) => {
                crate::inbound::opaque::to_app(ctx, Prefixed::new(prefix, stream), caller, app, Framing::Opaque).await
            }
            Ok(Outcome::Known(d, prefix)) => {
                crate::inbound::http::connection(ctx, Prefixed::new(prefix, stream), caller, app, d).await
            }
            Ok(Outcome::Silent) => crate::inbound::opaque::to_app(ctx, stream, caller, app, Framing::Detect).await,
            Err(_) => crate::respond::close(&ctx.metrics, "inbound", &ProxyError::DetectTimeout, remote),
        },
        other => crate::inbound::opaque::to_app(ctx, stream, caller, app, other).await,
    }
}
