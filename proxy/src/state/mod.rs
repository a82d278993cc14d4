//! The active configuration as one immutable value, swapped atomically when the controller sends
//! an update; requests read it without locks. Per-service and per-endpoint runtime state (load
//! estimates, ejections, breaker counters, retry budgets) is carried across updates, so a config
//! change never resets what the proxy has learnt, nor drops established connections.

pub mod endpoint;
pub mod policy;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::time::Instant;
use weft_certs::SpiffeId;
use weft_proto::types;
use weft_proto::v1 as pb;

use crate::resilience::breaker::Breaker;
use crate::resilience::budget::RetryBudget;
use crate::state::endpoint::{p2c, Endpoint};
use crate::state::policy::{BreakerConfig, Policy, Protocol};

/// State of one upstream service that outlives config updates.
#[derive(Debug)]
pub struct ServiceRuntime {
    pub breaker: Arc<Breaker>,
    pub budget: RetryBudget,
}

impl Default for ServiceRuntime {
    fn default() -> Self {
        Self {
            breaker: Arc::new(Breaker::default()),
            budget: RetryBudget::new(crate::state::policy::BudgetConfig::default()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    /// `NS/NAME`: the resource name.
    pub key: String,
    /// The name and namespace alone (metric labels).
    pub name: String,
    pub namespace: String,
    /// None until the controller sent it (defaults apply meanwhile).
    pub policy: Option<Arc<Policy>>,
    pub endpoints: Arc<[Arc<Endpoint>]>,
    /// Whether the endpoints resource has arrived (an empty list then means "none").
    pub endpoints_known: bool,
    pub runtime: Arc<ServiceRuntime>,
}

impl Service {
    fn new(key: &str) -> Self {
        let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
        Self {
            key: key.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            policy: None,
            endpoints: Arc::from(Vec::new()),
            endpoints_known: false,
            runtime: Arc::new(ServiceRuntime::default()),
        }
    }

    pub fn breaker_config(&self) -> BreakerConfig {
        self.policy.as_ref().map(|p| p.breaker).unwrap_or_default()
    }

    pub fn protocol(&self) -> Protocol {
        self.policy.as_ref().map_or(Protocol::Detect, |p| p.protocol)
    }

    /// Picks an endpoint for one request: endpoints not ejected (failing open when too few are
    /// healthy), then the traffic split among the versions those cover, then P2C; `avoid` is
    /// skipped when another choice exists (a retry goes elsewhere if it can).
    pub fn choose(&self, now: Instant, avoid: Option<SocketAddr>) -> Option<Arc<Endpoint>> {
        self.choose_with(now, avoid, &[])
    }

    /// As `choose`, with a route's own split over the version labels (empty: the service's).
    pub fn choose_with(
        &self,
        now: Instant,
        avoid: Option<SocketAddr>,
        split: &[(String, u32)],
    ) -> Option<Arc<Endpoint>> {
        let split = match (split, &self.policy) {
            ([], Some(p)) => p.split.as_slice(),
            (route, _) => route,
        };
        // The common case — no split, not a retry, nothing ejected — picks without allocating.
        let no_split = split.is_empty();
        if no_split && avoid.is_none() && !self.endpoints.iter().any(|e| e.outlier.maybe_ejected()) {
            return crate::state::endpoint::p2c_slice(&self.endpoints, now).cloned();
        }
        let all: Vec<&Arc<Endpoint>> = self.endpoints.iter().collect();
        if all.is_empty() {
            return None;
        }
        let healthy: Vec<&Arc<Endpoint>> = all.iter().copied().filter(|e| e.outlier.available(now)).collect();
        // Fail open ("panic mode") when fewer than half are healthy.
        let usable = if healthy.len() * 2 < all.len() { all } else { healthy };
        // The split picks among versions that still have usable endpoints, so an ejected canary
        // sends its share to the others.
        let mut candidates = if split.is_empty() { usable } else { split_pool(&usable, split) };
        if let Some(a) = avoid {
            if candidates.iter().any(|e| e.addr != a) {
                candidates.retain(|e| e.addr != a);
            }
        }
        p2c(&candidates, now).cloned()
    }

    /// The endpoint a transparent caller's original destination names (by any of its IPs).
    pub fn endpoint_at(&self, ip: IpAddr) -> Option<Arc<Endpoint>> {
        self.endpoints.iter().find(|e| e.addr.ip() == ip || e.other_ips.contains(&ip)).cloned()
    }

    /// How many endpoints are ejected now (for the cap on ejections and the gauge).
    pub fn ejected(&self, now: Instant) -> usize {
        self.endpoints.iter().filter(|e| e.outlier.is_ejected(now)).count()
    }
}

/// Weighted choice of a version among those that have endpoints; all endpoints if none has.
fn split_pool<'a>(all: &[&'a Arc<Endpoint>], split: &[(String, u32)]) -> Vec<&'a Arc<Endpoint>> {
    let live: Vec<&(String, u32)> =
        split.iter().filter(|(v, w)| *w > 0 && all.iter().any(|e| &e.version == v)).collect();
    let total: u64 = live.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return all.to_vec();
    }
    let mut pick = rand::random_range(0..total);
    for (v, w) in live {
        if pick < u64::from(*w) {
            return all.iter().copied().filter(|e| &e.version == v).collect();
        }
        pick -= u64::from(*w);
    }
    all.to_vec()
}

/// Every shard's entries in one map; where two shards claim an address, the first by name wins.
fn union(shards: &BTreeMap<String, Arc<HashMap<String, String>>>) -> HashMap<String, String> {
    let mut all = HashMap::with_capacity(shards.values().map(|s| s.len()).sum());
    for shard in shards.values() {
        for (address, service) in shard.iter() {
            all.entry(address.clone()).or_insert_with(|| service.clone());
        }
    }
    all
}

/// Everything the data plane knows from the controller.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub services: HashMap<String, Arc<Service>>,
    /// Address (`IP` or `IP:port`) → service, for transparent mode: every shard's entries
    /// together (a shard named first wins an address two of them claim).
    pub directory: Arc<HashMap<String, String>>,
    /// The directory as the controller sends it, in shards that change independently.
    pub directory_shards: BTreeMap<String, Arc<HashMap<String, String>>>,
    /// What is held, per type: name → version (reported to the controller on reconnect).
    pub held: BTreeMap<String, BTreeMap<String, String>>,
    /// The controller's version of each type last accepted in full.
    pub accepted: BTreeMap<String, String>,
}

impl Snapshot {
    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.get(name)
    }

    /// The service an original destination belongs to: `IP:port` first, then the IP alone.
    pub fn lookup_address(&self, addr: SocketAddr) -> Option<&str> {
        self.directory.get(&addr.to_string()).or_else(|| self.directory.get(&addr.ip().to_string())).map(String::as_str)
    }

    /// Applies one discovery response. Returns the new view and the resources rejected (name,
    /// reason); the previous version of each rejected resource stays in force.
    pub fn apply(&self, resp: &pb::DiscoveryResponse) -> (Snapshot, Vec<(String, String)>) {
        let mut next = self.clone();
        let mut rejected = Vec::new();
        let held = next.held.entry(resp.type_url.clone()).or_default();
        for r in &resp.resources {
            let result = match (resp.type_url.as_str(), &r.body) {
                (types::SERVICE, Some(pb::resource::Body::Service(s))) => Policy::compile(s).map(|p| {
                    let svc =
                        next.services.get(&r.name).map(|s| (**s).clone()).unwrap_or_else(|| Service::new(&r.name));
                    next.services.insert(r.name.clone(), Arc::new(Service { policy: Some(Arc::new(p)), ..svc }));
                }),
                (types::ENDPOINTS, Some(pb::resource::Body::Endpoints(set))) => {
                    compile_endpoints(set).map(|eps| {
                        let svc =
                            next.services.get(&r.name).map(|s| (**s).clone()).unwrap_or_else(|| Service::new(&r.name));
                        // Keep the runtime state of endpoints that stay.
                        let mut merged: Vec<Arc<Endpoint>> = eps
                            .into_iter()
                            .map(|e| {
                                svc.endpoints
                                    .iter()
                                    .find(|old| {
                                        old.same_as(&e)
                                            && old.version == e.version
                                            && old.app_ports == e.app_ports
                                            && old.other_ips == e.other_ips
                                    })
                                    .cloned()
                                    .unwrap_or_else(|| Arc::new(e))
                            })
                            .collect();
                        // A restarted controller's hold-down: what is held stays, the new is added.
                        if resp.merge {
                            let kept: Vec<Arc<Endpoint>> = svc
                                .endpoints
                                .iter()
                                .filter(|old| !merged.iter().any(|n| n.same_as(old)))
                                .cloned()
                                .collect();
                            merged.extend(kept);
                        }
                        next.services.insert(
                            r.name.clone(),
                            Arc::new(Service { endpoints: Arc::from(merged), endpoints_known: true, ..svc }),
                        );
                    })
                }
                (types::DIRECTORY, Some(pb::resource::Body::Directory(d))) => {
                    let entries = d.entries.iter().map(|e| (e.address.clone(), e.service.clone()));
                    let shard = match next.directory_shards.get(&r.name) {
                        Some(held) if resp.merge => {
                            let mut held = (**held).clone();
                            held.extend(entries);
                            held
                        }
                        _ => entries.collect(),
                    };
                    next.directory_shards.insert(r.name.clone(), Arc::new(shard));
                    Ok(())
                }
                (t, _) => Err(format!("resource {} has no body of type {t}", r.name)),
            };
            match result {
                Ok(()) => {
                    // After a merge the proxy holds more than that version: never claim it.
                    let version = if resp.merge { format!("merged-{}", r.version) } else { r.version.clone() };
                    held.insert(r.name.clone(), version);
                }
                Err(e) => rejected.push((r.name.clone(), e)),
            }
        }
        for name in &resp.removed {
            held.remove(name);
            match resp.type_url.as_str() {
                types::SERVICE => {
                    if let Some(s) = next.services.get(name) {
                        next.services.insert(name.clone(), Arc::new(Service { policy: None, ..(**s).clone() }));
                    }
                }
                types::ENDPOINTS => {
                    if let Some(s) = next.services.get(name) {
                        next.services.insert(
                            name.clone(),
                            Arc::new(Service { endpoints: Arc::from(Vec::new()), ..(**s).clone() }),
                        );
                    }
                }
                types::DIRECTORY => {
                    next.directory_shards.remove(name);
                }
                _ => {}
            }
        }
        if resp.type_url == types::DIRECTORY {
            next.directory = Arc::new(union(&next.directory_shards));
        }
        if rejected.is_empty() {
            next.accepted.insert(resp.type_url.clone(), resp.version_info.clone());
        }
        (next, rejected)
    }
}

fn compile_endpoints(set: &pb::EndpointSet) -> Result<Vec<Endpoint>, String> {
    set.endpoints
        .iter()
        .map(|e| {
            let addr: SocketAddr =
                e.address.parse().map_err(|_| format!("endpoint address {:?} is not IP:port", e.address))?;
            if addr.ip() == IpAddr::from([0, 0, 0, 0]) || addr.port() == 0 {
                return Err(format!("endpoint address {addr} cannot be dialled"));
            }
            let identity = if e.identity.is_empty() {
                None
            } else {
                Some(e.identity.parse::<SpiffeId>().map_err(|err| format!("endpoint identity: {err}"))?)
            };
            let app_ports = e.app_ports.iter().filter_map(|p| u16::try_from(*p).ok()).collect();
            let other_ips = e
                .other_ips
                .iter()
                .map(|ip| ip.parse::<IpAddr>().map_err(|_| format!("endpoint IP {ip:?} is not an IP")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Endpoint::new(
                addr,
                identity,
                e.version.clone(),
                e.instance.clone(),
                app_ports,
                Protocol::from_pb(e.protocol),
            )
            .with_other_ips(other_ips))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints_response(nonce: &str, service: &str, addrs: &[(&str, &str)]) -> pb::DiscoveryResponse {
        pb::DiscoveryResponse {
            type_url: types::ENDPOINTS.into(),
            version_info: nonce.into(),
            nonce: nonce.into(),
            resources: vec![pb::Resource {
                name: service.into(),
                version: format!("v{nonce}"),
                body: Some(pb::resource::Body::Endpoints(pb::EndpointSet {
                    endpoints: addrs
                        .iter()
                        .map(|(a, v)| pb::Endpoint {
                            address: a.to_string(),
                            identity: format!("spiffe://weft.local/ns/default/sa/{service}"),
                            version: v.to_string(),
                            instance: a.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                })),
            }],
            removed: vec![],
            merge: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn endpoint_state_survives_updates() {
        let v = Snapshot::default();
        let (v, rej) = v.apply(&endpoints_response("1", "bar", &[("127.0.0.1:1", ""), ("127.0.0.1:2", "")]));
        assert!(rej.is_empty());
        let first = v.services["bar"].endpoints[0].clone();
        first.load.observe(std::time::Duration::from_millis(7), Instant::now());
        let (v, _) = v.apply(&endpoints_response("2", "bar", &[("127.0.0.1:1", ""), ("127.0.0.1:3", "")]));
        assert!(Arc::ptr_eq(&v.services["bar"].endpoints[0], &first));
        assert_eq!(v.services["bar"].endpoints.len(), 2);
        assert_eq!(v.held[types::ENDPOINTS]["bar"], "v2");
        assert_eq!(v.accepted[types::ENDPOINTS], "2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_merge_adds_endpoints_and_keeps_the_held_ones() {
        let v = Snapshot::default();
        let (v, _) = v.apply(&endpoints_response("1", "bar", &[("127.0.0.1:1", "")]));
        let mut merge = endpoints_response("2", "bar", &[("127.0.0.1:2", "")]);
        merge.merge = true;
        let (v, _) = v.apply(&merge);
        let mut ports: Vec<u16> = v.services["bar"].endpoints.iter().map(|e| e.addr.port()).collect();
        ports.sort();
        assert_eq!(ports, [1, 2]);
        // The authoritative set then replaces it.
        let (v, _) = v.apply(&endpoints_response("3", "bar", &[("127.0.0.1:2", "")]));
        assert_eq!(v.services["bar"].endpoints.len(), 1);
    }

    fn directory_response(shards: &[(&str, &[(&str, &str)])], removed: &[&str], merge: bool) -> pb::DiscoveryResponse {
        pb::DiscoveryResponse {
            type_url: types::DIRECTORY.into(),
            version_info: "1".into(),
            nonce: "1".into(),
            resources: shards
                .iter()
                .map(|(name, entries)| pb::Resource {
                    name: name.to_string(),
                    version: "v".into(),
                    body: Some(pb::resource::Body::Directory(pb::Directory {
                        entries: entries
                            .iter()
                            .map(|(a, s)| pb::DirectoryEntry { address: a.to_string(), service: s.to_string() })
                            .collect(),
                    })),
                })
                .collect(),
            removed: removed.iter().map(|r| r.to_string()).collect(),
            merge,
        }
    }

    /// A shard replaces only its own entries; a merge adds to its shard; a removal drops its shard.
    #[test]
    fn directory_shards_change_independently() {
        let lookup = |v: &Snapshot, a: &str| v.lookup_address(a.parse().unwrap()).map(str::to_string);
        let v = Snapshot::default();
        let (v, _) = v.apply(&directory_response(
            &[("mesh-00", &[("10.0.0.1", "default/a")]), ("mesh-01", &[("10.0.0.2:80", "default/b")])],
            &[],
            false,
        ));
        assert_eq!(lookup(&v, "10.0.0.1:8080").as_deref(), Some("default/a"));
        assert_eq!(lookup(&v, "10.0.0.2:80").as_deref(), Some("default/b"));
        let (v, _) = v.apply(&directory_response(&[("mesh-01", &[("10.0.0.3", "default/c")])], &[], false));
        assert_eq!(lookup(&v, "10.0.0.2:80"), None, "mesh-01 was replaced");
        assert_eq!(lookup(&v, "10.0.0.1:1").as_deref(), Some("default/a"), "mesh-00 untouched");
        let (v, _) = v.apply(&directory_response(&[("mesh-00", &[("10.0.0.4", "default/d")])], &[], true));
        assert!(lookup(&v, "10.0.0.1:1").is_some() && lookup(&v, "10.0.0.4:1").is_some(), "merged into mesh-00");
        let (v, _) = v.apply(&directory_response(&[], &["mesh-00"], false));
        assert_eq!((lookup(&v, "10.0.0.1:1"), v.directory.len()), (None, 1), "only mesh-01's entry is left");
        assert_eq!(v.held[types::DIRECTORY].keys().collect::<Vec<_>>(), ["mesh-01"]);
    }

    #[test]
    fn a_bad_resource_is_rejected_and_the_rest_applied() {
        let v = Snapshot::default();
        let (v, _) = v.apply(&endpoints_response("1", "bar", &[("127.0.0.1:1", "")]));
        let mut resp = endpoints_response("2", "bar", &[("nonsense", "")]);
        resp.resources.extend(endpoints_response("2", "baz", &[("127.0.0.1:9", "")]).resources);
        let (v, rejected) = v.apply(&resp);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0, "bar");
        assert_eq!(v.services["bar"].endpoints[0].addr.port(), 1, "the last good one stays");
        assert_eq!(v.services["baz"].endpoints.len(), 1);
        assert_eq!(v.accepted[types::ENDPOINTS], "1", "a NACKed response is not accepted");
    }

    #[tokio::test(start_paused = true)]
    async fn split_only_counts_versions_with_endpoints() {
        let v = Snapshot::default();
        let (v, _) = v.apply(&endpoints_response("1", "bar", &[("127.0.0.1:1", "v1")]));
        let svc = v.services["bar"].clone();
        let svc = Service {
            policy: Some(Arc::new(
                Policy::compile(&pb::ServicePolicy {
                    name: "bar".into(),
                    split: vec![
                        pb::SplitWeight { version: "v1".into(), weight: 10 },
                        pb::SplitWeight { version: "v2".into(), weight: 90 },
                    ],
                    ..Default::default()
                })
                .unwrap(),
            )),
            ..(*svc).clone()
        };
        for _ in 0..50 {
            assert_eq!(svc.choose(Instant::now(), None).unwrap().version, "v1");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejected_canary_sends_its_share_to_the_others() {
        let v = Snapshot::default();
        let (v, _) = v.apply(&endpoints_response("1", "bar", &[("127.0.0.1:1", "v1"), ("127.0.0.1:2", "v2")]));
        let policy = Policy::compile(&pb::ServicePolicy {
            name: "bar".into(),
            split: vec![
                pb::SplitWeight { version: "v1".into(), weight: 0 },
                pb::SplitWeight { version: "v2".into(), weight: 100 },
            ],
            ..Default::default()
        })
        .unwrap();
        let svc = Service { policy: Some(Arc::new(policy)), ..(*v.services["bar"]).clone() };
        assert!((0..20).all(|_| svc.choose(Instant::now(), None).unwrap().version == "v2"));
        let cfg = crate::state::policy::OutlierConfig {
            consecutive_failures: 1,
            ..crate::state::policy::BreakerConfig::default().outlier
        };
        let v2 = svc.endpoints.iter().find(|e| e.version == "v2").unwrap();
        v2.outlier.on_failure(&cfg, Instant::now(), true);
        assert!((0..20).all(|_| svc.choose(Instant::now(), None).unwrap().version == "v1"));
    }
}
