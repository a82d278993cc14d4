//! Inbound opaque TCP from a peer proxy: read the preamble, authorize the caller (a refused
//! caller's connection is closed), connect to the app on the named port, relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{AppTarget, Caller};
use crate::context::ProxyContext;

const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve<T>(ctx: &Arc<ProxyContext>, mut io: T, caller: Arc<Caller>, app: AppTarget)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let port = match crate::tcp::read_preamble(&mut io, PREAMBLE_TIMEOUT).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(remote = %caller.remote, "closing tunnel: {e}");
            return;
        }
    };
    if !super::port_allowed(ctx, port) {
        tracing::debug!(remote = %caller.remote, port, "closing tunnel: not an app port");
        ctx.metrics.proxy_errors.with(&["inbound", "bad-port"]).inc();
        return;
    }
    let service = ctx.cfg.service.clone();
    if let (Some(id), Some(policy)) = (&caller.identity, ctx.view().service(&service).and_then(|s| s.policy.clone())) {
        if !policy.allows(id) {
            tracing::debug!(caller = %id, "TCP caller not allowed; closing");
            ctx.metrics.proxy_errors.with(&["inbound", "unauthorized"]).inc();
            return;
        }
    }
    ctx.metrics.tcp_connections.with(&["inbound", &service, caller.tls(), "true"]).inc();
    relay_to_app(ctx, &mut io, SocketAddr::new(app.ip, port)).await;
}

/// Connects to the app and relays until either side is done (or the drain's grace ends).
pub async fn relay_to_app<T>(ctx: &Arc<ProxyContext>, io: &mut T, app: SocketAddr)
where
    T: AsyncRead + AsyncWrite + Send + Unpin,
{
    if !crate::tcp::connect_and_relay(ctx, io, app, "inbound").await {
        ctx.metrics.proxy_errors.with(&["inbound", "app-unavailable"]).inc();
    }
}
