//! The one place that turns proxy failures into responses. Every response the proxy makes itself
//! says so with `x-weft-proxy-error: <reason>`; gRPC callers get a trailers-only gRPC status.

use http::{HeaderValue, Response, StatusCode};
use weft_proto::contract;

use crate::http::{empty, full, Body};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no endpoints available for {0}")]
    NoEndpoints(String),
    #[error("caller is not allowed")]
    Unauthorized,
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
    /// This proxy holds no policy for its own service yet: it cannot authorize anyone. Nothing
    /// reached the app, so the caller may retry elsewhere.
    #[error("the proxy is not ready: it has no policy for its service yet")]
    NotReady,
}

impl ProxyError {
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoEndpoints(_) => "no-endpoints",
            ProxyError::Unauthorized => "unauthorized",
            ProxyError::DeadlineExceeded => "deadline-exceeded",
            ProxyError::Timeout => "timeout",
            ProxyError::ConnectFailed(_) => "connect-failure",
            ProxyError::Reset(_) => "upstream-reset",
            ProxyError::Overloaded(_) => "overloaded",
            ProxyError::AppUnavailable(_) => "app-unavailable",
            ProxyError::FaultInjected(_) => "fault-injected",
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::NotReady => "not-ready",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoEndpoints(_) | ProxyError::Overloaded(_) | ProxyError::NotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Unauthorized => StatusCode::FORBIDDEN,
            ProxyError::DeadlineExceeded | ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ConnectFailed(_) | ProxyError::Reset(_) | ProxyError::AppUnavailable(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::FaultInjected(code) => StatusCode::from_u16(*code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The gRPC status code for gRPC callers.
    pub fn grpc_code(&self) -> u32 {
        match self {
            ProxyError::DeadlineExceeded | ProxyError::Timeout => 4, // DEADLINE_EXCEEDED
            ProxyError::Unauthorized => 7,                           // PERMISSION_DENIED
            ProxyError::Overloaded(_) => 8,                          // RESOURCE_EXHAUSTED
            ProxyError::BadRequest(_) => 3,                          // INVALID_ARGUMENT
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
            ProxyError::Unauthorized => "caller is not allowed",
            ProxyError::DeadlineExceeded => "deadline exceeded",
            ProxyError::Timeout => "request timed out",
            ProxyError::FaultInjected(_) => "injected fault",
            ProxyError::NotReady => "the proxy is not ready",
        }
    }

    /// The response a remote peer sees: the same status and reason, a body without details.
    pub fn response_for_peer(&self, grpc: bool) -> Response<Body> {
        self.build(grpc, self.summary().to_string())
    }

    /// The response the local app sees.
    pub fn response(&self, grpc: bool) -> Response<Body> {
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
}
