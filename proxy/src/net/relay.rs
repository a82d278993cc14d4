//! Opaque TCP: the preamble that tells the peer which port a tunnelled connection is for, and the
//! byte relay (also used for upgraded HTTP connections) with its idle timeout and metrics.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use weft_proto::contract::TCP_PREAMBLE_MAGIC;

use crate::net::detect::{first_mover, Detected, FirstMove};
use crate::telemetry::metrics::ProxyMetrics;

pub async fn write_preamble<W: AsyncWrite + Unpin>(w: &mut W, port: u16) -> std::io::Result<()> {
    let mut buf = [0u8; 6];
    buf[..4].copy_from_slice(TCP_PREAMBLE_MAGIC);
    buf[4..].copy_from_slice(&port.to_be_bytes());
    w.write_all(&buf).await
}

/// Reads the preamble; anything else is an error (the connection is then closed).
pub async fn read_preamble<R: AsyncRead + Unpin>(r: &mut R, timeout: Duration) -> std::io::Result<u16> {
    let mut buf = [0u8; 6];
    tokio::time::timeout(timeout, r.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no TCP preamble"))??;
    if &buf[..4] != TCP_PREAMBLE_MAGIC {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad TCP preamble"));
    }
    Ok(u16::from_be_bytes([buf[4], buf[5]]))
}

/// Relays bytes both ways until both sides are done, or until no byte has moved either way for
/// `idle` (zero: never); counts them per direction.
pub async fn relay<A, B>(
    client: &mut A,
    server: &mut B,
    metrics: &ProxyMetrics,
    direction: &'static str,
    idle: Duration,
) where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    match splice(client, server, idle).await {
        Some(Ok((to_server, to_client))) => {
            metrics.tcp_bytes.with(&[direction, "to_server"]).add(to_server);
            metrics.tcp_bytes.with(&[direction, "to_client"]).add(to_client);
        }
        Some(Err(e)) => tracing::debug!(direction, "TCP relay ended: {e}"),
        None => tracing::debug!(direction, ?idle, "TCP connection idle; closed"),
    }
}

/// Relays a connection that went opaque by silence (see [`crate::net::detect`]): nothing passes until
/// one side speaks. A server speaking first, or a client speaking anything but HTTP, makes it an
/// ordinary relay; a client speaking HTTP gets its held bytes back (`Some`), so that the caller
/// serves it as HTTP instead — an HTTP request never crosses the proxy unread.
pub async fn guarded_relay<A, B>(
    client: &mut A,
    server: &mut B,
    metrics: &ProxyMetrics,
    direction: &'static str,
    idle: Duration,
) -> Option<(Detected, Bytes)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let never_active = AtomicU64::new(0);
    let first = tokio::select! {
        first = first_mover(client, server) => first,
        _ = idle_for(idle, Instant::now(), &never_active) => {
            tracing::debug!(direction, ?idle, "TCP connection idle; closed");
            return None;
        }
    };
    let forwarded = match first {
        Ok(FirstMove::Client(Detected::Opaque, held)) => server.write_all(&held).await,
        Ok(FirstMove::Server(bytes)) => client.write_all(&bytes).await,
        Ok(FirstMove::Client(http, held)) => return Some((http, held)),
        Err(e) => Err(e),
    };
    match forwarded {
        Ok(()) => relay(client, server, metrics, direction, idle).await,
        Err(e) => tracing::debug!(direction, "TCP relay ended: {e}"),
    }
    None
}

/// Copies bytes both ways until both sides are done (the byte counts each way), or returns None
/// once no byte has moved either way for `idle` (zero: never).
pub async fn splice<A, B>(client: &mut A, server: &mut B, idle: Duration) -> Option<std::io::Result<(u64, u64)>>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let started = Instant::now();
    let last_ms = AtomicU64::new(0);
    // Every byte of both directions is read from or written to the client side, so watching that
    // side alone sees all activity.
    let mut watched = Watched { io: client, started, last_ms: &last_ms };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut watched, server) => Some(copied),
        _ = idle_for(idle, started, &last_ms) => None,
    }
}

/// Resolves once `idle` has passed since the last activity recorded in `last_ms` (milliseconds
/// after `started`); never when `idle` is zero.
async fn idle_for(idle: Duration, started: Instant, last_ms: &AtomicU64) {
    if idle.is_zero() {
        return std::future::pending().await;
    }
    loop {
        let expires = started + Duration::from_millis(last_ms.load(Ordering::Relaxed)) + idle;
        if Instant::now() >= expires {
            return;
        }
        tokio::time::sleep_until(expires).await;
    }
}

/// An I/O object that records when bytes last moved through it.
struct Watched<'a, T: ?Sized> {
    io: &'a mut T,
    started: Instant,
    last_ms: &'a AtomicU64,
}

impl<T: ?Sized> Watched<'_, T> {
    fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin + ?Sized> AsyncRead for Watched<'_, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> AsyncWrite for Watched<'_, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut *self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

/// How a connection's bytes are relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relay {
    /// Straight through: the protocol is known to be opaque.
    Plain,
    /// Held until someone speaks (the client went opaque by silence).
    Guarded,
}

/// Dials `dst` (with the connect timeout) and relays until both sides are done or the drain's
/// grace period ends. `Err(true)`: no connection could be made; `Err(false)`: a guarded client
/// spoke HTTP first (its bytes in `Ok(Some(..))` instead, see [`guarded_relay`]).
pub async fn connect_and_relay<T>(
    ctx: &crate::context::ProxyContext,
    io: &mut T,
    dst: std::net::SocketAddr,
    direction: &'static str,
    mode: Relay,
) -> Result<Option<(Detected, Bytes)>, ()>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + ?Sized,
{
    let mut upstream = match crate::net::connect::connect(dst, ctx.cfg.connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%dst, direction, "connect failed: {e}");
            return Err(());
        }
    };
    let idle = ctx.cfg.tcp_idle_timeout;
    let relayed = async {
        match mode {
            Relay::Plain => {
                relay(io, &mut upstream, &ctx.metrics, direction, idle).await;
                None
            }
            Relay::Guarded => guarded_relay(io, &mut upstream, &ctx.metrics, direction, idle).await,
        }
    };
    tokio::select! {
        switched = relayed => Ok(switched),
        _ = crate::outbound::drained_then_grace(ctx) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn preamble_round_trips_and_rejects_garbage() {
        let (mut a, mut b) = tokio::io::duplex(64);
        write_preamble(&mut a, 5432).await.unwrap();
        assert_eq!(read_preamble(&mut b, Duration::from_secs(1)).await.unwrap(), 5432);
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(read_preamble(&mut b, Duration::from_secs(1)).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_closes_after_idle_time_and_not_while_bytes_move() {
        let metrics = ProxyMetrics::new();
        let (mut client, mut client_proxy) = tokio::io::duplex(1024);
        let (mut server_proxy, mut server) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move {
            relay(&mut client_proxy, &mut server_proxy, &metrics, "outbound", Duration::from_secs(10)).await;
            Instant::now()
        });
        let started = Instant::now();
        let mut buf = [0u8; 4];
        // Activity every 6 s, alternating directions, keeps it open well past the idle timeout.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"ping").await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_secs(6)).await;
            server.write_all(b"pong").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
        }
        assert!(!relay.is_finished(), "closed while bytes were moving");
        let last = Instant::now();
        let closed = relay.await.unwrap();
        assert_eq!(last - started, Duration::from_secs(48));
        assert!(
            closed - last >= Duration::from_secs(10) && closed - last < Duration::from_secs(11),
            "{:?}",
            closed - last
        );
        // Both sides see the connection end.
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    }
}
