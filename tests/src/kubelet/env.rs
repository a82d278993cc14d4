//! Container environment as the kubelet builds it: literal values, the downward API, Secret and
//! ConfigMap keys, and `$(NAME)` references to variables defined earlier (`$$` escapes a `$`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::PodFacts;

/// Expands `$(NAME)` with `vars`; unknown references stay as written.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(end) = rest.strip_prefix("$(").and_then(|r| r.find(')')) {
            let name = &rest[2..2 + end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[..3 + end]),
            }
            rest = &rest[3 + end..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The value of a downward-API field path for this pod.
pub fn field(pod: &PodFacts, path: &str) -> String {
    let quoted = |prefix: &str| path.strip_prefix(prefix).and_then(|r| r.strip_suffix("']")).map(|k| k.to_string());
    if let Some(k) = quoted("metadata.labels['") {
        return pod.labels.get(&k).cloned().unwrap_or_default();
    }
    if let Some(k) = quoted("metadata.annotations['") {
        return pod.annotations.get(&k).cloned().unwrap_or_default();
    }
    match path {
        "metadata.name" => pod.name.clone(),
        "metadata.namespace" => pod.namespace.clone(),
        "metadata.uid" => pod.uid.clone(),
        "spec.nodeName" => pod.node.clone(),
        "spec.serviceAccountName" => pod.service_account.clone(),
        "status.podIP" => pod.ip.clone(),
        other => panic!("the runner does not handle the downward API field {other:?}"),
    }
}

/// The container's environment, in order.
pub fn resolve(container: &Value, pod: &PodFacts) -> Vec<(String, String)> {
    let mut vars = BTreeMap::new();
    let mut out = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &vars)
        } else if let Some(f) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            field(pod, f)
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let (n, k) = (r["name"].as_str().unwrap_or_default(), r["key"].as_str().unwrap_or_default());
            let bytes = pod.secret(n).and_then(|s| s.get(k).cloned());
            String::from_utf8(bytes.unwrap_or_else(|| panic!("env {name}: Secret {n} key {k} is missing")))
                .expect("UTF-8 secret")
        } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
            let (n, k) = (r["name"].as_str().unwrap_or_default(), r["key"].as_str().unwrap_or_default());
            pod.config_map(n)
                .and_then(|c| c.get(k).cloned())
                .unwrap_or_else(|| panic!("env {name}: ConfigMap {n} key {k} is missing"))
        } else {
            String::new()
        };
        vars.insert(name.clone(), value.clone());
        out.push((name, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_like_the_kubelet() {
        let vars: BTreeMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
    }
}
