//! Opaque TCP: the preamble that tells the peer which port a tunnelled connection is for, and the
//! byte relay with its metrics.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weft_proto::contract::TCP_PREAMBLE_MAGIC;

use crate::metrics::ProxyMetrics;

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

/// Relays bytes both ways until both sides are done; counts them per direction.
pub async fn relay<A, B>(client: &mut A, server: &mut B, metrics: &ProxyMetrics, direction: &'static str)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    match tokio::io::copy_bidirectional(client, server).await {
        Ok((to_server, to_client)) => {
            metrics.tcp_bytes.with(&[direction, "to_server"]).add(to_server);
            metrics.tcp_bytes.with(&[direction, "to_client"]).add(to_client);
        }
        Err(e) => tracing::debug!(direction, "TCP relay ended: {e}"),
    }
}

/// Dials `dst` (with the connect timeout) and relays until both sides are done or the drain's
/// grace period ends. Returns false if the connection could not be made.
pub async fn connect_and_relay<T>(
    ctx: &crate::context::ProxyContext,
    io: &mut T,
    dst: std::net::SocketAddr,
    direction: &'static str,
) -> bool
where
    T: AsyncRead + AsyncWrite + Send + Unpin + ?Sized,
{
    let mut upstream = match tokio::time::timeout(ctx.cfg.connect_timeout, tokio::net::TcpStream::connect(dst)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%dst, direction, "connect failed: {e}");
            return false;
        }
        Err(_) => {
            tracing::debug!(%dst, direction, "connect timed out");
            return false;
        }
    };
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = relay(io, &mut upstream, &ctx.metrics, direction) => {}
        _ = crate::outbound::drained_then_grace(ctx) => {}
    }
    true
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
}
