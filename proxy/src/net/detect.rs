//! Protocol detection on a fresh connection: HTTP/1 (a method token and a space), the HTTP/2
//! prior-knowledge preface, or opaque TCP. It reads at most the preface's length. A client that
//! sends nothing within the detect timeout is taken for a server-speaks-first protocol (opaque);
//! one that sent part of something HTTP-like must finish it within the header read timeout or be
//! refused — it is never taken for opaque, since an opaque connection passes its bytes unread.
//! A service declared HTTP is never opaque at all. The bytes read are replayed to whoever handles
//! the connection; [`first_mover`] finishes the job on connections that went opaque by silence.

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
    // HTTP/1: a method token of up to 16 uppercase letters then a space. Sixteen letters alone
    // are not yet a verdict: the 17th byte decides, so that how the bytes were split into reads
    // never changes the answer (caught by the `detect` fuzz check).
    for (i, b) in buf.iter().enumerate() {
        match b {
            b'A'..=b'Z' if i < 16 => continue,
            b' ' if i > 0 => return Some(Detected::Http1),
            _ => return Some(Detected::Opaque),
        }
    }
    None
}

/// What detection concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The protocol, from the first bytes (replayed).
    Known(Detected, Bytes),
    /// The client said nothing within the detect timeout: a server-speaks-first protocol, or a
    /// client that speaks later (see [`first_mover`]).
    Silent,
}

/// Reads until the protocol is known. `first_byte`: how long a silent client may wait before it
/// is [`Outcome::Silent`] (None for a service declared HTTP, which is never opaque: garbage is
/// then HTTP/1 for the HTTP server to refuse). `read`: how long the client may take to show what
/// it speaks; past it the connection is refused (an error).
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    first_byte: Option<Duration>,
    read: Duration,
) -> io::Result<Outcome> {
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    let start = tokio::time::Instant::now();
    let read_deadline = start + read;
    loop {
        match classify(&buf) {
            Some(Detected::Opaque) if first_byte.is_none() => return Ok(Outcome::Known(Detected::Http1, buf.into())),
            Some(d) => return Ok(Outcome::Known(d, buf.into())),
            None => {}
        }
        let silent_deadline = first_byte.filter(|_| buf.is_empty()).map(|t| (start + t).min(read_deadline));
        let mut chunk = [0u8; 24];
        let want = (H2_PREFACE.len() - buf.len().min(H2_PREFACE.len())).max(1);
        match tokio::time::timeout_at(silent_deadline.unwrap_or(read_deadline), io.read(&mut chunk[..want])).await {
            Err(_) if silent_deadline.is_some() => return Ok(Outcome::Silent),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not show its protocol within the header read timeout",
                ))
            }
            Ok(Ok(0)) if buf.is_empty() && first_byte.is_some() => {
                return Ok(Outcome::Known(Detected::Opaque, Bytes::new()))
            }
            Ok(Ok(0)) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed mid-request")),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// On a connection that went opaque by silence and is now joined to its server: who speaks first.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstMove {
    /// The server spoke first (these bytes came from it): opaque for sure, HTTP servers never do.
    Server(Bytes),
    /// The client spoke first and its bytes say what it is (HTTP: serve it as HTTP, never opaque).
    Client(Detected, Bytes),
}

/// Waits for the first bytes from either side, holding the client's until they say what they are
/// (nothing reaches the server meanwhile). Cancel-safe enough: both reads are polled in place.
pub async fn first_mover<C, S>(client: &mut C, server: &mut S) -> io::Result<FirstMove>
where
    C: AsyncRead + Unpin + ?Sized,
    S: AsyncRead + Unpin + ?Sized,
{
    let mut held = Vec::with_capacity(H2_PREFACE.len());
    let mut from_server = vec![0u8; 16 * 1024];
    std::future::poll_fn(|cx| {
        let mut sb = ReadBuf::new(&mut from_server);
        if let Poll::Ready(r) = Pin::new(&mut *server).poll_read(cx, &mut sb) {
            r?;
            let n = sb.filled().len();
            // A server that closed without a word leaves the client's bytes to decide.
            if n > 0 {
                return Poll::Ready(Ok(FirstMove::Server(Bytes::copy_from_slice(&from_server[..n]))));
            }
        }
        loop {
            let mut chunk = [0u8; 24];
            let want = (H2_PREFACE.len() - held.len().min(H2_PREFACE.len())).max(1);
            let mut cb = ReadBuf::new(&mut chunk[..want]);
            match Pin::new(&mut *client).poll_read(cx, &mut cb) {
                Poll::Ready(Ok(())) if cb.filled().is_empty() => {
                    return Poll::Ready(Ok(FirstMove::Client(Detected::Opaque, Bytes::from(std::mem::take(&mut held)))))
                }
                Poll::Ready(Ok(())) => {
                    held.extend_from_slice(cb.filled());
                    if let Some(d) = classify(&held) {
                        return Poll::Ready(Ok(FirstMove::Client(d, Bytes::from(std::mem::take(&mut held)))));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
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

    #[test]
    fn the_verdict_does_not_depend_on_how_the_bytes_arrive() {
        // Sixteen letters then a space: HTTP/1 whether the space came in the same read or later.
        let line = b"ABCDEFGHIJKLMNOP / HTTP/1.1\r\n";
        assert_eq!(classify(&line[..16]), None);
        assert_eq!(classify(&line[..17]), Some(Detected::Http1));
        assert_eq!(classify(line), Some(Detected::Http1));
    }

    const SHORT: Option<Duration> = Some(Duration::from_millis(300));
    const READ: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn silent_clients_are_silent_after_the_timeout() {
        let (_a, mut b) = tokio::io::duplex(64);
        assert_eq!(detect(&mut b, SHORT, READ).await.unwrap(), Outcome::Silent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_http_client_is_never_opaque() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let client = tokio::spawn(async move {
            // One byte, then a pause far longer than the detect timeout, then the rest.
            a.write_all(b"G").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            a.write_all(b"ET / HTTP/1.1\r\n").await.unwrap();
            a
        });
        match detect(&mut b, SHORT, READ).await.unwrap() {
            Outcome::Known(Detected::Http1, prefix) => assert!(prefix.starts_with(b"GET /"), "{prefix:?}"),
            other => panic!("{other:?}"),
        }
        let mut a = client.await.unwrap();
        // One that never finishes is refused at the header read timeout.
        let (mut a2, mut b2) = tokio::io::duplex(64);
        a2.write_all(b"POS").await.unwrap();
        let err = detect(&mut b2, SHORT, READ).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        a.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_declared_http_service_is_never_opaque() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"\x16\x03\x01garbage").await.unwrap();
        assert!(matches!(detect(&mut b, None, READ).await.unwrap(), Outcome::Known(Detected::Http1, _)));
        // Silence is not opaque either: refused at the header read timeout.
        let (_a, mut b) = tokio::io::duplex(64);
        assert!(detect(&mut b, None, READ).await.is_err());
    }

    #[tokio::test]
    async fn after_silence_the_first_to_speak_decides() {
        // The server speaks first: opaque, its bytes handed over.
        let (mut client, mut client_side) = tokio::io::duplex(64);
        let (mut server, mut server_side) = tokio::io::duplex(64);
        server.write_all(b"220 banner\r\n").await.unwrap();
        assert_eq!(
            first_mover(&mut client_side, &mut server_side).await.unwrap(),
            FirstMove::Server(Bytes::from_static(b"220 banner\r\n"))
        );
        // The client speaks first, and it is HTTP: nothing reached the server.
        client.write_all(b"GET /late HTTP/1.1\r\n").await.unwrap();
        let (_s2, mut server_side2) = tokio::io::duplex(64);
        match first_mover(&mut client_side, &mut server_side2).await.unwrap() {
            FirstMove::Client(Detected::Http1, held) => assert!(held.starts_with(b"GET /late"), "{held:?}"),
            other => panic!("{other:?}"),
        }
        drop(server);
    }

    #[tokio::test]
    async fn the_prefix_is_replayed() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"GET /x HTTP/1.1\r\n").await.unwrap();
        let Outcome::Known(d, prefix) = detect(&mut b, SHORT, READ).await.unwrap() else { panic!() };
        assert_eq!(d, Detected::Http1);
        let mut p = Prefixed::new(prefix, b);
        let mut out = vec![0u8; 17];
        p.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"GET /x HTTP/1.1\r\n");
    }
}
