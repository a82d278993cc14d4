//! Injected pods run for real in Docker by the test kubelet (`weft_tests::kubelet`): the
//! controller from `weft install`'s Deployment, bar and foo from `weft inject` on
//! `examples/kubernetes/demo.yaml`, each with its pause container, `weft-init` installing the
//! interception, the proxy as a native sidecar gating the app, all from the FROM-scratch images.
//! foo calls bar over mTLS through that interception; the demo's Job calls bar and its pod
//! finishes. Everything under three minutes.
//!
//! There is no API server here, so the controller runs in universal mode (`weft install
//! --discovery mesh-file`) and each pod's identity comes from a join token
//! (`config.weft.io/join-token-secret`, added to the demo here); the test API server tests cover
//! the controller's Kubernetes mode.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use weft_tests::harness::{bin, http_get, metric, TestDir};
use weft_tests::kubelet::Node;

use super::support::{pod_from, repo_root, templates, weft, yaml_docs};

/// Whether this weft-proxy serves `--app-probe` (the proxy side of rewritten probes).
fn proxy_serves_app_probes() -> bool {
    let out = Command::new(bin("weft-proxy")).arg("--help").output().expect("weft-proxy --help");
    String::from_utf8_lossy(&out.stdout).contains("app-probe")
}

/// The demo with each pod template naming its join-token Secret (universal mode's identities).
fn with_join_tokens(demo: &str) -> String {
    let mut out = demo.to_string();
    for (labels, secret) in [
        ("labels: {app: bar, version: v1}", "bar-join-token"),
        ("labels: {app: foo}", "foo-join-token"),
        ("labels: {app: call-bar}", "foo-join-token"),
    ] {
        let with = format!("{labels}\n      annotations:\n        config.weft.io/join-token-secret: {secret}");
        assert!(out.contains(labels), "the demo changed shape: {labels}");
        out = out.replace(labels, &with);
    }
    out
}

fn secret(name: &str, token: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"token": token.trim()}})
}

#[test]
fn injected_pods_in_docker_talk_over_mtls_and_a_job_finishes() {
    let t0 = Instant::now();
    let mut node = Node::start("pods");
    let images_built = t0.elapsed();
    let tag = node.image_tag.clone();
    let dir = TestDir::new("k8s-pods");
    let ca = dir.path().join("ca").display().to_string();
    assert_eq!(weft(&["ca", "init", "--dir", &ca], None).code, 0);
    let images = [format!("--proxy-image=weft:{tag}"), format!("--init-image=weft-init:{tag}")];
    let images: Vec<&str> = images.iter().map(String::as_str).collect();

    // The control plane, from `weft install`: its Deployment's pod, its ConfigMaps and Secret.
    let mesh = repo_root().join("examples/kubernetes/mesh.yaml").display().to_string();
    let controller_image = format!("--controller-image=weft:{tag}");
    let mut install_args = vec![
        "install",
        "--ca-dir",
        &ca,
        "--mesh",
        &mesh,
        &controller_image,
        "--discovery",
        "mesh-file",
        "--replicas",
        "1",
    ];
    install_args.extend(&images);
    let install = weft(&install_args, None);
    assert_eq!(install.code, 0, "{}", install.stderr);
    let install_docs = yaml_docs(&install.stdout);
    node.add_objects(&install_docs);
    let controller = templates(&install_docs).into_iter().next().expect("the controller's Deployment");
    let mut ctl = node.run(&pod_from(&controller), &["weft-controller.weft-system.svc"]);
    let ctl_ready = ctl.wait_ready(&["weft-controller"], Duration::from_secs(60));

    // The webhook the install configured answers there, for the name in its configuration.
    let ca_pem = std::fs::read(dir.path().join("ca/ca.crt")).unwrap();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"weft.io/inject": "enabled"}},
                     "spec": {"containers": [{"name": "a", "image": "x"}]}});
    let review =
        serde_json::to_vec(&weft_tests::webhook_client::pod_create_review("in-docker", "default", &pod)).unwrap();
    let addr = format!("{}:8443", ctl.ip).parse().unwrap();
    let answer = weft_tests::webhook_client::post(addr, "weft-controller.weft-system.svc", &ca_pem, "10s", &review)
        .expect("the webhook in the controller's pod");
    assert!(answer.allowed() && answer.patch().is_some() && answer.uid() == "in-docker", "{}", answer.raw);

    // Join tokens (universal mode's identities), then the demo, injected.
    let mut secrets = Vec::new();
    for svc in ["foo", "bar"] {
        let token = weft(&["ca", "token", "--dir", &ca, "--service", svc], None);
        secrets.push(secret(&format!("{svc}-join-token"), &token.stdout));
    }
    node.add_objects(&secrets);
    let demo_yaml =
        with_join_tokens(&std::fs::read_to_string(repo_root().join("examples/kubernetes/demo.yaml")).unwrap());
    let mut inject_args = vec!["inject", "--ca-dir", &ca, "-"];
    inject_args.extend(&images);
    let injected = weft(&inject_args, Some(&demo_yaml));
    assert_eq!(injected.code, 0, "{}", injected.stderr);
    let demo = templates(&yaml_docs(&injected.stdout.replace("image: weft:playground", &format!("image: weft:{tag}"))));
    let find = |name: &str| pod_from(demo.iter().find(|t| t.object.ends_with(&format!("/{name}"))).expect(name));

    // bar: strict mTLS, its kubelet probe rewritten to the proxy's admin port.
    let app_probes = proxy_serves_app_probes();
    let mut bar = node.run(&find("bar"), &["bar"]);
    let ready_names: &[&str] = if app_probes { &["weft-proxy", "bar"] } else { &["weft-proxy"] };
    let bar_ready = bar.wait_ready(ready_names, Duration::from_secs(60));
    if !app_probes {
        println!(
            "note: this weft-proxy has no --app-probe yet, so bar's rewritten readiness probe ({:?}) is not asserted",
            bar.ready("bar").err()
        );
    }
    assert!(bar.live("weft-proxy").is_ok());
    // What the runner derived from the spec is what Docker ran.
    let proxy = bar.inspect(
        "weft-proxy",
        "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}}",
    );
    assert_eq!(proxy, "2102:2102 true [ALL] []", "the proxy container");
    let init = bar.inspect("weft-init", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}} {{.State.ExitCode}}");
    assert_eq!(init, "0:0 true [ALL] [CAP_NET_ADMIN CAP_NET_RAW] 0", "the init container");
    let mut foo = node.run(&find("foo"), &["foo"]);
    let foo_ready = foo.wait_ready(&["weft-proxy", "foo"], Duration::from_secs(60));

    // A client outside the mesh calls foo (permissive); foo's app calls bar by name: its proxy
    // caught the connection (the init container's rules) and carried it over mTLS.
    let requests = 20;
    let started = Instant::now();
    for i in 0..requests {
        let (status, body) =
            http_get(&format!("http://{}:8080/", foo.ip)).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(status, 200, "request {i}: {body}");
        assert!(body.contains("\"bar\"") || body.contains("bar"), "foo's answer holds bar's: {body}");
    }
    let took = started.elapsed();
    let bar_metrics = http_get(&format!("http://{}:4191/metrics", bar.ip)).unwrap().1;
    let over_mtls = metric(
        &bar_metrics,
        "weft_requests_total",
        &[("direction", "inbound"), ("tls", "true"), ("client_id", "spiffe://weft.local/ns/default/sa/foo")],
    );
    assert!(over_mtls >= requests as f64, "bar's proxy saw {over_mtls} mTLS requests from foo\n{bar_metrics}");
    assert_eq!(metric(&bar_metrics, "weft_requests_total", &[("direction", "inbound"), ("tls", "false")]), 0.0);
    // bar is strict: a plaintext client outside the mesh does not get through to the app.
    let direct = http_get(&format!("http://{}:8080/", bar.ip));
    assert!(!matches!(direct, Ok((200, _))), "a plaintext call reached bar under mtls: strict: {direct:?}");

    // The Job: its app waits for the proxy (native sidecar), calls bar, exits; the kubelet then
    // stops the proxy and the pod has finished.
    let mut job = node.run(&find("call-bar"), &[]);
    let done = job.wait_completion(Duration::from_secs(60));
    assert!(done.succeeded, "the Job's pod failed: {done:?}\n{}", job.logs("call-bar"));

    // The same Job with a classic sidecar (clusters before 1.29): the proxy first among the
    // containers, its postStart hook holding the app back until it is ready, and the app's
    // command wrapped in `weft-proxy await --shutdown` (the demo image has weft-proxy) so that
    // the proxy exits with it.
    let classic_input = demo_yaml.replace(
        "config.weft.io/join-token-secret: foo-join-token\n    spec:\n      serviceAccountName: foo\n      automountServiceAccountToken: false\n      restartPolicy: Never",
        "config.weft.io/join-token-secret: foo-join-token\n        config.weft.io/native-sidecar: \"false\"\n        \
         config.weft.io/await-binary: /usr/local/bin/weft-proxy\n    spec:\n      serviceAccountName: foo\n      \
         automountServiceAccountToken: false\n      restartPolicy: Never",
    );
    assert!(classic_input.contains("native-sidecar"), "the demo's Job changed shape");
    let mut classic_args = vec!["inject", "--ca-dir", &ca, "-"];
    classic_args.extend(&images);
    let classic = weft(&classic_args, Some(&classic_input));
    assert_eq!(classic.code, 0, "{}", classic.stderr);
    let classic =
        templates(&yaml_docs(&classic.stdout.replace("image: weft:playground", &format!("image: weft:{tag}"))));
    let classic_job = pod_from(classic.iter().find(|t| t.object == "job/call-bar").unwrap());
    assert_eq!(classic_job["spec"]["containers"][0]["name"], "weft-proxy", "a classic sidecar comes first");
    let mut old = node.run(&classic_job, &[]);
    let classic_done = old.wait_completion(Duration::from_secs(60));
    assert!(classic_done.succeeded, "the classic Job's pod failed: {classic_done:?}\n{}", old.logs("call-bar"));

    println!("Docker pod test (images built in {images_built:.1?}):");
    println!("  controller pod ready in {ctl_ready:.2?} (from `weft install`)");
    println!("  bar ready in {bar_ready:.2?}, foo ready in {foo_ready:.2?} (pod start → proxy startup probe passed → app running{})",
        if app_probes { " and ready" } else { "" });
    println!("  {requests} requests client → foo → bar in {took:.2?}, {over_mtls} over mTLS at bar's proxy (client_id foo), 0 in plaintext");
    println!(
        "  Job (native sidecar): app exited {:?} at {:.2?}, pod finished at {:.2?}",
        done.exit_codes, done.apps_done, done.finished
    );
    println!(
        "  Job (classic sidecar): containers exited {:?}, pod finished at {:.2?}",
        classic_done.exit_codes, classic_done.finished
    );
    for p in [&ctl, &bar, &foo, &job, &old] {
        p.print_timeline();
    }
    drop((old, job, foo, bar, ctl));
    let total = t0.elapsed();
    println!("  total {total:.1?}");
    assert!(total < Duration::from_secs(180), "the Docker pod test took {total:?} (budget: 3 minutes)");
}
