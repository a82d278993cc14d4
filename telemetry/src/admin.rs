//! A minimal HTTP/1 server for admin endpoints (metrics, health, state), shared by the proxy and
//! the controller. Handlers are plain async functions from request to response.

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

/// Serves `handler` on `listener` until the task is dropped.
pub async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(AdminRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<AdminBody>> + Send + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<Incoming>| {
                let handler = handler.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = match Limited::new(body, MAX_ADMIN_BODY).collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(_) => return Ok::<_, Infallible>(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")),
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
            builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
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
