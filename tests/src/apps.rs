//! Small test applications that run in the test process, on a shared background runtime: an HTTP
//! app with adjustable failures and latency that reports what it received, a gRPC echo, TCP echo
//! and server-speaks-first servers, a WebSocket echo, and a blocking HTTP client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weft_proto::demo;

/// The runtime test apps and clients run on.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("test runtime")
    })
}

/// How the HTTP app answers.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Share of requests answered 503.
    pub fail_percent: u32,
    /// Added before answering.
    pub latency: Duration,
    /// Call this address (a proxy's upstream listener) before answering, copying
    /// `x-weft-deadline-at` the way gRPC libraries carry deadlines.
    pub call: Option<SocketAddr>,
    /// Extra response headers (a hostile app forging the proxy's).
    pub response_headers: Vec<(String, String)>,
}

#[derive(Default)]
pub struct AppStats {
    pub requests: AtomicU64,
    pub failures_sent: AtomicU64,
    pub last_headers: Mutex<HeaderMap>,
    /// Requests being answered now, and the most ever at once.
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
}

/// Counts one request in progress in `AppStats`.
struct Busy(Arc<AppStats>);

impl Busy {
    fn new(s: &Arc<AppStats>) -> Self {
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(s.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct HttpApp {
    pub addr: SocketAddr,
    pub name: String,
    pub stats: Arc<AppStats>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpApp {
    pub fn start(name: &str, behaviour: Behaviour) -> Self {
        let stats = Arc::new(AppStats::default());
        let behaviour = Arc::new(Mutex::new(behaviour));
        let name_owned = name.to_string();
        let (listener, addr) = rt().block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
            let a = l.local_addr().unwrap();
            (l, a)
        });
        let (s, b, n) = (stats.clone(), behaviour.clone(), name_owned.clone());
        let task = rt().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, b, n) = (s.clone(), b.clone(), n.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, s.clone(), b.clone(), n.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, name: name_owned, stats, behaviour, task }
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap());
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }

    pub fn failures_sent(&self) -> u64 {
        self.stats.failures_sent.load(Ordering::SeqCst)
    }

    pub fn last_header(&self, name: &str) -> Option<String> {
        self.stats.last_headers.lock().unwrap().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

async fn answer(
    req: Request<Incoming>,
    stats: Arc<AppStats>,
    behaviour: Arc<Mutex<Behaviour>>,
    name: String,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let _busy = Busy::new(&stats);
    *stats.last_headers.lock().unwrap() = req.headers().clone();
    let b = behaviour.lock().unwrap().clone();
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut downstream = serde_json::Value::Null;
    let mut downstream_status = None;
    if let Some(up) = b.call {
        let mut h = vec![];
        let at = header("x-weft-deadline-at");
        if !at.is_empty() {
            h.push(("x-weft-deadline-at".to_string(), at));
        }
        let resp = client_request(up, "GET", "/from-app", h, Bytes::new()).await;
        downstream_status = Some(resp.as_ref().map(|r| r.status).unwrap_or(502));
        downstream = match resp {
            Ok(r) => {
                serde_json::json!({"status": r.status, "body": serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or(serde_json::Value::String(r.body.clone()))})
            }
            Err(e) => serde_json::json!({"error": e}),
        };
    }
    if b.fail_percent > 0 && rand_percent() < b.fail_percent {
        stats.failures_sent.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::new(Bytes::from_static(b"injected failure\n")))
            .unwrap());
    }
    // Like a real app, a failed downstream call fails this request with the same status.
    if let Some(code) = downstream_status.filter(|c| !(200..300).contains(c)) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
        return Ok(Response::builder().status(status).body(Full::new(Bytes::from(downstream.to_string()))).unwrap());
    }
    let headers: BTreeMap<String, String> =
        parts.headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let out = serde_json::json!({
        "app": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "version": format!("{:?}", parts.version),
        "client_id": header("x-weft-client-id"),
        "deadline_ms": header("x-weft-deadline-ms"),
        "deadline_at": header("x-weft-deadline-at"),
        "body": String::from_utf8_lossy(&body),
        "headers": headers,
        "downstream": downstream,
    });
    let mut resp = Response::builder().header("content-type", "application/json").header("x-app", name);
    for (k, v) in &b.response_headers {
        resp = resp.header(k.as_str(), v.as_str());
    }
    Ok(resp.body(Full::new(Bytes::from(out.to_string()))).unwrap())
}

fn rand_percent() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    (h.finish() % 100) as u32
}

/// A response as tests look at it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, n: &str) -> Option<&str> {
        self.headers.get(n).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn client_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: Vec<(String, String)>,
    body: Bytes,
) -> Result<Resp, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut b = Request::builder().method(method).uri(path).header("host", "svc.test");
    for (k, v) in headers {
        b = b.header(k, v);
    }
    let req = b.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// A keep-alive HTTP/1.1 client (one pooled connection per address).
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        let _guard = rt().enter();
        Self { inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http() }
    }

    pub async fn send(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Resp, String> {
        let mut b = Request::builder().method(method).uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).map_err(|e| e.to_string())?;
        let resp = self.inner.request(req).await.map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
    }

    /// Blocking GET.
    pub fn get(&self, addr: SocketAddr, path: &str) -> Resp {
        self.get_with(addr, path, &[])
    }

    pub fn get_with(&self, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
        rt().block_on(self.send(addr, "GET", path, headers, "")).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
    }

    pub fn post(&self, addr: SocketAddr, path: &str, body: &str) -> Resp {
        rt().block_on(self.send(addr, "POST", path, &[], body)).unwrap_or_else(|e| panic!("POST {addr}{path}: {e}"))
    }
}

/// A gRPC echo server (unary and server streaming) that reports the caller identity and deadline.
pub struct GrpcApp {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Echo {
    name: String,
}

#[tonic::async_trait]
impl demo::echo_server::Echo for Echo {
    async fn unary(
        &self,
        req: tonic::Request<demo::EchoRequest>,
    ) -> Result<tonic::Response<demo::EchoReply>, tonic::Status> {
        let client_id = req.metadata().get("x-weft-client-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let deadline_ms = req
            .metadata()
            .get("x-weft-deadline-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1);
        let r = req.into_inner();
        if r.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(r.delay_ms)).await;
        }
        Ok(tonic::Response::new(demo::EchoReply {
            message: r.message,
            index: 0,
            served_by: self.name.clone(),
            client_id,
            deadline_ms,
        }))
    }

    type ServerStreamStream =
        std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<demo::EchoReply, tonic::Status>> + Send>>;

    async fn server_stream(
        &self,
        req: tonic::Request<demo::EchoRequest>,
    ) -> Result<tonic::Response<Self::ServerStreamStream>, tonic::Status> {
        let r = req.into_inner();
        let name = self.name.clone();
        let items: Vec<Result<demo::EchoReply, tonic::Status>> = (0..r.count)
            .map(|i| {
                Ok(demo::EchoReply {
                    message: format!("{} #{i}", r.message),
                    index: i,
                    served_by: name.clone(),
                    client_id: String::new(),
                    deadline_ms: -1,
                })
            })
            .collect();
        Ok(tonic::Response::new(Box::pin(futures_util::stream::iter(items))))
    }
}

impl GrpcApp {
    pub fn start(name: &str) -> Self {
        let (listener, addr) = rt().block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            (l, a)
        });
        let svc = demo::echo_server::EchoServer::new(Echo { name: name.to_string() });
        let task = rt().spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(svc, tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Self { addr, task }
    }
}

/// A TCP server: echoes, after sending `banner` first if given (server-speaks-first).
pub struct TcpApp {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpApp {
    pub fn start(bind: &str, banner: Option<&'static str>) -> Self {
        let bind = bind.to_string();
        let (listener, addr) = rt().block_on(async move {
            let l = TcpListener::bind(bind).await.unwrap();
            let a = l.local_addr().unwrap();
            (l, a)
        });
        let task = rt().spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Some(b) = banner {
                        let _ = s.write_all(b.as_bytes()).await;
                    }
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

/// A minimal WebSocket echo: completes the upgrade handshake and echoes text frames.
pub struct WsApp {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsApp {
    pub fn start() -> Self {
        let (listener, addr) = rt().block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            (l, a)
        });
        let task = rt().spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if s.read_exact(&mut b).await.is_err() {
                            return;
                        }
                        head.push(b[0]);
                    }
                    let text = String::from_utf8_lossy(&head).to_lowercase();
                    if !text.contains("upgrade: websocket") {
                        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
                        return;
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: test\r\n\r\n")
                        .await;
                    // Echo frames: read a masked client frame, send it back unmasked.
                    loop {
                        let Ok(frame) = read_frame(&mut s).await else { return };
                        let mut out = vec![0x81, frame.len() as u8];
                        out.extend_from_slice(&frame);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

/// Reads one small (< 126 bytes) WebSocket frame and returns its unmasked payload.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(s: &mut R) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await?;
    let masked = h[1] & 0x80 != 0;
    let len = (h[1] & 0x7f) as usize;
    let mut mask = [0u8; 4];
    if masked {
        s.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(payload)
}

/// A masked client text frame.
pub fn client_frame(text: &str) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut out = vec![0x81, 0x80 | text.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}
