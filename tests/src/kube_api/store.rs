//! The test API server's objects: one resourceVersion counter for everything (as etcd's), each
//! change kept in a bounded log that watches replay from, and an expiry that makes old
//! resourceVersions answer `410 Gone` — so that the real watcher's re-list path runs. Services
//! with a selector get their EndpointSlices made here, the way the endpoint-slice controller would.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// The kinds served, with their API group version and plural.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Service,
    EndpointSlice,
    Pod,
    ConfigMap,
    /// SMI, a CRD: served at every version in [`Kind::versions`] unless removed.
    TrafficSplit,
    /// Gateway API, a CRD the cluster may not have.
    HttpRoute,
    /// SMI access control, CRDs: served at every version in [`Kind::versions`] unless removed.
    TrafficTarget,
    HttpRouteGroup,
    /// What `weft check` reads of the install: the controller's Deployment and the webhook's
    /// configuration (cluster-scoped).
    Deployment,
    MutatingWebhookConfiguration,
    /// Events the controller creates (core/v1), kept to be read by tests.
    Event,
}

const ALL: [Kind; 12] = [
    Kind::Namespace,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Pod,
    Kind::ConfigMap,
    Kind::TrafficSplit,
    Kind::HttpRoute,
    Kind::TrafficTarget,
    Kind::HttpRouteGroup,
    Kind::Deployment,
    Kind::MutatingWebhookConfiguration,
    Kind::Event,
];

impl Kind {
    /// The API group ("" for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::TrafficSplit => "split.smi-spec.io",
            Kind::HttpRoute => "gateway.networking.k8s.io",
            Kind::TrafficTarget => "access.smi-spec.io",
            Kind::HttpRouteGroup => "specs.smi-spec.io",
            Kind::Deployment => "apps",
            Kind::MutatingWebhookConfiguration => "admissionregistration.k8s.io",
            _ => "",
        }
    }

    /// The versions served; the first is the one objects are stored as.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::TrafficSplit => &["v1alpha2", "v1alpha3", "v1alpha4"],
            Kind::TrafficTarget => &["v1alpha3", "v1alpha2"],
            Kind::HttpRouteGroup => &["v1alpha4", "v1alpha3", "v1alpha2"],
            _ => &["v1"],
        }
    }

    pub fn api_version(self) -> String {
        match self.group() {
            "" => self.versions()[0].to_string(),
            g => format!("{g}/{}", self.versions()[0]),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::ConfigMap => "ConfigMap",
            Kind::TrafficSplit => "TrafficSplit",
            Kind::HttpRoute => "HTTPRoute",
            Kind::TrafficTarget => "TrafficTarget",
            Kind::HttpRouteGroup => "HTTPRouteGroup",
            Kind::Deployment => "Deployment",
            Kind::MutatingWebhookConfiguration => "MutatingWebhookConfiguration",
            Kind::Event => "Event",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Pod => "pods",
            Kind::ConfigMap => "configmaps",
            Kind::TrafficSplit => "trafficsplits",
            Kind::HttpRoute => "httproutes",
            Kind::TrafficTarget => "traffictargets",
            Kind::HttpRouteGroup => "httproutegroups",
            Kind::Deployment => "deployments",
            Kind::MutatingWebhookConfiguration => "mutatingwebhookconfigurations",
            Kind::Event => "events",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::MutatingWebhookConfiguration)
    }

    pub fn from_name(kind: &str) -> Option<Self> {
        ALL.into_iter().find(|k| k.name() == kind)
    }

    pub fn from_plural(p: &str) -> Option<Self> {
        ALL.into_iter().find(|k| k.plural() == p)
    }
}

/// One change, as a watch sends it.
#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: Kind,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind_of_change: &'static str,
    pub object: Value,
}

impl Change {
    pub fn namespace(&self) -> &str {
        self.object["metadata"]["namespace"].as_str().unwrap_or_default()
    }
}

/// How many changes the log keeps; a watch from before them gets `410 Gone`.
const LOG_LEN: usize = 10_000;

type Key = (Kind, String, String);

pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Arc<Change>>,
    /// Watches must start at or after this resourceVersion; older ones are `410 Gone`.
    pub oldest_watchable: u64,
    pub live: broadcast::Sender<Arc<Change>>,
    next_uid: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            rv: 1,
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            oldest_watchable: 0,
            live: broadcast::channel(4096).0,
            next_uid: 1,
        }
    }
}

fn key_of(kind: Kind, obj: &Value) -> Key {
    let m = &obj["metadata"];
    let ns = if kind.namespaced() { m["namespace"].as_str().unwrap_or("default").to_string() } else { String::new() };
    (kind, ns, m["name"].as_str().unwrap_or_default().to_string())
}

impl Store {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn record(&mut self, kind: Kind, what: &'static str, object: Value) {
        let change = Arc::new(Change { rv: self.rv, kind, kind_of_change: what, object });
        if self.log.len() == LOG_LEN {
            if let Some(old) = self.log.pop_front() {
                self.oldest_watchable = self.oldest_watchable.max(old.rv);
            }
        }
        self.log.push_back(change.clone());
        let _ = self.live.send(change);
    }

    /// Creates or replaces an object (its uid kept across updates); returns it as stored.
    /// Unchanged content is not a change (no new resourceVersion, no event).
    pub fn put(&mut self, kind: Kind, mut obj: Value) -> Value {
        let key = key_of(kind, &obj);
        obj["apiVersion"] = kind.api_version().into();
        obj["kind"] = kind.name().into();
        if kind.namespaced() {
            obj["metadata"]["namespace"] = key.1.clone().into();
        }
        let old = self.objects.get(&key).cloned();
        let uid = old.as_ref().and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string)).unwrap_or_else(|| {
            self.next_uid += 1;
            format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), self.next_uid)
        });
        obj["metadata"]["uid"] = uid.into();
        obj["metadata"]["creationTimestamp"] = "2025-01-01T00:00:00Z".into();
        if let Some(old) = &old {
            let mut same = old.clone();
            same["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
            if same == obj {
                return old.clone();
            }
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = self.rv.to_string().into();
        self.objects.insert(key, obj.clone());
        self.record(kind, if old.is_some() { "MODIFIED" } else { "ADDED" }, obj.clone());
        obj
    }

    pub fn delete(&mut self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let key = (kind, if kind.namespaced() { ns.to_string() } else { String::new() }, name.to_string());
        let mut obj = self.objects.remove(&key)?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = self.rv.to_string().into();
        self.record(kind, "DELETED", obj.clone());
        Some(obj)
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Value> {
        let ns = if kind.namespaced() { ns.to_string() } else { String::new() };
        self.objects.get(&(kind, ns, name.to_string()))
    }

    /// Objects of a kind (in one namespace, or all), in key order.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Changes after `rv` of `kind`, or None if the log no longer reaches back that far.
    pub fn since(&self, kind: Kind, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv < self.oldest_watchable {
            return None;
        }
        Some(self.log.iter().filter(|c| c.kind == kind && c.rv > rv).cloned().collect())
    }

    /// Forgets the log: every resourceVersion before now answers `410 Gone`.
    pub fn compact(&mut self) {
        self.log.clear();
        self.oldest_watchable = self.rv;
    }

    /// Makes each Service's EndpointSlice agree with its selector and the pods' state (ready pods
    /// ready, pods being deleted terminating), as the endpoint-slice controller does.
    pub fn reconcile_slices(&mut self) {
        let services = self.list(Kind::Service, None);
        let pods = self.list(Kind::Pod, None);
        let mut wanted: BTreeMap<(String, String), Value> = BTreeMap::new();
        for svc in &services {
            let Some(selector) = svc["spec"]["selector"].as_object().filter(|s| !s.is_empty()) else { continue };
            let ns = svc["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = svc["metadata"]["name"].as_str().unwrap_or_default();
            let chosen: Vec<&Value> = pods
                .iter()
                .filter(|p| p["metadata"]["namespace"] == ns)
                .filter(|p| selector.iter().all(|(k, v)| p["metadata"]["labels"][k] == *v))
                .filter(|p| p["status"]["podIP"].is_string())
                .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
                .collect();
            for (family, v6) in [("IPv4", false), ("IPv6", true)] {
                let endpoints: Vec<Value> = chosen
                    .iter()
                    .filter_map(|p| {
                        let ips = p["status"]["podIPs"].as_array().cloned().unwrap_or_default();
                        let ip = ips
                            .iter()
                            .filter_map(|i| i["ip"].as_str())
                            .chain(p["status"]["podIP"].as_str())
                            .find(|ip| ip.contains(':') == v6)?
                            .to_string();
                        let deleting = p["metadata"]["deletionTimestamp"].is_string();
                        let ready = !deleting
                            && p["status"]["conditions"]
                                .as_array()
                                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                        Some(json!({
                            "addresses": [ip],
                            "conditions": {"ready": ready, "serving": ready, "terminating": deleting},
                            "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                                          "uid": p["metadata"]["uid"]}
                        }))
                    })
                    .collect();
                if endpoints.is_empty() && v6 {
                    continue;
                }
                let ports: Vec<Value> = svc["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        let target = match &p["targetPort"] {
                            Value::Number(n) => n.as_u64()?,
                            Value::Null => p["port"].as_u64()?,
                            Value::String(named) => chosen.iter().find_map(|pod| {
                                pod["spec"]["containers"].as_array()?.iter().find_map(|c| {
                                    c["ports"].as_array()?.iter().find(|cp| cp["name"] == *named.as_str())?
                                        ["containerPort"]
                                        .as_u64()
                                })
                            })?,
                            _ => return None,
                        };
                        Some(json!({"name": p["name"].as_str().unwrap_or(""), "port": target, "protocol": "TCP"}))
                    })
                    .collect();
                let slice_name = format!("{name}-{}", if v6 { "v6" } else { "v4" });
                wanted.insert(
                    (ns.to_string(), slice_name.clone()),
                    json!({
                        "metadata": {"name": slice_name, "namespace": ns, "labels": {
                            "kubernetes.io/service-name": name,
                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
                        "addressType": family,
                        "endpoints": endpoints,
                        "ports": ports,
                    }),
                );
            }
        }
        let managed: Vec<(String, String)> = self
            .list(Kind::EndpointSlice, None)
            .iter()
            .filter(|s| {
                s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
            })
            .map(|s| {
                (
                    s["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
                    s["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        for (ns, name) in managed {
            if !wanted.contains_key(&(ns.clone(), name.clone())) {
                self.delete(Kind::EndpointSlice, &ns, &name);
            }
        }
        for (_, slice) in wanted {
            self.put(Kind::EndpointSlice, slice);
        }
    }
}
