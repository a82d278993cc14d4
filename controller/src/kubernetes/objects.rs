//! The few fields of Services, EndpointSlices and Pods the mesh needs, taken out of the API
//! objects once, so that the index and everything after it never handle `k8s-openapi` types.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The annotation the injector writes on every pod it gave a proxy.
pub const INJECT_STATUS: &str = weft_inject::names::INJECT_STATUS;
/// A pod's version for traffic splits: the recommended label first, then the plain one.
pub const VERSION_LABELS: [&str; 2] = ["app.kubernetes.io/version", weft_inject::names::VERSION_LABEL];

/// An object's place: namespace and name.
pub type Key = (String, String);

/// A Service port's target: a number, or the name of a container port (resolved per pod, which
/// the EndpointSlices carry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortRecord {
    pub name: String,
    pub port: u16,
    pub target: TargetPort,
    pub app_protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    pub namespace: String,
    pub name: String,
    /// ClusterIPs (none for a headless Service).
    pub cluster_ips: Vec<IpAddr>,
    /// TCP ports only: the mesh carries TCP.
    pub ports: Vec<ServicePortRecord>,
    /// Only Services that select pods are meshed: the endpoints of the others are not pods.
    pub has_selector: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; absent means ready (the API's rule).
    pub ready: bool,
    /// The pod behind the address, when the slice names one.
    pub pod: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceRecord {
    pub namespace: String,
    pub name: String,
    /// The Service it belongs to (its `kubernetes.io/service-name` label).
    pub service: Option<String>,
    pub endpoints: Vec<SliceEndpoint>,
    /// TCP ports, as resolved for these endpoints.
    pub ports: Vec<SlicePort>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
    /// `status.podIPs` (or `status.podIP`), in the API's order.
    pub ips: Vec<IpAddr>,
    /// Injected with a Weft proxy (the injector's `weft.io/inject-status: injected`).
    pub meshed: bool,
    pub version: String,
    /// Succeeded or Failed: its IP may already belong to another pod.
    pub finished: bool,
    /// Being deleted.
    pub deleting: bool,
}

impl PodRecord {
    pub fn key(&self) -> Key {
        (self.namespace.clone(), self.name.clone())
    }
}

fn ips(list: impl IntoIterator<Item = String>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in list.into_iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
        let ip = ip.to_canonical();
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

fn port(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p == "TCP")
}

impl ServiceRecord {
    /// None for objects without a name or namespace, and for ExternalName Services (a DNS alias
    /// has no endpoints to mesh).
    pub fn from_api(s: &Service) -> Option<Self> {
        let (namespace, name) = (s.metadata.namespace.clone()?, s.metadata.name.clone()?);
        let spec = s.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let mut cluster = spec.cluster_ips.unwrap_or_default();
        if cluster.is_empty() {
            cluster.extend(spec.cluster_ip);
        }
        let ports = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter(|p| is_tcp(p.protocol.as_deref()))
            .filter_map(|p| {
                let number = port(p.port)?;
                let target = match p.target_port {
                    Some(IntOrString::Int(t)) => TargetPort::Number(port(t)?),
                    Some(IntOrString::String(n)) => match n.parse::<i32>() {
                        Ok(t) => TargetPort::Number(port(t)?),
                        Err(_) => TargetPort::Name(n),
                    },
                    None => TargetPort::Number(number),
                };
                Some(ServicePortRecord {
                    name: p.name.unwrap_or_default(),
                    port: number,
                    target,
                    app_protocol: p.app_protocol,
                })
            })
            .collect();
        Some(Self {
            namespace,
            name,
            cluster_ips: ips(cluster),
            ports,
            has_selector: spec.selector.is_some_and(|s| !s.is_empty()),
        })
    }
}

impl SliceRecord {
    pub fn from_api(s: &EndpointSlice) -> Option<Self> {
        let (namespace, name) = (s.metadata.namespace.clone()?, s.metadata.name.clone()?);
        if !matches!(s.address_type.as_str(), "IPv4" | "IPv6") {
            return None;
        }
        let service = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).cloned();
        let endpoints = s
            .endpoints
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| SliceEndpoint {
                addresses: ips(e.addresses),
                ready: e.conditions.and_then(|c| c.ready).unwrap_or(true),
                pod: e.target_ref.filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| r.name),
            })
            .filter(|e| !e.addresses.is_empty())
            .collect();
        let ports = s
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| is_tcp(p.protocol.as_deref()))
            .filter_map(|p| Some(SlicePort { name: p.name.unwrap_or_default(), port: port(p.port?)? }))
            .collect();
        Some(Self { namespace, name, service, endpoints, ports })
    }
}

impl PodRecord {
    pub fn from_api(p: &Pod) -> Option<Self> {
        let m = &p.metadata;
        let (namespace, name) = (m.namespace.clone()?, m.name.clone()?);
        let empty = BTreeMap::new();
        let labels = m.labels.as_ref().unwrap_or(&empty);
        let annotations = m.annotations.as_ref().unwrap_or(&empty);
        let status = p.status.clone().unwrap_or_default();
        let mut listed: Vec<String> = status.pod_ips.unwrap_or_default().into_iter().map(|i| i.ip).collect();
        if listed.is_empty() {
            listed.extend(status.pod_ip);
        }
        let spec = p.spec.as_ref();
        Some(Self {
            namespace,
            name,
            uid: m.uid.clone().unwrap_or_default(),
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            ips: ips(listed),
            meshed: annotations.get(INJECT_STATUS).is_some_and(|v| v == weft_inject::names::INJECTED),
            version: VERSION_LABELS.iter().find_map(|l| labels.get(*l)).cloned().unwrap_or_default(),
            finished: matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")),
            deleting: m.deletion_timestamp.is_some(),
        })
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! API objects as the API server sends them, for the index's tests.

    use serde_json::json;

    use super::*;

    pub fn service(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> ServiceRecord {
        let s: Service = serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "selector": {"app": name}, "ports": ports}
        }))
        .unwrap();
        ServiceRecord::from_api(&s).unwrap()
    }

    /// One slice of `service`: `(ip, pod, ready)` endpoints on the given `(name, port)`s.
    pub fn slice(
        ns: &str,
        service: &str,
        suffix: &str,
        eps: &[(&str, &str, bool)],
        ports: &[(&str, u16)],
    ) -> SliceRecord {
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": format!("{service}-{suffix}"),
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": if eps.first().is_some_and(|e| e.0.contains(':')) { "IPv6" } else { "IPv4" },
            "endpoints": eps.iter().map(|(ip, pod, ready)| json!({
                "addresses": [ip], "conditions": {"ready": ready},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}
            })).collect::<Vec<_>>(),
            "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"})).collect::<Vec<_>>()
        }))
        .unwrap();
        SliceRecord::from_api(&s).unwrap()
    }

    /// A running pod; `meshed`: injected.
    pub fn pod(ns: &str, name: &str, sa: &str, ips: &[&str], version: &str, meshed: bool) -> PodRecord {
        let annotations = if meshed { json!({INJECT_STATUS: "injected"}) } else { json!({}) };
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "uid": format!("0123abcd-{name}-uid"),
                         "labels": {"app.kubernetes.io/version": version}, "annotations": annotations},
            "spec": {"serviceAccountName": sa, "containers": []},
            "status": {"phase": "Running", "podIP": ips[0],
                       "podIPs": ips.iter().map(|i| json!({"ip": i})).collect::<Vec<_>>()}
        }))
        .unwrap();
        PodRecord::from_api(&p).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_are_read_as_the_api_defines_them() {
        let s: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "shop", "name": "web"},
            "spec": {"clusterIP": "10.96.0.7", "selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "metrics", "port": 9090},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}
        }))
        .unwrap();
        let r = ServiceRecord::from_api(&s).unwrap();
        assert_eq!(r.cluster_ips, vec!["10.96.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.ports.len(), 2, "UDP is left out");
        assert_eq!(r.ports[0].target, TargetPort::Name("http".into()));
        assert_eq!(r.ports[1].target, TargetPort::Number(9090), "no targetPort: the port itself");
        let ext: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "shop", "name": "ext"}, "spec": {"type": "ExternalName", "externalName": "x.example"}
        }))
        .unwrap();
        assert_eq!(ServiceRecord::from_api(&ext), None);

        let p: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "shop", "name": "web-1", "uid": "u", "labels": {"version": "v2"}},
            "spec": {"containers": []},
            "status": {"phase": "Succeeded", "podIP": "10.1.0.4"}
        }))
        .unwrap();
        let r = PodRecord::from_api(&p).unwrap();
        assert_eq!((r.service_account.as_str(), r.version.as_str()), ("default", "v2"));
        assert!(r.finished && !r.meshed);
        assert_eq!(r.ips, vec!["10.1.0.4".parse::<IpAddr>().unwrap()]);
    }
}
