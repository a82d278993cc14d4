//! A test API server: the corner of the Kubernetes API that Weft uses, over HTTPS with a bearer
//! token, reached through a real kubeconfig by the real kube client inside the controller. It is
//! a stand-in written for these tests, not Kubernetes:
//! - `GET /api/v1/namespaces/NAME` for the webhook (answers can be made slow or failing, and
//!   every read is counted, so the webhook's cache and timeouts can be watched);
//! - list and watch of Namespaces, Services, EndpointSlices, Pods, ConfigMaps, SMI TrafficSplits
//!   (v1alpha2–v1alpha4), TrafficTargets (v1alpha3, v1alpha2) and HTTPRouteGroups
//!   (v1alpha4–v1alpha2), and Gateway API HTTPRoutes (v1; any CRD can be removed, then its
//!   paths answer 404 as an uninstalled CRD's do), all namespaces or one, with
//!   resourceVersions, paging (`limit`/`continue`), bookmarks, `timeoutSeconds`, and `410 Gone`
//!   for a watch from a resourceVersion it no longer has ([`TestApiServer::expire_watches`]);
//!   Services' EndpointSlices follow their selectors and the pods' readiness by themselves;
//! - `POST` of Events (kept, for [`TestApiServer::events`]; a name taken is `409`);
//! - `GET` of one object (a pod; for `weft check`, the controller's Deployment and the webhook's
//!   MutatingWebhookConfiguration, stored as given), and TokenReview of the service-account tokens it signs
//!   ([`TestApiServer::token`]): signature, expiry, audience and the bound pod checked.

mod http;
pub mod store;
pub mod tokens;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use self::store::{Kind, Store};
use crate::apps::rt;

pub const TOKEN: &str = "test-api-server-token";

/// How the test API server answers a `GET` of one namespace (the webhook's read).
#[derive(Clone, Debug)]
pub enum NamespaceAnswer {
    Annotations(Vec<(String, String)>),
    /// 500 Internal Server Error.
    Fail,
    /// The annotations, after a delay.
    Slow(Duration, Vec<(String, String)>),
}

pub(crate) struct Shared {
    pub namespaces: HashMap<String, NamespaceAnswer>,
    /// Requests by path (namespace reads) and by verb and kind (`list pods`, `watch services`,
    /// `create tokenreviews`).
    pub requests: HashMap<String, usize>,
    pub store: Store,
    pub signer: tokens::Signer,
    pub bookmark_every: Duration,
    /// Kinds whose CRD is not installed: 404 on every path of theirs.
    pub removed: std::collections::HashSet<Kind>,
    /// Bumped by `expire_watches`: every open watch ends with `410 Gone`.
    pub expiry: tokio::sync::watch::Sender<u64>,
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

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl TestApiServer {
    /// Starts on 127.0.0.1 with a certificate from the CA in `ca_dir`; writes `dir/kubeconfig`.
    pub fn start(ca_dir: &Path, dir: &Path) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        Self::start_on(ca_dir, dir, listener)
    }

    /// Starts on a listener made elsewhere (e.g. inside a test lab's network namespace).
    pub fn start_on(ca_dir: &Path, dir: &Path, listener: std::net::TcpListener) -> Self {
        let addr = listener.local_addr().expect("addr");
        let ca = weft_inject::webhook::tls::CaFiles::load(ca_dir).expect("CA for the test API server");
        let cert = ca.issue(&[addr.ip().to_string()], Duration::from_secs(3600)).expect("serving certificate");
        let tls = weft_inject::webhook::tls::server_config(weft_inject::webhook::tls::ServingCert::new(cert));
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = {
            let _guard = rt().enter();
            tokio::net::TcpListener::from_std(listener).expect("listener")
        };
        let shared = Arc::new(Mutex::new(Shared {
            namespaces: HashMap::new(),
            requests: HashMap::new(),
            store: Store::default(),
            signer: tokens::Signer::generate(),
            bookmark_every: Duration::from_secs(1),
            removed: Default::default(),
            expiry: tokio::sync::watch::channel(0).0,
        }));
        let task = rt().spawn(http::serve(listener, tls, shared.clone()));
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_namespace(&self, name: &str, answer: NamespaceAnswer) {
        self.lock().namespaces.insert(name.to_string(), answer);
    }

    /// How many times the namespace was read.
    pub fn reads(&self, name: &str) -> usize {
        self.requests(&format!("/api/v1/namespaces/{name}"))
    }

    /// Requests counted under `what`: a path, or `list KIND`, `watch KIND`, `create tokenreviews`
    /// (KIND plural: `pods`, `services`, `endpointslices`, `namespaces`).
    pub fn requests(&self, what: &str) -> usize {
        self.lock().requests.get(what).copied().unwrap_or(0)
    }

    /// Creates or replaces an object (its `kind` says which); EndpointSlices of Services follow.
    pub fn apply(&self, obj: Value) -> Value {
        let kind = obj["kind"].as_str().and_then(Kind::from_name).unwrap_or_else(|| panic!("unserved kind in {obj}"));
        let mut s = self.lock();
        let stored = s.store.put(kind, obj);
        if matches!(kind, Kind::Service | Kind::Pod) {
            s.store.reconcile_slices();
        }
        stored
    }

    /// Deletes an object (`kind` as in `Pod`); EndpointSlices of Services follow.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let kind = Kind::from_name(kind).expect("served kind");
        let mut s = self.lock();
        let gone = s.store.delete(kind, namespace, name).is_some();
        s.store.reconcile_slices();
        gone
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock().store.get(Kind::from_name(kind).expect("served kind"), namespace, name).cloned()
    }

    /// Changes a stored object in place.
    pub fn update(&self, kind: &str, namespace: &str, name: &str, f: impl FnOnce(&mut Value)) -> Value {
        let mut obj = self.get(kind, namespace, name).unwrap_or_else(|| panic!("no {kind} {namespace}/{name}"));
        f(&mut obj);
        self.apply(obj)
    }

    /// Sets a pod's Ready condition (what the kubelet reports from its probes).
    pub fn set_pod_ready(&self, namespace: &str, name: &str, ready: bool) -> Value {
        self.update("Pod", namespace, name, |p| {
            p["status"]["conditions"] = json!([{"type": "Ready", "status": if ready { "True" } else { "False" }}]);
        })
    }

    /// The Events created, oldest first (by resourceVersion).
    pub fn events(&self) -> Vec<Value> {
        let mut list = self.lock().store.list(Kind::Event, None);
        list.sort_by_key(|e| e["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse::<u64>().ok()));
        list
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().store.resource_version()
    }

    /// Ends every open watch with `410 Gone` and forgets the change log, so that watching from
    /// any resourceVersion seen so far is `410 Gone` too: watchers must list again.
    pub fn expire_watches(&self) {
        let mut s = self.lock();
        s.store.compact();
        s.expiry.send_modify(|e| *e += 1);
    }

    /// Uninstalls a kind's CRD (`TrafficSplit`, `TrafficTarget`, `HTTPRouteGroup`, `HTTPRoute`): its paths answer 404 from now on.
    pub fn remove_kind(&self, kind: &str) {
        self.lock().removed.insert(Kind::from_name(kind).expect("served kind"));
    }

    /// How often open watches with `allowWatchBookmarks` get a bookmark (default 1 s).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.lock().bookmark_every = every;
    }

    /// A projected service-account token for the pod `namespace/pod` (which must exist), for
    /// `audience`, expiring `ttl_secs` from now (negative: already expired).
    pub fn token(&self, namespace: &str, pod: &str, audience: &str, ttl_secs: i64) -> String {
        let pod = self.get("Pod", namespace, pod).unwrap_or_else(|| panic!("no pod {namespace}/{pod}"));
        let s = self.lock();
        s.signer.sign(&tokens::claims(&pod, audience, unix_now(), ttl_secs))
    }

    /// The same token, signed with a key this server does not know.
    pub fn forged_token(&self, namespace: &str, pod: &str, audience: &str) -> String {
        let pod = self.get("Pod", namespace, pod).unwrap_or_else(|| panic!("no pod {namespace}/{pod}"));
        tokens::Signer::generate().sign(&tokens::claims(&pod, audience, unix_now(), 600))
    }
}

/// A running pod as the kubelet reports it: `sa` its service account, `ip` its IP, `labels` its
/// labels; `injected`: it carries the injector's `weft.io/inject-status: injected`. Not ready
/// until [`TestApiServer::set_pod_ready`].
pub fn pod(namespace: &str, name: &str, sa: &str, ip: &str, labels: &[(&str, &str)], injected: bool) -> Value {
    let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
    let annotations = if injected { json!({"weft.io/inject-status": "injected"}) } else { json!({}) };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "labels": labels, "annotations": annotations},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "False"}]}
    })
}

/// A ClusterIP Service selecting `app=NAME`, with `(port, target_port)`s.
pub fn service(namespace: &str, name: &str, cluster_ip: &str, ports: &[(u16, u16)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(p, t)| json!({"name": format!("p{p}"), "port": p, "targetPort": t, "protocol": "TCP"}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                 "selector": {"app": name}, "ports": ports}
    })
}

/// The mesh file as `weft install` ships it: ConfigMap `weft-system/weft-mesh`, key `mesh.yaml`.
pub fn mesh_config_map(mesh_yaml: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"namespace": "weft-system", "name": "weft-mesh"},
        "data": {"mesh.yaml": mesh_yaml}
    })
}

/// An SMI TrafficSplit of `service` over `(backend, weight)`s, as Flagger writes one.
pub fn traffic_split(namespace: &str, name: &str, service: &str, backends: &[(&str, u32)]) -> Value {
    let backends: Vec<Value> = backends.iter().map(|(s, w)| json!({"service": s, "weight": w})).collect();
    json!({
        "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"service": service, "backends": backends}
    })
}

/// A GAMMA HTTPRoute attached to Service `parent`, with `rules` as the API writes them.
pub fn http_route(namespace: &str, name: &str, parent: &str, rules: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": parent, "port": 80}], "rules": rules}
    })
}

/// An SMI TrafficTarget (v1alpha3, as Open Service Mesh writes one): `sources` (service accounts
/// of `namespace`) may call `destination` on the routes of HTTPRouteGroup `group`.
pub fn traffic_target(namespace: &str, name: &str, destination: &str, group: &str, sources: &[&str]) -> Value {
    let sources: Vec<Value> =
        sources.iter().map(|s| json!({"kind": "ServiceAccount", "name": s, "namespace": namespace})).collect();
    json!({
        "apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"destination": {"kind": "ServiceAccount", "name": destination, "namespace": namespace},
                 "rules": [{"kind": "HTTPRouteGroup", "name": group}], "sources": sources}
    })
}

/// An SMI HTTPRouteGroup (v1alpha4) with `matches` as the API writes them.
pub fn http_route_group(namespace: &str, name: &str, matches: Value) -> Value {
    json!({
        "apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"matches": matches}
    })
}
