//! A request body that can be sent again for a retry. The first attempt streams the body as it
//! arrives (nothing waits for the whole body, so streaming gRPC calls keep working) while a copy
//! is kept up to a cap; a retry replays the copy and then continues from the source. Past the cap
//! the copy is dropped and the request is no longer retryable.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{Body, BoxError};

/// Linkerd's and our cap: bodies up to 64 KiB are kept for replay, never beyond.
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

struct Shared {
    source: Option<Body>,
    chunks: Vec<Bytes>,
    buffered: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    overflowed: bool,
    cap: usize,
}

pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    /// Index of the next buffered chunk this copy yields.
    next: usize,
    trailers_sent: bool,
}

impl ReplayBody {
    pub fn new(source: Body, cap: usize) -> Self {
        let ended = source.is_end_stream();
        Self {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(source),
                chunks: Vec::new(),
                buffered: 0,
                trailers: None,
                ended,
                overflowed: false,
                cap,
            })),
            next: 0,
            trailers_sent: false,
        }
    }

    /// A fresh copy from the start, if the body is still held in full.
    pub fn replay(&self) -> Option<Self> {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if s.overflowed {
            return None;
        }
        Some(Self { shared: self.shared.clone(), next: 0, trailers_sent: false })
    }

    pub fn into_body(self) -> Body {
        http_body_util::BodyExt::boxed(self)
    }
}

impl HttpBody for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut s = this.shared.lock().unwrap_or_else(|e| e.into_inner());
        if this.next < s.chunks.len() {
            let chunk = s.chunks[this.next].clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.ended = true;
                s.source = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_data() {
                    let data = frame.into_data().unwrap_or_default();
                    if !s.overflowed {
                        if s.buffered + data.len() > s.cap {
                            s.overflowed = true;
                            s.chunks.clear();
                        } else {
                            s.buffered += data.len();
                            s.chunks.push(data.clone());
                            this.next = s.chunks.len();
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                } else {
                    let trailers = frame.into_trailers().unwrap_or_default();
                    s.trailers = Some(trailers.clone());
                    s.ended = true;
                    s.source = None;
                    this.trailers_sent = true;
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.ended && self.next >= s.chunks.len() && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match &s.source {
            Some(src) if self.next >= s.chunks.len() => src.size_hint(),
            Some(_) => SizeHint::default(),
            None => {
                let left: usize = s.chunks[self.next.min(s.chunks.len())..].iter().map(|c| c.len()).sum();
                SizeHint::with_exact(left as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn stream(chunks: Vec<&'static str>) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(8);
        tokio::spawn(async move {
            for c in chunks {
                let _ = tx.send(Ok(Frame::data(Bytes::from(c)))).await;
            }
        });
        http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed()
    }

    #[tokio::test]
    async fn replays_a_body_read_in_full() {
        let body = ReplayBody::new(stream(vec!["hello ", "world"]), 1024);
        let again = body.replay().unwrap();
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello world");
        assert_eq!(again.collect().await.unwrap().to_bytes(), "hello world");
    }

    #[tokio::test]
    async fn a_retry_continues_where_the_first_attempt_stopped() {
        let mut first = ReplayBody::new(stream(vec!["a", "b", "c"]), 1024);
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "a");
        let second = first.replay().unwrap();
        drop(first);
        assert_eq!(second.collect().await.unwrap().to_bytes(), "abc");
    }

    #[tokio::test]
    async fn past_the_cap_there_is_no_replay() {
        let body = ReplayBody::new(stream(vec!["12345", "67890"]), 8);
        let all = body.replay().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(all, "1234567890");
        assert!(body.replay().is_none());
    }
}
