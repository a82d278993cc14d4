//! Test API server: SMI access control. A TrafficTarget granting foo's service account access to
//! bar's lets foo's requests through; edited to another source, or deleted, foo gets 403 from
//! bar's proxy within a bound — the mesh file gives bar `allow: []`, so without a grant nobody
//! may call. A route-limited grant lets nobody in and is reported (state and one Event across two
//! replicas); without the access CRDs the replica is ready and the file's `allow` decides. Real
//! replicas, real transparent proxies in network-namespace pods. Needs root.

use std::time::{Duration, Instant};

use serde_json::json;
use weft_tests::harness::eventually;
use weft_tests::kube_api;

use super::api_lab::{ApiLab, NS};

const MESH: &str = "trust_domain: weft.local\nservices:\n  shop/bar: {protocol: http, allow: []}\n  \
                    shop/foo: {protocol: http}\n";
const BAR_VIP: &str = "10.96.0.10";
/// How long a grant's change may take to reach bar's proxy (it takes well under a second on an
/// idle machine; the margin is for a loaded 2-core one).
const BOUND: Duration = Duration::from_secs(5);

/// The status foo gets from bar (0: no answer).
fn status(c: &ApiLab, foo: &str) -> u16 {
    c.lab.curl(foo, &format!("http://{BAR_VIP}/")).map_or(0, |(code, _)| code)
}

/// How long after `since` foo first gets `want`; panics past [`BOUND`].
fn first(c: &ApiLab, foo: &str, want: u16, since: Instant) -> Duration {
    loop {
        let got = status(c, foo);
        if got == want {
            return since.elapsed();
        }
        assert!(since.elapsed() < BOUND, "foo never got {want} within {BOUND:?} (last: {got})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn test_api_server_a_traffic_target_lets_foo_in_and_its_removal_gets_foo_403() {
    let mut c = ApiLab::new("k8s-access", MESH);
    c.api.apply(kube_api::service(NS, "bar", BAR_VIP, &[(80, 8080)]));
    c.api.apply(kube_api::service(NS, "foo", "10.96.0.11", &[(80, 8080)]));
    c.api.apply(kube_api::http_route_group(
        NS,
        "everything",
        json!([{"name": "all", "pathRegex": ".*", "methods": ["*"]}]),
    ));
    c.api.apply(kube_api::traffic_target(NS, "bar", "bar", "everything", &["foo"]));
    c.replica("a", 7270, 7271, &[]);
    c.controller_service();
    c.meshed_pod("bar-1", "bar", "v1", 11);
    let foo = c.meshed_pod("foo-1", "foo", "v1", 21);

    // Granted: foo gets through (the grant and the file's `allow: []` are reported together).
    first(&c, &foo, 200, Instant::now());
    for i in 0..10 {
        assert_eq!(status(&c, &foo), 200, "call {i}");
    }
    let findings = c.replica_state(&c.replicas[0])["policy_findings"].clone();
    assert!(
        findings.as_array().is_some_and(|f| f.iter().any(|f| f["kind"] == "combined" && f["service"] == "shop/bar")),
        "{findings}"
    );

    // Edited to another source: foo is refused.
    let edited = Instant::now();
    c.api.update("TrafficTarget", NS, "bar", |t| {
        t["spec"]["sources"] = json!([{"kind": "ServiceAccount", "name": "web", "namespace": NS}])
    });
    let refused_after_edit = first(&c, &foo, 403, edited);
    for i in 0..10 {
        assert_eq!(status(&c, &foo), 403, "call {i} after the edit");
    }

    // Granted again, then deleted: refused again.
    let regranted = Instant::now();
    c.api.update("TrafficTarget", NS, "bar", |t| {
        t["spec"]["sources"] = json!([{"kind": "ServiceAccount", "name": "foo", "namespace": NS}])
    });
    let allowed_again = first(&c, &foo, 200, regranted);
    let deleted = Instant::now();
    assert!(c.api.delete("TrafficTarget", NS, "bar"));
    let refused_after_delete = first(&c, &foo, 403, deleted);
    for i in 0..10 {
        assert_eq!(status(&c, &foo), 403, "call {i} after the delete");
    }
    println!(
        "TrafficTarget against the test API server: foo refused (403) {refused_after_edit:.2?} after the source \
         was edited, allowed {allowed_again:.2?} after it was granted again, refused {refused_after_delete:.2?} \
         after the TrafficTarget was deleted"
    );
}

#[test]
fn test_api_server_a_route_limited_traffic_target_grants_nothing_and_says_so() {
    let mut c = ApiLab::new("k8s-access-narrow", MESH);
    c.api.apply(kube_api::service(NS, "bar", BAR_VIP, &[(80, 8080)]));
    c.api.apply(kube_api::service(NS, "foo", "10.96.0.11", &[(80, 8080)]));
    c.api.apply(kube_api::http_route_group(
        NS,
        "metrics",
        json!([{"name": "metrics", "pathRegex": "/metrics", "methods": ["GET"]}]),
    ));
    c.api.apply(kube_api::traffic_target(NS, "bar", "bar", "metrics", &["foo"]));
    // Two replicas: both see the findings, and each Event is created once.
    c.replica("a", 7272, 7273, &[]);
    c.replica("b", 7274, 7275, &[]);
    c.controller_service();
    c.meshed_pod("bar-1", "bar", "v1", 11);
    let foo = c.meshed_pod("foo-1", "foo", "v1", 21);

    // The proxy cannot limit a caller to GET /metrics: the grant is left out, never widened.
    for path in ["/metrics", "/"] {
        let got = c.lab.curl(&foo, &format!("http://{BAR_VIP}{path}")).map_or(0, |(code, _)| code);
        assert_eq!(got, 403, "{path}");
    }
    let findings = c.replica_state(&c.replicas[0])["policy_findings"].clone();
    assert!(
        findings.as_array().is_some_and(|f| f.iter().any(|f| f["kind"] == "unsupported"
            && f["source"] == "TrafficTarget shop/bar"
            && f["message"].as_str().is_some_and(|m| m.contains("GET /metrics")))),
        "{findings}"
    );
    // The same as a Warning Event on the TrafficTarget, once however many replicas see it: two
    // findings (this one, and the file's `allow: []` combined with the grant) tried by both
    // replicas are four creates and two Events.
    eventually("both replicas tried to report both findings", Duration::from_secs(5), || {
        c.api.requests("create events") >= 4
    });
    let events = c.api.events();
    let not_carried: Vec<_> = events.iter().filter(|e| e["reason"] == "PolicyNotCarried").collect();
    assert_eq!(not_carried.len(), 1, "{events:#?}");
    let e = not_carried[0];
    assert_eq!(
        (&e["type"], &e["involvedObject"]["kind"], &e["involvedObject"]["name"]),
        (&json!("Warning"), &json!("TrafficTarget"), &json!("bar"))
    );
    assert!(e["message"].as_str().is_some_and(|m| m.contains("GET /metrics")), "{e}");
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events.iter().any(|e| e["reason"] == "PolicyCombined" && e["involvedObject"]["name"] == "weft-mesh"));
}

#[test]
fn test_api_server_without_the_smi_access_crds_the_replica_is_ready_and_the_file_decides() {
    // No TrafficTarget or HTTPRouteGroup CRD: a 404 on every version means "not used".
    let mut c = ApiLab::new(
        "k8s-access-absent",
        "trust_domain: weft.local\nservices:\n  shop/bar: {protocol: http, allow: [foo]}\n  shop/foo: {protocol: http}\n",
    );
    c.api.remove_kind("TrafficTarget");
    c.api.remove_kind("HTTPRouteGroup");
    c.api.apply(kube_api::service(NS, "bar", BAR_VIP, &[(80, 8080)]));
    c.api.apply(kube_api::service(NS, "foo", "10.96.0.11", &[(80, 8080)]));
    c.api.apply(kube_api::service(NS, "web", "10.96.0.12", &[(80, 8080)]));
    c.replica("a", 7276, 7277, &[]);
    c.controller_service();
    c.meshed_pod("bar-1", "bar", "v1", 11);
    let foo = c.meshed_pod("foo-1", "foo", "v1", 21);
    let web = c.meshed_pod("web-1", "web", "v1", 22);
    assert_eq!(status(&c, &foo), 200, "the file allows foo");
    assert_eq!(status(&c, &web), 403, "and only foo");
    // (The replica became ready above: it found both kinds absent rather than waiting for them.)
    assert_eq!(c.replica_state(&c.replicas[0])["policy_findings"], json!([]));
}
