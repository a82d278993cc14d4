//! The precedence, in one place. Per service `NS/NAME`:
//!
//! | what | 1st | 2nd | 3rd |
//! | --- | --- | --- | --- |
//! | weighted backends (`split`) | HTTPRoute (parentRef Service) | TrafficSplit (`spec.service`) | mesh file / ConfigMap `split` (by version label) |
//! | route matches (`routes`) | HTTPRoute rules (they replace the file's) | mesh file `routes` | — |
//! | default timeout | HTTPRoute catch-all rule's `timeouts.request` | mesh file `timeout` | — |
//! | who may call (`allow`) | TrafficTargets naming the service's account **and** the mesh file's `allow`, both granted ([`super::access`]) | mesh file `allow` | — |
//! | retries, breaker, mTLS, faults, protocol | mesh file | — | — |
//!
//! Between two objects of one kind on one service the older (creation time, then name) wins.
//! Every override and every field that cannot be carried becomes a [`Finding`]: nothing is
//! merged silently. Weighted backends are carried by the proxy's version split: the root's
//! endpoints become the backends' endpoints, each labelled with its backend's name.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use weft_proto::v1 as pb;

use super::http_route::{HttpRouteRecord, Match};
use super::traffic_target::{HttpRouteGroupRecord, TrafficTargetRecord};
use super::{Backend, TrafficSplitRecord};

/// The API objects in force (as listed and watched).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiPolicy {
    pub splits: Vec<TrafficSplitRecord>,
    pub routes: Vec<HttpRouteRecord>,
    /// SMI access control: TrafficTargets and the HTTPRouteGroups their rules name.
    pub targets: Vec<TrafficTargetRecord>,
    pub route_groups: Vec<HttpRouteGroupRecord>,
    /// The trust domain identities are written in (TrafficTargets name service accounts).
    pub trust_domain: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingKind {
    /// A source lost to one with higher precedence.
    Overridden,
    /// Part of an object Weft cannot express; left out.
    Unsupported,
    /// An object that cannot be applied at all.
    Invalid,
    /// Two sources both apply (the mesh file's `allow` and TrafficTargets' grants add up).
    Combined,
}

/// One thing an operator should know about the policy in force.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// `NS/NAME` (empty when the object names no service).
    pub service: String,
    pub kind: FindingKind,
    /// The object concerned (`HTTPRoute shop/canary`, `TrafficSplit shop/bar`, `mesh file`).
    pub source: String,
    pub message: String,
}

pub(super) const MESH_FILE: &str = "mesh file";

/// Lays the API's policy over `services` and `endpoints` (the mesh file's policies plus the
/// cluster's services); returns what the operator should know, sorted.
pub fn apply(
    policy: &ApiPolicy,
    services: &mut BTreeMap<String, pb::ServicePolicy>,
    endpoints: &mut BTreeMap<String, Vec<pb::Endpoint>>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut finding = |service: &str, kind, source: String, message: String| {
        out.push(Finding { service: service.to_string(), kind, source, message })
    };

    // Valid objects, grouped by the service they speak about, oldest first.
    let mut routes: BTreeMap<String, Vec<&HttpRouteRecord>> = BTreeMap::new();
    for r in &policy.routes {
        for parent in &r.parents {
            let key = format!("{}/{parent}", r.object.namespace);
            for i in &r.ignored {
                finding(&key, FindingKind::Unsupported, r.describe(), i.clone());
            }
            if r.invalid.is_empty() {
                routes.entry(key).or_default().push(r);
            } else {
                finding(&key, FindingKind::Invalid, r.describe(), r.invalid.join("; "));
            }
        }
    }
    let mut splits: BTreeMap<String, Vec<&TrafficSplitRecord>> = BTreeMap::new();
    for s in &policy.splits {
        let key = if s.service.is_empty() { String::new() } else { s.root() };
        for i in &s.ignored {
            finding(&key, FindingKind::Unsupported, s.describe(), i.clone());
        }
        if s.invalid.is_empty() {
            splits.entry(key).or_default().push(s);
        } else {
            finding(&key, FindingKind::Invalid, s.describe(), s.invalid.join("; "));
        }
    }
    for list in routes.values_mut() {
        list.sort_by(|a, b| a.object.cmp(&b.object));
    }
    for list in splits.values_mut() {
        list.sort_by(|a, b| a.object.cmp(&b.object));
    }

    let keys: BTreeSet<String> = routes.keys().chain(splits.keys()).cloned().collect();
    for key in keys {
        let route = routes.get(&key).map(|l| l[0]);
        let split = splits.get(&key).map(|l| l[0]);
        for r in routes.get(&key).into_iter().flatten().skip(1) {
            let winner = route.map(|w| w.describe()).unwrap_or_default();
            let msg = format!("{winner} also attaches to this Service and is older: {winner} is applied");
            finding(&key, FindingKind::Overridden, r.describe(), msg);
        }
        for s in splits.get(&key).into_iter().flatten().skip(1) {
            let winner = split.map(|w| w.describe()).unwrap_or_default();
            finding(
                &key,
                FindingKind::Overridden,
                s.describe(),
                format!("{winner} splits this Service too and is older: {winner} is applied"),
            );
        }
        let source = route.map(|r| r.describe()).or_else(|| split.map(|s| s.describe())).unwrap_or_default();
        if !services.contains_key(&key) {
            finding(&key, FindingKind::Invalid, source, format!("there is no Service {key}"));
            continue;
        }
        let namespace = key.split_once('/').map_or("", |(ns, _)| ns).to_string();

        // Weighted backends: the HTTPRoute's, else the TrafficSplit's. `labelled`: every backend
        // whose endpoints join the root's (a route's rules may each name their own).
        let mut backends: Option<Backends> = None;
        let mut route_default: Option<Vec<Backend>> = None;
        if let Some(r) = route {
            let (chosen, notes) = route_backends(r, &key);
            for n in notes {
                finding(&key, FindingKind::Unsupported, r.describe(), n);
            }
            if let Some(b) = chosen {
                route_default = Some(b.default.clone());
                backends = Some(b);
            }
        }
        if let Some(s) = split {
            match &backends {
                Some(b) => finding(
                    &key,
                    FindingKind::Overridden,
                    s.describe(),
                    format!("{} sets this Service's backends; an HTTPRoute wins over a TrafficSplit", b.winner),
                ),
                None => {
                    let (default, labelled) = (s.backends.clone(), s.backends.clone());
                    backends = Some(Backends { default, labelled, winner: s.describe() });
                }
            }
        }
        if let Some(Backends { labelled: list, winner, .. }) = &backends {
            for b in list {
                let bkey = format!("{namespace}/{}", b.service);
                if !services.contains_key(&bkey) {
                    finding(
                        &key,
                        FindingKind::Invalid,
                        winner.clone(),
                        format!("backend Service {bkey} does not exist"),
                    );
                }
            }
        }
        let Some(policy) = services.get_mut(&key) else { continue };
        if let Some(b) = backends {
            if !policy.split.is_empty() {
                finding(
                    &key,
                    FindingKind::Overridden,
                    MESH_FILE.into(),
                    format!("the file's split by version is replaced by {}'s backends", b.winner),
                );
            }
            split_over(&key, &b.labelled, policy, endpoints);
            policy.split = weights(&b.default);
        }

        // Matches and timeouts: the HTTPRoute's rules.
        if let Some(r) = route {
            let base = policy.default_route.clone().unwrap_or_default();
            let mut new_routes = Vec::new();
            let mut catch_all: Option<u64> = None;
            for rule in &r.rules {
                for m in &rule.matches {
                    if m.is_catch_all() {
                        catch_all = catch_all.or(rule.timeout_ms);
                        continue;
                    }
                    let mut p = base.clone();
                    if let Some(t) = rule.timeout_ms {
                        p.timeout_ms = t;
                    }
                    // A rule with backends of its own routes to them (a header-matched canary).
                    if route_default
                        .as_ref()
                        .is_some_and(|d| !rule.backends.is_empty() && !same_backends(&rule.backends, d))
                    {
                        p.split = weights(&rule.backends);
                    }
                    new_routes.push(pb::Route { r#match: Some(to_pb(m)), policy: Some(p) });
                }
            }
            if !new_routes.is_empty() {
                if !policy.routes.is_empty() {
                    finding(
                        &key,
                        FindingKind::Overridden,
                        MESH_FILE.into(),
                        format!("the file's routes are replaced by {}'s rules", r.describe()),
                    );
                }
                // Gateway API's order: the longest path, then a method, then the most headers.
                new_routes.sort_by_key(|rt| {
                    let m = rt.r#match.as_ref().map(|m| (m.path_prefix.len(), !m.method.is_empty(), m.headers.len()));
                    std::cmp::Reverse(m.unwrap_or_default())
                });
                policy.routes = new_routes;
            }
            if let Some(t) = catch_all {
                let d = policy.default_route.get_or_insert_with(Default::default);
                if d.timeout_ms != 0 && d.timeout_ms != t {
                    finding(
                        &key,
                        FindingKind::Overridden,
                        MESH_FILE.into(),
                        format!("the file's timeout ({} ms) is replaced by {}'s ({t} ms)", d.timeout_ms, r.describe()),
                    );
                }
                d.timeout_ms = t;
            }
        }
    }
    out.extend(super::access::apply_access(
        &policy.targets,
        &policy.route_groups,
        &policy.trust_domain,
        services,
        endpoints,
    ));
    out.sort();
    out.dedup();
    out
}

/// Weighted backends as merged: the default set, and every backend whose endpoints are labelled.
struct Backends {
    default: Vec<Backend>,
    labelled: Vec<Backend>,
    winner: String,
}

/// A route's backends: the default set (the catch-all rule's, else the first rule's that names
/// any) and every backend any rule names; a rule whose set differs gets a split of its own on its
/// route. A second catch-all rule with other backends cannot be carried (one default): noted.
/// None: the route leaves the backends alone (only the parent itself, or none named).
fn route_backends(r: &HttpRouteRecord, key: &str) -> (Option<Backends>, Vec<String>) {
    let with: Vec<(usize, &crate::policy::http_route::Rule)> =
        r.rules.iter().enumerate().filter(|(_, rule)| !rule.backends.is_empty()).collect();
    let Some(&(first, _)) = with.first() else { return (None, Vec::new()) };
    let catch_all = |rl: &crate::policy::http_route::Rule| rl.matches.iter().any(Match::is_catch_all);
    let chosen = with.iter().find(|(_, rl)| catch_all(rl)).map_or(first, |(i, _)| *i);
    let default = &r.rules[chosen].backends;
    let notes = with
        .iter()
        .filter(|(i, rl)| *i != chosen && catch_all(rl) && !same_backends(&rl.backends, default))
        .map(|(i, rl)| {
            format!(
                "spec.rules[{i}] matches everything and sends to {}, but rule {chosen} already sets the default ({})",
                names(&rl.backends),
                names(default)
            )
        })
        .collect();
    let mut labelled: Vec<Backend> = Vec::new();
    for (_, rl) in &with {
        for b in &rl.backends {
            if !labelled.iter().any(|l| l.service == b.service) {
                labelled.push(b.clone());
            }
        }
    }
    let parent = key.split_once('/').map_or(key, |(_, n)| n);
    let only_parent = labelled.len() == 1 && labelled[0].service == parent;
    ((!only_parent).then(|| Backends { default: default.clone(), labelled, winner: r.describe() }), notes)
}

fn weights(list: &[Backend]) -> Vec<pb::SplitWeight> {
    list.iter().map(|b| pb::SplitWeight { version: b.service.clone(), weight: b.weight }).collect()
}

fn same_backends(a: &[Backend], b: &[Backend]) -> bool {
    let norm = |l: &[Backend]| l.iter().map(|x| (x.service.clone(), x.weight)).collect::<BTreeSet<_>>();
    norm(a) == norm(b)
}

fn names(list: &[Backend]) -> String {
    list.iter().map(|b| format!("{}={}", b.service, b.weight)).collect::<Vec<_>>().join(", ")
}

fn to_pb(m: &Match) -> pb::RouteMatch {
    pb::RouteMatch {
        path_prefix: m.path_prefix.clone(),
        method: m.method.clone(),
        headers: m.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// The root's endpoints become its backends' (each labelled with its backend's name as the
/// version), and its split weighs those labels. Under `mtls: strict` at the root, plaintext
/// endpoints of a backend stay out, as they do for the root's own.
fn split_over(
    key: &str,
    backends: &[Backend],
    policy: &mut pb::ServicePolicy,
    endpoints: &mut BTreeMap<String, Vec<pb::Endpoint>>,
) {
    let strict = policy.mtls == pb::MtlsMode::Strict as i32;
    let own = endpoints.get(key).cloned().unwrap_or_default();
    let mut seen = BTreeSet::new();
    let mut list = Vec::new();
    for b in backends {
        let bkey = format!("{}/{}", policy.namespace, b.service);
        let from = if bkey == key { own.clone() } else { endpoints.get(&bkey).cloned().unwrap_or_default() };
        for mut e in from.into_iter().filter(|e| !strict || !e.identity.is_empty()) {
            if seen.insert(e.address.clone()) {
                e.version = b.service.clone();
                list.push(e);
            }
        }
    }
    list.sort_by(|a, b| (&a.address, &a.instance).cmp(&(&b.address, &b.instance)));
    endpoints.insert(key.to_string(), list);
}
