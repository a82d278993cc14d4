//! The one place that classifies an attempt's outcome: whether it failed (for outlier detection)
//! and whether a retry policy's conditions cover it (and under which reason it is counted).

use http::Response;
use hyper::body::Incoming;

use crate::state::policy::RetryOn;
use crate::net::pool::peer::SendError;

/// The outcome of one attempt.
pub enum Attempt {
    Response(Response<Incoming>),
    Failed(SendError),
    /// The per-try timeout or the deadline passed before response headers.
    TimedOut,
}

/// gRPC status from a trailers-only response (errors come that way, in the headers).
fn grpc_status(resp: &Response<Incoming>) -> Option<u32> {
    resp.headers()
        .get(crate::http::headers::names::GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

/// Failures as outlier detection sees them: 5xx, connection failures, resets and timeouts.
pub fn is_failure(outcome: &Attempt) -> bool {
    match outcome {
        Attempt::Response(r) => r.status().is_server_error(),
        Attempt::Failed(_) | Attempt::TimedOut => true,
    }
}

/// The retry reason, if `on` covers this outcome.
pub fn reason(on: &RetryOn, outcome: &Attempt) -> Option<&'static str> {
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
            match grpc_status(r) {
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
