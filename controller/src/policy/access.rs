//! SMI access control laid over the mesh file's `allow` lists. A service account named as the
//! destination of a TrafficTarget is the service `NS/SA` whose policy its pods' proxies enforce;
//! once any TrafficTarget names it, it follows SMI's rule — denied unless granted — and its allow
//! list becomes what the TrafficTargets grant, plus the mesh file's own `allow` entries when it
//! has some (grants add up, as SMI's do; that is reported, never merged silently).
//!
//! The proxy authorizes a caller for the whole service: it cannot enforce "GET /metrics only" or
//! "port 8080 only". A grant limited that way is therefore not carried at all — its callers are
//! refused — and a finding says what was left out. Access is never widened to fit the proxy.

use std::collections::{BTreeMap, BTreeSet};

use weft_certs::SpiffeId;
use weft_proto::v1 as pb;

use super::merge::{Finding, FindingKind, MESH_FILE};
use super::traffic_target::{GroupMatch, HttpRouteGroupRecord, RuleRef, TrafficTargetRecord};

/// What the TrafficTargets naming one destination grant.
#[derive(Default)]
struct Grant {
    identities: BTreeSet<String>,
    /// `TrafficTarget NS/NAME`s, for findings.
    targets: Vec<String>,
}

/// Sets the allow list of every service a TrafficTarget names; returns the findings.
pub fn apply_access(
    targets: &[TrafficTargetRecord],
    groups: &[HttpRouteGroupRecord],
    trust_domain: &str,
    services: &mut BTreeMap<String, pb::ServicePolicy>,
    endpoints: &BTreeMap<String, Vec<pb::Endpoint>>,
) -> Vec<Finding> {
    let td = if trust_domain.is_empty() { "weft.local" } else { trust_domain };
    let mut out = Vec::new();
    let mut finding = |service: &str, kind, source: String, message: String| {
        out.push(Finding { service: service.to_string(), kind, source, message })
    };
    let groups: BTreeMap<(String, String), &HttpRouteGroupRecord> =
        groups.iter().map(|g| (g.object.key(), g)).collect();
    let mut grants: BTreeMap<String, Grant> = BTreeMap::new();

    for t in targets {
        let Some(dest) = &t.destination else {
            finding("", FindingKind::Invalid, t.describe(), t.problems.join("; "));
            continue;
        };
        let key = dest.to_string();
        for p in &t.problems {
            finding(&key, FindingKind::Unsupported, t.describe(), p.clone());
        }
        // Named, so the destination is now denied unless granted, even if this grants nothing.
        let grant = grants.entry(key.clone()).or_default();
        grant.targets.push(t.describe());
        let Some(policy) = services.get(&key) else { continue };
        let who = t.sources.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");

        if let Some(port) = t.port {
            let ports = known_ports(policy, endpoints.get(&key));
            if ports.is_empty() || ports.iter().any(|p| *p != port) {
                let msg = format!(
                    "grants {who} port {port} only, but the proxy authorizes a caller for every port of the \
                     service alike (its ports: {ports:?}): not applied, so these callers are refused"
                );
                finding(&key, FindingKind::Unsupported, t.describe(), msg);
                continue;
            }
        }
        let tcp = policy.protocol == pb::Protocol::Tcp as i32;
        let (whole, narrow) = reach(t, &t.rules, &groups, tcp);
        if !whole {
            if !t.sources.is_empty() && !t.rules.is_empty() {
                let msg = format!(
                    "grants {who} only {}; the proxy authorizes a caller for the whole service, not per route, so \
                     this grant is not applied (these callers are refused)",
                    narrow.join("; ")
                );
                finding(&key, FindingKind::Unsupported, t.describe(), msg);
            }
            continue;
        }
        for s in &t.sources {
            match SpiffeId::new(td, &s.namespace, &s.name) {
                Ok(id) => {
                    grant.identities.insert(id.to_string());
                }
                Err(e) => finding(&key, FindingKind::Invalid, t.describe(), format!("source {s}: {e}")),
            }
        }
    }

    for (key, grant) in grants {
        let Some(policy) = services.get_mut(&key) else { continue };
        let from = grant.targets.join(", ");
        let mut ids = grant.identities;
        if let Some(file) = &policy.allow {
            let msg = if file.identities.is_empty() {
                format!("the file allows nobody; {from} grant(s) {}", list(&ids))
            } else {
                format!(
                    "the file's allow list ({}) and {from}'s sources ({}) are both granted",
                    list(&file.identities.iter().cloned().collect()),
                    list(&ids)
                )
            };
            finding(&key, FindingKind::Combined, MESH_FILE.into(), msg);
            ids.extend(file.identities.iter().cloned());
        }
        policy.allow = Some(pb::AllowList { identities: ids.into_iter().collect() });
    }
    out
}

fn list(ids: &BTreeSet<String>) -> String {
    if ids.is_empty() {
        "nobody".into()
    } else {
        ids.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// The ports a service's workloads serve on: its Service's target ports, its endpoints' app ports.
fn known_ports(policy: &pb::ServicePolicy, endpoints: Option<&Vec<pb::Endpoint>>) -> BTreeSet<u16> {
    let from_service = policy.ports.iter().map(|p| p.target_port);
    let from_endpoints = endpoints.into_iter().flatten().flat_map(|e| e.app_ports.iter().copied());
    from_service.chain(from_endpoints).filter_map(|p| u16::try_from(p).ok()).collect()
}

/// Whether `rules` reach every request of the service (`true`: the grant can be carried); else
/// what they reach, for the finding.
fn reach(
    t: &TrafficTargetRecord,
    rules: &[RuleRef],
    groups: &BTreeMap<(String, String), &HttpRouteGroupRecord>,
    tcp: bool,
) -> (bool, Vec<String>) {
    let mut narrow = Vec::new();
    for r in rules {
        if r.kind != "HTTPRouteGroup" {
            narrow.push(format!("{} {} (rules of that kind are not carried)", r.kind, r.name));
            continue;
        }
        let Some(g) = groups.get(&(t.object.namespace.clone(), r.name.clone())) else {
            narrow.push(format!("HTTPRouteGroup {}/{} (it does not exist)", t.object.namespace, r.name));
            continue;
        };
        if tcp {
            narrow.push(format!("HTTPRouteGroup {} (HTTP matches, and the service is TCP)", r.name));
            continue;
        }
        let selected: Vec<&GroupMatch> =
            g.matches.iter().filter(|m| r.matches.is_empty() || r.matches.contains(&m.name)).collect();
        for missing in r.matches.iter().filter(|n| !g.matches.iter().any(|m| &m.name == *n)) {
            narrow.push(format!("HTTPRouteGroup {} has no match {missing:?}", r.name));
        }
        if selected.iter().any(|m| m.is_catch_all()) {
            return (true, Vec::new());
        }
        if selected.is_empty() {
            narrow.push(format!("HTTPRouteGroup {} (no match selected)", r.name));
        }
        narrow
            .extend(selected.iter().map(|m| format!("HTTPRouteGroup {} match {:?}: {}", r.name, m.name, m.describe())));
    }
    (false, narrow)
}
