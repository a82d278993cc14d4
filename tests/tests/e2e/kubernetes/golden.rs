//! The injector through both doors against the golden files: `weft inject` prints exactly the
//! golden output (and report), and the controller's webhook, given each pod the golden inputs
//! describe, answers with a JSON patch that turns it into exactly the golden's pod. Also: a
//! golden output injected again is byte-identical, and `weft uninject` gives the input back.

use std::collections::BTreeSet;
use std::time::Duration;

use weft_tests::harness::{free_port, Mesh};
use weft_tests::kube_api::{NamespaceAnswer, TestApiServer};
use weft_tests::webhook_client;

use super::support::{golden_dir, golden_inputs, pod_from, stem, templates, weft, yaml_docs};

fn updating() -> bool {
    std::env::var_os("WEFT_UPDATE_GOLDEN").is_some()
}

fn anchor() -> String {
    golden_dir().join("trust-anchor.pem").display().to_string()
}

/// What `weft inject` reports, as the golden `.stderr` file holds it.
fn report(run: &super::support::Run) -> String {
    format!("{}exit status: {}\n", run.stderr, run.code)
}

#[test]
fn golden_files_through_the_command_line() {
    let out_dir = golden_dir().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut stale = Vec::new();
    let mut expected_files = BTreeSet::new();
    for input in golden_inputs() {
        let name = stem(&input);
        let run = weft(&["inject", "--trust-anchor", &anchor(), &input.display().to_string()], None);
        let (yaml_file, report_file) = (out_dir.join(format!("{name}.yaml")), out_dir.join(format!("{name}.stderr")));
        expected_files.insert(format!("{name}.yaml"));
        expected_files.insert(format!("{name}.stderr"));
        for (file, actual) in [(&yaml_file, run.stdout.clone()), (&report_file, report(&run))] {
            if updating() {
                std::fs::write(file, &actual).unwrap();
            } else if std::fs::read_to_string(file).ok().as_deref() != Some(actual.as_str()) {
                stale.push(file.display().to_string());
            }
        }
        assert!(run.code == 0 || name == "invalid-annotation", "{name}: exit {}\n{}", run.code, run.stderr);

        // Running it on its own output changes nothing, byte for byte.
        let again = weft(&["inject", "--trust-anchor", &anchor(), "-"], Some(&run.stdout));
        assert_eq!(again.stdout, run.stdout, "{name}: injecting the output again changed it");

        // Uninject gives back the input (as data: comments inside rewritten documents are gone) —
        // except for a pod injected by someone else, whose sidecar it removes.
        let un = weft(&["uninject", "-"], Some(&run.stdout));
        assert_eq!(un.code, 0, "{name}: uninject: {}", un.stderr);
        let original = std::fs::read_to_string(&input).unwrap();
        if name != "already-injected" {
            assert_eq!(yaml_docs(&un.stdout), yaml_docs(&original), "{name}: uninject did not restore the input");
        }
    }
    let mut orphans: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| !expected_files.contains(f))
        .collect();
    orphans.sort();
    assert!(orphans.is_empty(), "golden outputs without an input: {orphans:?}");
    assert!(
        stale.is_empty(),
        "stale golden files (review the change, then regenerate with WEFT_UPDATE_GOLDEN=1):\n  {}",
        stale.join("\n  ")
    );
}

/// A controller serving the webhook, reading namespaces from a test API server in which every
/// namespace the goldens use is annotated `weft.io/inject: enabled` (the command line's opt-in).
pub struct WebhookUnderTest {
    pub mesh: Mesh,
    _api_dir: weft_tests::harness::TestDir,
    pub api: TestApiServer,
    pub addr: std::net::SocketAddr,
    pub ca_pem: Vec<u8>,
}

impl WebhookUnderTest {
    pub fn start(name: &str, extra: &[&str]) -> Self {
        // The controller's own CA serves the webhook; the test API server uses another one.
        let api_dir = weft_tests::harness::TestDir::new(&format!("{name}-api"));
        let api_ca = api_dir.path().join("ca");
        assert_eq!(weft(&["ca", "init", "--dir", &api_ca.display().to_string()], None).code, 0);
        let api = TestApiServer::start(&api_ca, api_dir.path());
        let port = free_port();
        let mut args = vec![
            "--webhook-addr".to_string(),
            format!("127.0.0.1:{port}"),
            "--webhook-dns-names".into(),
            "weft-controller.weft-system.svc,127.0.0.1".into(),
            "--kubeconfig".into(),
            api.kubeconfig.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mesh = Mesh::start_with(name, "trust_domain: weft.local\n", &args);
        let ca_pem = std::fs::read(mesh.ca_dir.join("ca.crt")).unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let w = Self { mesh, _api_dir: api_dir, api, addr, ca_pem };
        weft_tests::harness::eventually("the webhook listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(w.addr).is_ok()
        });
        w
    }

    pub fn review(&self, uid: &str, namespace: &str, pod: &serde_json::Value) -> webhook_client::WebhookAnswer {
        let review = webhook_client::pod_create_review(uid, namespace, pod);
        assert_eq!(&review["request"]["object"], pod, "the typed AdmissionReview kept the pod as it was");
        let body = serde_json::to_vec(&review).unwrap();
        webhook_client::post(self.addr, "weft-controller.weft-system.svc", &self.ca_pem, "10s", &body)
            .unwrap_or_else(|e| panic!("webhook: {e}"))
    }
}

fn enabled() -> NamespaceAnswer {
    NamespaceAnswer::Annotations(vec![("weft.io/inject".into(), "enabled".into())])
}

/// The messages of `weft inject`'s `warning:` and `error:` lines.
fn command_line_warnings(report: &str) -> BTreeSet<String> {
    report
        .lines()
        .filter_map(|l| l.split_once(": warning: ").or_else(|| l.split_once(": error: ")))
        .map(|(_, m)| m.to_string())
        .collect()
}

#[test]
fn golden_files_through_the_webhook() {
    let anchor_arg = anchor();
    let w = WebhookUnderTest::start("golden-webhook", &["--webhook-trust-anchor", &anchor_arg]);
    for ns in ["default", "demo", "shop", "observability", "kube-system", "weft-system"] {
        w.api.set_namespace(ns, enabled());
    }
    let mut pods = 0;
    for input in golden_inputs() {
        let name = stem(&input);
        let before = templates(&yaml_docs(&std::fs::read_to_string(&input).unwrap()));
        let golden = std::fs::read_to_string(golden_dir().join("out").join(format!("{name}.yaml"))).unwrap();
        let after = templates(&yaml_docs(&golden));
        assert_eq!(before.len(), after.len(), "{name}: templates in input and golden");
        let mut webhook_warnings = BTreeSet::new();
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            let uid = format!("{name}-{i}-0f2c");
            let mut pod = pod_from(b);
            let answer = w.review(&uid, &b.namespace, &pod);
            assert_eq!(answer.status, 200, "{name}: {}", answer.raw);
            assert_eq!(answer.uid(), uid, "{name}: the uid is echoed");
            assert!(answer.allowed(), "{name}: never a denial: {}", answer.raw);
            if let Some(patch) = answer.patch() {
                json_patch::patch(&mut pod, &patch).unwrap_or_else(|e| panic!("{name}: the patch does not apply: {e}"));
            }
            assert_eq!(
                pod,
                pod_from(a),
                "{name} {}: the webhook's patch applied to the pod differs from the golden",
                b.object
            );
            // The patched pod is a Pod (the API's own types read it).
            let _: k8s_openapi::api::core::v1::Pod =
                serde_json::from_value(pod).unwrap_or_else(|e| panic!("{name}: not a Pod: {e}"));
            for warning in answer.warnings() {
                let m = warning.strip_prefix("weft: ").unwrap_or(&warning);
                webhook_warnings.insert(m.strip_prefix("not injected: ").unwrap_or(m).to_string());
            }
            pods += 1;
        }
        let report = std::fs::read_to_string(golden_dir().join("out").join(format!("{name}.stderr"))).unwrap();
        for m in command_line_warnings(&report) {
            assert!(
                webhook_warnings.contains(&m),
                "{name}: the webhook did not warn {m:?} (it said {webhook_warnings:?})"
            );
        }
    }
    assert!(pods >= 20, "{pods} pods reviewed");
}
