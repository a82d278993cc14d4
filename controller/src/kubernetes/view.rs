//! What the index means for the mesh, computed without I/O: every Service that selects pods is a
//! mesh service `NS/NAME` (its first ClusterIP the VIP, its TCP ports the port map); its ready
//! endpoints are meshed pods — reached at their proxy over mTLS, with the identity of their
//! service account and the version of their label — or plaintext endpoints for pods without a
//! proxy; every meshed pod's service account names the service whose policy its proxy enforces.
//! The snapshot takes these in beside the mesh file's policies.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use weft_certs::SpiffeId;
use weft_proto::v1 as pb;

use super::index::ClusterIndex;
use super::objects::{Key, PodRecord, ServiceRecord, SliceRecord, TargetPort};
use crate::mesh::default_circuit_breaker;
use crate::policy::{ApiPolicy, Finding};

/// Where a meshed pod's proxy takes mTLS from its peers (the injector's `--inbound` port).
pub const PROXY_INBOUND_PORT: u16 = weft_inject::names::INBOUND_PORT as u16;

/// Namespaces whose Services and pods stay outside the mesh: Kubernetes' own and the mesh's.
pub fn excluded_namespace(ns: &str) -> bool {
    ns == weft_inject::names::KUBE_SYSTEM || ns == weft_inject::names::MESH_NAMESPACE
}

/// A mesh service as the API defines it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterService {
    pub namespace: String,
    pub name: String,
    /// The first ClusterIP (None for a headless Service).
    pub vip: Option<IpAddr>,
    pub ports: Vec<pb::PortMapping>,
    /// From the ports' `appProtocol` when they all agree; else detection.
    pub protocol: pb::Protocol,
}

/// The mesh's share of the cluster, as of one state of the index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    pub services: BTreeMap<String, ClusterService>,
    /// Per service `NS/NAME`, sorted by address.
    pub endpoints: BTreeMap<String, Vec<pb::Endpoint>>,
    /// `NS/SA` of every meshed pod: the service whose policy (allow, mtls, faults) its proxy enforces.
    pub workload_services: BTreeSet<String>,
    /// Address (`IP`, `IP:port`) → service: VIPs with and without port, and meshed pods' IPs (each
    /// pod under the first of its services, by name).
    pub directory: BTreeMap<String, String>,
    pods: BTreeMap<Key, PodRecord>,
    /// TrafficSplits, HTTPRoutes and SMI access control, laid over the mesh file's policies by [`crate::policy::apply`].
    pub policy: ApiPolicy,
}

/// `appProtocol` values the mesh understands (IANA names and Kubernetes' own).
fn protocol_of(app_protocol: Option<&str>) -> pb::Protocol {
    match app_protocol.map(|p| p.to_ascii_lowercase()).as_deref() {
        Some("http" | "http1" | "http/1.1") => pb::Protocol::Http,
        Some("http2" | "h2c" | "kubernetes.io/h2c") => pb::Protocol::Http2,
        Some("grpc") => pb::Protocol::Grpc,
        Some("tcp") => pb::Protocol::Tcp,
        _ => pb::Protocol::Detect,
    }
}

/// IPv4 first: the address peers dial; the others travel as `other_ips`.
fn primary(ips: &[IpAddr]) -> Option<IpAddr> {
    ips.iter().find(|i| i.is_ipv4()).or_else(|| ips.first()).copied()
}

fn resolve_ports(svc: &ServiceRecord, slices: &[&SliceRecord]) -> Vec<pb::PortMapping> {
    svc.ports
        .iter()
        .filter_map(|p| {
            // A slice's ports carry the Service port's name and the number it resolves to.
            let resolved = slices.iter().flat_map(|s| &s.ports).find(|sp| sp.name == p.name).map(|sp| sp.port);
            let target = resolved.or(match &p.target {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Name(_) => None,
            })?;
            Some(pb::PortMapping { port: u32::from(p.port), target_port: u32::from(target) })
        })
        .collect()
}

impl ClusterView {
    pub fn build(idx: &ClusterIndex, trust_domain: &str) -> Self {
        let mut slices: BTreeMap<Key, Vec<&SliceRecord>> = BTreeMap::new();
        for s in idx.slices.iter() {
            if let Some(svc) = &s.service {
                slices.entry((s.namespace.clone(), svc.clone())).or_default().push(s);
            }
        }
        let mut view = ClusterView::default();
        let mut pod_ips: Vec<(IpAddr, String)> = Vec::new();
        for svc in idx.services.iter().filter(|s| s.has_selector && !excluded_namespace(&s.namespace)) {
            let key = format!("{}/{}", svc.namespace, svc.name);
            let own = slices.get(&(svc.namespace.clone(), svc.name.clone())).map(Vec::as_slice).unwrap_or(&[]);
            let ports = resolve_ports(svc, own);
            let protocols: BTreeSet<_> = svc.ports.iter().map(|p| protocol_of(p.app_protocol.as_deref())).collect();
            let protocol = if protocols.len() == 1 {
                protocols.into_iter().next().unwrap_or_default()
            } else {
                pb::Protocol::Detect
            };
            let vip = svc.cluster_ips.first().copied();
            if let Some(vip) = vip {
                view.directory.entry(vip.to_string()).or_insert_with(|| key.clone());
                for p in &ports {
                    let addr = SocketAddr::new(vip, p.port as u16).to_string();
                    view.directory.entry(addr).or_insert_with(|| key.clone());
                }
            }
            let eps = endpoints(idx, svc, own, &ports, protocol, trust_domain);
            for e in eps.iter().filter(|e| !e.identity.is_empty()) {
                for ip in std::iter::once(e.address.as_str()).chain(e.other_ips.iter().map(String::as_str)) {
                    if let Ok(ip) = ip.parse::<SocketAddr>().map(|a| a.ip()).or_else(|_| ip.parse::<IpAddr>()) {
                        pod_ips.push((ip, key.clone()));
                    }
                }
            }
            view.endpoints.insert(key.clone(), eps);
            view.services.insert(
                key,
                ClusterService { namespace: svc.namespace.clone(), name: svc.name.clone(), vip, ports, protocol },
            );
        }
        // Pod IPs after every VIP, so that no pod can shadow a Service's address.
        for (ip, key) in pod_ips {
            view.directory.entry(ip.to_string()).or_insert(key);
        }
        for p in idx.pods.iter().filter(|p| p.meshed && !p.finished && !excluded_namespace(&p.namespace)) {
            if SpiffeId::new(trust_domain, &p.namespace, &p.service_account).is_ok() {
                view.workload_services.insert(format!("{}/{}", p.namespace, p.service_account));
            }
        }
        view.pods = idx.pods.iter().map(|p| (p.key(), p.clone())).collect();
        view.policy = ApiPolicy {
            splits: idx.splits.iter().cloned().collect(),
            routes: idx.http_routes.iter().cloned().collect(),
            targets: idx.targets.iter().cloned().collect(),
            route_groups: idx.route_groups.iter().cloned().collect(),
            trust_domain: trust_domain.to_string(),
        };
        view
    }

    /// The pod `namespace/name`, as last listed or watched.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodRecord> {
        self.pods.get(&(namespace.to_string(), name.to_string()))
    }

    /// Adds the cluster's services, their endpoints and the meshed pods' own services to what the
    /// mesh file declares. A Service's ClusterIP and ports come from the API (the file's `vip:`
    /// and `ports:` are for services outside it); its policy from the file. Under `mtls: strict`
    /// plaintext endpoints are left out: callers then have none to send plaintext to. Then the
    /// TrafficSplits, HTTPRoutes and TrafficTargets, whose findings are returned.
    pub fn contribute(
        &self,
        services: &mut BTreeMap<String, pb::ServicePolicy>,
        endpoints: &mut BTreeMap<String, Vec<pb::Endpoint>>,
    ) -> Vec<Finding> {
        for (key, cs) in &self.services {
            let policy = services.entry(key.clone()).or_insert_with(|| default_policy(&cs.namespace, &cs.name));
            policy.vip = cs.vip.map(|v| v.to_string()).unwrap_or_default();
            policy.ports = cs.ports.clone();
            if policy.protocol == pb::Protocol::Detect as i32 {
                policy.protocol = cs.protocol as i32;
            }
        }
        for key in &self.workload_services {
            let (ns, name) = key.split_once('/').unwrap_or_default();
            services.entry(key.clone()).or_insert_with(|| default_policy(ns, name));
        }
        for (key, list) in &self.endpoints {
            let strict = services.get(key).is_some_and(|p| p.mtls == pb::MtlsMode::Strict as i32);
            let out = endpoints.entry(key.clone()).or_default();
            out.extend(list.iter().filter(|e| !strict || !e.identity.is_empty()).cloned());
        }
        crate::policy::apply(&self.policy, services, endpoints)
    }
}

fn default_policy(namespace: &str, name: &str) -> pb::ServicePolicy {
    pb::ServicePolicy {
        name: name.to_string(),
        namespace: namespace.to_string(),
        circuit_breaker: Some(default_circuit_breaker()),
        default_route: Some(pb::RoutePolicy::default()),
        ..Default::default()
    }
}

/// A Service's ready endpoints, one per pod (both families of a dual-stack pod are one endpoint).
/// An endpoint whose pod the index does not hold yet is left out until it does: guessing
/// "plaintext" for a meshed pod would send it traffic its proxy refuses.
fn endpoints(
    idx: &ClusterIndex,
    svc: &ServiceRecord,
    slices: &[&SliceRecord],
    ports: &[pb::PortMapping],
    protocol: pb::Protocol,
    trust_domain: &str,
) -> Vec<pb::Endpoint> {
    let app_ports: Vec<u32> = ports.iter().map(|p| p.target_port).collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for ep in slices.iter().flat_map(|s| &s.endpoints).filter(|e| e.ready) {
        let pod = match &ep.pod {
            Some(name) => match idx.pods.get(&(svc.namespace.clone(), name.clone())) {
                Some(p) if !p.finished => Some(p),
                _ => continue,
            },
            None => None,
        };
        let ips = pod.map(|p| p.ips.as_slice()).filter(|i| !i.is_empty()).unwrap_or(&ep.addresses);
        let Some(ip) = primary(ips) else { continue };
        let instance = pod.map_or_else(|| ip.to_string(), |p| p.name.clone());
        if !seen.insert(instance.clone()) {
            continue;
        }
        let version = pod.map(|p| p.version.clone()).unwrap_or_default();
        let identity =
            pod.filter(|p| p.meshed).and_then(|p| SpiffeId::new(trust_domain, &p.namespace, &p.service_account).ok());
        match identity {
            Some(id) => out.push(pb::Endpoint {
                address: SocketAddr::new(ip, PROXY_INBOUND_PORT).to_string(),
                identity: id.to_string(),
                version,
                instance,
                app_ports: app_ports.clone(),
                protocol: pb::Protocol::Detect as i32,
                other_ips: ips.iter().filter(|i| **i != ip).map(|i| i.to_string()).collect(),
            }),
            // Outside the mesh: dialled as it is, on the Service's first port.
            None => {
                let Some(port) = app_ports.first() else { continue };
                out.push(pb::Endpoint {
                    address: SocketAddr::new(ip, *port as u16).to_string(),
                    identity: String::new(),
                    version,
                    instance,
                    app_ports: vec![*port],
                    protocol: protocol as i32,
                    other_ips: Vec::new(),
                })
            }
        }
    }
    out.sort_by(|a, b| (&a.address, &a.instance).cmp(&(&b.address, &b.instance)));
    out
}
