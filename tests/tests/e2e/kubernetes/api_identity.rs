//! Test API server: identities from service-account tokens. A `weft-controller --kubernetes`
//! gives a proxy a certificate only for the account of the pod its token is bound to, after a
//! TokenReview (a wrong audience, an expired token, a forged signature, a deleted pod, another
//! account: each refused, and the proxy stops with the reason); join tokens are refused in this
//! mode; a registration is accepted only for the proxy's own pod from that pod's IP; renewals stop
//! once the pod is gone. Needs root (network namespaces, iptables).

use std::time::Duration;

use weft_tests::harness::{bin, eventually, metric};
use weft_tests::kube_api;

use super::api_lab::{ApiLab, AUDIENCE, NS};

/// Runs a proxy for pod `instance` in `ns` with `token` and returns its log once it has exited.
fn refused(c: &ApiLab, ns: &str, instance: &str, service: &str, token: &str) -> String {
    let file = c.token_file(instance, token);
    let mut p = c.proxy(ns, instance, service, &file, &[]);
    let status = p.wait_exit(Duration::from_secs(20));
    let logs = p.logs();
    assert!(status.is_some_and(|s| !s.success()), "the proxy kept running with a bad token:\n{logs}");
    logs
}

#[test]
fn test_api_server_service_account_tokens_become_certificates_for_their_pod_only() {
    let mut c = ApiLab::new("k8s-identity", "trust_domain: weft.local\n");
    c.api.apply(kube_api::service(NS, "bar", "10.96.0.10", &[(80, 8080)]));
    // Short certificates, so that a renewal happens during the test.
    c.replica("a", 7170, 7171, &["--cert-ttl", "6s"]);
    c.controller_service();

    // The good case: bar-1's own token.
    let bar = c.meshed_pod("bar-1", "bar", "v1", 11);
    let state = c.replica_state(&c.replicas[0]);
    let proxy = &state["proxies"][0];
    assert_eq!(proxy["identity"], "spiffe://weft.local/ns/shop/sa/bar", "{state}");
    assert_eq!(proxy["instance"], "bar-1");

    // A pod namespace without a proxy, where refused proxies are tried one after the other.
    let probe = c.pod_namespace("probe", 30);
    c.api.apply(kube_api::pod(NS, "probe", "bar", "198.18.0.30", &[("app", "bar")], true));
    for (what, token, service, expect) in [
        (
            "wrong audience",
            c.api.token(NS, "probe", "https://kubernetes.default.svc.cluster.local", 600),
            "bar",
            "audience",
        ),
        ("expired", c.api.token(NS, "probe", AUDIENCE, -60), "bar", "expired"),
        ("forged signature", c.api.forged_token(NS, "probe", AUDIENCE), "bar", "invalid signature"),
        (
            "another account",
            c.api.token(NS, "probe", AUDIENCE, 600),
            "payments",
            "not spiffe://weft.local/ns/shop/sa/payments",
        ),
    ] {
        let logs = refused(&c, &probe, "probe", service, &token);
        assert!(logs.contains("first certificate was refused") && logs.contains(expect), "{what}:\n{logs}");
    }
    // A token for a pod that has been deleted since.
    c.api.apply(kube_api::pod(NS, "gone", "bar", "198.18.0.31", &[("app", "bar")], true));
    let token = c.api.token(NS, "gone", AUDIENCE, 600);
    c.api.delete("Pod", NS, "gone");
    let logs = refused(&c, &probe, "gone", "bar", &token);
    assert!(logs.contains("not found"), "deleted pod:\n{logs}");
    // A join token, valid in universal mode, is not taken here.
    let join = std::process::Command::new(bin("weft"))
        .args(["ca", "token", "--dir"])
        .arg(&c.ca)
        .args(["--service", "bar", "--namespace", NS])
        .output()
        .unwrap();
    let join_file = c.token_file("join", &String::from_utf8_lossy(&join.stdout));
    let mut p = c.proxy(
        &probe,
        "probe",
        "bar",
        &c.token_file("probe", &c.api.token(NS, "probe", AUDIENCE, 600)),
        &["--token-file", &join_file.display().to_string()],
    );
    assert!(p.wait_exit(Duration::from_secs(20)).is_some_and(|s| !s.success()));
    assert!(p.logs().contains("not a join token"), "{}", p.logs());

    // Pod binding. A proxy in the probe pod with bar-1's token: its certificate is bar-1's, so it
    // may register only as bar-1 — and bar-1's IP is not the probe pod's.
    let stolen = c.token_file("stolen", &c.api.token(NS, "bar-1", AUDIENCE, 600));
    let mut thief = c.proxy(&probe, "bar-1", "bar", &stolen, &[]);
    let controller_metrics = || c.replica_get(&c.replicas[0], "/metrics").unwrap_or_default();
    eventually("a registration from another pod's IP is refused", Duration::from_secs(15), || {
        metric(&controller_metrics(), "weft_registrations_refused_total", &[("reason", "not-this-pod")]) > 0.0
    });
    assert!(thief.is_running(), "refused registrations are retried, not fatal");
    thief.kill();
    // ...and calling itself another instance is refused too: the certificate names its pod.
    let mut other = c.proxy(&probe, "probe", "bar", &stolen, &[]);
    eventually("a registration for another pod than the certificate's is refused", Duration::from_secs(15), || {
        metric(&controller_metrics(), "weft_registrations_refused_total", &[("reason", "instance-bound")]) > 0.0
    });
    other.kill();
    let logs = c.replicas[0].proc.as_ref().unwrap().logs();
    assert!(logs.contains("not an IP of pod shop/bar-1"), "{logs}");

    // Renewals: bar-1 renews at half-life (3 s) while its pod exists; once the pod is deleted
    // from the API, renewals are refused (the certificate lives out its 6 s).
    eventually("bar-1 renews its certificate", Duration::from_secs(15), || {
        metric(&controller_metrics(), "weft_certificates_issued_total", &[("kind", "renewal")]) > 0.0
    });
    c.api.delete("Pod", NS, "bar-1");
    eventually("renewals of a deleted pod's certificate are refused", Duration::from_secs(15), || {
        metric(&controller_metrics(), "weft_certify_refused_total", &[("reason", "pod")]) > 0.0
    });
    c.stop_pod(&bar);
    println!(
        "identity via TokenReview: {} reviews; refused: wrong audience, expired, forged, another account, deleted pod, join token, stolen token from another pod's IP",
        c.api.requests("create tokenreviews")
    );
}
