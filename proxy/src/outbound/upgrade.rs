//! Outbound upgrades: the app's upgrade request goes to a peer proxy on a dedicated HTTP/1.1
//! mTLS connection (or straight to a static endpoint).

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::context::ProxyContext;
use crate::http::errors::ProxyError;
use crate::http::{headers, Body};
use crate::outbound::http::{dst_port, Target};
use crate::pool::peer::Alpn;

pub async fn handle(
    ctx: &Arc<ProxyContext>,
    target: &Target,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let svc =
        ctx.view().service(&target.service).cloned().ok_or_else(|| ProxyError::NoEndpoints(target.service.clone()))?;
    let ep = svc.choose(Instant::now(), None).ok_or_else(|| ProxyError::NoEndpoints(svc.name.clone()))?;
    let port = dst_port(target, &svc, &ep);
    match &ep.identity {
        Some(id) => {
            let tls = ctx
                .peers
                .connector()
                .connect(ep.addr, id, Alpn::Http1)
                .await
                .map_err(|e| ProxyError::ConnectFailed(e.to_string()))?;
            crate::upgrade::forward(req, tls, ctx.cfg.tcp_idle_timeout, |parts| {
                headers::strip_weft(&mut parts.headers, false);
                parts.headers.insert(crate::http::headers::names::DST_PORT, HeaderValue::from(port));
            })
            .await
        }
        None => {
            let tcp = tokio::time::timeout(ctx.cfg.connect_timeout, tokio::net::TcpStream::connect(ep.addr))
                .await
                .map_err(|_| ProxyError::ConnectFailed(format!("{}: timed out", ep.addr)))?
                .map_err(|e| ProxyError::ConnectFailed(format!("{}: {e}", ep.addr)))?;
            crate::upgrade::forward(req, tcp, ctx.cfg.tcp_idle_timeout, |parts| {
                headers::strip_weft(&mut parts.headers, false)
            })
            .await
        }
    }
}
