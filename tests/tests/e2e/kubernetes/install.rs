//! `weft install`: byte-stable with `--ca-dir`, a generated CA said so on stderr, every setting
//! listed in `--help`, and the objects the issue asks for.

use weft_tests::harness::TestDir;

use super::support::{weft, yaml_docs};

#[test]
fn install_is_byte_stable_and_complete() {
    let dir = TestDir::new("install");
    let ca = dir.path().join("ca").display().to_string();
    assert_eq!(weft(&["ca", "init", "--dir", &ca, "--trust-domain", "prod.example"], None).code, 0);
    let a = weft(&["install", "--ca-dir", &ca], None);
    let b = weft(&["install", "--ca-dir", &ca], None);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert_eq!(a.stdout, b.stdout, "the same CA and settings render the same bytes");
    assert!(a.stderr.is_empty(), "nothing to say with --ca-dir: {}", a.stderr);

    let docs = yaml_docs(&a.stdout);
    let kinds: Vec<String> = docs
        .iter()
        .map(|d| format!("{}/{}", d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            "CustomResourceDefinition/trafficsplits.split.smi-spec.io",
            "CustomResourceDefinition/traffictargets.access.smi-spec.io",
            "CustomResourceDefinition/httproutegroups.specs.smi-spec.io",
            "Namespace/weft-system",
            "ServiceAccount/weft-controller",
            "ClusterRole/weft-controller",
            "ClusterRoleBinding/weft-controller",
            "Role/weft-controller",
            "RoleBinding/weft-controller",
            "Secret/weft-ca",
            "ConfigMap/weft-trust-anchor",
            "ConfigMap/weft-injector",
            "ConfigMap/weft-mesh",
            "Service/weft-controller",
            "Deployment/weft-controller",
            "PodDisruptionBudget/weft-controller",
            "MutatingWebhookConfiguration/weft-proxy-injector",
        ]
    );
    let find = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap();
    // Where another install owns the SMI CRDs, they can be left out.
    let without = weft(&["install", "--ca-dir", &ca, "--smi-crds", "false"], None);
    assert_eq!(without.code, 0, "{}", without.stderr);
    assert_eq!(yaml_docs(&without.stdout).len(), docs.len() - 3);
    assert!(!without.stdout.contains("CustomResourceDefinition"));
    // The least RBAC: reading namespaces (the webhook); watching Services, EndpointSlices and
    // Pods, reading a pod, reviewing tokens, watching TrafficSplits, TrafficTargets,
    // HTTPRouteGroups and HTTPRoutes (Kubernetes mode); nothing else.
    assert_eq!(
        find("ClusterRole")["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["split.smi-spec.io"], "resources": ["trafficsplits"], "verbs": ["list", "watch"]},
            {"apiGroups": ["access.smi-spec.io"], "resources": ["traffictargets"], "verbs": ["list", "watch"]},
            {"apiGroups": ["specs.smi-spec.io"], "resources": ["httproutegroups"], "verbs": ["list", "watch"]},
            {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}
        ])
    );
    // The mesh file's ConfigMap is watched through a Role in weft-system: no other namespace's.
    let role = docs.iter().find(|d| d["kind"] == "Role").unwrap();
    assert_eq!(role["metadata"]["namespace"], "weft-system");
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch"]}])
    );
    assert!(find("ConfigMap")["data"]["ca.crt"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    let mesh = &docs.iter().find(|d| d["metadata"]["name"] == "weft-mesh").unwrap()["data"]["mesh.yaml"];
    assert!(mesh.as_str().unwrap().contains("trust_domain: prod.example"), "{mesh}");
    let hook = &find("MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(
        hook["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["kube-system", "weft-system"])
    );
    assert_eq!(hook["namespaceSelector"]["matchExpressions"][1]["key"], "weft.io/admission-webhooks");
    assert_eq!(hook["sideEffects"], "None");
    assert!(hook["timeoutSeconds"].as_i64().unwrap() <= 10);
    assert!(!hook["clientConfig"]["caBundle"].as_str().unwrap().is_empty());
    let deploy = find("Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2, "two replicas by default: they share no state");
    let args = deploy["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap();
    assert!(args.iter().any(|a| a == "--kubernetes"), "{args:?}");
    // Universal mode in a cluster: no API reads, and a warning about replicas.
    let universal = weft(&["install", "--ca-dir", &ca, "--discovery", "mesh-file"], None);
    assert_eq!(universal.code, 0, "{}", universal.stderr);
    assert!(!universal.stdout.contains("--kubernetes") && !universal.stdout.contains("tokenreviews"));
    assert!(universal.stderr.contains("do not share registrations"), "{}", universal.stderr);
    let sc = &deploy["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));

    // Without --ca-dir: a new CA, and stderr says so.
    let fresh = weft(&["install"], None);
    assert_eq!(fresh.code, 0);
    assert!(fresh.stderr.contains("generated a new CA"), "{}", fresh.stderr);
    assert_ne!(fresh.stdout, a.stdout);

    // --help lists every setting.
    let help = weft(&["install", "--help"], None).stdout;
    for (name, _) in weft_inject::settings::OVERRIDES.iter().filter(|(n, _)| !matches!(*n, "service" | "await-binary"))
    {
        assert!(help.contains(&format!("--{name}")), "--help does not list --{name}");
    }
    for flag in [
        "--ca-dir",
        "--mesh",
        "--replicas",
        "--discovery",
        "--controller-image",
        "--webhook-failure-policy",
        "--controller",
        "--image-pull-policy",
    ] {
        assert!(help.contains(flag), "--help does not list {flag}");
    }

    // A setting reaches the injector's ConfigMap, and a bad one is refused with its name.
    let tuned = weft(&["install", "--ca-dir", &ca, "--proxy-log-level", "debug", "--native-sidecar", "false"], None);
    let settings = yaml_docs(&tuned.stdout).into_iter().find(|d| d["metadata"]["name"] == "weft-injector").unwrap();
    let settings = settings["data"]["settings.yaml"].as_str().unwrap().to_string();
    assert!(settings.contains("proxy-log-level: debug") && settings.contains("native-sidecar: false"), "{settings}");
    let bad = weft(&["install", "--ca-dir", &ca, "--proxy-memory-limit", "lots"], None);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("proxy-memory-limit"), "{}", bad.stderr);
}
