//! Plain HTTP connections: to the local app (HTTP/1.1 or h2c, as it speaks) and to static
//! endpoints outside the mesh. HTTP/1 connections are pooled per address (most recently used
//! first); one that sat idle longer than the idle timeout is never reused, since the app may be
//! closing it (keep it below the app's own keep-alive timeout), and a request that a closing
//! connection could not take is sent again on a fresh one — it never reached the app.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ConnSlot;
use crate::http::Body;

/// Idle HTTP/1 connections kept per address at the most.
const MAX_IDLE_PER_ADDR: usize = 256;

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

pub struct PlainClient {
    h1: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    h2: Mutex<HashMap<SocketAddr, Arc<ConnSlot>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_header_bytes: usize,
}

/// Why a plain request failed.
#[derive(Debug, thiserror::Error)]
pub enum PlainError {
    /// The request never left this proxy.
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("{0}")]
    Other(String),
}

impl PlainClient {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_header_bytes: usize) -> Self {
        Self {
            h1: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
            connect_timeout,
            idle_timeout,
            max_header_bytes: max_header_bytes.max(8192),
        }
    }

    /// Sends `req` to `addr`, keeping its path and authority (as the Host header for HTTP/1).
    pub async fn send(&self, addr: SocketAddr, h2: bool, req: Request<Body>) -> Result<Response<Incoming>, PlainError> {
        if h2 {
            self.send_h2(addr, req).await
        } else {
            self.send_h1(addr, req).await
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, PlainError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| PlainError::Connect(format!("{addr}: connect timed out")))?
            .map_err(|e| PlainError::Connect(format!("{addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// Closed, or idle past the timeout (the app may be closing it right now): never reused.
    fn spent(&self, c: &Idle, now: Instant) -> bool {
        c.sender.is_closed() || c.sender.is_ready() && now.duration_since(c.since) >= self.idle_timeout
    }

    /// A ready pooled connection, the most recently used (usually the last: one look per
    /// request); closed and stale ones are skipped here and dropped by [`Self::sweep`] or a full
    /// [`Self::checkin`], busy ones stay for later.
    fn checkout(&self, addr: SocketAddr) -> Option<http1::SendRequest<Body>> {
        let mut pool = self.h1.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.get_mut(&addr)?;
        let now = Instant::now();
        let pos = idle.iter().rposition(|c| c.sender.is_ready() && !self.spent(c, now))?;
        Some(idle.remove(pos).sender)
    }

    /// Closes every connection idle past the timeout (dropping its sender ends it), so that once
    /// traffic stops the proxy holds none of the app's sockets; a checkout alone would only drop
    /// them when traffic comes back.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut pool = self.h1.lock().unwrap_or_else(|e| e.into_inner());
        pool.retain(|_, idle| {
            idle.retain(|c| !self.spent(c, now));
            !idle.is_empty()
        });
    }

    fn checkin(&self, addr: SocketAddr, sender: http1::SendRequest<Body>) {
        let mut pool = self.h1.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.entry(addr).or_default();
        if idle.len() >= MAX_IDLE_PER_ADDR {
            let now = Instant::now();
            idle.retain(|c| !self.spent(c, now));
        }
        if idle.len() < MAX_IDLE_PER_ADDR {
            idle.push(Idle { sender, since: Instant::now() });
        }
    }

    async fn connect_h1(&self, addr: SocketAddr) -> Result<http1::SendRequest<Body>, PlainError> {
        let tcp = self.connect(addr).await?;
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(self.max_header_bytes)
            .max_headers(200)
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| PlainError::Connect(format!("{addr}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, "app connection ended: {e}");
            }
        });
        Ok(sender)
    }

    async fn send_h1(&self, addr: SocketAddr, mut req: Request<Body>) -> Result<Response<Incoming>, PlainError> {
        // Origin form on the wire, the authority in the Host header.
        if let Some(authority) = req.uri().authority().cloned() {
            if !req.headers().contains_key(http::header::HOST) {
                if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                    req.headers_mut().insert(http::header::HOST, v);
                }
            }
        }
        let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
        *req.version_mut() = http::Version::HTTP_11;
        for attempt in 0..3 {
            let mut sender = match self.checkout(addr) {
                Some(s) => s,
                None => Box::pin(self.connect_h1(addr)).await?,
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    // Back to the pool now: it becomes ready again once this body is read.
                    self.checkin(addr, sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the connection was closing. Try a fresh one.
                    Some(back) if attempt < 2 => req = back,
                    _ => return Err(PlainError::Other(e.into_error().to_string())),
                },
            }
        }
        Err(PlainError::Connect(format!("{addr}: no usable connection")))
    }

    async fn send_h2(&self, addr: SocketAddr, mut req: Request<Body>) -> Result<Response<Incoming>, PlainError> {
        // HTTP/2 needs an absolute URI: the request's authority, else the Host header.
        let authority = req
            .uri()
            .authority()
            .cloned()
            .or_else(|| req.headers().get(http::header::HOST).and_then(|h| Authority::try_from(h.as_bytes()).ok()))
            .unwrap_or_else(|| Authority::try_from(addr.to_string()).unwrap_or_else(|_| Authority::from_static("app")));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
        parts.path_and_query =
            Some(req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| PlainError::Other(e.to_string()))?;
        *req.version_mut() = http::Version::HTTP_2;
        req.headers_mut().remove(http::header::HOST);
        let slot = self.h2.lock().unwrap_or_else(|e| e.into_inner()).entry(addr).or_default().clone();
        for attempt in 0..2 {
            let mut sender = slot
                .get_or_connect(|| async {
                    let tcp = self.connect(addr).await?;
                    super::h2_handshake(tcp, addr, self.max_header_bytes as u32).await.map_err(PlainError::Connect)
                })
                .await?;
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(back) if attempt == 0 => req = back,
                    _ => return Err(PlainError::Other(e.into_error().to_string())),
                },
            }
        }
        Err(PlainError::Connect(format!("{addr}: no usable connection")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An app that answers one request and reports when the proxy closes the connection.
    async fn app() -> (SocketAddr, tokio::sync::oneshot::Receiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request never came");
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
            // Keep-alive: the connection stays until the proxy closes it.
            while conn.read(&mut buf).await.unwrap_or(0) > 0 {}
            let _ = closed_tx.send(());
        });
        (addr, closed)
    }

    #[tokio::test]
    async fn a_sweep_closes_connections_idle_past_the_timeout_and_keeps_fresh_ones() {
        let idle_timeout = Duration::from_millis(300);
        let client = PlainClient::new(Duration::from_secs(5), idle_timeout, 8192);
        let (addr, mut closed) = app().await;
        let req = Request::get("http://app/").body(crate::http::empty()).unwrap();
        let resp = client.send(addr, false, req).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");

        // Not yet past the timeout (the sweep runs at once): the connection stays pooled.
        client.sweep();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(closed.try_recv().is_err(), "a fresh idle connection was closed");
        assert_eq!(client.h1.lock().unwrap()[&addr].len(), 1);

        tokio::time::sleep(idle_timeout).await;
        client.sweep();
        assert!(client.h1.lock().unwrap().is_empty(), "the address is forgotten too");
        tokio::time::timeout(Duration::from_secs(10), closed).await.expect("the app saw the close").unwrap();
    }

    /// An app that answers every request on every connection with `ok`, counts the connections
    /// it accepted and, with `close_after`, closes each one after its first answer.
    async fn counting_app(close_after: bool) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        seen.clear();
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                        if close_after {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn get_ok(client: &PlainClient, addr: SocketAddr) {
        let req = Request::get("http://app/").body(crate::http::empty()).unwrap();
        let resp = client.send(addr, false, req).await.expect("an answer");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    }

    /// A pooled connection is reused while fresh; once idle past the timeout (the app may be
    /// closing it right now) it is never handed out again, sweep or no sweep.
    #[tokio::test]
    async fn a_connection_idle_past_the_timeout_is_never_handed_out() {
        // A second of margin: the first two requests must land within it on a loaded machine.
        let idle_timeout = Duration::from_secs(1);
        let client = PlainClient::new(Duration::from_secs(5), idle_timeout, 8192);
        let (addr, accepted) = counting_app(false).await;
        get_ok(&client, addr).await;
        get_ok(&client, addr).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "a fresh connection is reused");
        tokio::time::sleep(idle_timeout + Duration::from_millis(100)).await;
        assert!(client.checkout(addr).is_none(), "a stale connection was handed out");
        get_ok(&client, addr).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "the next request opened a new one");
    }

    /// A connection the app closed after answering is never used again: every request succeeds,
    /// each on a connection of its own.
    #[tokio::test]
    async fn a_connection_the_app_closed_is_never_reused() {
        let client = PlainClient::new(Duration::from_secs(5), Duration::from_secs(60), 8192);
        let (addr, accepted) = counting_app(true).await;
        for _ in 0..5 {
            get_ok(&client, addr).await;
            // Let the close reach the pooled sender; had it not, the unwritten request would be
            // retried on a fresh connection, never failed.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
    }
}
