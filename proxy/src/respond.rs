//! The one responder: every failure the proxy itself answers — an HTTP response or a closed
//! connection — is a typed [`ProxyError`], counted in `weft_proxy_errors_total{direction,reason}`
//! (and, for expiries, `weft_deadline_exceeded_total`), and answered here. Every response the
//! proxy makes says so with `x-weft-proxy-error: <reason>`; gRPC callers get a trailers-only gRPC
//! status; remote peers are told what failed, not the details (addresses, causes).

use http::{HeaderValue, Response, StatusCode};
use weft_proto::contract;

use crate::http::{empty, full, Body};
use crate::telemetry::metrics::ProxyMetrics;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no endpoints available for {0}")]
    NoEndpoints(String),
    #[error("caller is not allowed")]
    Unauthorized,
    #[error("plaintext callers are refused: the service's mTLS is strict")]
    PlaintextRefused,
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("request timed out")]
    Timeout,
    #[error("could not connect to the upstream: {0}")]
    ConnectFailed(String),
    #[error("upstream reset the request: {0}")]
    Reset(String),
    #[error("overloaded: {0}")]
    Overloaded(&'static str),
    #[error("could not reach the application: {0}")]
    AppUnavailable(String),
    #[error("injected fault")]
    FaultInjected(u16),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("port {0} is not one of this workload's app ports")]
    BadPort(u16),
    /// This proxy holds no policy for its own service yet: it cannot authorize anyone. Nothing
    /// reached the app, so the caller may retry elsewhere.
    #[error("the proxy is not ready: it has no policy for its service yet")]
    NotReady,
    #[error("the TLS handshake failed")]
    TlsHandshake,
    #[error("no HTTP/2 preface in time")]
    NoPreface,
    #[error("the client did not show its protocol in time")]
    DetectTimeout,
    #[error("a connection straight to the outbound listener would loop")]
    Loop,
}

impl ProxyError {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoEndpoints(_) => "no-endpoints",
            ProxyError::Unauthorized => "unauthorized",
            ProxyError::PlaintextRefused => "plaintext-refused",
            ProxyError::DeadlineExceeded => "deadline-exceeded",
            ProxyError::Timeout => "timeout",
            ProxyError::ConnectFailed(_) => "connect-failure",
            ProxyError::Reset(_) => "upstream-reset",
            ProxyError::Overloaded(_) => "overloaded",
            ProxyError::AppUnavailable(_) => "app-unavailable",
            ProxyError::FaultInjected(_) => "fault-injected",
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::BadPort(_) => "bad-port",
            ProxyError::NotReady => "not-ready",
            ProxyError::TlsHandshake => "tls-handshake",
            ProxyError::NoPreface => "no-preface",
            ProxyError::DetectTimeout => "detect-timeout",
            ProxyError::Loop => "loop",
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoEndpoints(_) | ProxyError::Overloaded(_) | ProxyError::NotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Unauthorized | ProxyError::PlaintextRefused => StatusCode::FORBIDDEN,
            ProxyError::DeadlineExceeded | ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ConnectFailed(_) | ProxyError::Reset(_) | ProxyError::AppUnavailable(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::FaultInjected(code) => StatusCode::from_u16(*code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            ProxyError::BadRequest(_)
            | ProxyError::BadPort(_)
            | ProxyError::TlsHandshake
            | ProxyError::NoPreface
            | ProxyError::DetectTimeout
            | ProxyError::Loop => StatusCode::BAD_REQUEST,
        }
    }

    /// The gRPC status code for gRPC callers.
    pub(crate) fn grpc_code(&self) -> u32 {
        match self {
            ProxyError::DeadlineExceeded | ProxyError::Timeout => 4, // DEADLINE_EXCEEDED
            ProxyError::Unauthorized | ProxyError::PlaintextRefused => 7, // PERMISSION_DENIED
            ProxyError::Overloaded(_) => 8,                          // RESOURCE_EXHAUSTED
            ProxyError::BadRequest(_) | ProxyError::BadPort(_) => 3, // INVALID_ARGUMENT
            _ => 14,                                                 // UNAVAILABLE
        }
    }

    /// What a remote peer is told: the kind of failure, without the details (addresses, causes)
    /// that only this host's operator should see.
    fn summary(&self) -> &'static str {
        match self {
            ProxyError::NoEndpoints(_) => "no endpoints available",
            ProxyError::ConnectFailed(_) => "could not connect to the upstream",
            ProxyError::Reset(_) => "the upstream reset the request",
            ProxyError::Overloaded(_) => "overloaded",
            ProxyError::AppUnavailable(_) => "could not reach the application",
            ProxyError::BadRequest(_) => "bad request",
            ProxyError::BadPort(_) => "not an app port",
            ProxyError::Unauthorized => "caller is not allowed",
            ProxyError::PlaintextRefused => "plaintext callers are refused",
            ProxyError::DeadlineExceeded => "deadline exceeded",
            ProxyError::Timeout => "request timed out",
            ProxyError::FaultInjected(_) => "injected fault",
            ProxyError::NotReady => "the proxy is not ready",
            ProxyError::TlsHandshake => "TLS handshake failed",
            ProxyError::NoPreface => "no HTTP/2 preface",
            ProxyError::DetectTimeout => "protocol not shown in time",
            ProxyError::Loop => "loop",
        }
    }

    /// The response a remote peer sees: the same status and reason, a body without details.
    pub(crate) fn response_for_peer(&self, grpc: bool) -> Response<Body> {
        self.build(grpc, self.summary().to_string())
    }

    /// The response the local app sees.
    pub(crate) fn response(&self, grpc: bool) -> Response<Body> {
        self.build(grpc, self.to_string())
    }

    fn build(&self, grpc: bool, message: String) -> Response<Body> {
        let mut builder = Response::builder().header(contract::PROXY_ERROR, self.reason());
        if matches!(self, ProxyError::Overloaded(_)) {
            builder = builder.header(contract::OVERLOADED, "true");
        }
        let mut resp = if grpc {
            builder
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", self.grpc_code().to_string())
                .body(empty())
        } else {
            builder
                .status(self.status())
                .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(full(format!("{message}\n")))
        }
        .expect("static response parts");
        if grpc {
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
                resp.headers_mut().insert("grpc-message", v);
            }
        }
        resp
    }
}

/// Counts a failure: by reason, and expiries by service.
fn count(metrics: &ProxyMetrics, direction: &'static str, service: &str, namespace: &str, e: &ProxyError) {
    metrics.proxy_errors.with(&[direction, e.reason()]).inc();
    if matches!(e, ProxyError::DeadlineExceeded | ProxyError::Timeout) {
        metrics.deadline_exceeded.with(&[direction, service, namespace]).inc();
    }
}

/// The answer to the local app for a failed outbound request to `target`.
pub(crate) fn to_app(
    metrics: &ProxyMetrics,
    target: &crate::route::Target,
    e: &ProxyError,
    grpc: bool,
) -> Response<Body> {
    count(metrics, "outbound", &target.name, &target.namespace, e);
    e.response(grpc)
}

/// The answer to a remote caller of this workload's own service (`NS/NAME`).
pub(crate) fn to_peer(metrics: &ProxyMetrics, own_service: &str, e: &ProxyError, grpc: bool) -> Response<Body> {
    let (namespace, name) = own_service.split_once('/').unwrap_or(("", own_service));
    count(metrics, "inbound", name, namespace, e);
    e.response_for_peer(grpc)
}

/// A connection refused without an HTTP answer (opaque TCP, a failed handshake, a loop): counted,
/// and logged at a bounded rate (a remote party causes these at will).
pub(crate) fn close(metrics: &ProxyMetrics, direction: &'static str, e: &ProxyError, who: impl std::fmt::Display) {
    metrics.proxy_errors.with(&[direction, e.reason()]).inc();
    weft_telemetry::log_limit::debug("connection-refused", || format!("{direction} connection from {who} closed: {e}"));
}

/// A connection refused for a reason the operator should hear of (a misconfigured app, not an
/// attacker): counted, and warned about at a bounded rate.
pub(crate) fn close_with_warning(
    metrics: &ProxyMetrics,
    direction: &'static str,
    e: &ProxyError,
    why: impl FnOnce() -> String,
) {
    metrics.proxy_errors.with(&[direction, e.reason()]).inc();
    weft_telemetry::log_limit::warn("connection-refused", why);
}

/// gRPC's percent-encoding of `grpc-message`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_grpc_shapes() {
        let r = ProxyError::Overloaded("requests").response(false);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[contract::PROXY_ERROR], "overloaded");
        assert_eq!(r.headers()[contract::OVERLOADED], "true");
        let g = ProxyError::DeadlineExceeded.response(true);
        assert_eq!(g.status(), 200);
        assert_eq!(g.headers()["grpc-status"], "4");
        assert_eq!(g.headers()[contract::PROXY_ERROR], "deadline-exceeded");
    }

    #[tokio::test]
    async fn peers_are_not_told_the_apps_address() {
        use http_body_util::BodyExt;
        let e = ProxyError::AppUnavailable("127.0.0.1:8080: connection refused".into());
        let body = e.response_for_peer(false).into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"could not reach the application\n");
        let g = e.response_for_peer(true);
        assert!(!g.headers()["grpc-message"].to_str().unwrap().contains("127.0.0.1"));
    }

    #[test]
    fn every_refusal_is_counted_once_and_expiries_by_service() {
        let m = ProxyMetrics::new();
        let _ = to_peer(&m, "default/bar", &ProxyError::DeadlineExceeded, false);
        close(&m, "inbound", &ProxyError::Loop, "test");
        let text = m.registry.render();
        assert!(
            text.contains("weft_proxy_errors_total{direction=\"inbound\",reason=\"deadline-exceeded\"} 1"),
            "{text}"
        );
        assert!(text.contains("weft_proxy_errors_total{direction=\"inbound\",reason=\"loop\"} 1"), "{text}");
        assert!(text
            .contains("weft_deadline_exceeded_total{direction=\"inbound\",service=\"bar\",namespace=\"default\"} 1"));
    }
}
