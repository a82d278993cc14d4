//! Volumes as the kubelet prepares them, on the host under the pod's folder and bind-mounted:
//! emptyDir (shared by the pod's containers), configMap, secret and projected volumes
//! (service-account token, downward API, Secret and ConfigMap keys), with their file modes and
//! the pod's fsGroup. An in-memory emptyDir is a tmpfs of its size limit.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{env, PodFacts};

/// What a projected service-account token file holds here: there is no API server to sign one.
/// The proxy reads it only once the controller accepts such tokens (Kubernetes, part 2).
pub const UNSIGNED_TOKEN: &str = "unsigned.token-from-the-docker-test-kubelet.no-api-server";

fn write(path: &Path, data: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("volume folder");
    }
    std::fs::write(path, data).expect("volume file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("mode");
}

fn mode(v: &Value, default: u32) -> u32 {
    v.as_u64().map(|m| m as u32).unwrap_or(default)
}

/// Writes `keys` (all, or the `items` chosen) under `dir`.
fn keys(dir: &Path, data: &BTreeMap<String, Vec<u8>>, items: &Value, default_mode: u32, what: &str) {
    match items.as_array() {
        Some(items) => {
            for i in items {
                let key = i["key"].as_str().expect("key");
                let bytes = data.get(key).unwrap_or_else(|| panic!("{what}: key {key} is missing"));
                write(&dir.join(i["path"].as_str().expect("path")), bytes, mode(&i["mode"], default_mode));
            }
        }
        None => {
            for (k, bytes) in data {
                write(&dir.join(k), bytes, default_mode);
            }
        }
    }
}

/// Prepares every volume of the pod; returns name → host folder, and the tmpfs mounts to undo.
pub fn prepare(pod_dir: &Path, spec: &Value, facts: &PodFacts) -> (BTreeMap<String, PathBuf>, Vec<PathBuf>) {
    let mut out = BTreeMap::new();
    let mut mounts = Vec::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().expect("volume name").to_string();
        let dir = pod_dir.join("volumes").join(&name);
        std::fs::create_dir_all(&dir).expect("volume folder");
        if let Some(e) = v.get("emptyDir") {
            if e["medium"] == "Memory" {
                // In memory, with its size limit, shared by the pod's containers: a tmpfs.
                let size = e["sizeLimit"].as_str().map(super::container::quantity_bytes).unwrap_or(64 << 20);
                let opts = format!("size={size},mode=0777");
                let status =
                    std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &opts, "tmpfs"]).arg(&dir).status();
                assert!(status.is_ok_and(|s| s.success()), "mounting a tmpfs for emptyDir {name}");
                mounts.push(dir.clone());
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("mode");
        } else if let Some(cm) = v.get("configMap") {
            let n = cm["name"].as_str().expect("configMap name");
            let data = facts.config_map(n).unwrap_or_else(|| panic!("volume {name}: ConfigMap {n} does not exist"));
            let data = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            keys(&dir, &data, &cm["items"], mode(&cm["defaultMode"], 0o644), &format!("ConfigMap {n}"));
        } else if let Some(s) = v.get("secret") {
            let n = s["secretName"].as_str().expect("secretName");
            let data = facts.secret(n).unwrap_or_else(|| panic!("volume {name}: Secret {n} does not exist"));
            keys(&dir, &data, &s["items"], mode(&s["defaultMode"], 0o644), &format!("Secret {n}"));
        } else if let Some(p) = v.get("projected") {
            let default = mode(&p["defaultMode"], 0o644);
            for src in p["sources"].as_array().into_iter().flatten() {
                if let Some(t) = src.get("serviceAccountToken") {
                    write(&dir.join(t["path"].as_str().expect("path")), UNSIGNED_TOKEN.as_bytes(), default);
                }
                for item in src["downwardAPI"]["items"].as_array().into_iter().flatten() {
                    let value = env::field(facts, item["fieldRef"]["fieldPath"].as_str().expect("fieldPath"));
                    write(
                        &dir.join(item["path"].as_str().expect("path")),
                        value.as_bytes(),
                        mode(&item["mode"], default),
                    );
                }
                if let Some(s) = src.get("secret") {
                    let n = s["name"].as_str().expect("secret name");
                    match facts.secret(n) {
                        Some(data) => keys(&dir, &data, &s["items"], default, &format!("Secret {n}")),
                        None if s["optional"] == true => {}
                        None => panic!("volume {name}: Secret {n} does not exist (the pod would not start)"),
                    }
                }
                if let Some(c) = src.get("configMap") {
                    let n = c["name"].as_str().expect("configMap name");
                    match facts.config_map(n) {
                        Some(data) => {
                            let data = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                            keys(&dir, &data, &c["items"], default, &format!("ConfigMap {n}"))
                        }
                        None if c["optional"] == true => {}
                        None => panic!("volume {name}: ConfigMap {n} does not exist (the pod would not start)"),
                    }
                }
            }
        } else {
            panic!("volume {name}: the runner does not handle {v}");
        }
        if let Some(gid) = facts.fs_group {
            // The kubelet gives the pod's fsGroup the volume's files (group-readable).
            let status = std::process::Command::new("chown").arg("-R").arg(format!(":{gid}")).arg(&dir).status();
            assert!(status.is_ok_and(|s| s.success()), "chown {}", dir.display());
        }
        out.insert(name, dir);
    }
    (out, mounts)
}

/// Undoes the tmpfs mounts of [`prepare`].
pub fn unmount(mounts: &[PathBuf]) {
    for m in mounts {
        let _ = std::process::Command::new("umount").arg(m).status();
    }
}

/// The service account volume the kubelet mounts unless `automountServiceAccountToken: false`.
pub fn service_account(pod_dir: &Path, facts: &PodFacts) -> PathBuf {
    let dir = pod_dir.join("serviceaccount");
    write(&dir.join("token"), UNSIGNED_TOKEN.as_bytes(), 0o644);
    write(&dir.join("namespace"), facts.namespace.as_bytes(), 0o644);
    write(&dir.join("ca.crt"), b"", 0o644);
    dir
}
