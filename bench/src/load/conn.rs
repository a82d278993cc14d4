//! The generator's connections: HTTP/1.1 keep-alive (one request at a time per connection) or
//! HTTP/2 prior knowledge (many streams per connection), and one request with its answer checked.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use thiserror::Error;
use tokio::net::TcpStream;

use super::Protocol;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request failed; the kind is what the report counts.
#[derive(Debug, Error)]
pub enum RequestError {
    #[error("status {0}")]
    Status(u16, String),
    #[error("connect")]
    Connect(String),
    #[error("transport")]
    Transport(String),
    #[error("short body")]
    ShortBody { want: usize, got: usize },
    #[error("timeout")]
    Timeout(Duration),
}

impl RequestError {
    pub fn kind(&self) -> String {
        self.to_string()
    }
    pub fn detail(&self) -> String {
        match self {
            Self::Status(code, body) => format!("{code}: {body}"),
            Self::Connect(e) | Self::Transport(e) => e.clone(),
            Self::ShortBody { want, got } => format!("wanted {want} bytes, got {got}"),
            Self::Timeout(d) => format!("no answer within {d:?}"),
        }
    }
}

/// What each request looks like.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub authority: String,
    pub path: String,
    /// The body length every answer must have, if known.
    pub expect_body: Option<usize>,
}

impl RequestTemplate {
    fn build(&self, protocol: Protocol) -> Request<Empty<Bytes>> {
        let uri = match protocol {
            // HTTP/2 carries the authority and scheme as pseudo-headers: give hyper a full URI.
            Protocol::Http2 => format!("http://{}{}", self.authority, self.path),
            Protocol::Http1 => self.path.clone(),
        };
        Request::get(uri).header(http::header::HOST, &self.authority).body(Empty::new()).expect("valid request")
    }
}

/// Opens one connection and starts its driver task.
pub async fn connect(target: SocketAddr, protocol: Protocol) -> Result<Connection, RequestError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| RequestError::Connect(format!("{target}: no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| RequestError::Connect(format!("{target}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(tcp);
    match protocol {
        Protocol::Http1 => {
            let (send, conn) =
                http1::handshake(io).await.map_err(|e| RequestError::Connect(format!("{target}: {e}")))?;
            tokio::spawn(conn);
            Ok(Connection::Http1(send))
        }
        Protocol::Http2 => {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(64 * 1024)
                .handshake(io)
                .await
                .map_err(|e| RequestError::Connect(format!("{target}: {e}")))?;
            tokio::spawn(conn);
            Ok(Connection::Http2(send))
        }
    }
}

/// An open connection.
pub enum Connection {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl Connection {
    pub fn is_closed(&self) -> bool {
        match self {
            Self::Http1(s) => s.is_closed(),
            Self::Http2(s) => s.is_closed(),
        }
    }
}

/// Sends one request on an HTTP/1.1 connection and checks the answer.
pub async fn send_http1(
    send: &mut http1::SendRequest<Empty<Bytes>>,
    tpl: &RequestTemplate,
) -> Result<(), RequestError> {
    send.ready().await.map_err(|e| RequestError::Transport(e.to_string()))?;
    let resp =
        send.send_request(tpl.build(Protocol::Http1)).await.map_err(|e| RequestError::Transport(e.to_string()))?;
    check(resp, tpl).await
}

/// Sends one request as a new stream on an HTTP/2 connection and checks the answer.
pub async fn send_http2(mut send: http2::SendRequest<Empty<Bytes>>, tpl: &RequestTemplate) -> Result<(), RequestError> {
    send.ready().await.map_err(|e| RequestError::Transport(e.to_string()))?;
    let resp =
        send.send_request(tpl.build(Protocol::Http2)).await.map_err(|e| RequestError::Transport(e.to_string()))?;
    check(resp, tpl).await
}

/// Every answer is read to its end; anything but a 2xx with the expected body is an error (a
/// misconfigured proxy answers 503 in microseconds, which must never count as a fast request).
async fn check(resp: hyper::Response<hyper::body::Incoming>, tpl: &RequestTemplate) -> Result<(), RequestError> {
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| RequestError::Transport(e.to_string()))?.to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(RequestError::Status(status.as_u16(), text));
    }
    match tpl.expect_body {
        Some(want) if body.len() != want => Err(RequestError::ShortBody { want, got: body.len() }),
        _ => Ok(()),
    }
}
