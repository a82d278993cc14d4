//! The discovery resources derived from the mesh file and the registry: an immutable snapshot,
//! rebuilt on every change, with a content hash as each resource's version.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prost::Message;
use weft_proto::types;
use weft_proto::v1 as pb;

use crate::kubernetes::view::ClusterView;
use crate::mesh::{default_circuit_breaker, MeshConfig};
use crate::policy::Finding;
use crate::registry::WorkloadRecord;

/// The directory is split into this many resources (shards) by a hash of each address's IP. A
/// registration changes the shard of its IPs only, so each transparent proxy receives about
/// 1/64 of the directory per change, not all of it (whole, the directory made every change cost
/// O(N) bytes to each of N transparent proxies: 18 MB per registration at 500).
pub const DIRECTORY_SHARDS: u64 = 64;

/// A directory shard's resource name: `mesh-00` … `mesh-3f`.
pub fn directory_shard_name(shard: u64) -> String {
    format!("mesh-{:02x}", shard % DIRECTORY_SHARDS)
}

/// Whether `name` names a directory shard.
pub fn is_directory_shard(name: &str) -> bool {
    name.strip_prefix("mesh-")
        .and_then(|n| u64::from_str_radix(n, 16).ok())
        .is_some_and(|n| n < DIRECTORY_SHARDS && directory_shard_name(n) == name)
}

/// The shard of a directory address (`IP` or `IP:port`): by its IP, so a workload's entries all
/// land in one shard.
fn shard_of(address: &str) -> u64 {
    let ip = address.parse::<std::net::SocketAddr>().map(|a| a.ip()).or_else(|_| address.parse::<std::net::IpAddr>());
    let key = ip.map_or_else(|_| address.to_string(), |ip| ip.to_string());
    fnv1a(key.as_bytes()) % DIRECTORY_SHARDS
}

/// Every resource of every type, as of one version.
pub struct Snapshot {
    pub version: u64,
    pub by_type: HashMap<&'static str, BTreeMap<String, Arc<pb::Resource>>>,
    /// What the API's policy overrode or could not carry (Kubernetes mode).
    pub findings: Vec<Finding>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Self { version: 0, by_type: types::ALL.iter().map(|t| (*t, BTreeMap::new())).collect(), findings: Vec::new() }
    }

    pub fn resources(&self, type_url: &str) -> Option<&BTreeMap<String, Arc<pb::Resource>>> {
        self.by_type.get(type_url)
    }

    /// The whole directory, every shard's entries together: address → service.
    pub fn directory(&self) -> BTreeMap<String, String> {
        let shards = self.resources(types::DIRECTORY).into_iter().flat_map(|m| m.values());
        shards
            .filter_map(|r| match &r.body {
                Some(pb::resource::Body::Directory(d)) => Some(d.entries.iter()),
                _ => None,
            })
            .flatten()
            .map(|e| (e.address.clone(), e.service.clone()))
            .collect()
    }

    pub fn build<'a>(
        version: u64,
        mesh: &MeshConfig,
        workloads: impl Iterator<Item = &'a WorkloadRecord> + Clone,
    ) -> Self {
        Self::build_with(version, mesh, workloads, None)
    }

    /// With `cluster` (Kubernetes mode), services and endpoints come from the API and the
    /// registry's workloads are left out: what every replica publishes is then the same.
    pub fn build_with<'a>(
        version: u64,
        mesh: &MeshConfig,
        workloads: impl Iterator<Item = &'a WorkloadRecord> + Clone,
        cluster: Option<&ClusterView>,
    ) -> Self {
        Self::build_reusing(version, mesh, workloads, cluster, None)
    }

    /// As `build_with`; a resource whose content equals `previous`'s is that same `Arc` (no
    /// encoding or hashing: in a large mesh one change touches one or two resources of thousands).
    pub fn build_reusing<'a>(
        version: u64,
        mesh: &MeshConfig,
        workloads: impl Iterator<Item = &'a WorkloadRecord> + Clone,
        cluster: Option<&ClusterView>,
        previous: Option<&Snapshot>,
    ) -> Self {
        let universal = cluster.is_none();
        let workloads = workloads.filter(move |_| universal);
        let mut services: BTreeMap<String, pb::ServicePolicy> = mesh.services.clone();
        // A service that proxies register but the file does not declare gets the defaults.
        for w in workloads.clone() {
            services.entry(w.service.clone()).or_insert_with(|| pb::ServicePolicy {
                name: w.workload.service.clone(),
                namespace: w.workload.namespace.clone(),
                circuit_breaker: Some(default_circuit_breaker()),
                default_route: Some(pb::RoutePolicy::default()),
                ..Default::default()
            });
        }

        let mut endpoints: BTreeMap<String, Vec<pb::Endpoint>> = BTreeMap::new();
        let findings = cluster.map(|c| c.contribute(&mut services, &mut endpoints)).unwrap_or_default();
        for k in services.keys() {
            endpoints.entry(k.clone()).or_default();
        }
        // Announced only once the proxy holds its own policy: before that it would refuse.
        for w in workloads.clone().filter(|w| w.ready) {
            endpoints.entry(w.service.clone()).or_default().push(pb::Endpoint {
                address: w.inbound.to_string(),
                identity: w.identity.to_string(),
                version: w.workload.version.clone(),
                instance: w.workload.instance.clone(),
                app_ports: w.workload.app_ports.clone(),
                protocol: pb::Protocol::Detect as i32,
                other_ips: w.extra_ips.iter().map(|ip| ip.to_string()).collect(),
            });
        }
        for e in &mesh.static_endpoints {
            endpoints.entry(e.service.clone()).or_default().push(pb::Endpoint {
                address: e.address.to_string(),
                identity: String::new(),
                version: String::new(),
                instance: format!("static:{}", e.address),
                app_ports: vec![u32::from(e.address.port())],
                protocol: e.protocol as i32,
                other_ips: Vec::new(),
            });
        }
        for list in endpoints.values_mut() {
            list.sort_by(|a, b| (&a.address, &a.instance).cmp(&(&b.address, &b.instance)));
        }

        let reuse = |t: &str| previous.and_then(|p| p.resources(t));
        let mut by_type = HashMap::new();
        let (before, body) = (reuse(types::SERVICE), pb::resource::Body::Service);
        by_type.insert(types::SERVICE, services.into_iter().map(|(n, s)| resource(before, n, body(s))).collect());
        let before = reuse(types::ENDPOINTS);
        let body = |endpoints| pb::resource::Body::Endpoints(pb::EndpointSet { endpoints });
        by_type.insert(types::ENDPOINTS, endpoints.into_iter().map(|(n, e)| resource(before, n, body(e))).collect());
        let before = reuse(types::DIRECTORY);
        let shards = directory(mesh, workloads, cluster).into_iter();
        let body = pb::resource::Body::Directory;
        by_type.insert(
            types::DIRECTORY,
            shards.map(|(n, d)| resource(before, directory_shard_name(n), body(d))).collect(),
        );
        Self { version, by_type, findings }
    }
}

/// Addresses to services (`NS/NAME`), for transparent proxies. The mesh file's VIPs (`IP` and
/// `IP:port`) come first; then, in order of registration, each transparent workload's IPs (any
/// port: the pod is the workload) and each workload's `IP:app-port`s. Whoever holds an address
/// first keeps it: a later registration never removes or shadows another workload's entry (the
/// registry already refuses app ports another identity holds). Split into shards (only those with
/// entries), each in address order.
fn directory<'a>(
    mesh: &MeshConfig,
    workloads: impl Iterator<Item = &'a WorkloadRecord>,
    cluster: Option<&ClusterView>,
) -> BTreeMap<u64, pb::Directory> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (key, s) in &mesh.services {
        if let Ok(ip) = s.vip.parse::<std::net::IpAddr>() {
            map.entry(ip.to_string()).or_insert_with(|| key.clone());
            for p in &s.ports {
                map.entry(std::net::SocketAddr::new(ip, p.port as u16).to_string()).or_insert_with(|| key.clone());
            }
        }
    }
    // Kubernetes mode: the Services' VIPs, then the meshed pods' IPs.
    for (address, service) in cluster.iter().flat_map(|c| &c.directory) {
        map.entry(address.clone()).or_insert_with(|| service.clone());
    }
    let mut ordered: Vec<&WorkloadRecord> = workloads.collect();
    ordered.sort_by_key(|w| w.seq);
    for w in ordered {
        for ip in w.ips() {
            if w.workload.transparent {
                map.entry(ip.to_string()).or_insert_with(|| w.service.clone());
            }
            for p in &w.workload.app_ports {
                map.entry(std::net::SocketAddr::new(ip, *p as u16).to_string()).or_insert_with(|| w.service.clone());
            }
        }
    }
    let mut shards: BTreeMap<u64, pb::Directory> = BTreeMap::new();
    for (address, service) in map {
        shards.entry(shard_of(&address)).or_default().entries.push(pb::DirectoryEntry { address, service });
    }
    shards
}

/// The named resource, versioned by a hash of its content; `before`'s when the content is the same.
fn resource(
    before: Option<&BTreeMap<String, Arc<pb::Resource>>>,
    name: String,
    body: pb::resource::Body,
) -> (String, Arc<pb::Resource>) {
    if let Some(same) = before.and_then(|b| b.get(&name)).filter(|r| r.body.as_ref() == Some(&body)) {
        return (name, same.clone());
    }
    let mut r = pb::Resource { name: name.clone(), version: String::new(), body: Some(body) };
    r.version = format!("{:016x}", fnv1a(&r.encode_to_vec()));
    (name, Arc::new(r))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registration, Registry};
    use weft_certs::SpiffeId;

    fn register(r: &mut Registry, sa: &str, instance: &str, ip: u8) {
        register_in(r, sa, instance, ip, false);
    }

    fn register_in(r: &mut Registry, sa: &str, instance: &str, ip: u8, transparent: bool) {
        let workload = pb::Workload {
            service: sa.into(),
            namespace: "default".into(),
            instance: instance.into(),
            inbound_address: format!("127.0.0.{ip}:4143"),
            app_ports: vec![8080],
            transparent,
            ..Default::default()
        };
        let identity = SpiffeId::new("weft.local", "default", sa).unwrap();
        let reg = Registration {
            identity: identity.clone(),
            service: format!("default/{sa}"),
            inbound: workload.inbound_address.parse().unwrap(),
            workload,
        };
        r.connect(reg, u64::from(ip), 10, false).unwrap();
        assert!(r.set_ready(&identity, instance, u64::from(ip)));
    }

    #[test]
    fn a_rebuild_reuses_every_resource_the_change_did_not_touch() {
        let mesh = MeshConfig::parse("trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n  baz: {}\n").unwrap();
        let mut registry = Registry::default();
        register(&mut registry, "foo", "f1", 1);
        register(&mut registry, "bar", "b1", 2);
        let before = Snapshot::build(1, &mesh, registry.iter());
        register(&mut registry, "bar", "b2", 3);
        let after = Snapshot::build_reusing(2, &mesh, registry.iter(), None, Some(&before));

        let same =
            |t: &str, name: &str| Arc::ptr_eq(&before.resources(t).unwrap()[name], &after.resources(t).unwrap()[name]);
        for s in ["default/foo", "default/bar", "default/baz"] {
            assert!(same(types::SERVICE, s), "{s}'s policy did not change");
        }
        assert!(same(types::ENDPOINTS, "default/foo") && same(types::ENDPOINTS, "default/baz"));
        assert!(!same(types::ENDPOINTS, "default/bar"), "bar gained an endpoint");
        let bar = &after.resources(types::ENDPOINTS).unwrap()["default/bar"];
        assert_ne!(bar.version, before.resources(types::ENDPOINTS).unwrap()["default/bar"].version);
        // What reuse produces is what a build from scratch produces.
        let fresh = Snapshot::build(2, &mesh, registry.iter());
        for t in types::ALL {
            let versions = |s: &Snapshot| {
                s.resources(t).unwrap().iter().map(|(n, r)| (n.clone(), r.version.clone())).collect::<Vec<_>>()
            };
            assert_eq!(versions(&after), versions(&fresh), "{t}");
        }
    }

    /// A transparent workload joining changes the one shard its IP hashes to: the other shards
    /// keep their `Arc`s (nothing is re-sent), and the shards together are the whole directory.
    #[test]
    fn a_registration_changes_one_directory_shard() {
        // Eight services of five instances (an identity may register ten at most).
        let services: String = (0..8).map(|i| format!("  s{i}: {{}}\n")).collect();
        let mesh = MeshConfig::parse(&format!("trust_domain: weft.local\nservices:\n{services}")).unwrap();
        let mut registry = Registry::default();
        for ip in 1..=40 {
            register_in(&mut registry, &format!("s{}", ip % 8), &format!("i{ip}"), ip, true);
        }
        let before = Snapshot::build(1, &mesh, registry.iter());
        register_in(&mut registry, "s3", "new", 99, true);
        let after = Snapshot::build_reusing(2, &mesh, registry.iter(), None, Some(&before));

        let shards = |s: &Snapshot| s.resources(types::DIRECTORY).unwrap().clone();
        let (b, a) = (shards(&before), shards(&after));
        assert!(b.len() > 10 && a.keys().all(|n| is_directory_shard(n)), "{:?}", a.keys());
        let changed: Vec<&String> =
            a.iter().filter(|(n, r)| b.get(*n).is_none_or(|old| !Arc::ptr_eq(old, r))).map(|(n, _)| n).collect();
        assert_eq!(changed, [&directory_shard_name(shard_of("127.0.0.99"))], "one shard changed");

        let dir = after.directory();
        assert_eq!(dir.len(), 41 * 2, "each workload's IP and IP:port");
        assert_eq!(dir["127.0.0.99"], "default/s3");
        assert_eq!(shard_of("127.0.0.99:8080"), shard_of("127.0.0.99"), "a workload's entries share a shard");
    }

    #[test]
    fn shard_names_are_recognised() {
        assert!(is_directory_shard(&directory_shard_name(0)) && is_directory_shard("mesh-3f"));
        for bad in ["mesh", "mesh-40", "mesh-0", "mesh-000", "mesh-zz", "mesh-+f", "mesh-3F", "default/mesh-00"] {
            assert!(!is_directory_shard(bad), "{bad}");
        }
    }
}
