//! Outbound upgrades: the app's upgrade request goes to the endpoint the route decision picks, on
//! a dedicated HTTP/1.1 mTLS connection to its proxy (or straight to a static endpoint). The route
//! timeout and the request's deadline bound the handshake (up to `101`), whose outcome counts for
//! the endpoint like any other; the upgraded connection then lives by `--tcp-idle-timeout`.

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::classify::Class;
use crate::context::ProxyContext;
use crate::http::{deadline, headers, Body};
use crate::net::pool::peer::Alpn;
use crate::respond::ProxyError;
use crate::route::{self, Target};

pub async fn handle(
    ctx: &Arc<ProxyContext>,
    target: &Target,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let started = Instant::now();
    let svc = route::service(&ctx.view(), target)?;
    let route = route::route_policy(&svc, req.method(), req.uri(), req.headers());
    let timeout = route.timeout;
    let app_deadline = deadline::from_app(req.headers(), started, deadline::unix_now_ms());
    let until = deadline::effective(timeout, app_deadline, started);
    let breaker_cfg = svc.breaker_config();
    let _connection = svc.runtime.breaker.try_connect(&breaker_cfg).map_err(|o| {
        ctx.metrics.breaker_rejections.with(&[&svc.name, &svc.namespace, o.label()]).inc();
        ProxyError::Overloaded(o.label())
    })?;
    let pick = route::pick(&svc, target, started, None, &route.split)
        .ok_or_else(|| ProxyError::NoEndpoints(svc.key.clone()))?;
    let (ep, port) = (pick.endpoint.clone(), pick.port);
    let connect_and_forward = async {
        match &ep.identity {
            Some(id) => {
                let tls = ctx
                    .peers
                    .connector()
                    .connect(pick.dial().0, id, Alpn::Http1)
                    .await
                    .map_err(|e| ProxyError::ConnectFailed(e.to_string()))?;
                crate::http::switch_protocols::forward(req, tls, ctx.cfg.tcp_idle_timeout, false, |parts| {
                    headers::sanitize_upgrade_connection(&mut parts.headers);
                    headers::strip_weft(&mut parts.headers, &[]);
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
                    headers::strip_weft(&mut parts.headers, &[]);
                })
                .await
            }
        }
    };
    let result = match until {
        Some(d) => tokio::time::timeout_at(d, connect_and_forward).await.map_err(|_| match app_deadline {
            Some(a) if Some(a) == until => ProxyError::DeadlineExceeded,
            _ => ProxyError::Timeout,
        }),
        None => Ok(connect_and_forward.await),
    }
    .and_then(|r| r);
    // The handshake's outcome counts for the endpoint as any request's does.
    let class = match &result {
        Ok(resp) if resp.status().is_server_error() => Class::Failure,
        Ok(_) => Class::Success,
        Err(ProxyError::ConnectFailed(_) | ProxyError::Reset(_) | ProxyError::Timeout) => Class::Failure,
        Err(_) => Class::Neutral,
    };
    crate::attempt::record(&ctx.metrics, &svc, &ep, class);
    result
}
