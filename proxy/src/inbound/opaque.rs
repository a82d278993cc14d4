//! Inbound opaque TCP from a peer proxy: read the preamble, authorize the caller (a refused
//! caller's connection is closed), then reach the app on the named port. What crosses must still be
//! what the service declared: a tunnel to an HTTP service is served as HTTP, and on a port with
//! nothing declared the client's first bytes are read before any reach the app — HTTP is served as
//! HTTP (so the app sees the verified caller, never one the bytes claim), anything else relayed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::authorize::authorize;
use super::{AppTarget, Caller};
use crate::context::ProxyContext;
use crate::net::detect::{self, Outcome, Prefixed};
use crate::net::relay::Relay;
use crate::outbound::Framing;
use crate::respond::ProxyError;
use crate::state::policy::Protocol;

const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A refused caller's connection: counted and closed.
fn close(ctx: &ProxyContext, e: &ProxyError, caller: &Caller) {
    crate::respond::close(&ctx.metrics, "inbound", e, format_args!("{} ({:?})", caller.remote, caller.identity));
}

pub async fn tunnel<T>(ctx: &Arc<ProxyContext>, mut io: T, caller: Arc<Caller>, app: AppTarget)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let port = match crate::net::relay::read_preamble(&mut io, PREAMBLE_TIMEOUT).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(remote = %caller.remote, "closing tunnel: {e}");
            return;
        }
    };
    if !super::port_allowed(ctx, port) {
        return close(ctx, &ProxyError::BadPort(port), &caller);
    }
    let policy = super::own_policy(ctx);
    if let Err(r) = authorize(policy.as_deref(), caller.identity.as_deref()) {
        return close(ctx, &r.into(), &caller);
    }
    let (ns, name) = ctx.cfg.own_service.split_once('/').unwrap_or(("", ""));
    ctx.metrics.tcp_connections.with(&["inbound", name, ns, caller.tls(), "true"]).inc();
    let app = AppTarget { default_port: Some(port), fixed: true, ..app };
    let protocol = policy.as_ref().map_or(Protocol::Detect, |p| p.protocol);
    to_app(ctx, io, caller, app, Framing::of(protocol, Some(port), &ctx.cfg.opaque_ports)).await;
}

/// Serves an authorized connection to the app as its framing says: relayed bytes, HTTP, or (nothing
/// declared) relayed bytes held until they show they are not HTTP.
pub async fn to_app<T>(ctx: &Arc<ProxyContext>, mut io: T, caller: Arc<Caller>, app: AppTarget, framing: Framing)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let app_addr = SocketAddr::new(app.ip, app.default_port.unwrap_or(0));
    match framing {
        Framing::Opaque => {
            relay_to_app(ctx, &mut io, app_addr, Relay::Plain).await;
        }
        Framing::Http => match detect::detect(&mut io, None, ctx.cfg.header_read_timeout).await {
            Ok(Outcome::Known(d, prefix)) => {
                super::http::connection(ctx, Prefixed::new(prefix, io), caller, app, d).await
            }
            Ok(Outcome::Silent) | Err(_) => close(ctx, &ProxyError::DetectTimeout, &caller),
        },
        Framing::Detect => {
            if let Some((d, held)) = relay_to_app(ctx, &mut io, app_addr, Relay::Guarded).await {
                super::http::connection(ctx, Prefixed::new(held, io), caller, app, d).await
            }
        }
    }
}

/// Connects to the app and relays until either side is done (or the drain's grace ends). A guarded
/// relay whose client spoke HTTP returns its held bytes instead.
async fn relay_to_app<T>(
    ctx: &Arc<ProxyContext>,
    io: &mut T,
    app: SocketAddr,
    mode: Relay,
) -> Option<(detect::Detected, bytes::Bytes)>
where
    T: AsyncRead + AsyncWrite + Send + Unpin,
{
    match crate::net::relay::connect_and_relay(ctx, io, app, "inbound", mode).await {
        Ok(switched) => switched,
        Err(()) => {
            crate::respond::close(&ctx.metrics, "inbound", &ProxyError::AppUnavailable(app.to_string()), app);
            None
        }
    }
}
