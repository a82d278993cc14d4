//! Protocol detection on a fresh connection: HTTP/1 (a method token and a space), the HTTP/2
//! prior-knowledge preface, or opaque TCP. It reads at most the preface's length and gives up
//! after a short timeout, so server-speaks-first protocols are not held hostage; the bytes read
//! are replayed to whoever handles the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Opaque,
}

/// What the first bytes say, or None if more are needed.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() { Some(Detected::Http2) } else { None };
    }
    // HTTP/1: a method token of uppercase letters then a space.
    for (i, b) in buf.iter().enumerate() {
        match b {
            b'A'..=b'Z' if i < 16 => continue,
            b' ' if i > 0 => return Some(Detected::Http1),
            _ => return Some(Detected::Opaque),
        }
    }
    if buf.len() >= 16 {
        Some(Detected::Opaque)
    } else {
        None
    }
}

/// Reads until the protocol is known or `timeout` passes (then: opaque).
pub async fn detect<T: AsyncRead + Unpin>(io: &mut T, timeout: Duration) -> io::Result<(Detected, Bytes)> {
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(d) = classify(&buf) {
            return Ok((d, Bytes::from(buf)));
        }
        let mut chunk = [0u8; 24];
        let want = H2_PREFACE.len() - buf.len().min(H2_PREFACE.len());
        let want = want.max(1);
        match tokio::time::timeout_at(deadline, io.read(&mut chunk[..want])).await {
            Err(_) => return Ok((Detected::Opaque, Bytes::from(buf))),
            Ok(Ok(0)) => return Ok((Detected::Opaque, Bytes::from(buf))),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// An I/O object that first yields bytes already read from it.
pub struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"POST"), None);
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Detected::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02"), Some(Detected::Opaque), "a TLS ClientHello");
        assert_eq!(classify(b"get / "), Some(Detected::Opaque));
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQ"), Some(Detected::Opaque));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_clients_are_opaque_after_the_timeout() {
        let (_a, mut b) = tokio::io::duplex(64);
        let (d, prefix) = detect(&mut b, Duration::from_millis(300)).await.unwrap();
        assert_eq!(d, Detected::Opaque);
        assert!(prefix.is_empty());
    }

    #[tokio::test]
    async fn the_prefix_is_replayed() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"GET /x HTTP/1.1\r\n").await.unwrap();
        let (d, prefix) = detect(&mut b, Duration::from_secs(1)).await.unwrap();
        assert_eq!(d, Detected::Http1);
        let mut p = Prefixed::new(prefix, b);
        let mut out = vec![0u8; 17];
        p.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"GET /x HTTP/1.1\r\n");
    }
}
