//! Outbound opaque TCP: tunnelled to a peer proxy over mTLS (ALPN `weft.tcp/1` and a preamble
//! with the destination port), or straight to a static endpoint, to the endpoint the route
//! decision picks. A failed connect counts against that endpoint and moves on to another.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::classify::Class;
use crate::context::ProxyContext;
use crate::net::detect::Detected;
use crate::net::pool::peer::{Alpn, SendError};
use crate::net::relay::{guarded_relay, relay, Relay};
use crate::respond::ProxyError;
use crate::route::{self, Target};

const CONNECT_ATTEMPTS: usize = 3;

/// Relays `client` to the service. With [`Relay::Guarded`], a client that turns out to speak HTTP
/// gets its held bytes back (`Some`) to be served as HTTP instead.
pub async fn proxy<T>(
    ctx: &Arc<ProxyContext>,
    client: &mut T,
    target: &Target,
    mode: Relay,
) -> Option<(Detected, Bytes)>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + ?Sized,
{
    let svc = match route::service(&ctx.view(), target) {
        Ok(svc) => svc,
        Err(e) => {
            crate::respond::close(&ctx.metrics, "outbound", &e, "the app");
            return None;
        }
    };
    let cfg = svc.breaker_config();
    let _permit = match svc.runtime.breaker.try_connect(&cfg) {
        Ok(p) => p,
        Err(o) => {
            ctx.metrics.breaker_rejections.with(&[&svc.name, &svc.namespace, o.label()]).inc();
            crate::respond::close(&ctx.metrics, "outbound", &ProxyError::Overloaded(o.label()), "the app");
            return None;
        }
    };
    let idle = ctx.cfg.tcp_idle_timeout;
    let mut avoid = None;
    for _ in 0..CONNECT_ATTEMPTS {
        let Some(pick) = route::pick(&svc, target, Instant::now(), avoid, &[]) else {
            crate::respond::close(&ctx.metrics, "outbound", &ProxyError::NoEndpoints(svc.key.clone()), "the app");
            return None;
        };
        let ep = pick.endpoint.clone();
        let upstream: Result<Box<dyn Upstream>, SendError> = match &ep.identity {
            Some(id) => match ctx.peers.connector().connect(pick.dial().0, id, Alpn::Tcp).await {
                Ok(mut tls) => match crate::net::relay::write_preamble(&mut tls, pick.port).await {
                    Ok(()) => Ok(Box::new(tls)),
                    Err(e) => Err(SendError::Connect(e.to_string())),
                },
                Err(e) => Err(e),
            },
            None => crate::net::connect::connect(ep.addr, ctx.cfg.connect_timeout)
                .await
                .map(|s| Box::new(s) as Box<dyn Upstream>)
                .map_err(|e| SendError::Connect(e.to_string())),
        };
        let mut upstream = match upstream {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(endpoint = %ep.addr, "TCP connect failed: {e}");
                crate::attempt::record(&ctx.metrics, &svc, &ep, Class::Failure);
                if target.endpoint.is_some() {
                    return None;
                }
                avoid = Some(ep.addr);
                continue;
            }
        };
        crate::attempt::record(&ctx.metrics, &svc, &ep, Class::Success);
        let meshed = if ep.identity.is_some() { "true" } else { "false" };
        ctx.metrics.tcp_connections.with(&["outbound", &svc.name, &svc.namespace, meshed, meshed]).inc();
        let relayed = async {
            match mode {
                Relay::Plain => {
                    relay(client, &mut upstream, &ctx.metrics, "outbound", idle).await;
                    None
                }
                Relay::Guarded => guarded_relay(client, &mut upstream, &ctx.metrics, "outbound", idle).await,
            }
        };
        return tokio::select! {
            switched = relayed => switched,
            _ = super::drained_then_grace(ctx) => None,
        };
    }
    None
}

/// A connection to an upstream: a TLS tunnel to a peer proxy or plain TCP to a static endpoint.
trait Upstream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Upstream for T {}
