//! `weft check` against a universal-mode controller (the checks it runs without a kubeconfig):
//! a healthy mesh passes (exit 0); a rejected mesh-file edit, an expired trust anchor and a
//! controller that is down each fail with a hint (exit 1). With a kubeconfig, against the test
//! API server holding `weft install`'s objects: a healthy install passes; missing CRDs warn with
//! what goes unused; unready controller pods and a missing webhook configuration fail.

use std::time::Duration;

use serde_json::json;
use weft_tests::harness::{bin, eventually, Mesh, ProxyOpts};
use weft_tests::kube_api;

use super::support::weft;

const MESH: &str = "trust_domain: weft.local\nservices:\n  bar: {protocol: http}\n";

#[test]
fn weft_check_passes_a_healthy_mesh_and_fails_broken_ones_with_hints() {
    let mut m = Mesh::start("check", MESH);
    let _foo = m.proxy(ProxyOpts::client("foo"));
    let ca = m.ca_dir.display().to_string();
    let admin = m.controller_admin();
    let check = |extra: &[&str]| {
        let mut args = vec!["check", "--controller-admin", admin.as_str()];
        args.extend_from_slice(extra);
        weft(&args, None)
    };

    let healthy = check(&["--ca-dir", &ca]);
    assert_eq!(healthy.code, 0, "{}{}", healthy.stdout, healthy.stderr);
    for line in ["controller is live", "controller is ready", "trust anchor expiry", "mesh config", "proxies connected"]
    {
        assert!(healthy.stdout.lines().any(|l| l.starts_with("ok") && l.contains(line)), "{line}:\n{}", healthy.stdout);
    }
    assert!(!healthy.stdout.contains("FAIL"), "{}", healthy.stdout);
    println!("{}", healthy.stdout);

    // A rejected edit: the last good config stays in force, and check says so.
    m.write_mesh("trust_domain: weft.local\nservices:\n  bar: {timeout: soon}\n");
    eventually("the edit is rejected", Duration::from_secs(10), || !m.state()["config"]["rejected"].is_null());
    let rejected = check(&["--ca-dir", &ca]);
    assert_eq!(rejected.code, 1, "{}", rejected.stdout);
    let fail =
        rejected.stdout.lines().find(|l| l.starts_with("FAIL") && l.contains("mesh config")).expect(&rejected.stdout);
    assert!(fail.contains("services.bar.timeout"), "{fail}");
    assert!(rejected.stdout.contains("hint: fix the mesh file"), "{}", rejected.stdout);
    m.write_mesh(MESH);
    eventually("a good edit clears it", Duration::from_secs(10), || m.state()["config"]["rejected"].is_null());

    // An expired trust anchor (a certificate valid for one second, two seconds ago).
    let authority = weft_certs::CertificateAuthority::load(&m.ca_dir).unwrap();
    let issued = authority.issue_controller(Duration::from_secs(1)).unwrap();
    let anchor = m.dir.path().join("expired.crt");
    std::fs::write(&anchor, weft_certs::pem::encode_certs(&issued.chain[..1])).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let expired = check(&["--trust-anchor", &anchor.display().to_string()]);
    assert_eq!(expired.code, 1, "{}", expired.stdout);
    assert!(
        expired
            .stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("trust anchor expiry") && l.contains("expired")),
        "{}",
        expired.stdout
    );
    println!("{}", expired.stdout);

    // The controller down.
    m.stop_controller();
    let down = check(&["--ca-dir", &ca]);
    assert_eq!(down.code, 1, "{}", down.stdout);
    assert!(down.stdout.lines().any(|l| l.starts_with("FAIL") && l.contains("controller is live")), "{}", down.stdout);
    assert!(down.stdout.contains("--controller-admin"), "the hint says where to look:\n{}", down.stdout);
    println!("{}", down.stdout);
}

/// The install as `weft install` renders it, in the test API server (the kinds it serves), with
/// two ready controller pods behind the controller Service and the Deployment's status saying so.
fn installed(c: &super::api_lab::ApiLab) {
    let out = weft(&["install", "--ca-dir", &c.ca.display().to_string()], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let served = ["Namespace", "Service", "ConfigMap", "Deployment", "MutatingWebhookConfiguration"];
    for doc in super::support::yaml_docs(&out.stdout) {
        if served.contains(&doc["kind"].as_str().unwrap_or_default()) {
            c.api.apply(doc);
        }
    }
    for (i, ip) in ["10.244.0.2", "10.244.0.3"].iter().enumerate() {
        let name = format!("weft-controller-{i}");
        let labels = [("app.kubernetes.io/name", "weft-controller"), ("app.kubernetes.io/part-of", "weft")];
        c.api.apply(kube_api::pod("weft-system", &name, "weft-controller", ip, &labels, false));
        c.api.set_pod_ready("weft-system", &name, true);
    }
    c.api.update("Deployment", "weft-system", "weft-controller", |d| {
        d["status"] = json!({"replicas": 2, "readyReplicas": 2, "availableReplicas": 2})
    });
}

#[test]
fn test_api_server_weft_check_with_a_kubeconfig_passes_a_healthy_install_and_warns_or_fails_with_hints() {
    let mut c = super::api_lab::ApiLab::new("k8s-check", "trust_domain: weft.local\n");
    installed(&c);
    c.replica("a", 7370, 7371, &[]);
    let kubeconfig = c.api.kubeconfig.display().to_string();
    let weft_bin = bin("weft").display().to_string();
    let check = || {
        let out = c.lab.exec(
            &c.lab.switch,
            &[&weft_bin, "check", "--kubeconfig", &kubeconfig, "--controller-admin", "http://127.0.0.1:7371"],
        );
        // (Through `ip netns exec`, which passes the environment: --kubeconfig wins over it.)
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let has = |out: &str, tag: &str, check: &str| out.lines().any(|l| l.starts_with(tag) && l.contains(check));

    let (code, healthy) = check();
    println!("{healthy}");
    assert_eq!(code, 0, "{healthy}");
    for name in [
        "controller is live",
        "controller is ready",
        "trust anchor expiry",
        "CRD TrafficSplit",
        "CRD TrafficTarget",
        "CRD HTTPRouteGroup",
        "CRD HTTPRoute",
        "webhook reachable",
        "controller replicas",
    ] {
        assert!(has(&healthy, "ok", name), "{name}:\n{healthy}");
    }
    assert!(healthy.contains("2 ready endpoints") && healthy.contains("2 of 2 ready"), "{healthy}");

    // The SMI access CRD and the Gateway API missing: warnings saying what goes unused, exit 0.
    c.api.remove_kind("TrafficTarget");
    c.api.remove_kind("HTTPRoute");
    let (code, missing) = check();
    println!("{missing}");
    assert_eq!(code, 0, "warnings do not fail the check:\n{missing}");
    assert!(has(&missing, "warn", "CRD TrafficTarget"), "{missing}");
    assert!(missing.contains("allow lists only") && missing.contains("hint: weft install ships it"), "{missing}");
    assert!(has(&missing, "warn", "CRD HTTPRoute") && missing.contains("does not ship them"), "{missing}");
    assert!(has(&missing, "ok", "CRD TrafficSplit"), "{missing}");

    // The controller's pods not ready: the webhook is unreachable and the replicas are down.
    for i in 0..2 {
        c.api.set_pod_ready("weft-system", &format!("weft-controller-{i}"), false);
    }
    c.api.update("Deployment", "weft-system", "weft-controller", |d| d["status"]["readyReplicas"] = 0.into());
    let (code, broken) = check();
    println!("{broken}");
    assert_eq!(code, 1, "{broken}");
    assert!(has(&broken, "FAIL", "webhook reachable") && broken.contains("no ready endpoint"), "{broken}");
    assert!(has(&broken, "FAIL", "controller replicas") && broken.contains("0 of 2 ready"), "{broken}");
    assert!(broken.contains("hint: kubectl -n weft-system"), "{broken}");

    // A CA bundle from another CA (a CA rotated without the webhook configuration).
    let other = c.lab.dir.path().join("other-ca");
    assert_eq!(weft(&["ca", "init", "--dir", &other.display().to_string()], None).code, 0);
    let other_pem = std::fs::read(other.join("ca.crt")).unwrap();
    use base64::Engine;
    let other_bundle = base64::engine::general_purpose::STANDARD.encode(other_pem);
    c.api.update("MutatingWebhookConfiguration", "", "weft-proxy-injector", |w| {
        w["webhooks"][0]["clientConfig"]["caBundle"] = other_bundle.into()
    });
    let (code, mismatch) = check();
    assert_eq!(code, 1, "{mismatch}");
    assert!(has(&mismatch, "FAIL", "webhook reachable") && mismatch.contains("is not the mesh's CA"), "{mismatch}");

    // The webhook configuration gone.
    c.api.delete("MutatingWebhookConfiguration", "", "weft-proxy-injector");
    let (code, gone) = check();
    assert_eq!(code, 1, "{gone}");
    assert!(gone.contains("does not exist: pods are not injected"), "{gone}");
}
