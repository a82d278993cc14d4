//! Connections the proxy opens: mTLS to peer proxies (pooled, multiplexed HTTP/2; one-off HTTP/1
//! for upgrades; opaque TCP tunnels) and plain HTTP to the local app and to static endpoints.

pub mod peer;
pub mod plain;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::Body;

/// One multiplexed HTTP/2 connection, made on first use and again when it closes.
#[derive(Default)]
pub struct ConnSlot {
    ready: Mutex<Option<SendRequest<Body>>>,
    /// One connect at a time: concurrent requests wait for it rather than each dialing.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnSlot(open: {})", self.current().is_some())
    }
}

impl ConnSlot {
    fn current(&self) -> Option<SendRequest<Body>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// The live connection, or a new one from `connect`.
    pub async fn get_or_connect<F, Fut, E>(&self, connect: F) -> Result<SendRequest<Body>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SendRequest<Body>, E>>,
    {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(s) = self.current() {
            return Ok(s);
        }
        // Boxed: connecting (TCP, TLS, handshake) is a big state machine that most requests
        // never run; inline, every request's future would carry its size.
        let sender = Box::pin(connect()).await?;
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }
}

/// The HTTP/2 client handshake both pools use; the connection runs on its own task.
pub async fn h2_handshake<T>(io: T, addr: SocketAddr, max_header_list_size: u32) -> Result<SendRequest<Body>, String>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_header_list_size(max_header_list_size)
        .adaptive_window(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, "HTTP/2 connection ended: {e}");
        }
    });
    Ok(sender)
}
