//! What the Kubernetes tests share: the golden folder, running `weft`, and walking YAML streams
//! to the pod templates inside them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use weft_tests::harness::bin;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

pub fn golden_dir() -> PathBuf {
    repo_root().join("inject/tests/golden")
}

/// The golden inputs, sorted.
pub fn golden_inputs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(golden_dir().join("in"))
        .expect("golden inputs")
        .map(|e| e.expect("entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "json")))
        .collect();
    v.sort();
    v
}

pub fn stem(p: &Path) -> String {
    p.file_stem().and_then(|s| s.to_str()).expect("file name").to_string()
}

/// What a `weft` run printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `weft` with `args`; the caller's `$KUBECONFIG` is not passed on (`weft check` would read
/// that cluster), so a test names its kubeconfig when it wants one.
pub fn weft(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(bin("weft"))
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("weft output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// All documents of a YAML stream, as JSON (empty documents dropped).
pub fn yaml_docs(text: &str) -> Vec<serde_json::Value> {
    weft_inject::documents::split(text)
        .iter()
        .map(|d| d.parse().unwrap_or_else(|e| panic!("YAML: {e}\n{text}")))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("YAML to JSON"))
        .collect()
}

/// A workload's pod template, and the namespace its pods are created in.
pub struct Template {
    pub object: String,
    pub namespace: String,
    pub template: serde_json::Value,
    pub kind: String,
}

/// Every pod template in a stream, in order (through `List`s).
pub fn templates(docs: &[serde_json::Value]) -> Vec<Template> {
    let mut out = Vec::new();
    for d in docs {
        walk(d, &mut out);
    }
    out
}

fn walk(obj: &serde_json::Value, out: &mut Vec<Template>) {
    let kind = obj["kind"].as_str().unwrap_or_default();
    if let Some(items) = obj["items"].as_array() {
        for i in items {
            walk(i, out);
        }
        return;
    }
    let path: &[&str] = match kind {
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return,
    };
    let template = path.iter().fold(obj, |v, k| &v[*k]).clone();
    let namespace = obj["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
    let object = format!("{}/{}", kind.to_lowercase(), obj["metadata"]["name"].as_str().unwrap_or("?"));
    out.push(Template { object, namespace, template, kind: kind.to_string() });
}

/// The Pod a controller would create from a template (a Pod document is its own).
pub fn pod_from(t: &Template) -> serde_json::Value {
    if t.kind == "Pod" {
        let mut p = t.template.clone();
        p["metadata"]["namespace"] = t.namespace.clone().into();
        return p;
    }
    let mut metadata = t.template["metadata"].clone();
    if metadata.is_null() {
        metadata = serde_json::json!({});
    }
    metadata["namespace"] = t.namespace.clone().into();
    metadata["generateName"] = format!("{}-", t.object.rsplit('/').next().unwrap_or("pod")).into();
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": t.template["spec"]})
}
