//! The built-in backend: HTTP/1.1 keep-alive, HTTP/2 (prior knowledge), gRPC unary and opaque TCP
//! request/response on one port, answering every request with the same payload, so the app side
//! costs the same behind every proxy (and every proxy reaches it on the same port, as it would one
//! app). It can stall once (every request arriving in a window waits until it ends), which is how
//! the tests prove the load generator's coordinated-omission correction.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::{BodyExt, Either, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::load::conn::TCP_REQUEST;

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
            // No HTTP request starts with a NUL byte: such a connection is the opaque TCP load.
            let mut first = [0u8; 1];
            match tcp.peek(&mut first).await {
                Ok(1) if first[0] == TCP_REQUEST[0] => serve_tcp(tcp, body).await,
                Ok(_) => serve_http(tcp, body, stall).await,
                Err(_) => {}
            }
        });
    }
}

/// HTTP/1.1 or HTTP/2 on one connection; gRPC calls get their answer as one message frame.
async fn serve_http(tcp: TcpStream, body: Bytes, stall: Option<Arc<Stall>>) {
    let grpc_body = grpc_frame(&body);
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let body = body.clone();
        let grpc_body = grpc_body.clone();
        let stall = stall.clone();
        async move {
            if let Some(wait) = stall.as_ref().and_then(|s| s.wait(Instant::now())) {
                tokio::time::sleep(wait).await;
            }
            let grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            if grpc {
                // A unary call: read the request message before answering, as a server would
                // (at most 64 KiB of it: the load sends 14 bytes).
                let _ = http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                let resp = Response::builder()
                    .header(http::header::CONTENT_TYPE, "application/grpc")
                    .body(Either::Right(Full::new(grpc_body).with_trailers(async move { Some(Ok(trailers)) })))
                    .expect("static response");
                return Ok::<_, Infallible>(resp);
            }
            let resp = Response::builder()
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .body(Either::Left(Full::new(body)))
                .expect("static response");
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    builder.http2().max_concurrent_streams(1024);
    let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
}

/// The payload as one uncompressed gRPC message.
fn grpc_frame(payload: &Bytes) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    b.put_slice(payload);
    b.freeze()
}

/// Opaque request/response: every request line read whole is answered with the payload; anything
/// else closes the connection.
async fn serve_tcp(mut tcp: TcpStream, body: Bytes) {
    let mut req = [0u8; TCP_REQUEST.len()];
    loop {
        if tcp.read_exact(&mut req).await.is_err() || req != TCP_REQUEST {
            return;
        }
        if tcp.write_all(&body).await.is_err() {
            return;
        }
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
