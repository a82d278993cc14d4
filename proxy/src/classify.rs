//! The one classification of an outcome — an HTTP status, a gRPC status (in the headers of a
//! trailers-only answer, or read at the end of the stream), a transport error, a timeout — that
//! retries, outlier detection and metrics all read. gRPC statuses count as failures where Envoy
//! maps them to a 5xx (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
//! DATA_LOSS); a caller's mistake (INVALID_ARGUMENT, NOT_FOUND, …) is not the endpoint's failure.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::http::headers::names;
use crate::net::pool::peer::SendError;
use crate::state::policy::RetryOn;

/// The outcome of one attempt (`B`: the response body type).
pub(crate) enum Attempt<B> {
    Response(Response<B>),
    Failed(SendError),
    /// The per-try timeout or the deadline passed before response headers.
    TimedOut,
}

/// What an outcome says about the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Success,
    /// A failure of the endpoint (or the way to it): counts towards ejection.
    Failure,
    /// Says nothing about the endpoint: a peer proxy that holds no policy yet refused before its
    /// app saw anything.
    Neutral,
    /// A gRPC answer whose status comes at the end of the stream: classified then.
    AtEndOfStream,
}

/// The gRPC status in a header map (`grpc-status`).
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get(names::GRPC_STATUS).and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok())
}

/// Whether a gRPC status is a failure of the server (Envoy maps these to 5xx).
pub(crate) fn grpc_failure(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// A peer proxy's `503 not-ready`: it holds no policy yet, so nothing reached its app.
pub(crate) fn peer_not_ready<B>(resp: &Response<B>) -> bool {
    resp.status() == http::StatusCode::SERVICE_UNAVAILABLE
        && resp.headers().get(weft_proto::contract::PROXY_ERROR).is_some_and(|v| v == "not-ready")
}

/// Classifies an outcome. `from_peer`: the answer came from a peer proxy (whose `not-ready` is
/// neutral), not from an endpoint outside the mesh.
pub(crate) fn classify<B>(outcome: &Attempt<B>, from_peer: bool) -> Class {
    match outcome {
        Attempt::Failed(_) | Attempt::TimedOut => Class::Failure,
        Attempt::Response(r) if from_peer && peer_not_ready(r) => Class::Neutral,
        Attempt::Response(r) if r.status().is_server_error() => Class::Failure,
        Attempt::Response(r) if crate::http::is_grpc(r.headers()) => match grpc_status(r.headers()) {
            Some(code) if grpc_failure(code) => Class::Failure,
            Some(_) => Class::Success,
            None => Class::AtEndOfStream,
        },
        Attempt::Response(_) => Class::Success,
    }
}

/// Whether the request provably never reached the app: safe to retry whatever its method.
pub(crate) fn never_reached_app<B>(outcome: &Attempt<B>, class: Class) -> bool {
    class == Class::Neutral
        || matches!(outcome, Attempt::Failed(SendError::Connect(_)) | Attempt::Failed(SendError::Refused))
}

/// The retry reason, if `on` covers this outcome.
pub(crate) fn retry_reason<B>(on: &RetryOn, outcome: &Attempt<B>, class: Class) -> Option<&'static str> {
    if class == Class::Neutral {
        return (on.refused_stream || on.reset || on.any_5xx || on.gateway_error).then_some("refused-stream");
    }
    match outcome {
        Attempt::Failed(SendError::Connect(_)) => on.connect_failure.then_some("connect-failure"),
        Attempt::Failed(SendError::Refused) => (on.refused_stream || on.reset).then_some("refused-stream"),
        Attempt::Failed(SendError::Reset(_)) => on.reset.then_some("reset"),
        // A per-try timeout reads as a 504 from the upstream (Envoy's rule).
        Attempt::TimedOut => (on.any_5xx || on.gateway_error).then_some("per-try-timeout"),
        Attempt::Response(r) => {
            let status = r.status().as_u16();
            if on.any_5xx && r.status().is_server_error() {
                return Some("5xx");
            }
            if on.gateway_error && matches!(status, 502..=504) {
                return Some("gateway-error");
            }
            if on.status_codes.contains(&status) {
                return Some("retriable-status-code");
            }
            match grpc_status(r.headers()) {
                Some(code) if on.grpc_codes.contains(&code) => Some(match code {
                    1 => "cancelled",
                    4 => "deadline-exceeded",
                    8 => "resource-exhausted",
                    13 => "internal",
                    _ => "unavailable",
                }),
                _ => None,
            }
        }
    }
}

/// A response body that reports the gRPC status when the stream ends (in its trailers; `None`
/// when the stream ended without one, or failed).
pub(crate) struct GrpcStatusBody<B, F: FnOnce(Option<u32>)> {
    inner: B,
    on_end: Option<F>,
}

impl<B, F: FnOnce(Option<u32>)> GrpcStatusBody<B, F> {
    pub(crate) fn new(inner: B, on_end: F) -> Self {
        Self { inner, on_end: Some(on_end) }
    }

    fn end(&mut self, status: Option<u32>) {
        if let Some(f) = self.on_end.take() {
            f(status);
        }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin, F: FnOnce(Option<u32>) + Unpin> HttpBody for GrpcStatusBody<B, F> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let status = grpc_status(trailers);
                    self.end(status);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => self.end(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, F: FnOnce(Option<u32>)> Drop for GrpcStatusBody<B, F> {
    /// A stream dropped before its end (the client went away) has no status.
    fn drop(&mut self) {
        self.end(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn resp(status: u16, headers: &[(&str, &str)]) -> Attempt<()> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Attempt::Response(b.body(()).unwrap())
    }

    #[test]
    fn one_class_for_http_grpc_and_transport_outcomes() {
        assert_eq!(classify(&resp(200, &[]), true), Class::Success);
        assert_eq!(classify(&resp(503, &[]), true), Class::Failure);
        assert_eq!(classify(&resp(404, &[]), true), Class::Success);
        assert_eq!(classify(&Attempt::<()>::TimedOut, true), Class::Failure);
        assert_eq!(classify(&Attempt::<()>::Failed(SendError::Refused), true), Class::Failure);
        let grpc = |code: &str| resp(200, &[("content-type", "application/grpc"), ("grpc-status", code)]);
        // A trailers-only UNAVAILABLE is a failure, for ejection as for retries.
        assert_eq!(classify(&grpc("14"), true), Class::Failure);
        assert_eq!(classify(&grpc("0"), true), Class::Success);
        assert_eq!(classify(&grpc("3"), true), Class::Success, "INVALID_ARGUMENT is the caller's");
        assert_eq!(classify(&resp(200, &[("content-type", "application/grpc")]), true), Class::AtEndOfStream);
        // A peer proxy's not-ready says nothing about the endpoint, and nothing reached its app.
        let not_ready = resp(503, &[("x-weft-proxy-error", "not-ready")]);
        assert_eq!(classify(&not_ready, true), Class::Neutral);
        assert!(never_reached_app(&not_ready, Class::Neutral));
        assert_eq!(classify(&not_ready, false), Class::Failure, "only a peer proxy says not-ready");
    }

    #[test]
    fn retry_reasons_follow_the_conditions() {
        let on = RetryOn { any_5xx: true, grpc_codes: vec![14], ..Default::default() };
        let r = resp(503, &[]);
        assert_eq!(retry_reason(&on, &r, classify(&r, true)), Some("5xx"));
        let g = resp(200, &[("content-type", "application/grpc"), ("grpc-status", "14")]);
        assert_eq!(retry_reason(&on, &g, classify(&g, true)), Some("unavailable"));
        let only_connect = RetryOn { connect_failure: true, ..Default::default() };
        assert_eq!(retry_reason(&only_connect, &r, classify(&r, true)), None);
        let c = Attempt::<()>::Failed(SendError::Connect("refused".into()));
        assert_eq!(retry_reason(&only_connect, &c, classify(&c, true)), Some("connect-failure"));
    }

    #[tokio::test]
    async fn the_status_in_trailers_is_reported_at_the_end_of_the_stream() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "14".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            vec![Ok(Frame::data(Bytes::from_static(b"msg"))), Ok(Frame::trailers(trailers))];
        let inner = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let body = GrpcStatusBody::new(inner, move |s| tx.send(s).unwrap());
        assert!(rx.try_recv().is_err(), "not before the end");
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().and_then(grpc_status), Some(14));
        assert_eq!(rx.try_recv().unwrap(), Some(14));
    }
}
