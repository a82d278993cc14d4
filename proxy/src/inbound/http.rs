//! Inbound HTTP: a request from a peer proxy (or, in permissive transparent mode, a plaintext
//! client) to the local app. It authorizes the caller, makes the caller's verified identity the
//! only one the app can see (`x-weft-client-id`, every other `x-weft-*` however spelled removed,
//! also when named in `Connection`), enforces the deadline budget of mesh peers and hands the app
//! its absolute deadline, applies injected faults, and forwards in the protocol the app speaks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::authorize::authorize;
use super::{AppTarget, Caller};
use crate::context::ProxyContext;
use crate::http::client_body;
use crate::http::headers::names;
use crate::http::{deadline, headers, incoming, is_grpc, Body};
use crate::net::detect::Detected;
use crate::respond::ProxyError;
use crate::state::policy::{Faults, Protocol};
use crate::telemetry::access_log;

/// Serves HTTP from `caller` on one connection, in the version it speaks.
pub async fn connection<T>(ctx: &Arc<ProxyContext>, io: T, caller: Arc<Caller>, app: AppTarget, version: Detected)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let c = ctx.clone();
    let handler = move |req| handle(c.clone(), caller.clone(), app, req);
    match version {
        Detected::Http2 => crate::net::http_server::http2(ctx, "inbound", io, handler).await,
        _ => crate::net::http_server::http1(ctx, io, handler).await,
    }
}

pub async fn handle(
    ctx: Arc<ProxyContext>,
    caller: Arc<Caller>,
    app: AppTarget,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let grpc = is_grpc(req.headers());
    // Only the access log needs these; don't copy them otherwise.
    let logged = (ctx.cfg.access_log == crate::config::AccessLog::Json)
        .then(|| (req.method().clone(), req.uri().path().to_string()));
    let resp = match forward(&ctx, &caller, app, req, grpc, started).await {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, ProxyError::Unauthorized | ProxyError::NotReady) {
                weft_telemetry::log_limit::debug("inbound-refused", || {
                    format!("request from {} ({:?}) refused: {}", caller.remote, caller.identity, e.reason())
                });
            }
            // The caller is remote: it learns what failed, not the app's address.
            crate::respond::to_peer(&ctx.metrics, &ctx.cfg.own_service, &e, grpc)
        }
    };
    let status = resp.status().as_u16();
    let client_id = caller.identity.as_deref().unwrap_or("");
    caller.series.record(status, started.elapsed());
    if let Some((method, path)) = logged {
        access_log::write("inbound", &ctx.cfg.service, &method, &path, status, started.elapsed(), client_id);
    }
    Ok(resp)
}

async fn forward(
    ctx: &Arc<ProxyContext>,
    caller: &Caller,
    app: AppTarget,
    mut req: Request<Incoming>,
    grpc: bool,
    started: Instant,
) -> Result<Response<Body>, ProxyError> {
    let policy = super::own_policy(ctx);
    authorize(policy.as_deref(), caller.identity.as_deref())?;
    let Some(_slot) = ctx.inbound_requests.try_enter() else {
        return Err(ProxyError::Overloaded("inbound-requests"));
    };
    // Only an authenticated mesh peer's budget is trusted and enforced.
    let deadline = if caller.identity.is_some() { deadline::from_peer(req.headers(), started) } else { None };
    // Taken out as they are read: the app never sees them, and no later pass has to find them.
    let named_port = req
        .headers_mut()
        .remove(names::DST_PORT)
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        .filter(|_| caller.identity.is_some() && !app.fixed);
    let port = named_port.or(app.default_port).ok_or_else(|| ProxyError::BadRequest("no destination port".into()))?;
    if !super::port_allowed(ctx, port) {
        return Err(ProxyError::BadPort(port));
    }
    let orig_h1 = req.headers_mut().remove(names::ORIG_PROTO).is_some_and(|v| v == "http/1.1");
    let app_h2 = match policy.as_ref().map(|p| p.protocol) {
        Some(Protocol::Http1) => false,
        Some(Protocol::Http2) | Some(Protocol::Grpc) => true,
        _ => req.version() == Version::HTTP_2 && !orig_h1,
    };
    let upgrade = headers::is_upgrade(req.headers()) && req.version() <= Version::HTTP_11;

    headers_for_app(req.headers_mut(), &caller.client_id, upgrade, deadline, grpc, started, deadline::unix_now_ms())?;

    let faults =
        policy.as_ref().map(|p| p.route_for(req.method(), req.uri(), req.headers()).faults).unwrap_or_default();
    apply_faults(&faults, deadline).await?;

    let app_addr = SocketAddr::new(app.ip, port);
    if upgrade {
        // Boxed: rare, and its state would otherwise weigh on every request's future.
        let upgraded = Box::pin(upgrade_to_app(ctx, req, app_addr));
        return match deadline {
            Some(d) => tokio::time::timeout_at(d, upgraded).await.map_err(|_| ProxyError::DeadlineExceeded)?,
            None => upgraded.await,
        };
    }
    let (parts, body) = req.into_parts();
    let (body, client) = client_body::from_caller(body, ctx.cfg.stream_idle_timeout);
    let req = Request::from_parts(parts, body);
    let send = ctx.plain.send(app_addr, app_h2, req);
    let resp = match deadline {
        Some(d) => tokio::time::timeout_at(d, send).await.map_err(|_| ProxyError::DeadlineExceeded)?,
        None => send.await,
    }
    .map_err(|e| {
        if client.failed() {
            ProxyError::BadRequest("the request body from the client failed".into())
        } else {
            ProxyError::AppUnavailable(e.to_string())
        }
    })?;
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    // Only a proxy may say x-weft-proxy-error or x-weft-overloaded.
    headers::strip_weft(&mut parts.headers, &[]);
    Ok(Response::from_parts(parts, incoming(body)))
}

/// What `x-weft-client-id` says of a caller: its verified identity, or empty for a plaintext one.
pub(crate) fn client_id_value(identity: Option<&str>) -> HeaderValue {
    HeaderValue::from_str(identity.unwrap_or("")).unwrap_or(HeaderValue::from_static(""))
}

/// Headers this proxy writes for the app, in the order of [`headers_for_app`]: the caller's
/// identity always, the deadline when there is one. A caller's copies are overwritten, not removed
/// first (a removal per request saved).
static WRITTEN_FOR_APP: [HeaderName; 3] = [names::CLIENT_ID, names::DEADLINE_MS, names::DEADLINE_AT];

/// The request headers the app gets: hop-by-hop headers first (they may name ours), then every
/// x-weft-* the caller sent, then the ones this proxy vouches for (the caller's identity as
/// `client_id` says it, the deadline). A pure function of its inputs, so that it can be fuzzed
/// (`crate::fuzzing`).
pub(crate) fn headers_for_app(
    headers: &mut HeaderMap,
    client_id: &HeaderValue,
    upgrade: bool,
    deadline: Option<Instant>,
    grpc: bool,
    started: Instant,
    now_unix_ms: i64,
) -> Result<(), ProxyError> {
    if upgrade {
        headers::sanitize_upgrade_connection(headers);
    } else {
        headers::strip_hop_by_hop(headers);
    }
    let written = if deadline.is_some() { &WRITTEN_FOR_APP[..] } else { &WRITTEN_FOR_APP[..1] };
    headers::strip_weft(headers, written);
    headers.insert(names::CLIENT_ID, client_id.clone());
    if let Some(d) = deadline {
        if d <= started {
            return Err(ProxyError::DeadlineExceeded);
        }
        deadline::write_for_app(headers, d, started, now_unix_ms);
        if grpc {
            if let Ok(v) = HeaderValue::from_str(&deadline::format_grpc_timeout(d.saturating_duration_since(started))) {
                headers.insert(names::GRPC_TIMEOUT, v);
            }
        }
    }
    Ok(())
}

/// Injected faults (for testing resilience): a delay, then possibly an abort.
async fn apply_faults(f: &Faults, deadline: Option<Instant>) -> Result<(), ProxyError> {
    if f.delay_percent > 0 && rand::random_range(0..100) < f.delay_percent {
        let until = Instant::now() + f.delay;
        match deadline {
            Some(d) if d < until => {
                tokio::time::sleep_until(d).await;
                return Err(ProxyError::DeadlineExceeded);
            }
            _ => tokio::time::sleep_until(until).await,
        }
    }
    if f.abort_percent > 0 && rand::random_range(0..100) < f.abort_percent {
        return Err(ProxyError::FaultInjected(f.abort_status));
    }
    Ok(())
}

/// An upgrade request: its own connection to the app, spliced after `101`.
async fn upgrade_to_app(
    ctx: &ProxyContext,
    req: Request<Incoming>,
    app_addr: SocketAddr,
) -> Result<Response<Body>, ProxyError> {
    let tcp = crate::net::connect::connect(app_addr, ctx.cfg.connect_timeout)
        .await
        .map_err(|e| ProxyError::AppUnavailable(format!("{app_addr}: {e}")))?;
    crate::http::switch_protocols::forward(req, tcp, ctx.cfg.tcp_idle_timeout, true, |_| {}).await
}
