//! The webhook over HTTPS on loopback, as the API server calls it: real AdmissionReview
//! documents, namespace annotations read through a real kubeconfig from the test API server
//! (cached), a failing or slow API server, and requests it must leave alone — never a denial.

use std::time::Duration;

use serde_json::json;
use weft_tests::kube_api::NamespaceAnswer;

use super::golden::WebhookUnderTest;

fn pod(annotations: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-7d4b9-", "labels": {"app": "web"}, "annotations": annotations},
        "spec": {
            "serviceAccountName": "web",
            "containers": [{"name": "web", "image": "example/web:1", "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}}}]
        }
    })
}

fn ann(pairs: &[(&str, &str)]) -> NamespaceAnswer {
    NamespaceAnswer::Annotations(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// The injected pod, or None when the webhook sent no patch.
fn patched(
    answer: &weft_tests::webhook_client::WebhookAnswer,
    mut pod: serde_json::Value,
) -> Option<serde_json::Value> {
    let patch = answer.patch()?;
    json_patch::patch(&mut pod, &patch).expect("the patch applies");
    Some(pod)
}

fn proxy_env(pod: &serde_json::Value, name: &str) -> Option<String> {
    let proxy = pod["spec"]["initContainers"].as_array()?.iter().find(|c| c["name"] == "weft-proxy")?;
    proxy["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str().map(String::from)
}

#[test]
fn test_api_server_namespace_annotations_decide_and_are_cached() {
    let w = WebhookUnderTest::start("webhook-ns", &[]);
    w.api.set_namespace("shop", ann(&[("weft.io/inject", "enabled"), ("config.weft.io/proxy-log-level", "debug")]));
    w.api.set_namespace("plain", ann(&[]));
    w.api.set_namespace("off", ann(&[("weft.io/inject", "disabled")]));

    // An enabled namespace: injected, with the namespace's override; three pods, one read.
    for i in 0..3 {
        let p = pod(json!({}));
        let a = w.review(&format!("uid-shop-{i}"), "shop", &p);
        assert_eq!((a.status, a.uid(), a.allowed()), (200, format!("uid-shop-{i}").as_str(), true), "{}", a.raw);
        let injected = patched(&a, p).expect("injected");
        assert_eq!(proxy_env(&injected, "WEFT_PROXY_LOG_LEVEL").as_deref(), Some("debug"));
        assert_eq!(proxy_env(&injected, "WEFT_PROXY_APP_PROBES").as_deref(), Some("http:8080/healthz"));
        assert!(a.warnings().is_empty(), "{:?}", a.warnings());
        let _: k8s_openapi::api::core::v1::Pod = serde_json::from_value(injected).expect("a Pod");
    }
    assert_eq!(w.api.reads("shop"), 1, "namespace reads are cached");

    // No annotation anywhere: admitted as is, quietly (the webhook sees every namespace).
    let a = w.review("uid-plain", "plain", &pod(json!({})));
    assert!(a.allowed() && a.patch().is_none() && a.warnings().is_empty(), "{}", a.raw);
    // The pod wins over its namespace, both ways.
    let a = w.review("uid-plain-on", "plain", &pod(json!({"weft.io/inject": "enabled"})));
    assert!(a.patch().is_some(), "{}", a.raw);
    let a = w.review("uid-off-pod-on", "off", &pod(json!({"weft.io/inject": "enabled"})));
    assert!(a.patch().is_some(), "{}", a.raw);
    let a = w.review("uid-shop-pod-off", "shop", &pod(json!({"weft.io/inject": "disabled"})));
    assert!(a.patch().is_none(), "{}", a.raw);
    // A namespace the API does not know: treated as unannotated.
    let a = w.review("uid-ghost", "ghost", &pod(json!({})));
    assert!(a.allowed() && a.patch().is_none(), "{}", a.raw);
    // The controller logged each decision.
    let logs = w.mesh.controller.as_ref().unwrap().logs();
    assert!(logs.contains("pod shop/web-7d4b9-*: injected"), "{logs}");
}

#[test]
fn test_api_server_failures_never_deny_a_pod() {
    let w = WebhookUnderTest::start("webhook-fail", &[]);
    w.api.set_namespace("broken", NamespaceAnswer::Fail);
    w.api.set_namespace("shop", ann(&[("weft.io/inject", "enabled")]));

    // The namespace cannot be read: a pod without its own annotation is admitted unchanged with
    // a warning that says why; a pod annotated enabled is injected, with a warning too.
    let a = w.review("uid-1", "broken", &pod(json!({})));
    assert!(a.allowed() && a.patch().is_none(), "{}", a.raw);
    assert!(a.warnings().iter().any(|w| w.contains("could not be read") && w.contains("500")), "{:?}", a.warnings());
    let a = w.review("uid-2", "broken", &pod(json!({"weft.io/inject": "enabled"})));
    assert!(a.allowed() && a.patch().is_some(), "{}", a.raw);
    assert!(a.warnings().iter().any(|w| w.contains("unreadable")), "{:?}", a.warnings());

    // Pods the injector cannot handle: admitted unchanged, each with its reason.
    let mut bad = pod(json!({"config.weft.io/proxy-memory-limit": "lots"}));
    let a = w.review("uid-3", "shop", &bad);
    assert!(a.allowed() && a.patch().is_none(), "{}", a.raw);
    assert!(a.warnings().iter().any(|w| w.contains("proxy-memory-limit")), "{:?}", a.warnings());
    bad = pod(json!({}));
    bad["spec"]["hostNetwork"] = json!(true);
    let a = w.review("uid-4", "shop", &bad);
    assert!(a.allowed() && a.patch().is_none(), "{}", a.raw);
    assert!(a.warnings().iter().any(|w| w.contains("hostNetwork")), "{:?}", a.warnings());
    bad = pod(json!({}));
    bad["spec"]["containers"] = json!("not a list");
    let body =
        serde_json::to_vec(&weft_tests::webhook_client::untyped_pod_create_review("uid-5", "shop", &bad)).unwrap();
    let a =
        weft_tests::webhook_client::post(w.addr, "weft-controller.weft-system.svc", &w.ca_pem, "10s", &body).unwrap();
    assert!(a.allowed() && a.patch().is_none() && !a.warnings().is_empty(), "{}", a.raw);

    // Not a pod creation: left alone.
    let mut update = weft_tests::webhook_client::pod_create_review("uid-6", "shop", &pod(json!({})));
    update["request"]["operation"] = json!("UPDATE");
    let body = serde_json::to_vec(&update).unwrap();
    let a =
        weft_tests::webhook_client::post(w.addr, "weft-controller.weft-system.svc", &w.ca_pem, "10s", &body).unwrap();
    assert!(a.allowed() && a.patch().is_none() && a.uid() == "uid-6", "{}", a.raw);

    // Not an AdmissionReview: a 400, which the API server treats by the failure policy (Ignore).
    let a =
        weft_tests::webhook_client::post(w.addr, "weft-controller.weft-system.svc", &w.ca_pem, "10s", b"{\"nope\": 1}")
            .unwrap();
    assert_eq!(a.status, 400, "{}", a.raw);
}

#[test]
fn test_api_server_too_slow_the_webhook_answers_in_time() {
    let w = WebhookUnderTest::start("webhook-slow", &["--webhook-api-timeout", "1s"]);
    w.api.set_namespace(
        "slow",
        NamespaceAnswer::Slow(Duration::from_secs(8), vec![("weft.io/inject".into(), "enabled".into())]),
    );

    // The API server would wait 10 s; the webhook gives the namespace read 1 s and answers.
    let a = w.review("uid-slow", "slow", &pod(json!({})));
    assert!(a.allowed() && a.patch().is_none(), "{}", a.raw);
    assert!(a.warnings().iter().any(|w| w.contains("within 1s")), "{:?}", a.warnings());
    assert!(a.elapsed < Duration::from_millis(2500), "answered after {:?}", a.elapsed);

    // A shorter API-server timeout in the URL halves into the budget: 1 s → 500 ms.
    let body = serde_json::to_vec(&weft_tests::webhook_client::pod_create_review("uid-fast", "slow", &pod(json!({}))))
        .unwrap();
    let a =
        weft_tests::webhook_client::post(w.addr, "weft-controller.weft-system.svc", &w.ca_pem, "1s", &body).unwrap();
    assert!(a.allowed(), "{}", a.raw);
    assert!(a.elapsed < Duration::from_millis(1000), "answered after {:?} with a 1 s API-server timeout", a.elapsed);
    println!("webhook with an 8 s namespace read: answered in {:?} (api timeout 1s, API-server timeout 1s)", a.elapsed);
}

#[test]
fn the_serving_certificate_names_the_service_and_chains_to_the_ca() {
    let w = WebhookUnderTest::start("webhook-tls", &[]);
    let body = serde_json::to_vec(&weft_tests::webhook_client::pod_create_review("u", "x", &pod(json!({})))).unwrap();
    // The name the API server uses, and the IP the test added: both verify against the CA.
    for name in ["weft-controller.weft-system.svc", "127.0.0.1"] {
        let a = weft_tests::webhook_client::post(w.addr, name, &w.ca_pem, "10s", &body);
        assert!(a.is_ok(), "{name}: {:?}", a.err());
    }
    // Another name does not.
    let a = weft_tests::webhook_client::post(w.addr, "evil.example", &w.ca_pem, "10s", &body);
    assert!(a.is_err(), "a certificate for another name was accepted");
}
