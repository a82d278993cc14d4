//! The SMI CRDs `weft install` ships: exactly the golden file (`WEFT_UPDATE_GOLDEN=1` rewrites
//! it), valid CustomResourceDefinitions in strict mode for every Kubernetes version tested, and
//! schemas that take the objects Weft reads (as the test API server's helpers and Open Service
//! Mesh write them) at every served version and refuse what Weft could never apply — checked
//! with the `jsonschema` package that `kubernetes-validate` brings.

use std::process::Command;

use serde_json::{json, Value};
use weft_tests::harness::TestDir;
use weft_tests::kube_api;

use super::schema::validate;
use super::support::{golden_dir, weft, yaml_docs};

/// The CRD documents of `weft install`, as one YAML stream.
fn shipped(ca: &str) -> String {
    let out = weft(&["install", "--ca-dir", ca], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let docs: Vec<&str> = out.stdout.split("---\n").filter(|d| d.contains("kind: CustomResourceDefinition")).collect();
    assert_eq!(docs.len(), 3, "{}", out.stdout);
    docs.iter().map(|d| format!("---\n{d}")).collect()
}

/// Validates each `(object, should_pass)` against the shipped schema of its kind and version.
fn check_objects(crds: &std::path::Path, cases: &[(Value, bool)], dir: &std::path::Path) -> Vec<String> {
    let objects = dir.join("objects.json");
    std::fs::write(&objects, serde_json::to_string(&cases.iter().map(|(o, _)| o).collect::<Vec<_>>()).unwrap())
        .unwrap();
    let script = r#"
import json, sys, yaml, jsonschema
crds = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for obj in json.load(open(sys.argv[2])):
    group, version = obj["apiVersion"].split("/")
    crd = next(c for c in crds if c["spec"]["group"] == group and c["spec"]["names"]["kind"] == obj["kind"])
    v = next((v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]), None)
    if v is None:
        print("refused: version not served"); continue
    try:
        jsonschema.validate(obj, v["schema"]["openAPIV3Schema"]); print("accepted")
    except jsonschema.ValidationError as e:
        print("refused: " + e.message.replace("\n", " "))
"#;
    let out = Command::new("python3").args(["-c", script]).arg(crds).arg(&objects).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn the_shipped_smi_crds_match_the_golden_file_validate_and_take_what_weft_reads() {
    let dir = TestDir::new("crds");
    let ca = dir.path().join("ca").display().to_string();
    assert_eq!(weft(&["ca", "init", "--dir", &ca], None).code, 0);
    let text = shipped(&ca);
    let golden = golden_dir().join("install").join("smi-crds.yaml");
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &text).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&golden).unwrap_or_default(),
        text,
        "{} is stale (WEFT_UPDATE_GOLDEN=1 rewrites it)",
        golden.display()
    );
    let served: Vec<(String, Vec<(String, bool)>)> = yaml_docs(&text)
        .iter()
        .map(|c| {
            let versions = c["spec"]["versions"].as_array().unwrap();
            let v = versions.iter().map(|v| (v["name"].as_str().unwrap().to_string(), v["storage"] == true)).collect();
            (c["metadata"]["name"].as_str().unwrap().to_string(), v)
        })
        .collect();
    println!("shipped SMI CRDs (version, stored): {served:?}");
    let passed = validate(std::slice::from_ref(&golden));
    assert_eq!(passed, 3 * super::schema::VERSIONS.len(), "each CRD passes strict validation for every version");

    let osm_target = json!({
        "apiVersion": "access.smi-spec.io/v1alpha2", "kind": "TrafficTarget",
        "metadata": {"name": "bookstore", "namespace": "bookstore"},
        "spec": {"destination": {"kind": "ServiceAccount", "name": "bookstore", "namespace": "bookstore", "port": 14001},
                 "rules": [{"kind": "HTTPRouteGroup", "name": "routes", "matches": ["buy-a-book"]}],
                 "sources": [{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}]}
    });
    let mut split_v4 = kube_api::traffic_split("shop", "bar", "bar", &[("bar-primary", 90), ("bar-canary", 10)]);
    split_v4["apiVersion"] = "split.smi-spec.io/v1alpha4".into();
    split_v4["spec"]["matches"] = json!([{"kind": "HTTPRouteGroup", "name": "canary"}]);
    let mut quantity = kube_api::traffic_split("shop", "bar", "bar", &[("bar-primary", 1)]);
    quantity["spec"]["backends"][0]["weight"] = "500m".into();
    let mut pod_target = kube_api::traffic_target("shop", "t", "bar", "all", &["foo"]);
    pod_target["spec"]["destination"]["kind"] = "Pod".into();
    let mut nobody = kube_api::traffic_target("shop", "t", "bar", "all", &["foo"]);
    nobody["spec"]["sources"] = json!([]);
    let mut v1alpha1 = kube_api::traffic_target("shop", "t", "bar", "all", &["foo"]);
    v1alpha1["apiVersion"] = "access.smi-spec.io/v1alpha1".into();
    let cases = [
        (kube_api::traffic_split("shop", "bar", "bar", &[("bar-primary", 100), ("bar-canary", 0)]), true),
        (split_v4, true),
        (kube_api::traffic_target("shop", "bar", "bar", "all", &["foo", "web"]), true),
        (osm_target, true),
        (
            kube_api::http_route_group("shop", "all", json!([{"name": "all", "pathRegex": ".*", "methods": ["*"]}])),
            true,
        ),
        (quantity, false),
        (pod_target, false),
        (nobody, false),
        (v1alpha1, false),
        (kube_api::http_route_group("shop", "odd", json!([{"name": "h", "headers": {"x-n": 1}}])), false),
    ];
    let verdicts = check_objects(&golden, &cases, dir.path());
    assert_eq!(verdicts.len(), cases.len(), "{verdicts:?}");
    for ((obj, pass), verdict) in cases.iter().zip(&verdicts) {
        assert_eq!(verdict == "accepted", *pass, "{} {}: {verdict}", obj["apiVersion"], obj["spec"]);
    }
}
