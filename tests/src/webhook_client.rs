//! Calls an admission webhook the way the API server does: HTTPS verified against the
//! configuration's CA bundle for the Service's name, `POST PATH?timeout=…` with an AdmissionReview.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

use crate::apps::rt;

/// The answer: HTTP status, the parsed body (when JSON), and how long it took.
pub struct WebhookAnswer {
    pub status: u16,
    pub body: serde_json::Value,
    pub raw: String,
    pub elapsed: Duration,
}

/// POSTs `body` to `https://ADDR/inject?timeout=…`, verifying the server as `server_name` against `ca_pem`.
pub fn post(
    addr: std::net::SocketAddr,
    server_name: &str,
    ca_pem: &[u8],
    api_timeout: &str,
    body: &[u8],
) -> Result<WebhookAnswer, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in weft_certs::pem::certs(ca_pem)? {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(weft_certs::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let body = Bytes::copy_from_slice(body);
    let path = format!("/inject?timeout={api_timeout}");
    let host = server_name.to_string();
    rt().block_on(async move {
        let started = Instant::now();
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::post(path)
            .header(http::header::HOST, host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .map_err(|_| "no answer within 30s".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(WebhookAnswer { status, body, raw, elapsed: started.elapsed() })
    })
}

/// An AdmissionReview v1 for creating `pod` in `namespace`, as the API server sends it: written
/// out, then read and written again through the typed `AdmissionReview<Pod>` (kube's admission
/// types over k8s-openapi's `Pod`), so that what is sent is a real review of a real Pod.
pub fn pod_create_review(uid: &str, namespace: &str, pod: &serde_json::Value) -> serde_json::Value {
    let typed: kube::core::admission::AdmissionReview<k8s_openapi::api::core::v1::Pod> =
        serde_json::from_value(untyped_pod_create_review(uid, namespace, pod))
            .unwrap_or_else(|e| panic!("not an AdmissionReview of a Pod: {e}"));
    serde_json::to_value(&typed).expect("AdmissionReview serializes")
}

/// The same review, not checked against the types: for pods the API server would never send.
pub fn untyped_pod_create_review(uid: &str, namespace: &str, pod: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"].as_str().unwrap_or(""),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

impl WebhookAnswer {
    /// The response's JSON patch (decoded), if any.
    pub fn patch(&self) -> Option<json_patch::Patch> {
        use base64::Engine;
        let b64 = self.body["response"]["patch"].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.body["response"]["warnings"]
            .as_array()
            .map(|a| a.iter().filter_map(|w| w.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    pub fn uid(&self) -> &str {
        self.body["response"]["uid"].as_str().unwrap_or_default()
    }

    pub fn allowed(&self) -> bool {
        self.body["response"]["allowed"].as_bool() == Some(true)
    }
}
