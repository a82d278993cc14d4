//! The built-in backend: HTTP/1.1 keep-alive and HTTP/2 (prior knowledge) on one port, answering
//! every request with the same payload, so the app side costs the same behind every proxy. It can
//! stall once (every request arriving in a window waits until it ends), which is how the tests
//! prove the load generator's coordinated-omission correction.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Bytes in every response body.
    pub payload: usize,
    /// One stall: `(after, length)` counted from the first request.
    pub stall: Option<(Duration, Duration)>,
}

/// The stall window, fixed when the first request arrives.
struct Stall {
    after: Duration,
    length: Duration,
    window: Mutex<Option<(Instant, Instant)>>,
}

impl Stall {
    /// How long a request arriving now must wait.
    fn wait(&self, now: Instant) -> Option<Duration> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (from, to) = *w.get_or_insert_with(|| (now + self.after, now + self.after + self.length));
        (now >= from && now < to).then(|| to - now)
    }
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, cfg: BackendConfig) {
    let body = Bytes::from(vec![b'x'; cfg.payload]);
    let stall = cfg.stall.map(|(after, length)| Arc::new(Stall { after, length, window: Mutex::new(None) }));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let body = body.clone();
        let stall = stall.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                let stall = stall.clone();
                async move {
                    if let Some(wait) = stall.as_ref().and_then(|s| s.wait(Instant::now())) {
                        tokio::time::sleep(wait).await;
                    }
                    let resp = Response::builder()
                        .header(http::header::CONTENT_TYPE, "application/octet-stream")
                        .body(Full::new(body))
                        .expect("static response");
                    Ok::<_, Infallible>(resp)
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().keep_alive(true);
            builder.http2().max_concurrent_streams(1024);
            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

/// `weft bench backend`: binds `listen` and serves forever on a runtime of `threads` workers.
pub fn main(listen: SocketAddr, threads: usize, cfg: BackendConfig) -> anyhow::Result<()> {
    let rt = runtime(threads)?;
    rt.block_on(async {
        let listener = TcpListener::bind(listen).await?;
        eprintln!("backend listening on {} ({} byte answers)", listener.local_addr()?, cfg.payload);
        serve(listener, cfg).await;
        Ok(())
    })
}

/// A current-thread runtime for one thread (the common case), else a multi-thread one.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_holds_requests_in_its_window_only() {
        let s = Stall { after: Duration::from_secs(1), length: Duration::from_secs(1), window: Mutex::new(None) };
        let t0 = Instant::now();
        assert_eq!(s.wait(t0), None, "the first request fixes the window and passes");
        assert_eq!(s.wait(t0 + Duration::from_millis(500)), None);
        assert_eq!(s.wait(t0 + Duration::from_millis(1250)), Some(Duration::from_millis(750)));
        assert_eq!(s.wait(t0 + Duration::from_millis(2000)), None);
    }
}
