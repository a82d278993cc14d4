//! Outbound upgrades: the app's upgrade request goes to a peer proxy on a dedicated HTTP/1.1
//! mTLS connection (or straight to a static endpoint). The route timeout and the request's
//! deadline bound the handshake (up to `101`); the upgraded connection then lives by
//! `--tcp-idle-timeout`.

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::context::ProxyContext;
use crate::respond::ProxyError;
use crate::http::{deadline, headers, Body};
use crate::outbound::http::{dst_port, Target};
use crate::net::pool::peer::Alpn;

pub async fn handle(
    ctx: &Arc<ProxyContext>,
    target: &Target,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let started = Instant::now();
    let svc =
        ctx.view().service(&target.service).cloned().ok_or_else(|| ProxyError::NoEndpoints(target.service.clone()))?;
    let timeout = svc.policy.as_ref().and_then(|p| p.route_for(req.method(), req.uri(), req.headers()).timeout);
    let app_deadline = deadline::from_app(req.headers(), started, deadline::unix_now_ms());
    let until = deadline::effective(timeout, app_deadline, started);
    let ep = match target.endpoint {
        Some(addr) => svc.endpoint_at(addr.ip()),
        None => svc.choose(started, None),
    }
    .ok_or_else(|| ProxyError::NoEndpoints(svc.name.clone()))?;
    let port = dst_port(target, &svc, &ep);
    let connect_and_forward = async {
        match &ep.identity {
            Some(id) => {
                let tls = ctx
                    .peers
                    .connector()
                    .connect(ep.dial(target.endpoint.map(|a| a.ip())).0, id, Alpn::Http1)
                    .await
                    .map_err(|e| ProxyError::ConnectFailed(e.to_string()))?;
                crate::http::switch_protocols::forward(req, tls, ctx.cfg.tcp_idle_timeout, false, |parts| {
                    headers::sanitize_upgrade_connection(&mut parts.headers);
                    headers::strip_weft(&mut parts.headers, false);
                    parts.headers.insert(crate::http::headers::names::DST_PORT, HeaderValue::from(port));
                })
                .await
            }
            None => {
                let tcp = crate::net::connect::connect(ep.addr, ctx.cfg.connect_timeout)
                    .await
                    .map_err(|e| ProxyError::ConnectFailed(format!("{}: {e}", ep.addr)))?;
                crate::http::switch_protocols::forward(req, tcp, ctx.cfg.tcp_idle_timeout, true, |parts| {
                    headers::sanitize_upgrade_connection(&mut parts.headers);
                    headers::strip_weft(&mut parts.headers, false)
                })
                .await
            }
        }
    };
    match until {
        Some(d) => tokio::time::timeout_at(d, connect_and_forward).await.map_err(|_| match app_deadline {
            Some(a) if Some(a) == until => ProxyError::DeadlineExceeded,
            _ => ProxyError::Timeout,
        })?,
        None => connect_and_forward.await,
    }
}
