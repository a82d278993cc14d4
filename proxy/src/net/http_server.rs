//! Serving HTTP connections with the proxy's limits — header sizes, the header read timeout, the
//! HTTP/2 preface timeout, streams per connection, the idle timeout of connections with no request
//! in progress — and graceful shutdown when the drain starts (HTTP/1: `Connection: close`; HTTP/2:
//! GOAWAY).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::context::{drained, ProxyContext};
use crate::http::Body;
use crate::net::detect::{Prefixed, H2_PREFACE};

/// Concurrent streams a client may open on one HTTP/2 connection (Envoy's guidance for untrusted
/// peers): more wait at the client, so one connection cannot pin hundreds of app connections.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

pub async fn http1<T, F, Fut>(ctx: &Arc<ProxyContext>, io: T, handler: F)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Also the idle timeout of a keep-alive connection: hyper starts it while waiting for the
        // next request.
        .header_read_timeout(ctx.cfg.header_read_timeout)
        .max_buf_size(ctx.cfg.max_header_bytes.max(8192))
        .max_headers(200)
        // A connection accepted while draining serves one request and closes.
        .keep_alive(!ctx.drain.is_draining());
    let conn = builder.serve_connection(TokioIo::new(io), service_fn(handler)).with_upgrades();
    until_done(ctx, conn, None, |c| c.graceful_shutdown()).await
}

pub async fn http2<T, F, Fut>(ctx: &Arc<ProxyContext>, direction: &'static str, mut io: T, handler: F)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    // The preface must come within the header read timeout: a client that connects and says
    // nothing is not held open.
    let mut preface = [0u8; 24];
    match tokio::time::timeout(ctx.cfg.header_read_timeout, io.read_exact(&mut preface)).await {
        Ok(Ok(_)) if preface[..] == *H2_PREFACE => {}
        _ => return crate::respond::close(&ctx.metrics, direction, &crate::respond::ProxyError::NoPreface, direction),
    }
    let io = Prefixed::new(bytes::Bytes::copy_from_slice(&preface), io);
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(ctx.cfg.max_header_bytes as u32)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .adaptive_window(true)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let activity = Arc::new(Activity::default());
    let counted = activity.clone();
    // Boxed: a request's future is large, and hyper moves it into a task of its own; a pointer
    // moves for free where the whole state machine would be copied.
    let conn = builder.serve_connection(
        TokioIo::new(io),
        service_fn(move |req| {
            let guard = counted.start();
            let fut = handler(req);
            Box::pin(async move {
                let resp = fut.await;
                drop(guard);
                resp
            })
        }),
    );
    until_done(ctx, conn, Some(activity), |c| c.graceful_shutdown()).await
}

/// Requests on one connection: how many started, how many are in progress. Two counters instead
/// of a timestamp per request: the idle watch compares them between ticks.
#[derive(Default)]
struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Activity {
    fn start(self: &Arc<Self>) -> InProgress {
        self.started.fetch_add(1, Ordering::Relaxed);
        InProgress(self.clone())
    }
}

/// One request in progress; counted finished when dropped.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// Resolves once no request was in progress or started for a whole `idle` (checked every half
/// `idle`, so it fires between `idle` and 1.5 × `idle`); never when `idle` is zero.
async fn idle_for(activity: &Activity, idle: Duration) {
    if idle.is_zero() {
        return std::future::pending().await;
    }
    // The count of started requests at the last tick that found none in progress.
    let mut quiet_since: Option<u64> = None;
    let mut quiet_ticks = 0;
    loop {
        tokio::time::sleep(idle / 2).await;
        let started = activity.started.load(Ordering::Relaxed);
        let busy = activity.finished.load(Ordering::Relaxed) != started;
        if !busy && quiet_since == Some(started) {
            quiet_ticks += 1;
            if quiet_ticks >= 2 {
                return;
            }
        } else {
            quiet_since = (!busy).then_some(started);
            quiet_ticks = 0;
        }
    }
}

/// Drives a connection to its end; when the drain starts, or (HTTP/2) it sat idle past the idle
/// timeout, asks it to finish gracefully first. Both are watched on a task of their own: polled
/// beside the connection, their timers would be polled again on every read and write.
async fn until_done<C>(
    ctx: &Arc<ProxyContext>,
    conn: C,
    activity: Option<Arc<Activity>>,
    graceful_shutdown: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watchdog = tokio::spawn({
        let (drain, idle) = (ctx.drain.signal(), ctx.cfg.idle_timeout);
        async move {
            let idle = async {
                match &activity {
                    Some(a) => idle_for(a, idle).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = drained(drain) => {}
                _ = idle => {}
            }
            let _ = stop_tx.send(());
        }
    });
    let result = tokio::select! {
        res = conn.as_mut() => res,
        Ok(()) = stop_rx => {
            graceful_shutdown(conn.as_mut());
            conn.await
        }
    };
    watchdog.abort();
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_request_for_the_whole_timeout() {
        let a = Arc::new(Activity::default());
        let idle = Duration::from_secs(60);
        // A request in progress for five minutes keeps it busy.
        let guard = a.start();
        let watch = tokio::spawn({
            let a = a.clone();
            async move {
                let t0 = tokio::time::Instant::now();
                idle_for(&a, idle).await;
                t0.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!watch.is_finished());
        drop(guard);
        let waited = watch.await.unwrap();
        assert!(
            waited >= Duration::from_secs(300) + idle && waited <= Duration::from_secs(300) + idle * 2,
            "{waited:?}"
        );
    }
}
