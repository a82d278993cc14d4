//! Test API server: two `weft-controller --kubernetes` replicas behind a kube-proxy-style VIP,
//! real transparent proxies registering with tokens the test API server signed, traffic over
//! mTLS; the replica serving the caller is killed under load, then endpoints change (a pod joins,
//! the API server expires every watch, a pod is deleted) and the caller must see each change
//! within seconds without one failed request. Needs root (network namespaces, iptables).

use std::time::{Duration, Instant};

use weft_tests::harness::metric;
use weft_tests::kube_api;

use super::api_lab::{load_totals, ApiLab, NS};

const MESH: &str = "trust_domain: weft.local\nservices:\n  shop/bar:\n    protocol: http\n    mtls: strict\n    \
                    allow: [foo]\n  shop/foo: {protocol: http}\n";
const RPS: u32 = 100;
const LOAD_SECS: u64 = 24;

#[test]
fn test_api_server_two_replicas_a_killed_one_costs_no_request_and_later_changes_arrive() {
    let t0 = Instant::now();
    let mut c = ApiLab::new("k8s-replicas", MESH);
    c.api.apply(kube_api::service(NS, "bar", "10.96.0.10", &[(80, 8080)]));
    c.api.apply(kube_api::service(NS, "foo", "10.96.0.11", &[(80, 8080)]));
    c.replica("a", 7170, 7171, &[]);
    c.replica("b", 7270, 7271, &[]);
    c.controller_service();
    let replicas_ready = t0.elapsed();

    let _bar1 = c.meshed_pod("bar-1", "bar", "v1", 11);
    let _bar2 = c.meshed_pod("bar-2", "bar", "v1", 12);
    let foo = c.meshed_pod("foo-1", "foo", "v1", 21);
    let pods_ready = t0.elapsed();
    // foo's app calls bar's ClusterIP: the proxy learns bar on first use, and goes over mTLS.
    let (code, body) = c.lab.curl(&foo, "http://10.96.0.10/").expect("foo → bar");
    assert_eq!(code, 200, "{body}");
    c.wait_endpoints(&foo, "shop/bar", &["bar-1", "bar-2"], Duration::from_secs(10));

    // Steady load from foo's app to bar's ClusterIP.
    let mut load = c.load(&foo, "http://10.96.0.10/", RPS, LOAD_SECS);
    std::thread::sleep(Duration::from_secs(3));

    // Kill the replica foo's proxy is connected to (as a crash: SIGKILL). Its address stays in
    // the controller Service for the rest of the test, as before kube-proxy notices.
    let victim = c.replica_of("foo-1").expect("foo's proxy is connected to a replica");
    let survivor = 1 - victim;
    let killed = Instant::now();
    c.replicas[victim].proc.take().expect("running").kill();
    let reconnected = loop {
        if c.replica_of("foo-1") == Some(survivor) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(20), "foo's proxy did not reconnect to the other replica");
        std::thread::sleep(Duration::from_millis(25));
    };

    // A later change: bar-3 (v2) joins; it counts from the moment the API says it is ready.
    let _bar3 = c.meshed_pod("bar-3", "bar", "v2", 13);
    let joined = c.wait_endpoints(&foo, "shop/bar", &["bar-1", "bar-2", "bar-3"], Duration::from_secs(10));

    // The API server forgets its history: every open watch ends with 410 Gone and the replica
    // must list again; a change made meanwhile still arrives.
    let lists_before = c.api.requests("list pods");
    c.api.expire_watches();
    let expired = Instant::now();
    c.api.delete("Pod", NS, "bar-1");
    let removed = c.wait_endpoints(&foo, "shop/bar", &["bar-2", "bar-3"], Duration::from_secs(10));
    let removed_after_expiry = expired.elapsed();
    weft_tests::harness::eventually("the survivor lists again after 410 Gone", Duration::from_secs(10), || {
        c.api.requests("list pods") > lists_before
    });

    assert!(load.wait_exit(Duration::from_secs(LOAD_SECS + 20)).is_some_and(|s| s.success()), "{}", load.logs());
    let (sent, ok, failed) = load_totals(&load.logs());
    let foo_metrics = c.metrics(&foo);
    let out_total = metric(&foo_metrics, "weft_requests_total", &[("direction", "outbound")]);
    let out_ok = metric(&foo_metrics, "weft_requests_total", &[("direction", "outbound"), ("status_code", "200")]);
    let bar3_mtls = metric(
        &c.metrics(&_bar3),
        "weft_requests_total",
        &[("direction", "inbound"), ("tls", "true"), ("client_id", "spiffe://weft.local/ns/shop/sa/foo")],
    );
    let reviews = c.api.requests("create tokenreviews");
    let total = t0.elapsed();

    println!("Replica failover against the test API server ({RPS} rps for {LOAD_SECS} s, foo → bar over mTLS):");
    println!("  replicas ready {replicas_ready:.2?}, 3 pods ready {pods_ready:.2?} ({reviews} TokenReviews)");
    println!(
        "  replica {} killed; foo's proxy on replica {} after {reconnected:.2?}",
        c.replicas[victim].name, c.replicas[survivor].name
    );
    println!(
        "  load: sent {sent}, ok {ok}, failed {failed}; at foo's proxy {out_total} requests, {out_ok} answered 200"
    );
    println!("  later changes at foo's proxy: bar-3 ready → seen in {joined:.2?}; after 410 Gone on every watch, bar-1 deleted → gone in {removed:.2?} ({removed_after_expiry:.2?} after the expiry)");
    println!("  bar-3 (joined after the failover) served {bar3_mtls} mTLS requests from foo; total {total:.1?}");

    assert_eq!(failed, 0, "failed requests during the failover:\n{}", load.logs());
    assert!(ok + RPS as u64 >= sent && sent >= RPS as u64 * (LOAD_SECS - 2), "sent {sent}, ok {ok}");
    assert_eq!(out_total, out_ok, "every request foo's proxy carried was answered 200\n{foo_metrics}");
    assert!(bar3_mtls > 0.0, "bar-3 never got traffic");
    for (what, took) in [("the new endpoint", joined), ("the removal", removed)] {
        assert!(took < Duration::from_secs(5), "{what} took {took:?} to reach foo's proxy");
    }
}
