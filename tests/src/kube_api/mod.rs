//! A test API server: the one corner of the Kubernetes API the webhook uses (`GET
//! /api/v1/namespaces/NAME`), over HTTPS with a bearer token, reached through a real kubeconfig
//! by the real kube client inside the controller. Namespaces can be made slow or failing, and
//! every request is counted, so the webhook's cache and timeouts can be watched.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::apps::rt;

pub const TOKEN: &str = "test-api-server-token";

/// How the test API server answers for one namespace.
#[derive(Clone, Debug)]
pub enum NamespaceAnswer {
    Annotations(Vec<(String, String)>),
    /// 500 Internal Server Error.
    Fail,
    /// The annotations, after a delay.
    Slow(Duration, Vec<(String, String)>),
}

#[derive(Default)]
struct Shared {
    namespaces: HashMap<String, NamespaceAnswer>,
    requests: HashMap<String, usize>,
}

pub struct TestApiServer {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestApiServer {
    /// Starts on 127.0.0.1 with a certificate from the CA in `ca_dir`; writes `dir/kubeconfig`.
    pub fn start(ca_dir: &Path, dir: &Path) -> Self {
        let ca = weft_inject::webhook::tls::CaFiles::load(ca_dir).expect("CA for the test API server");
        let cert = ca.issue(&["127.0.0.1".to_string()], Duration::from_secs(3600)).expect("serving certificate");
        let tls = weft_inject::webhook::tls::server_config(weft_inject::webhook::tls::ServingCert::new(cert));
        let listener = rt().block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = rt().spawn(serve(listener, tls, shared.clone()));
        let ca_pem = std::fs::read(ca_dir.join("ca.crt")).expect("ca.crt");
        use base64::Engine;
        let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://{addr}\n    \
                 certificate-authority-data: {ca_data}\nusers:\n- name: test\n  user:\n    token: {TOKEN}\n\
                 contexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\n"
            ),
        )
        .expect("kubeconfig");
        Self { addr, kubeconfig, shared, task }
    }

    pub fn set_namespace(&self, name: &str, answer: NamespaceAnswer) {
        self.shared.lock().unwrap().namespaces.insert(name.to_string(), answer);
    }

    /// How many times the namespace was read.
    pub fn reads(&self, name: &str) -> usize {
        self.shared.lock().unwrap().requests.get(&format!("/api/v1/namespaces/{name}")).copied().unwrap_or(0)
    }
}

async fn serve(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>, shared: Arc<Mutex<Shared>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(req, &shared).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: u16, body: serde_json::Value) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn status(code: u16, reason: &str, message: &str) -> http::Response<Full<Bytes>> {
    reply(
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "message": message, "code": code}),
    )
}

async fn answer(req: http::Request<hyper::body::Incoming>, shared: &Mutex<Shared>) -> http::Response<Full<Bytes>> {
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return status(401, "Unauthorized", "no or wrong bearer token");
    }
    let path = req.uri().path().to_string();
    let Some(name) = path.strip_prefix("/api/v1/namespaces/").filter(|n| !n.contains('/')) else {
        return status(404, "NotFound", "the test API server only serves namespaces");
    };
    let found = {
        let mut s = shared.lock().unwrap();
        *s.requests.entry(path.clone()).or_default() += 1;
        s.namespaces.get(name).cloned()
    };
    let annotations = match found {
        None => return status(404, "NotFound", &format!("namespaces \"{name}\" not found")),
        Some(NamespaceAnswer::Fail) => return status(500, "InternalError", "etcd is having a bad day"),
        Some(NamespaceAnswer::Annotations(a)) => a,
        Some(NamespaceAnswer::Slow(delay, a)) => {
            tokio::time::sleep(delay).await;
            a
        }
    };
    let annotations: serde_json::Map<String, serde_json::Value> =
        annotations.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
    reply(
        200,
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "annotations": annotations, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        }),
    )
}
