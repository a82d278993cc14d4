//! One container's `docker run` from its spec: user and group, fsGroup, read-only root,
//! privilege escalation, capabilities, seccomp, limits, environment, mounts, command and args.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::docker::args;
use super::{env, PodFacts};

pub fn quantity_bytes(q: &str) -> u64 {
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("memory quantity {q}"));
    let scale = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("memory unit {other} is not handled"),
    };
    (n * scale) as u64
}

fn cpus(q: &str) -> f64 {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().expect("cpu") / 1000.0,
        None => q.parse().expect("cpu"),
    }
}

/// The `docker run` arguments for container `c` of the pod `spec`, joining `pause`'s network.
#[allow(clippy::too_many_arguments)]
pub fn run_args(
    c: &Value,
    spec: &Value,
    facts: &PodFacts,
    vols: &BTreeMap<String, PathBuf>,
    sa: Option<&Path>,
    pause: &str,
    dn: &str,
    labels: &[&str],
) -> Vec<String> {
    let cname = c["name"].as_str().expect("container name");
    assert!(c["imagePullPolicy"] != "Always", "{cname}: imagePullPolicy Always needs a registry");
    let mut a = args(&["run", "-d", "--name", dn]);
    for l in labels {
        a.extend(args(&["--label", l]));
    }
    a.extend(args(&["--network", &format!("container:{pause}")]));
    let (sc, pod_sc) = (&c["securityContext"], &spec["securityContext"]);
    let pick = |k: &str| if sc[k].is_null() { pod_sc[k].clone() } else { sc[k].clone() };
    let uid = pick("runAsUser").as_u64();
    let gid = pick("runAsGroup").as_u64();
    if pick("runAsNonRoot") == true {
        // Our images run as root unless told otherwise: the kubelet refuses such a container.
        assert!(
            uid.is_some_and(|u| u != 0),
            "{cname}: runAsNonRoot but it would run as root (CreateContainerConfigError)"
        );
    }
    if let Some(u) = uid {
        a.extend(args(&["--user", &format!("{u}:{}", gid.unwrap_or(0))]));
    }
    if let Some(g) = facts.fs_group {
        a.extend(args(&["--group-add", &g.to_string()]));
    }
    if sc["readOnlyRootFilesystem"] == true {
        a.push("--read-only".into());
    }
    if sc["allowPrivilegeEscalation"] == false {
        a.extend(args(&["--security-opt", "no-new-privileges"]));
    }
    if sc["privileged"] == true {
        a.push("--privileged".into());
    }
    for cap in sc["capabilities"]["drop"].as_array().into_iter().flatten() {
        a.extend(args(&["--cap-drop", cap.as_str().expect("capability")]));
    }
    for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
        a.extend(args(&["--cap-add", cap.as_str().expect("capability")]));
    }
    match pick("seccompProfile")["type"].as_str() {
        None | Some("RuntimeDefault") => {}
        Some("Unconfined") => a.extend(args(&["--security-opt", "seccomp=unconfined"])),
        Some(other) => panic!("seccomp profile {other} is not handled"),
    }
    // Requests only place a pod on a node; limits are enforced.
    if let Some(m) = c["resources"]["limits"]["memory"].as_str() {
        a.extend(args(&["--memory", &quantity_bytes(m).to_string()]));
    }
    if let Some(cpu) = c["resources"]["limits"]["cpu"].as_str() {
        a.extend(args(&["--cpus", &format!("{:.3}", cpus(cpu))]));
    }
    if let Some(w) = c["workingDir"].as_str() {
        a.extend(args(&["-w", w]));
    }
    let env = env::resolve(c, facts);
    for (k, v) in &env {
        a.extend(args(&["-e", &format!("{k}={v}")]));
    }
    let vars: BTreeMap<String, String> = env.into_iter().collect();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let vname = m["name"].as_str().expect("mount name");
        let mut host = vols.get(vname).unwrap_or_else(|| panic!("{cname}: no volume {vname}")).clone();
        if let Some(sub) = m["subPath"].as_str() {
            host = host.join(sub);
        }
        let kind = spec["volumes"].as_array().into_iter().flatten().find(|v| v["name"] == vname).cloned();
        let always_ro = kind.is_some_and(|v| v.get("emptyDir").is_none());
        let ro = if m["readOnly"] == true || always_ro { ":ro" } else { "" };
        a.extend(args(&["-v", &format!("{}:{}{ro}", host.display(), m["mountPath"].as_str().expect("mountPath"))]));
    }
    if let Some(dir) = sa {
        a.extend(args(&["-v", &format!("{}:/var/run/secrets/kubernetes.io/serviceaccount:ro", dir.display())]));
    }
    let words = |k: &str| -> Vec<String> {
        c[k].as_array().into_iter().flatten().map(|w| env::expand(w.as_str().expect("string"), &vars)).collect()
    };
    let (command, cargs) = (words("command"), words("args"));
    if let Some(first) = command.first() {
        a.extend(args(&["--entrypoint", first]));
    }
    a.push(c["image"].as_str().expect("image").to_string());
    a.extend(command.into_iter().skip(1));
    a.extend(cargs);
    a
}
