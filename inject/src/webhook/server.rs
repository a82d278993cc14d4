//! The webhook's HTTPS server: `POST /inject` with an AdmissionReview, `GET /live` for probes.
//! Each review gets a budget — the configured one, or half the `timeout` the API server puts in
//! the URL if that is shorter — so the answer arrives well before the API server gives up.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::namespaces::{Lookup, NamespaceCache};
use super::review::{self, Injector};

/// Reviews carry the pod and, for updates, its old version: a few MiB at most.
const MAX_BODY: usize = 8 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The API server keeps a few connections; more than this at once is not it.
const MAX_CONNECTIONS: usize = 256;

pub struct State {
    pub injector: Injector,
    pub namespaces: NamespaceCache,
    pub budget: Duration,
}

pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, state: Arc<State>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("webhook: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "webhook: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, "webhook: TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "webhook: TLS handshake timed out"),
            };
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), svc).await {
                tracing::debug!(%peer, "webhook: connection ended: {e}");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

/// Go's duration syntax as the API server writes it in `?timeout=` (`10s`, `2m0s`, `500ms`).
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[u..];
    }
    Some(Duration::from_secs_f64(total))
}

/// The time this review may take.
pub fn budget(query: Option<&str>, configured: Duration) -> Duration {
    let asked =
        query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| kv.strip_prefix("timeout=")).and_then(go_duration);
    match asked {
        Some(t) => configured.min(t / 2),
        None => configured,
    }
}

async fn handle(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => return text(StatusCode::OK, "ok\n"),
        (&Method::POST, super::PATH) => {}
        _ => return text(StatusCode::NOT_FOUND, "POST an AdmissionReview to /inject\n"),
    }
    let started = tokio::time::Instant::now();
    let budget = budget(req.uri().query(), state.budget);
    let body = match tokio::time::timeout(budget, Limited::new(req.into_body(), MAX_BODY).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => return text(StatusCode::BAD_REQUEST, format!("reading the request: {e}\n")),
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "the request body took too long\n"),
    };
    let request = match review::Request::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("webhook: bad request: {e}");
            return text(StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
    };
    let lookup = match (request.wants_injection(), request.namespace()) {
        (true, Some(ns)) => state.namespaces.get(ns, budget.saturating_sub(started.elapsed())).await,
        (true, None) => Lookup::Failed("the request names no namespace".into()),
        (false, _) => Lookup::Found(Default::default()),
    };
    let answer = review::answer(&request, &state.injector, &lookup);
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "webhook: {}", answer.log);
    match serde_json::to_vec(&answer.review) {
        Ok(json) => {
            let mut r = Response::new(Full::new(Bytes::from(json)));
            r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_servers_timeout_halves_the_budget() {
        let five = Duration::from_secs(5);
        assert_eq!(budget(Some("timeout=10s"), five), five);
        assert_eq!(budget(Some("timeout=4s"), five), Duration::from_secs(2));
        assert_eq!(budget(Some("x=1&timeout=1m0s"), five), five);
        assert_eq!(budget(Some("timeout=1500ms"), five), Duration::from_millis(750));
        assert_eq!(budget(None, five), five);
        assert_eq!(budget(Some("timeout=bogus"), five), five);
    }
}
