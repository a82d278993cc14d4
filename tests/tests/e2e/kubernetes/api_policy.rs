//! Test API server: traffic policy from the API. A TrafficSplit edit moves live traffic between
//! a primary and a canary within a second without one failed request; a broken edit of the
//! `weft-mesh` ConfigMap is rejected and traffic keeps its policy; an HTTPRoute's weights win over
//! the TrafficSplit, its header match gets the timeout written for it, and a rule with backends of
//! its own sends its matches there. Real replicas, real
//! transparent proxies in network-namespace pods, the test API server as the API. Needs root.

use std::time::{Duration, Instant};

use serde_json::json;
use weft_tests::harness::{eventually, metric, Proc};
use weft_tests::kube_api;

use super::api_lab::{load_totals, ApiLab, NS};

const MESH: &str = "trust_domain: weft.local\nservices:\n  shop/bar: {protocol: http}\n  \
                    shop/bar-primary: {protocol: http}\n  shop/bar-canary: {protocol: http}\n  shop/foo: {protocol: http}\n";
const BAR_VIP: &str = "10.96.0.10";

/// Flagger's shape: the apex Service `bar` selects the primary's pods; `bar-primary` and
/// `bar-canary` select their own. One pod each, and the caller `foo`.
struct Canary {
    c: ApiLab,
    foo: String,
    canary: String,
}

fn canary_lab(name: &str, before_replica: impl FnOnce(&ApiLab)) -> Canary {
    let mut c = ApiLab::new(name, MESH);
    let mut apex = kube_api::service(NS, "bar", BAR_VIP, &[(80, 8080)]);
    apex["spec"]["selector"] = json!({"app": "bar-primary"});
    c.api.apply(apex);
    c.api.apply(kube_api::service(NS, "bar-primary", "10.96.0.12", &[(80, 8080)]));
    c.api.apply(kube_api::service(NS, "bar-canary", "10.96.0.13", &[(80, 8080)]));
    c.api.apply(kube_api::service(NS, "foo", "10.96.0.11", &[(80, 8080)]));
    before_replica(&c);
    c.replica("a", 7170, 7171, &[]);
    c.controller_service();
    c.meshed_pod("primary-1", "bar-primary", "v1", 11);
    let canary = c.meshed_pod("canary-1", "bar-canary", "v1", 12);
    let foo = c.meshed_pod("foo-1", "foo", "v1", 21);
    Canary { c, foo, canary }
}

impl Canary {
    /// Which pod answered a call from foo to bar's ClusterIP (`-H` headers), or the status.
    fn call(&self, headers: &[&str]) -> String {
        let mut extra = Vec::new();
        for h in headers {
            extra.extend(["-H", h]);
        }
        match self.c.lab.curl_with(&self.foo, &format!("http://{BAR_VIP}/"), &extra) {
            Ok((200, body)) if body.contains("canary-1") => "canary".into(),
            Ok((200, body)) if body.contains("primary-1") => "primary".into(),
            Ok((code, body)) => format!("{code} {body}"),
            Err(e) => e,
        }
    }

    /// `n` calls, all answered by `who`.
    fn all_from(&self, who: &str, n: usize) {
        for i in 0..n {
            let got = self.call(&[]);
            assert_eq!(got, who, "call {i} of {n}");
        }
    }

    /// How long after `since` the first call answered by `who` came.
    fn first_from(&self, who: &str, since: Instant) -> Duration {
        loop {
            if self.call(&[]) == who {
                return since.elapsed();
            }
            assert!(since.elapsed() < Duration::from_secs(10), "traffic never reached {who}");
        }
    }

    /// Steady load from foo to bar for `secs`.
    fn load(&self, rps: u32, secs: u64) -> Proc {
        self.c.load(&self.foo, &format!("http://{BAR_VIP}/"), rps, secs)
    }

    fn state(&self) -> serde_json::Value {
        self.c.replica_state(&self.c.replicas[0])
    }
}

#[test]
fn test_api_server_a_traffic_split_edit_moves_live_traffic_within_a_second() {
    let t0 = Instant::now();
    // No Gateway API here: a 404 on HTTPRoutes means "not installed", and the replica is ready.
    let lab = canary_lab("k8s-split", |c| {
        c.api.remove_kind("HTTPRoute");
        c.api.apply(kube_api::traffic_split(NS, "bar", "bar", &[("bar-primary", 100), ("bar-canary", 0)]));
    });
    let c = &lab.c;
    assert_eq!(lab.call(&[]), "primary");
    c.wait_endpoints(&lab.foo, "shop/bar", &["canary-1", "primary-1"], Duration::from_secs(10));
    lab.all_from("primary", 20);

    let (rps, secs) = (100, 8);
    let mut load = lab.load(rps, secs);
    std::thread::sleep(Duration::from_secs(2));
    let edited = Instant::now();
    c.api.update("TrafficSplit", NS, "bar", |s| {
        s["spec"]["backends"] =
            json!([{"service": "bar-primary", "weight": 0}, {"service": "bar-canary", "weight": 100}])
    });
    let moved = lab.first_from("canary", edited);
    lab.all_from("canary", 20);

    c.api.update("TrafficSplit", NS, "bar", |s| {
        s["spec"]["backends"] =
            json!([{"service": "bar-primary", "weight": 50}, {"service": "bar-canary", "weight": 50}])
    });
    let halved = Instant::now();
    lab.first_from("primary", halved);
    let answers: Vec<String> = (0..60).map(|_| lab.call(&[])).collect();
    let canary = answers.iter().filter(|a| *a == "canary").count();
    let primary = answers.iter().filter(|a| *a == "primary").count();

    assert!(load.wait_exit(Duration::from_secs(secs + 20)).is_some_and(|s| s.success()), "{}", load.logs());
    let (sent, ok, failed) = load_totals(&load.logs());
    println!(
        "TrafficSplit against the test API server: 100/0 → 0/100 moved traffic in {moved:.2?}; at 50/50, \
         {primary} primary and {canary} canary of 60; load {sent} sent, {ok} ok, {failed} failed; total {:.1?}",
        t0.elapsed()
    );
    assert_eq!(failed, 0, "{}", load.logs());
    assert!(sent >= u64::from(rps) * (secs - 2), "sent {sent}");
    assert!(moved < Duration::from_secs(1), "the split took {moved:?} to move traffic");
    assert_eq!(canary + primary, 60, "{answers:?}");
    assert!((12..=48).contains(&canary), "50/50 gave {canary} canary answers of 60");
    assert_eq!(lab.state()["policy_findings"], json!([]), "nothing overridden here");
}

#[test]
fn test_api_server_a_broken_config_map_edit_is_rejected_and_traffic_keeps_its_policy() {
    // The ConfigMap drives what the traffic shows at once: an abort fault that the primary pods'
    // proxies answer with (faults belong to the callee's own service, named by its account).
    let faults = |percent: &str| {
        format!(
            "trust_domain: weft.local\nservices:\n  shop/bar: {{protocol: http}}\n  shop/bar-primary:\n    \
             protocol: http\n    faults: {{abort: {{percent: {percent}, status: 418}}}}\n  shop/foo: {{protocol: http}}\n"
        )
    };
    let lab = canary_lab("k8s-configmap", |c| {
        c.api.apply(kube_api::mesh_config_map(&faults("100")));
    });
    let c = &lab.c;
    eventually("the ConfigMap's abort fault is in force", Duration::from_secs(10), || lab.call(&[]).starts_with("418"));

    // A valid edit: no fault.
    c.api.update("ConfigMap", "weft-system", "weft-mesh", |m| m["data"]["mesh.yaml"] = faults("0").into());
    eventually("the edit is in force", Duration::from_secs(5), || lab.call(&[]) == "primary");

    // A broken edit: a percent out of range. Rejected, counted, and the traffic keeps its policy.
    c.api.update("ConfigMap", "weft-system", "weft-mesh", |m| m["data"]["mesh.yaml"] = faults("250").into());
    let replica = &c.replicas[0];
    eventually("the broken edit is counted", Duration::from_secs(5), || {
        metric(&c.replica_get(replica, "/metrics").unwrap_or_default(), "weft_config_rejected_total", &[]) == 1.0
    });
    let state = lab.state();
    let problems = state["config"]["rejected"].to_string();
    assert!(problems.contains("percent"), "{state}");
    // And a Warning Event on the ConfigMap, as `kubectl describe configmap` shows.
    eventually("the rejection is an Event", Duration::from_secs(5), || {
        c.api.events().iter().any(|e| {
            e["reason"] == "ConfigRejected"
                && e["type"] == "Warning"
                && e["involvedObject"]["kind"] == "ConfigMap"
                && e["involvedObject"]["name"] == "weft-mesh"
                && e["metadata"]["namespace"] == "weft-system"
                && e["message"].as_str().is_some_and(|m| m.contains("percent"))
        })
    });
    lab.all_from("primary", 20);

    // Invalid YAML too; then a good edit clears the rejection.
    c.api.update("ConfigMap", "weft-system", "weft-mesh", |m| m["data"]["mesh.yaml"] = "services: [unclosed".into());
    eventually("the second broken edit is counted", Duration::from_secs(5), || {
        metric(&c.replica_get(replica, "/metrics").unwrap_or_default(), "weft_config_rejected_total", &[]) == 2.0
    });
    lab.all_from("primary", 10);
    c.api.update("ConfigMap", "weft-system", "weft-mesh", |m| m["data"]["mesh.yaml"] = faults("100").into());
    eventually("a good edit after the broken ones applies", Duration::from_secs(5), || {
        lab.call(&[]).starts_with("418")
    });
    assert_eq!(lab.state()["config"]["rejected"], serde_json::Value::Null);
}

#[test]
fn test_api_server_an_http_route_wins_over_the_split_and_routes_as_written() {
    let lab = canary_lab("k8s-httproute", |c| {
        c.api.apply(kube_api::traffic_split(NS, "bar", "bar", &[("bar-primary", 100), ("bar-canary", 0)]));
    });
    let c = &lab.c;
    assert_eq!(lab.call(&[]), "primary");
    c.wait_endpoints(&lab.foo, "shop/bar", &["canary-1", "primary-1"], Duration::from_secs(10));

    // The route sends everything to the canary; requests with `x-fast: 1` get 100 ms.
    let rules = |primary: u32, canary: u32| {
        let backends = json!([{"name": "bar-primary", "port": 80, "weight": primary},
                              {"name": "bar-canary", "port": 80, "weight": canary}]);
        json!([
            {"matches": [{"headers": [{"name": "x-fast", "value": "1"}]}], "timeouts": {"request": "100ms"},
             "backendRefs": backends},
            {"backendRefs": backends}
        ])
    };
    let applied = Instant::now();
    c.api.apply(kube_api::http_route(NS, "bar", "bar", rules(0, 100)));
    let moved = lab.first_from("canary", applied);
    lab.all_from("canary", 20);
    let findings = lab.state()["policy_findings"].clone();
    assert!(
        findings.as_array().is_some_and(|f| f.iter().any(|f| f["kind"] == "overridden"
            && f["source"] == "TrafficSplit shop/bar"
            && f["service"] == "shop/bar")),
        "the TrafficSplit is reported as overridden: {findings}"
    );
    eventually("the override is an Event on the TrafficSplit", Duration::from_secs(5), || {
        c.api.events().iter().any(|e| {
            e["reason"] == "PolicyOverridden"
                && e["involvedObject"]["kind"] == "TrafficSplit"
                && e["involvedObject"]["name"] == "bar"
                && e["metadata"]["namespace"] == NS
        })
    });

    // The header match: the canary answers after 300 ms; with the header the route's 100 ms wins.
    let (code, _) =
        c.lab.curl_with(&lab.canary, "http://127.0.0.1:8080/control", &["-X", "PUT", "-d", "latency=300ms"]).unwrap();
    assert_eq!(code, 200);
    let slow = lab.call(&[]);
    let fast = lab.call(&["x-fast: 1"]);
    assert_eq!(slow, "canary", "no header: no timeout");
    assert!(fast.starts_with("504"), "the header's route times out at 100 ms: {fast}");

    // A weight change in the route moves traffic back.
    let changed = Instant::now();
    c.api.update("HTTPRoute", NS, "bar", |r| r["spec"]["rules"] = rules(100, 0));
    let back = lab.first_from("primary", changed);
    lab.all_from("primary", 10);
    println!("HTTPRoute against the test API server: over a TrafficSplit in {moved:.2?}; weight change in {back:.2?}");
    for (what, took) in [("the route", moved), ("the weight change", back)] {
        assert!(took < Duration::from_secs(1), "{what} took {took:?}");
    }

    // A rule with backends of its own: `x-canary: yes` goes to the canary, the rest to the primary.
    c.api.update("HTTPRoute", NS, "bar", |r| {
        r["spec"]["rules"] = json!([
            {"matches": [{"headers": [{"name": "x-canary", "value": "yes"}]}],
             "backendRefs": [{"name": "bar-canary", "port": 80}]},
            {"backendRefs": [{"name": "bar-primary", "port": 80}]}
        ])
    });
    eventually("the header's rule sends to the canary", Duration::from_secs(5), || {
        lab.call(&["x-canary: yes"]) == "canary"
    });
    for _ in 0..10 {
        assert_eq!(lab.call(&["x-canary: yes"]), "canary", "with the header: its rule's backend");
        assert_eq!(lab.call(&[]), "primary", "without: the catch-all rule's");
    }
}
