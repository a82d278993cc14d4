//! A real cluster (kind, k3d or any kubeconfig), only when `WEFT_TEST_KUBECONFIG` names one: CI
//! has no cluster and does not run it (the README says so). Install (two `--kubernetes` replicas),
//! injection, identities from service-account tokens, foo → bar over mTLS through bar's Service,
//! the Job, bar scaled to two pods, a controller pod deleted. The images must be where the
//! cluster's nodes can pull or find them (`WEFT_TEST_IMAGE_TAG`, default `playground`; e.g.
//! `kind load docker-image weft:playground weft-init:playground`), and `kubectl` on the PATH.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_tests::harness::TestDir;

use super::support::weft;

fn kubectl(kubeconfig: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on the PATH");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn ok(kubeconfig: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (success, out) = kubectl(kubeconfig, args, stdin);
    assert!(success, "kubectl {args:?}: {out}");
    out
}

#[test]
fn real_cluster_install_inject_and_mtls() {
    let Some(kubeconfig) = std::env::var_os("WEFT_TEST_KUBECONFIG").map(|k| k.to_string_lossy().into_owned()) else {
        println!("skipped: WEFT_TEST_KUBECONFIG is not set (a real cluster is needed; CI has none)");
        return;
    };
    let tag = std::env::var("WEFT_TEST_IMAGE_TAG").unwrap_or_else(|_| "playground".into());
    let dir = TestDir::new("cluster");
    let ca = dir.path().join("ca").display().to_string();
    assert_eq!(weft(&["ca", "init", "--dir", &ca], None).code, 0);

    // The namespace, injection on. Services and endpoints come from the API: the mesh file only
    // holds bar's policy.
    let ns = format!("weft-e2e-{}", std::process::id());
    ok(&kubeconfig, &["create", "namespace", &ns], None);
    let mut cleanup = Cleanup { kubeconfig: kubeconfig.clone(), ns: ns.clone(), install: String::new() };
    ok(&kubeconfig, &["annotate", "namespace", &ns, "weft.io/inject=enabled"], None);
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!(
            "trust_domain: weft.local\nservices:\n  {ns}/foo: {{protocol: http}}\n  {ns}/bar:\n    protocol: http\n    \
             mtls: strict\n    allow: [foo]\n"
        ),
    )
    .unwrap();

    let mesh_arg = mesh.display().to_string();
    let flags = [
        format!("--controller-image=weft:{tag}"),
        format!("--proxy-image=weft:{tag}"),
        format!("--init-image=weft-init:{tag}"),
    ];
    let mut install_args = vec!["install", "--ca-dir", &ca, "--mesh", &mesh_arg];
    install_args.extend(flags.iter().map(String::as_str));
    let install = weft(&install_args, None);
    assert_eq!(install.code, 0, "{}", install.stderr);
    cleanup.install = install.stdout.clone();
    ok(&kubeconfig, &["apply", "-f", "-"], Some(&install.stdout));
    ok(&kubeconfig, &["-n", "weft-system", "rollout", "status", "deployment/weft-controller", "--timeout=120s"], None);

    let ready = ok(
        &kubeconfig,
        &["-n", "weft-system", "get", "deployment", "weft-controller", "-o", "jsonpath={.status.readyReplicas}"],
        None,
    );
    assert_eq!(ready.trim(), "2", "two controller replicas by default");

    let demo = std::fs::read_to_string(super::support::repo_root().join("examples/kubernetes/demo.yaml"))
        .unwrap()
        .replace("weft:playground", &format!("weft:{tag}"));
    ok(&kubeconfig, &["-n", &ns, "apply", "-f", "-"], Some(&demo));
    for d in ["foo", "bar"] {
        ok(&kubeconfig, &["-n", &ns, "rollout", "status", &format!("deployment/{d}"), "--timeout=180s"], None);
    }
    // The webhook injected them.
    let bar_pod = pod_name(&kubeconfig, &ns, "bar");
    let inits =
        ok(&kubeconfig, &["-n", &ns, "get", "pod", &bar_pod, "-o", "jsonpath={.spec.initContainers[*].name}"], None);
    assert!(inits.contains("weft-init") && inits.contains("weft-proxy"), "{inits}");
    // foo's app calls bar (through the Service) over mTLS: bar's proxy counts it.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, answer) = kubectl(
            &kubeconfig,
            &[
                "-n",
                &ns,
                "exec",
                "deploy/foo",
                "-c",
                "weft-proxy",
                "--",
                "weft-proxy",
                "probe",
                "http://127.0.0.1:8080/",
            ],
            None,
        );
        let path = format!("/api/v1/namespaces/{ns}/pods/{bar_pod}:4191/proxy/metrics");
        let metrics = kubectl(&kubeconfig, &["get", "--raw", &path], None).1;
        if metrics
            .lines()
            .any(|l| l.starts_with("weft_requests_total") && l.contains("tls=\"true\"") && l.contains("/sa/foo"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no mTLS request from foo at bar: {answer}\n{metrics}");
        std::thread::sleep(Duration::from_secs(2));
    }
    // The Job finishes.
    ok(&kubeconfig, &["-n", &ns, "wait", "--for=condition=complete", "job/call-bar", "--timeout=120s"], None);

    // bar scaled to two pods: the second reaches foo's proxy from the EndpointSlice, and both get
    // foo's calls over mTLS.
    ok(&kubeconfig, &["-n", &ns, "scale", "deployment/bar", "--replicas=2"], None);
    ok(&kubeconfig, &["-n", &ns, "rollout", "status", "deployment/bar", "--timeout=180s"], None);
    let bars =
        ok(&kubeconfig, &["-n", &ns, "get", "pods", "-l", "app=bar", "-o", "jsonpath={.items[*].metadata.name}"], None);
    let bars: Vec<&str> = bars.split_whitespace().collect();
    assert_eq!(bars.len(), 2, "{bars:?}");
    let from_foo = |pod: &str| {
        let path = format!("/api/v1/namespaces/{ns}/pods/{pod}:4191/proxy/metrics");
        let metrics = kubectl(&kubeconfig, &["get", "--raw", &path], None).1;
        metrics
            .lines()
            .filter(|l| l.starts_with("weft_requests_total") && l.contains("tls=\"true\"") && l.contains("/sa/foo"))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum::<f64>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while bars.iter().any(|b| from_foo(b) == 0.0) {
        assert!(Instant::now() < deadline, "both bar pods never got foo's calls");
        call_foo(&kubeconfig, &ns);
    }

    // A controller pod goes: the proxies move to the other replica and foo → bar keeps working.
    let ctl = ok(
        &kubeconfig,
        &[
            "-n",
            "weft-system",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=weft-controller",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    );
    ok(&kubeconfig, &["-n", "weft-system", "delete", "pod", ctl.trim(), "--wait=false"], None);
    for i in 0..20 {
        assert!(call_foo(&kubeconfig, &ns), "foo → bar failed after a controller pod was deleted (call {i})");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(cleanup);
}

/// One call into foo's app (which calls bar); true if it answered 2xx.
fn call_foo(kubeconfig: &str, ns: &str) -> bool {
    kubectl(
        kubeconfig,
        &["-n", ns, "exec", "deploy/foo", "-c", "weft-proxy", "--", "weft-proxy", "probe", "http://127.0.0.1:8080/"],
        None,
    )
    .0
}

fn pod_name(kubeconfig: &str, ns: &str, app: &str) -> String {
    ok(
        kubeconfig,
        &["-n", ns, "get", "pods", "-l", &format!("app={app}"), "-o", "jsonpath={.items[0].metadata.name}"],
        None,
    )
}

/// Deletes the test namespace and the control plane, also when the test fails.
struct Cleanup {
    kubeconfig: String,
    ns: String,
    install: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = kubectl(&self.kubeconfig, &["delete", "namespace", &self.ns, "--wait=false"], None);
        let _ = kubectl(&self.kubeconfig, &["delete", "-f", "-", "--ignore-not-found"], Some(&self.install));
    }
}
