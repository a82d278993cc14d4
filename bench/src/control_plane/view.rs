//! What one simulated proxy holds, applied the way `weft-proxy` applies discovery responses:
//! delta resources per type, removals, hold-down merges that only add endpoints, versions held per
//! name (reported on reconnect), and an ACK — or a NACK naming the resources that do not parse,
//! whose last good version stays.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use weft_proto::types;
use weft_proto::v1 as pb;

#[derive(Debug, Default)]
pub struct View {
    pub services: HashMap<String, pb::ServicePolicy>,
    /// Service → endpoint addresses (the inbound address each peer is dialled at).
    pub endpoints: HashMap<String, Vec<String>>,
    /// Directory shard → address → service.
    pub directory: HashMap<String, HashMap<String, String>>,
    /// Type → name → version, as the proxy reports on reconnect.
    pub held: BTreeMap<String, BTreeMap<String, String>>,
}

impl View {
    /// Applies a response; returns the ACK or NACK to send.
    pub fn apply(&mut self, resp: &pb::DiscoveryResponse) -> pb::DiscoveryRequest {
        let mut rejected: Vec<(String, String)> = Vec::new();
        let held = self.held.entry(resp.type_url.clone()).or_default();
        for r in &resp.resources {
            let result = match (resp.type_url.as_str(), &r.body) {
                (types::SERVICE, Some(pb::resource::Body::Service(s))) => {
                    self.services.insert(r.name.clone(), s.clone());
                    Ok(())
                }
                (types::ENDPOINTS, Some(pb::resource::Body::Endpoints(set))) => endpoint_addresses(set).map(|new| {
                    let list = self.endpoints.entry(r.name.clone()).or_default();
                    if resp.merge {
                        // A restarted controller's hold-down: what is held stays, the new is added.
                        for a in new {
                            if !list.contains(&a) {
                                list.push(a);
                            }
                        }
                    } else {
                        *list = new;
                    }
                }),
                (types::DIRECTORY, Some(pb::resource::Body::Directory(d))) => {
                    let shard = self.directory.entry(r.name.clone()).or_default();
                    if !resp.merge {
                        shard.clear();
                    }
                    shard.extend(d.entries.iter().map(|e| (e.address.clone(), e.service.clone())));
                    Ok(())
                }
                (t, _) => Err(format!("resource {} has no body of type {t}", r.name)),
            };
            match result {
                Ok(()) => {
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
                    self.services.remove(name);
                }
                types::ENDPOINTS => {
                    self.endpoints.remove(name);
                }
                types::DIRECTORY => {
                    self.directory.remove(name);
                }
                _ => {}
            }
        }
        let mut reply = pb::DiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            version_info: resp.version_info.clone(),
            ..Default::default()
        };
        if !rejected.is_empty() {
            reply.error_detail = Some(pb::ErrorDetail {
                message: rejected.iter().map(|(n, e)| format!("{n}: {e}")).collect::<Vec<_>>().join("; "),
                rejected: rejected.into_iter().map(|(n, _)| n).collect(),
            });
        }
        reply
    }

    /// What is held, in the shape of the stream's first message.
    pub fn initial_versions(&self) -> BTreeMap<String, pb::ResourceVersions> {
        self.held.iter().map(|(t, v)| (t.clone(), pb::ResourceVersions { versions: v.clone() })).collect()
    }

    /// Whether the service's endpoints are exactly `want` (any order).
    pub fn endpoints_are(&self, service: &str, want: &[String]) -> bool {
        let have = self.endpoints.get(service).map(Vec::as_slice).unwrap_or_default();
        have.len() == want.len() && want.iter().all(|w| have.contains(w))
    }

    /// Whether every address of `want` is among the service's endpoints.
    pub fn endpoints_include(&self, service: &str, want: &[String]) -> bool {
        let have = self.endpoints.get(service).map(Vec::as_slice).unwrap_or_default();
        want.iter().all(|w| have.contains(w))
    }

    pub fn has_endpoint(&self, service: &str, address: &str) -> bool {
        self.endpoints.get(service).is_some_and(|l| l.iter().any(|a| a == address))
    }

    /// The held policy's route timeout for a service.
    pub fn timeout_ms(&self, service: &str) -> Option<u64> {
        self.services.get(service).and_then(|s| s.default_route.as_ref()).map(|r| r.timeout_ms)
    }
}

/// The endpoints' addresses; a set with an address that is not IP:port is refused whole, as the
/// proxy refuses it.
fn endpoint_addresses(set: &pb::EndpointSet) -> Result<Vec<String>, String> {
    set.endpoints
        .iter()
        .map(|e| {
            e.address
                .parse::<SocketAddr>()
                .map(|_| e.address.clone())
                .map_err(|_| format!("endpoint address {:?} is not IP:port", e.address))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(nonce: &str, merge: bool, addrs: &[&str]) -> pb::DiscoveryResponse {
        pb::DiscoveryResponse {
            type_url: types::ENDPOINTS.into(),
            version_info: nonce.into(),
            nonce: nonce.into(),
            resources: vec![pb::Resource {
                name: "default/bar".into(),
                version: format!("v{nonce}"),
                body: Some(pb::resource::Body::Endpoints(pb::EndpointSet {
                    endpoints: addrs
                        .iter()
                        .map(|a| pb::Endpoint { address: a.to_string(), ..Default::default() })
                        .collect(),
                })),
            }],
            removed: vec![],
            merge,
        }
    }

    #[test]
    fn deltas_merges_and_removals_apply_as_the_proxy_applies_them() {
        let mut v = View::default();
        let ack = v.apply(&endpoints("1", false, &["127.1.0.1:4143", "127.1.0.2:4143"]));
        assert!(ack.error_detail.is_none() && ack.response_nonce == "1");
        assert!(v.endpoints_are("default/bar", &["127.1.0.2:4143".into(), "127.1.0.1:4143".into()]));
        // A merge adds and keeps what is held.
        v.apply(&endpoints("2", true, &["127.1.0.3:4143"]));
        assert_eq!(v.endpoints["default/bar"].len(), 3);
        assert_eq!(v.held[types::ENDPOINTS]["default/bar"], "merged-v2");
        // An authoritative set replaces.
        v.apply(&endpoints("3", false, &["127.1.0.3:4143"]));
        assert!(v.endpoints_are("default/bar", &["127.1.0.3:4143".into()]));
        let removed = pb::DiscoveryResponse {
            type_url: types::ENDPOINTS.into(),
            nonce: "4".into(),
            removed: vec!["default/bar".into()],
            ..Default::default()
        };
        v.apply(&removed);
        assert!(!v.has_endpoint("default/bar", "127.1.0.3:4143"));
        assert!(v.held[types::ENDPOINTS].is_empty());
    }

    #[test]
    fn a_bad_resource_is_nacked_and_the_last_good_one_stays() {
        let mut v = View::default();
        v.apply(&endpoints("1", false, &["127.1.0.1:4143"]));
        let nack = v.apply(&endpoints("2", false, &["not an address"]));
        assert_eq!(nack.error_detail.unwrap().rejected, vec!["default/bar".to_string()]);
        assert!(v.has_endpoint("default/bar", "127.1.0.1:4143"));
        assert_eq!(v.held[types::ENDPOINTS]["default/bar"], "v1");
    }
}
