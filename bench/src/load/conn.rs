//! The generator's connections: HTTP/1.1 keep-alive (one request at a time per connection),
//! HTTP/2 prior knowledge (many streams per connection, plain requests or gRPC unary calls) or
//! opaque TCP request/response, and one request with its answer checked.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// A gRPC call answered with a non-zero (or no) `grpc-status`.
    #[error("grpc status")]
    GrpcStatus(String),
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
            Self::GrpcStatus(s) => s.clone(),
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
    fn build(&self, protocol: Protocol) -> Request<Full<Bytes>> {
        match protocol {
            // HTTP/2 carries the authority and scheme as pseudo-headers: give hyper a full URI.
            Protocol::Http2 => Request::get(format!("http://{}{}", self.authority, self.path))
                .body(Full::default())
                .expect("valid request"),
            // A unary call with a small message, as gRPC frames it.
            Protocol::Grpc => Request::post(format!("http://{}{}", self.authority, GRPC_PATH))
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from_static(GRPC_REQUEST)))
                .expect("valid request"),
            Protocol::Http1 | Protocol::Tcp => Request::get(self.path.clone())
                .header(http::header::HOST, &self.authority)
                .body(Full::default())
                .expect("valid request"),
        }
    }
}

/// The gRPC method the load calls (the backend answers any path the same way).
pub const GRPC_PATH: &str = "/weft.bench.Echo/Unary";
/// One gRPC message frame: uncompressed, 9 bytes of message.
const GRPC_REQUEST: &[u8] = b"\0\0\0\0\x09weftbench";

/// What an opaque TCP request is: one line that no protocol detector can take for HTTP (it starts
/// with a NUL byte) and that ends a line, so a detector that waits for one decides at once. The
/// backend answers each with its payload (as many bytes as `--payload` says).
pub const TCP_REQUEST: &[u8] = b"\0weft-rr\r\n";

/// Opens one connection and starts its driver task.
pub async fn connect(target: SocketAddr, protocol: Protocol) -> Result<Connection, RequestError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| RequestError::Connect(format!("{target}: no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| RequestError::Connect(format!("{target}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(tcp);
    match protocol {
        Protocol::Tcp => Ok(Connection::Tcp(io.into_inner())),
        Protocol::Http1 => {
            let (send, conn) =
                http1::handshake(io).await.map_err(|e| RequestError::Connect(format!("{target}: {e}")))?;
            tokio::spawn(conn);
            Ok(Connection::Http1(send))
        }
        Protocol::Http2 | Protocol::Grpc => {
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
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
    Tcp(TcpStream),
}

/// Sends one request on an HTTP/1.1 connection and checks the answer.
pub async fn send_http1(send: &mut http1::SendRequest<Full<Bytes>>, tpl: &RequestTemplate) -> Result<(), RequestError> {
    send.ready().await.map_err(|e| RequestError::Transport(e.to_string()))?;
    let resp =
        send.send_request(tpl.build(Protocol::Http1)).await.map_err(|e| RequestError::Transport(e.to_string()))?;
    check(resp, tpl).await
}

/// Sends one request (or gRPC call) as a new stream on an HTTP/2 connection and checks the answer.
pub async fn send_http2(
    mut send: http2::SendRequest<Full<Bytes>>,
    tpl: &RequestTemplate,
    protocol: Protocol,
) -> Result<(), RequestError> {
    send.ready().await.map_err(|e| RequestError::Transport(e.to_string()))?;
    let resp = send.send_request(tpl.build(protocol)).await.map_err(|e| RequestError::Transport(e.to_string()))?;
    match protocol {
        Protocol::Grpc => check_grpc(resp, tpl).await,
        _ => check(resp, tpl).await,
    }
}

/// Sends one opaque request on a TCP connection and reads the whole answer.
pub async fn send_tcp(tcp: &mut TcpStream, tpl: &RequestTemplate, buf: &mut Vec<u8>) -> Result<(), RequestError> {
    tcp.write_all(TCP_REQUEST).await.map_err(|e| RequestError::Transport(e.to_string()))?;
    let want = tpl.expect_body.unwrap_or(0);
    buf.resize(want, 0);
    let mut got = 0;
    while got < want {
        match tcp.read(&mut buf[got..]).await {
            Ok(0) => return Err(RequestError::ShortBody { want, got }),
            Ok(n) => got += n,
            Err(e) => return Err(RequestError::Transport(e.to_string())),
        }
    }
    Ok(())
}

/// A gRPC answer: 200, one message frame whose length matches, and `grpc-status: 0` in the trailers.
async fn check_grpc(resp: hyper::Response<hyper::body::Incoming>, tpl: &RequestTemplate) -> Result<(), RequestError> {
    let status = resp.status();
    let collected = resp.into_body().collect().await.map_err(|e| RequestError::Transport(e.to_string()))?;
    let grpc_status = collected.trailers().and_then(|t| t.get("grpc-status")).map(|v| v.as_bytes().to_vec());
    let body = collected.to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(RequestError::Status(status.as_u16(), text));
    }
    if grpc_status.as_deref() != Some(b"0") {
        return Err(RequestError::GrpcStatus(format!(
            "grpc-status {:?}",
            grpc_status.map(|s| String::from_utf8_lossy(&s).into_owned())
        )));
    }
    match tpl.expect_body {
        Some(want) if body.len() != want + 5 => Err(RequestError::ShortBody { want: want + 5, got: body.len() }),
        _ => Ok(()),
    }
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
