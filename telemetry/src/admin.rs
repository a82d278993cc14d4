//! A minimal HTTP/1 server for admin endpoints (metrics, health, state), shared by the proxy and
//! the controller. Handlers are plain async functions from request to response. The port is
//! reachable from the network (scrapers and kubelets need `/metrics`, `/ready`, `/live`), so it is
//! bounded: a few connections at once, a header and a body timeout, a small body; handlers keep
//! what changes state or reveals topology to loopback callers unless told otherwise.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub type AdminBody = Full<Bytes>;

/// A request as admin handlers see it: the body is read up front (bounded).
pub struct AdminRequest {
    pub method: http::Method,
    pub path: String,
    pub query: Option<String>,
    pub peer: SocketAddr,
    pub body: Bytes,
}

const MAX_ADMIN_BODY: usize = 64 * 1024;
/// Admin connections at once; more are closed at once (a scraper and a probe need two).
pub const MAX_ADMIN_CONNECTIONS: usize = 32;
/// Time to send a request's headers, and then its body.
const ADMIN_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `handler` on `listener` until the task is dropped.
pub async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(AdminRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<AdminBody>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            crate::log_limit::warn("admin-connections", || {
                format!("admin connection from {peer} closed: {MAX_ADMIN_CONNECTIONS} are open already")
            });
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req: http::Request<Incoming>| {
                let handler = handler.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let collected =
                        tokio::time::timeout(ADMIN_READ_TIMEOUT, Limited::new(body, MAX_ADMIN_BODY).collect());
                    let body = match collected.await {
                        Ok(Ok(b)) => b.to_bytes(),
                        Ok(Err(_)) => {
                            return Ok::<_, Infallible>(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"))
                        }
                        Err(_) => return Ok(text(StatusCode::REQUEST_TIMEOUT, "body too slow\n")),
                    };
                    let req = AdminRequest {
                        method: parts.method,
                        path: parts.uri.path().to_string(),
                        query: parts.uri.query().map(str::to_string),
                        peer,
                        body,
                    };
                    Ok::<_, Infallible>(handler(req).await)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(ADMIN_READ_TIMEOUT);
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Whether the caller is on this host (loopback, also as an IPv4-mapped IPv6 address).
pub fn is_loopback(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// The answer to a non-loopback caller of an endpoint kept to loopback; `flag` opens it.
pub fn loopback_only(path: &str, flag: &str) -> Response<AdminBody> {
    text(StatusCode::FORBIDDEN, format!("{path} is served to loopback callers only (start with {flag} to open it)\n"))
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<AdminBody> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response")
}

/// A JSON response from already-serialized text.
pub fn json(status: StatusCode, body: String) -> Response<AdminBody> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response")
}

pub fn metrics(body: String) -> Response<AdminBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static response")
}
