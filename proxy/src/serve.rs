//! Serving HTTP connections with the proxy's limits (header sizes, header read timeout) and
//! graceful shutdown when the drain starts (HTTP/1: `Connection: close`; HTTP/2: GOAWAY).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::context::{drained, ProxyContext};
use crate::http::Body;

pub async fn http1<T, F, Fut>(ctx: &Arc<ProxyContext>, io: T, handler: F)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.cfg.header_read_timeout)
        .max_buf_size(ctx.cfg.max_header_bytes.max(8192))
        .max_headers(200)
        // A connection accepted while draining serves one request and closes.
        .keep_alive(!ctx.drain.is_draining());
    let conn = builder.serve_connection(TokioIo::new(io), service_fn(handler)).with_upgrades();
    until_drained(ctx, conn, |c| c.graceful_shutdown()).await
}

pub async fn http2<T, F, Fut>(ctx: &Arc<ProxyContext>, io: T, handler: F)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(ctx.cfg.max_header_bytes as u32)
        .max_concurrent_streams(1000)
        .adaptive_window(true)
        .keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(10));
    // Boxed: a request's future is large, and hyper moves it into a task of its own; a pointer
    // moves for free where the whole state machine would be copied.
    let conn = builder.serve_connection(TokioIo::new(io), service_fn(move |req| Box::pin(handler(req))));
    until_drained(ctx, conn, |c| c.graceful_shutdown()).await
}

/// Drives a connection to its end; when the drain starts, asks it to finish gracefully first.
async fn until_drained<C>(ctx: &ProxyContext, conn: C, graceful_shutdown: impl FnOnce(std::pin::Pin<&mut C>))
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    let result = tokio::select! {
        res = conn.as_mut() => res,
        _ = drained(ctx.drain.signal()) => {
            graceful_shutdown(conn.as_mut());
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}
