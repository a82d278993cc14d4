//! A real cluster (kind, k3d or any kubeconfig), only when `WEFT_TEST_KUBECONFIG` names one: CI
//! has no cluster and does not run it (the README says so). The images must be where the
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

    // The namespace (injection on) and bar's Service first: until Kubernetes part 2 reads
    // Services, the mesh file names bar's ClusterIP so that foo's proxy recognises calls to it.
    let ns = format!("weft-e2e-{}", std::process::id());
    ok(&kubeconfig, &["create", "namespace", &ns], None);
    let mut cleanup = Cleanup { kubeconfig: kubeconfig.clone(), ns: ns.clone(), install: String::new() };
    ok(&kubeconfig, &["annotate", "namespace", &ns, "weft.io/inject=enabled"], None);
    ok(&kubeconfig, &["-n", &ns, "create", "service", "clusterip", "bar", "--tcp=8080:8080"], None);
    let vip = ok(&kubeconfig, &["-n", &ns, "get", "service", "bar", "-o", "jsonpath={.spec.clusterIP}"], None);
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!(
            "trust_domain: weft.local\nservices:\n  {ns}/foo: {{protocol: http}}\n  {ns}/bar:\n    protocol: http\n    \
             vip: {vip}\n    ports: [{{port: 8080, target_port: 8080}}]\n    mtls: strict\n    allow: [foo]\n"
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

    for svc in ["foo", "bar"] {
        let token = weft(&["ca", "token", "--dir", &ca, "--service", svc, "--namespace", &ns], None).stdout;
        let literal = format!("--from-literal=token={}", token.trim());
        ok(&kubeconfig, &["-n", &ns, "create", "secret", "generic", &format!("{svc}-join-token"), &literal], None);
    }
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
    drop(cleanup);
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
