//! Outbound opaque TCP: tunnelled to a peer proxy over mTLS (ALPN `weft.tcp/1` and a preamble
//! with the destination port), or straight to a static endpoint. A failed connect moves on to
//! another endpoint.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::context::ProxyContext;
use crate::outbound::http::{dst_port, Target};
use crate::outbound::retry::Attempt;
use crate::pool::peer::{Alpn, SendError};

const CONNECT_ATTEMPTS: usize = 3;

pub async fn proxy<T>(ctx: &Arc<ProxyContext>, mut client: T, target: &Target)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Some(svc) = ctx.view().service(&target.service).cloned() else {
        tracing::debug!(service = %target.service, "no such service; closing");
        return;
    };
    let cfg = svc.breaker_config();
    let _permit = match svc.runtime.breaker.try_connect(&cfg) {
        Ok(p) => p,
        Err(o) => {
            ctx.metrics.breaker_rejections.with(&[&svc.name, o.label()]).inc();
            return;
        }
    };
    let mut avoid = None;
    for _ in 0..CONNECT_ATTEMPTS {
        let Some(ep) = (match target.endpoint {
            Some(addr) => svc.endpoints.iter().find(|e| e.addr.ip() == addr.ip()).cloned(),
            None => svc.choose(Instant::now(), avoid),
        }) else {
            tracing::debug!(service = %svc.name, "no endpoints; closing");
            return;
        };
        let port = dst_port(target, &svc, &ep);
        match &ep.identity {
            Some(id) => match ctx.peers.connector().connect(ep.addr, id, Alpn::Tcp).await {
                Ok(mut tls) => {
                    if crate::tcp::write_preamble(&mut tls, port).await.is_err() {
                        return;
                    }
                    ep.outlier.on_success();
                    ctx.metrics.tcp_connections.with(&["outbound", &svc.name, "true", "true"]).inc();
                    tokio::select! {
                        _ = crate::tcp::relay(&mut client, &mut tls, &ctx.metrics, "outbound", ctx.cfg.tcp_idle_timeout) => {}
                        _ = super::drained_then_grace(ctx) => {}
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(endpoint = %ep.addr, "TCP connect failed: {e}");
                    record_failure(ctx, &svc, &ep, e);
                }
            },
            None => match tokio::time::timeout(ctx.cfg.connect_timeout, TcpStream::connect(ep.addr)).await {
                Ok(Ok(mut s)) => {
                    let _ = s.set_nodelay(true);
                    ctx.metrics.tcp_connections.with(&["outbound", &svc.name, "false", "false"]).inc();
                    tokio::select! {
                        _ = crate::tcp::relay(&mut client, &mut s, &ctx.metrics, "outbound", ctx.cfg.tcp_idle_timeout) => {}
                        _ = super::drained_then_grace(ctx) => {}
                    }
                    return;
                }
                Ok(Err(e)) => record_failure(ctx, &svc, &ep, SendError::Connect(e.to_string())),
                Err(_) => record_failure(ctx, &svc, &ep, SendError::Connect("timed out".into())),
            },
        }
        if target.endpoint.is_some() {
            return;
        }
        avoid = Some(ep.addr);
    }
}

fn record_failure(ctx: &ProxyContext, svc: &crate::view::Service, ep: &crate::balance::Endpoint, e: SendError) {
    let outcome = Attempt::Failed(e);
    crate::outbound::http::record_outcome(ctx, svc, ep, &outcome);
}
