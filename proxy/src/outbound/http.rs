//! Outbound HTTP: a request from the local app to a mesh service. The route decision picks the
//! service and route policy, the deadline is worked out, the circuit breaker admits the request,
//! then the attempt loop sends it — each attempt over the pooled mTLS HTTP/2 connection to the peer
//! the decision picked — and the answer (or the one responder's error) goes back to the app.

use std::convert::Infallible;
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::{Duration, Instant};

use crate::attempt::{self, AttemptBody, Plan};
use crate::classify::{Attempt, Class, GrpcStatusBody};
use crate::context::ProxyContext;
use crate::http::client_body;
use crate::http::deadline;
use crate::http::headers::{self, names};
use crate::http::replay::{ReplayBody, MAX_REPLAY_BYTES};
use crate::http::{incoming, is_grpc, Body};
use crate::net::pool::peer::SendError;
use crate::respond::ProxyError;
use crate::route::{self, Pick, Target};
use crate::state::endpoint::Endpoint;
use crate::state::policy::Protocol;
use crate::telemetry::access_log;

/// Serves one request from the app.
pub(crate) async fn handle(
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
    let resp = resp.unwrap_or_else(|e| crate::respond::to_app(&ctx.metrics, &target, &e, grpc));
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
    let svc = route::service(&ctx.view(), target)?;
    let (mut parts, body) = req.into_parts();
    let from_h1 = parts.version <= Version::HTTP_11;
    // The app's own deadline headers are read, then give way to the budget for the next hop.
    let app_sent_deadline = headers::strip_weft(&mut parts.headers, &headers::APP_DEADLINE);
    let app_deadline = if app_sent_deadline || parts.headers.contains_key(names::GRPC_TIMEOUT) {
        deadline::from_app(&parts.headers, started, deadline::unix_now_ms())
    } else {
        None
    };
    if app_sent_deadline {
        parts.headers.remove(names::DEADLINE_AT);
        parts.headers.remove(names::DEADLINE_MS);
    }
    headers::strip_hop_by_hop(&mut parts.headers);

    let route = route::route_policy(&svc, &parts.method, &parts.uri, &parts.headers);
    let deadline = deadline::effective(route.timeout, app_deadline, started);
    // Which error an expiry means: the caller's budget, or this route's own timeout.
    let expiry = if app_deadline.is_some() && deadline == app_deadline {
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

    let retries = route.retries.as_ref();
    let idempotent = matches!(parts.method.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE");
    let (body, client) = client_body::from_caller(body, ctx.cfg.stream_idle_timeout);
    let body = match retries {
        Some(_) if !body.is_end_stream() => AttemptBody::Replay(ReplayBody::new(body, MAX_REPLAY_BYTES)),
        Some(_) => AttemptBody::Empty,
        None => AttemptBody::Once(Some(body)),
    };
    if let Some(r) = retries {
        svc.runtime.budget.deposit(&r.budget, started);
    }
    let replayable = idempotent || route.retryable;
    let plan = Plan { svc: &svc, target, retries, replayable, deadline, expiry, client, split: &route.split };
    // Headers are copied only when another attempt may need them.
    let mut headers = Some(std::mem::take(&mut parts.headers));
    let keep_headers = retries.is_some();
    let answer = attempt::run(&plan, body, &ctx.metrics, |pick, body, try_deadline| {
        let h = if keep_headers { headers.clone().unwrap_or_default() } else { headers.take().unwrap_or_default() };
        let req = build_request(&parts.method, h, &authority, &path_and_query, body, pick, try_deadline, grpc, from_h1);
        send(ctx, pick.clone(), req, from_h1)
    })
    .await?;
    Ok(finish_response(ctx, &svc, answer))
}

#[allow(clippy::too_many_arguments)]
fn build_request(
    method: &http::Method,
    headers: http::HeaderMap,
    authority: &Authority,
    pq: &PathAndQuery,
    body: Body,
    pick: &Pick,
    deadline: Option<Instant>,
    grpc: bool,
    from_h1: bool,
) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.headers_mut() = headers;
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority.clone());
    uri.path_and_query = Some(pq.clone());
    *req.uri_mut() = Uri::from_parts(uri).unwrap_or_default();
    if let Some(d) = deadline {
        deadline::write_for_peer(req.headers_mut(), d, Instant::now(), grpc);
    }
    if pick.endpoint.identity.is_some() {
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut().insert(names::DST_PORT, HeaderValue::from(pick.port));
        if from_h1 {
            req.headers_mut().insert(names::ORIG_PROTO, HeaderValue::from_static("http/1.1"));
        }
    }
    req
}

/// One attempt to the endpoint picked; also returns the connection set-up time inside it.
async fn send(ctx: &ProxyContext, pick: Pick, req: Request<Body>, from_h1: bool) -> (Attempt<Incoming>, Duration) {
    let ep = &pick.endpoint;
    let outcome = match &ep.identity {
        Some(id) => {
            let (addr, slot) = pick.dial();
            match ctx.peers.send(slot, addr, id, req).await {
                Ok((resp, setup)) => return (Attempt::Response(resp), setup),
                Err(e) => Attempt::Failed(e),
            }
        }
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

/// The response for the app. Only a proxy may say `x-weft-proxy-error` or `x-weft-overloaded`:
/// from a peer proxy they stand (its inbound proxy removed any its app set), from a static endpoint
/// outside the mesh they go. A gRPC status that comes at the end of the stream is classified then,
/// against the endpoint that answered.
fn finish_response(
    ctx: &Arc<ProxyContext>,
    svc: &Arc<crate::state::Service>,
    answer: attempt::Answer<Incoming>,
) -> Response<Body> {
    let attempt::Answer { response, endpoint, class } = answer;
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if endpoint.identity.is_none() {
        headers::strip_weft(&mut parts.headers, &[]);
    }
    // Request-only headers a peer has no business answering with; usually absent, so look first.
    if parts.headers.keys().any(|k| *k == names::ORIG_PROTO || *k == names::DST_PORT) {
        parts.headers.remove(names::ORIG_PROTO);
        parts.headers.remove(names::DST_PORT);
    }
    let grpc_counter = crate::classify::grpc_status(&parts.headers).filter(|_| is_grpc(&parts.headers)).map(|code| {
        ctx.metrics.grpc_responses.with(&[
            "outbound",
            &svc.name,
            &svc.namespace,
            crate::telemetry::metrics::status_str(code as u16),
        ])
    });
    if let Some(c) = grpc_counter {
        c.inc();
    }
    let body = match class {
        Class::AtEndOfStream => {
            let (ctx, svc) = (ctx.clone(), svc.clone());
            incoming_grpc(body, move |code| at_end_of_stream(&ctx, &svc, &endpoint, code))
        }
        _ => incoming(body),
    };
    Response::from_parts(parts, body)
}

fn incoming_grpc(body: Incoming, on_end: impl FnOnce(Option<u32>) + Send + Sync + Unpin + 'static) -> Body {
    use http_body_util::BodyExt;
    GrpcStatusBody::new(body, on_end).map_err(|e| Box::new(e) as crate::http::BoxError).boxed()
}

/// A gRPC stream's status, read at its end: counted, and fed to outlier detection.
fn at_end_of_stream(ctx: &ProxyContext, svc: &crate::state::Service, ep: &Endpoint, code: Option<u32>) {
    let Some(code) = code else { return };
    ctx.metrics
        .grpc_responses
        .with(&["outbound", &svc.name, &svc.namespace, crate::telemetry::metrics::status_str(code as u16)])
        .inc();
    let class = if crate::classify::grpc_failure(code) { Class::Failure } else { Class::Success };
    attempt::record(&ctx.metrics, svc, ep, class);
}
