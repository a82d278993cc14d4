//! Request bodies as they arrive from the caller (the local app outbound, a peer proxy inbound).
//! Their failures are the caller's — a malformed chunk, a reset, a body that stalls past the stream
//! idle timeout — so they are remembered here: the request is answered `400` and never counted
//! against the upstream (retries, outlier ejection, breakers).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{Body, BoxError};

/// The caller's body failed (the error it failed with, or a stall).
#[derive(Debug)]
pub struct ClientBodyError(pub String);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body from the client failed: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {}

/// Tells, after an attempt failed, whether the caller's body was the cause.
#[derive(Clone, Default)]
pub struct ClientBodyWatch(Option<Arc<AtomicBool>>);

impl ClientBodyWatch {
    pub fn failed(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Acquire))
    }
}

/// Wraps a caller's body; a body that is already complete (most GETs) is passed as it is.
pub fn from_caller(body: Incoming, stream_idle: Duration) -> (Body, ClientBodyWatch) {
    if body.is_end_stream() {
        return (super::incoming(body), ClientBodyWatch::default());
    }
    let failed = Arc::new(AtomicBool::new(false));
    let idle = (!stream_idle.is_zero()).then(|| (stream_idle, Box::pin(tokio::time::sleep(stream_idle))));
    let body = CallerBody { inner: body, failed: failed.clone(), idle };
    (body.boxed(), ClientBodyWatch(Some(failed)))
}

struct CallerBody {
    inner: Incoming,
    failed: Arc<AtomicBool>,
    /// The stream idle timeout and its timer, re-armed whenever a frame arrives.
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl CallerBody {
    fn fail(&self, why: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.failed.store(true, Ordering::Release);
        Poll::Ready(Some(Err(Box::new(ClientBodyError(why)))))
    }
}

impl HttpBody for CallerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some((d, timer)) = self.idle.as_mut() {
                    let at = tokio::time::Instant::now() + *d;
                    timer.as_mut().reset(at);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => self.fail(e.to_string()),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let stalled = match self.idle.as_mut() {
                    Some((d, timer)) => timer.as_mut().poll(cx).is_ready().then_some(*d),
                    None => None,
                };
                match stalled {
                    Some(d) => self.fail(format!("no bytes for {d:?} (--stream-idle-timeout)")),
                    None => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
