//! Precedence cases for [`super::apply`]: which source wins, and what is reported.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use weft_proto::v1 as pb;

use super::*;

type Services = BTreeMap<String, pb::ServicePolicy>;
type Endpoints = BTreeMap<String, Vec<pb::Endpoint>>;

fn split(name: &str, created: &str, service: &str, backends: &[(&str, u64)]) -> TrafficSplitRecord {
    let backends: Vec<Value> = backends.iter().map(|(s, w)| json!({"service": s, "weight": w})).collect();
    TrafficSplitRecord::from_json(&json!({
        "metadata": {"namespace": "shop", "name": name, "creationTimestamp": created},
        "spec": {"service": service, "backends": backends}
    }))
    .unwrap()
}

fn route(name: &str, created: &str, parent: &str, rules: Value) -> HttpRouteRecord {
    HttpRouteRecord::from_json(&json!({
        "metadata": {"namespace": "shop", "name": name, "creationTimestamp": created},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": parent}], "rules": rules}
    }))
    .unwrap()
}

fn endpoint(ip: &str, instance: &str, identity: bool) -> pb::Endpoint {
    pb::Endpoint {
        address: format!("{ip}:4143"),
        identity: if identity { format!("spiffe://weft.local/ns/shop/sa/{instance}") } else { String::new() },
        version: "v1".into(),
        instance: instance.into(),
        ..Default::default()
    }
}

/// `shop/bar` (the root, with one pod of its own), `shop/bar-primary`, `shop/bar-canary`; the
/// mesh file gave bar a 2 s timeout, retries, a split by version and one route.
fn world() -> (Services, Endpoints) {
    let mut services = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    for (name, ip) in [("bar", "10.1.0.1"), ("bar-primary", "10.1.0.2"), ("bar-canary", "10.1.0.3")] {
        services.insert(
            format!("shop/{name}"),
            pb::ServicePolicy { name: name.into(), namespace: "shop".into(), ..Default::default() },
        );
        endpoints.insert(format!("shop/{name}"), vec![endpoint(ip, &format!("{name}-1"), true)]);
    }
    let bar = services.get_mut("shop/bar").unwrap();
    bar.default_route = Some(pb::RoutePolicy {
        timeout_ms: 2000,
        retries: Some(pb::RetryPolicy { max_retries: 2, ..Default::default() }),
        ..Default::default()
    });
    bar.split = vec![pb::SplitWeight { version: "v1".into(), weight: 100 }];
    bar.routes = vec![pb::Route {
        r#match: Some(pb::RouteMatch { path_prefix: "/old".into(), ..Default::default() }),
        policy: Some(pb::RoutePolicy::default()),
    }];
    (services, endpoints)
}

fn run(policy: ApiPolicy) -> (Services, Endpoints, Vec<Finding>) {
    let (mut s, mut e) = world();
    let f = apply(&policy, &mut s, &mut e);
    (s, e, f)
}

fn weights(p: &pb::ServicePolicy) -> Vec<(String, u32)> {
    p.split.iter().map(|s| (s.version.clone(), s.weight)).collect()
}

fn versions(e: &[pb::Endpoint]) -> Vec<(String, String)> {
    e.iter().map(|e| (e.instance.clone(), e.version.clone())).collect()
}

fn has(findings: &[Finding], kind: FindingKind, source: &str, needle: &str) -> bool {
    findings.iter().any(|f| f.kind == kind && f.source == source && f.message.contains(needle))
}

#[test]
fn nothing_from_the_api_leaves_the_mesh_file_alone() {
    let (s, e, f) = run(ApiPolicy::default());
    assert_eq!((s, e), world());
    assert!(f.is_empty());
}

#[test]
fn a_traffic_split_replaces_the_files_split_and_says_so() {
    let (s, e, f) = run(ApiPolicy {
        splits: vec![split("bar", "2025-01-01T00:00:00Z", "bar", &[("bar-primary", 90), ("bar-canary", 10)])],
        ..Default::default()
    });
    assert_eq!(weights(&s["shop/bar"]), [("bar-primary".into(), 90), ("bar-canary".into(), 10)]);
    assert_eq!(
        versions(&e["shop/bar"]),
        [("bar-primary-1".into(), "bar-primary".into()), ("bar-canary-1".into(), "bar-canary".into())],
        "the root's endpoints are its backends', labelled by backend"
    );
    assert_eq!(versions(&e["shop/bar-canary"]), [("bar-canary-1".into(), "v1".into())], "backends stay as they are");
    assert_eq!(s["shop/bar"].default_route.as_ref().unwrap().timeout_ms, 2000, "a split says nothing of timeouts");
    assert_eq!(s["shop/bar"].routes.len(), 1);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(has(&f, FindingKind::Overridden, "mesh file", "split by version is replaced by TrafficSplit shop/bar"));
}

#[test]
fn an_http_route_wins_over_a_traffic_split() {
    let (s, e, f) = run(ApiPolicy {
        splits: vec![split("bar", "2025-01-01T00:00:00Z", "bar", &[("bar-primary", 90), ("bar-canary", 10)])],
        routes: vec![route(
            "bar",
            "2025-06-01T00:00:00Z",
            "bar",
            json!([{"backendRefs": [{"name": "bar-primary", "weight": 50}, {"name": "bar-canary", "weight": 50}]}]),
        )],
        ..Default::default()
    });
    assert_eq!(weights(&s["shop/bar"]), [("bar-primary".into(), 50), ("bar-canary".into(), 50)]);
    assert_eq!(e["shop/bar"].len(), 2);
    assert!(has(&f, FindingKind::Overridden, "TrafficSplit shop/bar", "an HTTPRoute wins over a TrafficSplit"));
    assert!(has(&f, FindingKind::Overridden, "mesh file", "replaced by HTTPRoute shop/bar"));
}

#[test]
fn between_two_objects_of_a_kind_the_older_wins() {
    let (s, _, f) = run(ApiPolicy {
        splits: vec![
            split("newer", "2025-06-01T00:00:00Z", "bar", &[("bar-canary", 1)]),
            split("older", "2025-01-01T00:00:00Z", "bar", &[("bar-primary", 1)]),
        ],
        routes: vec![
            route("r-new", "2025-06-01T00:00:00Z", "bar-primary", json!([{"timeouts": {"request": "9s"}}])),
            route("r-old", "2025-01-01T00:00:00Z", "bar-primary", json!([{"timeouts": {"request": "1s"}}])),
        ],
        ..Default::default()
    });
    assert_eq!(weights(&s["shop/bar"]), [("bar-primary".into(), 1)]);
    assert!(has(&f, FindingKind::Overridden, "TrafficSplit shop/newer", "TrafficSplit shop/older"));
    assert_eq!(s["shop/bar-primary"].default_route.as_ref().unwrap().timeout_ms, 1000);
    assert!(has(&f, FindingKind::Overridden, "HTTPRoute shop/r-new", "HTTPRoute shop/r-old is applied"));
}

#[test]
fn route_matches_and_timeouts_replace_the_files_and_keep_its_retries() {
    let (s, e, f) = run(ApiPolicy {
        routes: vec![route(
            "bar",
            "2025-01-01T00:00:00Z",
            "bar",
            json!([
                {"matches": [{"headers": [{"name": "x-canary", "value": "1"}]}], "timeouts": {"request": "100ms"}},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api/v2"}}, {"path": {"value": "/api"}, "method": "POST"}]},
                {"timeouts": {"request": "5s"}}
            ]),
        )],
        ..Default::default()
    });
    let bar = &s["shop/bar"];
    let m: Vec<(&str, &str, usize)> = bar
        .routes
        .iter()
        .map(|r| r.r#match.as_ref().unwrap())
        .map(|m| (m.path_prefix.as_str(), m.method.as_str(), m.headers.len()))
        .collect();
    assert_eq!(m, [("/api/v2", "", 0), ("/api", "POST", 0), ("", "", 1)], "the most specific first");
    let header = bar.routes[2].policy.as_ref().unwrap();
    assert_eq!(header.timeout_ms, 100);
    assert_eq!(header.retries.as_ref().unwrap().max_retries, 2, "retries come from the mesh file");
    assert_eq!(bar.routes[0].policy.as_ref().unwrap().timeout_ms, 2000, "no timeout in the rule: the file's");
    assert_eq!(bar.default_route.as_ref().unwrap().timeout_ms, 5000, "the catch-all rule's");
    assert_eq!(weights(bar), [("v1".into(), 100)], "a route without backendRefs keeps the file's split");
    assert_eq!(e, world().1, "and the endpoints");
    assert!(has(&f, FindingKind::Overridden, "mesh file", "routes are replaced"));
    assert!(has(&f, FindingKind::Overridden, "mesh file", "timeout (2000 ms) is replaced"));
}

#[test]
fn a_rule_with_backends_of_its_own_routes_to_them() {
    let (s, e, f) = run(ApiPolicy {
        routes: vec![route(
            "bar",
            "2025-01-01T00:00:00Z",
            "bar",
            json!([
                {"matches": [{"headers": [{"name": "x-canary", "value": "1"}]}], "backendRefs": [{"name": "bar-canary"}]},
                {"backendRefs": [{"name": "bar-primary", "weight": 100}]}
            ]),
        )],
        ..Default::default()
    });
    let bar = &s["shop/bar"];
    assert_eq!(weights(bar), [("bar-primary".into(), 100)], "the catch-all rule's backends are the default");
    let canary = bar.routes[0].policy.as_ref().unwrap();
    assert_eq!(bar.routes[0].r#match.as_ref().unwrap().headers["x-canary"], "1");
    assert_eq!(
        canary.split.iter().map(|w| (w.version.clone(), w.weight)).collect::<Vec<_>>(),
        [("bar-canary".to_string(), 1)],
        "the header's rule has its own split"
    );
    let versions: BTreeMap<String, String> =
        e["shop/bar"].iter().map(|e| (e.instance.clone(), e.version.clone())).collect();
    assert_eq!(versions["bar-canary-1"], "bar-canary", "both backends' endpoints are labelled: {versions:?}");
    assert_eq!(versions["bar-primary-1"], "bar-primary");
    assert!(!f.iter().any(|f| f.kind == FindingKind::Unsupported), "nothing left out: {f:?}");
}

#[test]
fn a_second_catch_all_rule_with_other_backends_is_reported() {
    let (s, _, f) = run(ApiPolicy {
        routes: vec![route(
            "bar",
            "2025-01-01T00:00:00Z",
            "bar",
            json!([
                {"backendRefs": [{"name": "bar-primary", "weight": 100}]},
                {"matches": [{}], "backendRefs": [{"name": "bar-canary"}]}
            ]),
        )],
        ..Default::default()
    });
    assert_eq!(weights(&s["shop/bar"]), [("bar-primary".into(), 100)], "the first catch-all rule's backends");
    assert!(has(&f, FindingKind::Unsupported, "HTTPRoute shop/bar", "spec.rules[1] matches everything"));
}

#[test]
fn an_invalid_object_is_reported_and_changes_nothing() {
    let (s, e, f) = run(ApiPolicy {
        splits: vec![split("bar", "2025-01-01T00:00:00Z", "bar", &[("bar-primary", 0)])],
        ..Default::default()
    });
    assert_eq!((s, e), world());
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].kind, f[0].service.as_str()), (FindingKind::Invalid, "shop/bar"));
}

#[test]
fn missing_services_are_reported() {
    let (_, e, f) = run(ApiPolicy {
        splits: vec![
            split("ghost", "2025-01-01T00:00:00Z", "ghost", &[("bar", 1)]),
            split("bar", "2025-01-01T00:00:00Z", "bar", &[("bar-primary", 1), ("bar-gone", 1)]),
        ],
        ..Default::default()
    });
    assert!(has(&f, FindingKind::Invalid, "TrafficSplit shop/ghost", "there is no Service shop/ghost"));
    assert!(has(&f, FindingKind::Invalid, "TrafficSplit shop/bar", "shop/bar-gone does not exist"));
    assert_eq!(versions(&e["shop/bar"]), [("bar-primary-1".into(), "bar-primary".into())]);
}

#[test]
fn a_strict_root_takes_no_plaintext_backend() {
    let (mut s, mut e) = world();
    s.get_mut("shop/bar").unwrap().mtls = pb::MtlsMode::Strict as i32;
    e.get_mut("shop/bar-canary").unwrap().push(endpoint("10.9.0.9", "legacy", false));
    let policy = ApiPolicy {
        splits: vec![split("bar", "2025-01-01T00:00:00Z", "bar", &[("bar-canary", 1), ("bar", 1)])],
        ..Default::default()
    };
    apply(&policy, &mut s, &mut e);
    assert_eq!(
        versions(&e["shop/bar"]),
        [("bar-1".into(), "bar".into()), ("bar-canary-1".into(), "bar-canary".into())],
        "the root may be its own backend; the plaintext endpoint stays out"
    );
}

#[test]
fn a_route_to_its_parent_alone_leaves_endpoints_alone() {
    let (s, e, _) = run(ApiPolicy {
        routes: vec![route(
            "bar",
            "2025-01-01T00:00:00Z",
            "bar",
            json!([{"backendRefs": [{"name": "bar", "port": 80}]}]),
        )],
        ..Default::default()
    });
    assert_eq!(weights(&s["shop/bar"]), [("v1".into(), 100)]);
    assert_eq!(e, world().1);
}
