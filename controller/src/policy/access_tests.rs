//! SMI access control over the mesh file's `allow`: who may call, and what is reported.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use weft_proto::v1 as pb;

use super::*;

const FOO: &str = "spiffe://weft.local/ns/shop/sa/foo";
const WEB: &str = "spiffe://weft.local/ns/front/sa/web";
const PROM: &str = "spiffe://weft.local/ns/shop/sa/prometheus";

fn target(name: &str, dest: &str, rules: Value, sources: &[(&str, &str)]) -> TrafficTargetRecord {
    let sources: Vec<Value> =
        sources.iter().map(|(ns, n)| json!({"kind": "ServiceAccount", "namespace": ns, "name": n})).collect();
    TrafficTargetRecord::from_json(&json!({
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"destination": {"kind": "ServiceAccount", "name": dest, "namespace": "shop"},
                 "rules": rules, "sources": sources}
    }))
    .unwrap()
}

fn group(name: &str, matches: Value) -> HttpRouteGroupRecord {
    HttpRouteGroupRecord::from_json(&json!({"metadata": {"namespace": "shop", "name": name},
                                           "spec": {"matches": matches}}))
    .unwrap()
}

/// `everything` (catch-all) and `metrics` (GET /metrics) in group `routes`.
fn routes() -> HttpRouteGroupRecord {
    group(
        "routes",
        json!([{"name": "everything", "pathRegex": ".*", "methods": ["*"]},
               {"name": "metrics", "pathRegex": "/metrics", "methods": ["GET"]}]),
    )
}

fn all_rule() -> Value {
    json!([{"kind": "HTTPRouteGroup", "name": "routes", "matches": ["everything"]}])
}

/// `shop/bar` (one pod serving 8080) and `shop/pay` (`allow: [front/web]` in the file).
fn world() -> (BTreeMap<String, pb::ServicePolicy>, BTreeMap<String, Vec<pb::Endpoint>>) {
    let mut services = BTreeMap::new();
    for name in ["bar", "pay"] {
        services.insert(
            format!("shop/{name}"),
            pb::ServicePolicy { name: name.into(), namespace: "shop".into(), ..Default::default() },
        );
    }
    services.get_mut("shop/pay").unwrap().allow = Some(pb::AllowList { identities: vec![WEB.into()] });
    let bar = pb::Endpoint { address: "10.1.0.1:4143".into(), app_ports: vec![8080], ..Default::default() };
    (services, BTreeMap::from([("shop/bar".to_string(), vec![bar])]))
}

fn run(
    targets: Vec<TrafficTargetRecord>,
    groups: Vec<HttpRouteGroupRecord>,
) -> (BTreeMap<String, Vec<String>>, Vec<Finding>) {
    let (mut s, mut e) = world();
    let policy = ApiPolicy { targets, route_groups: groups, trust_domain: "weft.local".into(), ..Default::default() };
    let f = apply(&policy, &mut s, &mut e);
    let allow = s.into_iter().filter_map(|(k, p)| p.allow.map(|a| (k, a.identities))).collect();
    (allow, f)
}

fn allowed(allow: &BTreeMap<String, Vec<String>>, key: &str) -> Option<Vec<String>> {
    allow.get(key).cloned()
}

#[test]
fn no_traffic_target_leaves_every_caller_allowed() {
    let (allow, f) = run(Vec::new(), vec![routes()]);
    assert_eq!(allowed(&allow, "shop/bar"), None, "absent allow: every mesh identity");
    assert!(f.is_empty(), "{f:?}");
}

#[test]
fn a_traffic_target_allows_its_sources_and_nobody_else() {
    let (allow, f) = run(vec![target("t", "bar", all_rule(), &[("shop", "foo"), ("front", "web")])], vec![routes()]);
    assert_eq!(allowed(&allow, "shop/bar"), Some(vec![WEB.to_string(), FOO.to_string()]));
    assert!(f.is_empty(), "the documented rule, nothing to report: {f:?}");
    // A rule naming no match takes all of the group's, the catch-all among them.
    let (allow, _) = run(
        vec![target("t", "bar", json!([{"kind": "HTTPRouteGroup", "name": "routes"}]), &[("shop", "foo")])],
        vec![routes()],
    );
    assert_eq!(allowed(&allow, "shop/bar"), Some(vec![FOO.to_string()]));
}

#[test]
fn two_traffic_targets_add_up() {
    let (allow, _) = run(
        vec![target("a", "bar", all_rule(), &[("shop", "foo")]), target("b", "bar", all_rule(), &[("front", "web")])],
        vec![routes()],
    );
    assert_eq!(allowed(&allow, "shop/bar"), Some(vec![WEB.to_string(), FOO.to_string()]));
}

#[test]
fn the_files_allow_and_a_traffic_target_are_both_granted_and_that_is_reported() {
    let (allow, f) = run(vec![target("t", "pay", all_rule(), &[("shop", "foo")])], vec![routes()]);
    assert_eq!(allowed(&allow, "shop/pay"), Some(vec![WEB.to_string(), FOO.to_string()]));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].kind, f[0].source.as_str(), f[0].service.as_str()),
        (FindingKind::Combined, "mesh file", "shop/pay")
    );
    assert!(f[0].message.contains("both granted"), "{}", f[0].message);
}

#[test]
fn a_route_limited_grant_is_not_carried_and_is_reported() {
    let metrics = json!([{"kind": "HTTPRouteGroup", "name": "routes", "matches": ["metrics"]}]);
    let (allow, f) = run(
        vec![
            target("scrape", "bar", metrics, &[("shop", "prometheus")]),
            target("t", "bar", all_rule(), &[("shop", "foo")]),
        ],
        vec![routes()],
    );
    assert_eq!(
        allowed(&allow, "shop/bar"),
        Some(vec![FOO.to_string()]),
        "prometheus is refused, not let in everywhere"
    );
    assert!(!allowed(&allow, "shop/bar").unwrap().contains(&PROM.to_string()));
    let f: Vec<_> = f.iter().filter(|f| f.source == "TrafficTarget shop/scrape").collect();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, FindingKind::Unsupported);
    assert!(f[0].message.contains("GET /metrics") && f[0].message.contains("refused"), "{}", f[0].message);
}

#[test]
fn a_target_granting_nothing_still_closes_its_destination() {
    // Only a route-limited grant: SMI denies what is not granted, so bar allows nobody.
    let metrics = json!([{"kind": "HTTPRouteGroup", "name": "routes", "matches": ["metrics"]}]);
    let (allow, _) = run(vec![target("scrape", "bar", metrics, &[("shop", "prometheus")])], vec![routes()]);
    assert_eq!(allowed(&allow, "shop/bar"), Some(vec![]));
    // A rule naming a group that does not exist, or a kind not carried: nothing granted either.
    for rules in [
        json!([{"kind": "HTTPRouteGroup", "name": "nope"}]),
        json!([{"kind": "TCPRoute", "name": "tcp"}]),
        json!([{"kind": "HTTPRouteGroup", "name": "routes", "matches": ["typo"]}]),
    ] {
        let (allow, f) = run(vec![target("t", "bar", rules.clone(), &[("shop", "foo")])], vec![routes()]);
        assert_eq!(allowed(&allow, "shop/bar"), Some(vec![]), "{rules}");
        assert!(f.iter().any(|f| f.kind == FindingKind::Unsupported), "{rules}: {f:?}");
    }
}

#[test]
fn a_port_restriction_is_carried_only_when_the_service_has_no_other_port() {
    let mut t = target("t", "bar", all_rule(), &[("shop", "foo")]);
    t.port = Some(8080);
    let (allow, f) = run(vec![t.clone()], vec![routes()]);
    assert_eq!(allowed(&allow, "shop/bar"), Some(vec![FOO.to_string()]), "bar serves 8080 only");
    assert!(f.is_empty(), "{f:?}");
    t.port = Some(9090);
    let (allow, f) = run(vec![t], vec![routes()]);
    assert_eq!(allowed(&allow, "shop/bar"), Some(vec![]));
    assert!(f[0].message.contains("port 9090"), "{f:?}");
}

#[test]
fn a_target_for_another_namespace_touches_nothing() {
    let t = TrafficTargetRecord::from_json(&json!({
        "metadata": {"namespace": "evil", "name": "open"},
        "spec": {"destination": {"kind": "ServiceAccount", "name": "bar", "namespace": "shop"},
                 "rules": [{"kind": "HTTPRouteGroup", "name": "routes"}],
                 "sources": [{"kind": "ServiceAccount", "name": "mallory", "namespace": "evil"}]}
    }))
    .unwrap();
    let (allow, f) = run(vec![t], vec![routes()]);
    assert_eq!(allowed(&allow, "shop/bar"), None, "neither opened nor closed by another namespace");
    assert_eq!(f[0].kind, FindingKind::Invalid);
}

#[test]
fn an_http_route_group_does_not_open_a_tcp_service() {
    let (mut s, mut e) = world();
    s.get_mut("shop/bar").unwrap().protocol = pb::Protocol::Tcp as i32;
    let policy = ApiPolicy {
        targets: vec![target("t", "bar", all_rule(), &[("shop", "foo")])],
        route_groups: vec![routes()],
        ..Default::default()
    };
    let f = apply(&policy, &mut s, &mut e);
    assert_eq!(s["shop/bar"].allow.as_ref().unwrap().identities, Vec::<String>::new());
    assert!(f.iter().any(|f| f.message.contains("TCP")), "{f:?}");
}
