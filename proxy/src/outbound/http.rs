//! Outbound HTTP: a request from the local app to a mesh service. It picks the route policy,
//! works out the deadline, passes the circuit breaker, then makes attempts — each to an endpoint
//! chosen by the balancer, over the pooled mTLS HTTP/2 connection to that peer — retrying within
//! the retry policy and budget.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::{Duration, Instant};

use crate::telemetry::access_log;
use crate::state::endpoint::Endpoint;
use crate::context::ProxyContext;
use crate::http::client_body::{self, ClientBodyWatch};
use crate::http::deadline;
use crate::respond::ProxyError;
use crate::http::headers::{self, names};
use crate::http::replay::{ReplayBody, MAX_REPLAY_BYTES};
use crate::http::{incoming, is_grpc, Body};
use crate::telemetry::metrics::RequestSeries;
use crate::classify::{self as retry, Attempt};
use crate::state::policy::{Protocol, RoutePolicy};
use crate::net::pool::peer::SendError;
use crate::resilience::backoff::full_jitter;
use crate::resilience::outlier::Verdict;
use crate::state::Service;

/// Where an outbound request goes.
pub struct Target {
    /// `NS/NAME`.
    pub service: String,
    /// The name and namespace alone (metric labels).
    pub name: String,
    pub namespace: String,
    /// The original destination port (transparent mode); None in explicit mode.
    pub dst_port: Option<u16>,
    /// The original destination (transparent mode) when it is one endpoint, not a VIP.
    pub endpoint: Option<SocketAddr>,
    pub series: RequestSeries,
}

impl Target {
    pub fn new(ctx: &ProxyContext, service: String, dst_port: Option<u16>, endpoint: Option<SocketAddr>) -> Self {
        let series = RequestSeries::new(&ctx.metrics, "outbound", &service, "true", "");
        let (namespace, name) = service.split_once('/').unwrap_or(("", &service));
        let (name, namespace) = (name.to_string(), namespace.to_string());
        Self { service, name, namespace, dst_port, endpoint, series }
    }
}

/// Serves one request from the app.
pub async fn handle(
    ctx: Arc<ProxyContext>,
    target: Arc<Target>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let grpc = is_grpc(req.headers());
    // Only the access log needs these; don't copy them otherwise.
    let logged = (ctx.cfg.access_log == crate::config::AccessLog::Json)
        .then(|| (req.method().clone(), req.uri().path().to_string()));
    let resp = if headers::is_upgrade(req.headers()) && req.version() <= Version::HTTP_11 {
        Box::pin(crate::outbound::upgrade::handle(&ctx, &target, req)).await
    } else {
        proxy(&ctx, &target, req, grpc, started).await
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            ctx.metrics.proxy_errors.with(&["outbound", e.reason()]).inc();
            if matches!(e, ProxyError::DeadlineExceeded | ProxyError::Timeout) {
                ctx.metrics.deadline_exceeded.with(&["outbound", &target.name, &target.namespace]).inc();
            }
            e.response(grpc)
        }
    };
    let status = resp.status().as_u16();
    target.series.record(status, started.elapsed());
    if let Some((method, path)) = logged {
        access_log::write("outbound", &target.service, &method, &path, status, started.elapsed(), "");
    }
    Ok(resp)
}

async fn proxy(
    ctx: &Arc<ProxyContext>,
    target: &Target,
    req: Request<Incoming>,
    grpc: bool,
    started: Instant,
) -> Result<Response<Body>, ProxyError> {
    let view = ctx.view();
    let svc = view.service(&target.service).cloned().ok_or_else(|| ProxyError::NoEndpoints(target.service.clone()))?;
    drop(view);
    let (mut parts, body) = req.into_parts();
    let from_h1 = parts.version <= Version::HTTP_11;
    headers::strip_weft(&mut parts.headers, true);
    let app_deadline = deadline::from_app(&parts.headers, started, deadline::unix_now_ms());
    parts.headers.remove(names::DEADLINE_AT);
    parts.headers.remove(names::DEADLINE_MS);
    headers::strip_hop_by_hop(&mut parts.headers);

    let default_route;
    let route: &RoutePolicy = match &svc.policy {
        Some(p) => p.route(&parts),
        None => {
            default_route = RoutePolicy { timeout: None, retries: None, retryable: false, faults: Default::default() };
            &default_route
        }
    };
    let deadline = deadline::effective(route.timeout, app_deadline, started);
    // Which error an expiry means: the caller's budget, or this route's own timeout.
    let expiry_error = if app_deadline.is_some() && deadline == app_deadline {
        ProxyError::DeadlineExceeded
    } else {
        ProxyError::Timeout
    };
    if deadline.is_some_and(|d| d <= started) {
        return Err(ProxyError::DeadlineExceeded);
    }

    let breaker_cfg = svc.breaker_config();
    let _permit = match svc.runtime.breaker.enter(&breaker_cfg).await {
        Ok(p) => p,
        Err(overflow) => {
            ctx.metrics.breaker_rejections.with(&[&svc.name, &svc.namespace, overflow.label()]).inc();
            return Err(ProxyError::Overloaded(overflow.label()));
        }
    };

    // The request's absolute form for HTTP/2 towards the peer.
    let authority = parts
        .uri
        .authority()
        .cloned()
        .or_else(|| parts.headers.get(http::header::HOST).and_then(|h| Authority::try_from(h.as_bytes()).ok()))
        .unwrap_or_else(|| {
            Authority::try_from(target.service.as_str()).unwrap_or_else(|_| Authority::from_static("service"))
        });
    let path_and_query = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.headers.remove(http::header::HOST);

    let retries = route.retries.clone();
    let idempotent = matches!(parts.method.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE");
    let (body, client) = client_body::from_caller(body, ctx.cfg.stream_idle_timeout);
    let mut body = match &retries {
        Some(_) if !body.is_end_stream() => AttemptBody::Replay(ReplayBody::new(body, MAX_REPLAY_BYTES)),
        Some(_) => AttemptBody::Empty,
        None => AttemptBody::Once(Some(body)),
    };
    if let Some(r) = &retries {
        svc.runtime.budget.deposit(&r.budget, started);
    }

    let mut attempt_no: u32 = 0;
    let mut last_endpoint: Option<SocketAddr> = None;
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            return Err(expiry_error);
        }
        let ep = match target.endpoint {
            Some(addr) => svc.endpoint_at(addr.ip()).or_else(|| svc.choose(now, None)),
            None => svc.choose(now, last_endpoint),
        }
        .ok_or_else(|| ProxyError::NoEndpoints(svc.name.clone()))?;
        let per_try = retries.as_ref().and_then(|r| r.per_try_timeout).map(|t| now + t);
        let try_deadline = match (deadline, per_try) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(attempt_body) = body.next() else {
            // Not replayable (past the cap): the previous outcome stands. Unreachable on the
            // first attempt.
            return Err(ProxyError::Reset("request body could not be replayed".into()));
        };
        // Headers are copied only when another attempt may need them.
        let headers = if retries.is_some() { parts.headers.clone() } else { std::mem::take(&mut parts.headers) };
        let req = build_request(
            &parts,
            headers,
            &authority,
            &path_and_query,
            attempt_body,
            target,
            &svc,
            &ep,
            try_deadline,
            grpc,
            from_h1,
        );
        let in_flight = ep.load.start();
        let sent = send(ctx, &ep, target.endpoint.map(|a| a.ip()), req, from_h1);
        let (outcome, setup) = match try_deadline {
            Some(d) => match tokio::time::timeout_at(d, sent).await {
                Ok(r) => r,
                Err(_) => (Attempt::TimedOut, Duration::ZERO),
            },
            None => sent.await,
        };
        // The caller's own body failed: its fault, not the endpoint's, and not worth a retry.
        if failed_by_client(&client, &outcome) {
            return Err(ProxyError::BadRequest("the request body from the client failed".into()));
        }
        // A peer that holds no policy yet refused before its app saw anything: neither a success
        // nor a failure of that endpoint, and safe to retry.
        let peer_not_ready = ep.identity.is_some() && is_not_ready(&outcome);
        if !peer_not_ready {
            record_outcome(ctx, &svc, &ep, &outcome);
        }
        if matches!(outcome, Attempt::Response(_)) {
            in_flight.finish(setup);
        } else {
            drop(in_flight);
        }

        // Decide whether to retry.
        let reason = retries.as_ref().and_then(|r| retry::reason(&r.on, &outcome));
        let give_up = |outcome: Attempt| -> Result<Response<Body>, ProxyError> {
            match outcome {
                Attempt::Response(resp) => Ok(finish_response(resp, ep.identity.is_none())),
                Attempt::TimedOut => Err(if deadline.is_some_and(|d| d <= Instant::now()) {
                    expiry_error.clone()
                } else {
                    ProxyError::Timeout
                }),
                Attempt::Failed(SendError::Connect(e)) => Err(ProxyError::ConnectFailed(e)),
                Attempt::Failed(SendError::Refused) => Err(ProxyError::Reset("stream refused".into())),
                Attempt::Failed(SendError::Reset(e)) => Err(ProxyError::Reset(e)),
            }
        };
        let (Some(rc), Some(reason)) = (retries.as_ref(), reason) else {
            return give_up(outcome);
        };
        if attempt_no >= rc.max_retries {
            return give_up(outcome);
        }
        let never_reached_app = peer_not_ready
            || matches!(outcome, Attempt::Failed(SendError::Connect(_)) | Attempt::Failed(SendError::Refused));
        if !(never_reached_app || idempotent || route.retryable) {
            return give_up(outcome);
        }
        if !body.can_replay() {
            return give_up(outcome);
        }
        let backoff = full_jitter(rc.backoff_base, rc.backoff_max, attempt_no, rand::random::<f64>());
        if deadline.is_some_and(|d| Instant::now() + backoff >= d) {
            return give_up(outcome);
        }
        let Ok(_retry_permit) = svc.runtime.breaker.try_retry(&breaker_cfg) else {
            ctx.metrics.breaker_rejections.with(&[&svc.name, &svc.namespace, "retries"]).inc();
            return give_up(outcome);
        };
        if !svc.runtime.budget.try_withdraw(&rc.budget, Instant::now()) {
            ctx.metrics.retry_budget_exhausted.with(&[&svc.name, &svc.namespace]).inc();
            return give_up(outcome);
        }
        ctx.metrics.retries.with(&[&svc.name, &svc.namespace, reason]).inc();
        drop(outcome);
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
        attempt_no += 1;
        last_endpoint = Some(ep.addr);
    }
}

/// The body of each attempt: sent once, or kept for replay.
enum AttemptBody {
    Empty,
    Once(Option<Body>),
    Replay(ReplayBody),
}

impl AttemptBody {
    fn next(&mut self) -> Option<Body> {
        match self {
            AttemptBody::Empty => Some(crate::http::empty()),
            AttemptBody::Once(b) => b.take(),
            AttemptBody::Replay(r) => r.replay().map(ReplayBody::into_body),
        }
    }
    fn can_replay(&self) -> bool {
        match self {
            AttemptBody::Empty => true,
            AttemptBody::Once(_) => false,
            AttemptBody::Replay(r) => r.replay().is_some(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_request(
    parts: &http::request::Parts,
    headers: http::HeaderMap,
    authority: &Authority,
    pq: &PathAndQuery,
    body: Body,
    target: &Target,
    svc: &Service,
    ep: &Endpoint,
    deadline: Option<Instant>,
    grpc: bool,
    from_h1: bool,
) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.headers_mut() = headers;
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority.clone());
    uri.path_and_query = Some(pq.clone());
    *req.uri_mut() = Uri::from_parts(uri).unwrap_or_default();
    if let Some(d) = deadline {
        deadline::write_for_peer(req.headers_mut(), d, Instant::now(), grpc);
    }
    if ep.identity.is_some() {
        *req.version_mut() = Version::HTTP_2;
        let port = dst_port(target, svc, ep);
        req.headers_mut().insert(names::DST_PORT, HeaderValue::from(port));
        if from_h1 {
            req.headers_mut().insert(names::ORIG_PROTO, HeaderValue::from_static("http/1.1"));
        }
    }
    req
}

/// The port the request is for on the peer's side: the original destination port (transparent),
/// else the service's first target port, else the endpoint's app port.
pub fn dst_port(target: &Target, svc: &Service, ep: &Endpoint) -> u16 {
    if let Some(p) = target.dst_port {
        return svc.policy.as_ref().map_or(p, |pol| if target.endpoint.is_none() { pol.target_port_for(p) } else { p });
    }
    svc.policy.as_ref().and_then(|p| p.first_target_port()).or_else(|| ep.app_ports.first().copied()).unwrap_or(0)
}

/// One attempt (`via`: the IP the app asked for, in transparent mode); also returns the connection
/// set-up time inside it.
async fn send(
    ctx: &ProxyContext,
    ep: &Endpoint,
    via: Option<std::net::IpAddr>,
    req: Request<Body>,
    from_h1: bool,
) -> (Attempt, Duration) {
    let outcome = match &ep.identity {
        Some(id) => match {
            let (addr, slot) = ep.dial(via);
            ctx.peers.send(slot, addr, id, req)
        }
        .await
        {
            Ok((resp, setup)) => return (Attempt::Response(resp), setup),
            Err(e) => Attempt::Failed(e),
        },
        None => {
            // A static endpoint outside the mesh: plain HTTP, in the protocol it declared.
            let h2 = matches!(ep.protocol, Protocol::Http2 | Protocol::Grpc)
                || (ep.protocol == Protocol::Detect && !from_h1);
            match ctx.plain.send(ep.addr, h2, req).await {
                Ok(resp) => Attempt::Response(resp),
                Err(crate::net::pool::plain::PlainError::Connect(e)) => Attempt::Failed(SendError::Connect(e)),
                Err(e) => Attempt::Failed(SendError::Reset(e.to_string())),
            }
        }
    };
    (outcome, Duration::ZERO)
}

/// Feeds the one failure classification into outlier detection.
pub fn record_outcome(ctx: &ProxyContext, svc: &Service, ep: &Endpoint, outcome: &Attempt) {
    if retry::is_failure(outcome) {
        let cfg = svc.breaker_config().outlier;
        let now = Instant::now();
        let total = svc.endpoints.len().max(1);
        let may_eject = (svc.ejected(now) + 1) * 100 <= cfg.max_ejected_percent as usize * total;
        let verdict = ep.outlier.on_failure(&cfg, now, may_eject);
        if let Verdict::Ejected(d) = verdict {
            ctx.metrics.endpoint_ejections.with(&[&svc.name, &svc.namespace]).inc();
            tracing::warn!(service = %svc.name, endpoint = %ep.addr, seconds = d.as_secs_f64(), "endpoint ejected after consecutive failures");
        }
        ctx.metrics.endpoints_ejected.with(&[&svc.name, &svc.namespace]).set(svc.ejected(now) as i64);
    } else if matches!(outcome, Attempt::Response(_)) {
        ep.outlier.on_success();
    }
}

/// Whether an attempt failed because the caller's body did.
fn failed_by_client(client: &ClientBodyWatch, outcome: &Attempt) -> bool {
    !matches!(outcome, Attempt::Response(_)) && client.failed()
}

/// A peer proxy's `503 not-ready`: it holds no policy yet, so nothing reached its app.
fn is_not_ready(outcome: &Attempt) -> bool {
    matches!(outcome, Attempt::Response(r) if r.status() == http::StatusCode::SERVICE_UNAVAILABLE
        && r.headers().get(weft_proto::contract::PROXY_ERROR).is_some_and(|v| v == "not-ready"))
}

/// The response for the app. Only a proxy may say `x-weft-proxy-error` or `x-weft-overloaded`:
/// from a peer proxy they stand (its inbound proxy removed any its app set), from a static endpoint
/// outside the mesh they go.
fn finish_response(resp: Response<Incoming>, outside_mesh: bool) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if outside_mesh {
        headers::strip_weft(&mut parts.headers, false);
    }
    parts.headers.remove(names::ORIG_PROTO);
    parts.headers.remove(names::DST_PORT);
    Response::from_parts(parts, incoming(body))
}
