//! Kubelet probes under `mtls: strict`: the kubelet connects from outside the mesh, so a probe on
//! an app port would be refused. HTTP and TCP probes are rewritten to the proxy's admin port
//! (never intercepted), whose `/app-probe/http/PORT/PATH` and `/app-probe/tcp/PORT` check the app
//! from inside the pod; the proxy serves exactly the probes listed in `--app-probe`. Exempting the
//! probe port instead would open the app's serving port to any plaintext client.

use serde_norway::{Mapping, Value};

use crate::names;

pub const PROBE_KINDS: [&str; 3] = ["startupProbe", "readinessProbe", "livenessProbe"];

/// What rewriting one pod's probes produced.
#[derive(Debug, Default)]
pub struct Rewritten {
    /// `--app-probe` entries (`http:PORT/PATH`, `tcp:PORT`), in order, without repeats.
    pub entries: Vec<String>,
    /// container name → probe kind → the original probe (for `uninject`).
    pub originals: serde_json::Map<String, serde_json::Value>,
    pub warnings: Vec<String>,
}

fn get<'a>(m: &'a Mapping, k: &str) -> Option<&'a Value> {
    m.get(Value::from(k))
}

/// A probe's port: a number, or a name looked up among the container's ports.
fn resolve_port(container: &Mapping, port: &Value) -> Result<u16, String> {
    match port {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(|| format!("port {n}")),
        Value::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            let ports = get(container, "ports").and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or_default();
            ports
                .iter()
                .filter_map(Value::as_mapping)
                .find(|p| get(p, "name").and_then(Value::as_str) == Some(name))
                .and_then(|p| get(p, "containerPort").and_then(Value::as_u64))
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| format!("named port {name:?} is not among the container's ports"))
        }
        other => Err(format!("port {other:?}")),
    }
}

/// How one probe is handled.
enum Plan {
    Keep,
    Warn(String),
    Rewrite { entry: String, path: String },
}

fn plan(container: &Mapping, probe: &Mapping, skip_inbound: &[u16]) -> Plan {
    let admin = names::ADMIN_PORT as u16;
    let port_of = |handler: &Mapping| get(handler, "port").map(|p| resolve_port(container, p));
    if let Some(h) = get(probe, "httpGet").and_then(Value::as_mapping) {
        if get(h, "host").is_some() {
            return Plan::Keep; // the kubelet probes another host, not this pod
        }
        let port = match port_of(h) {
            Some(Ok(p)) => p,
            Some(Err(e)) => return Plan::Warn(format!("httpGet probe not rewritten: {e}")),
            None => return Plan::Warn("httpGet probe without a port".into()),
        };
        if port == admin || skip_inbound.contains(&port) {
            return Plan::Keep; // not intercepted: the kubelet reaches it as before
        }
        if get(h, "scheme").and_then(Value::as_str).is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")) {
            return Plan::Warn(format!(
                "HTTPS probe on port {port} is kept: under mtls: strict it fails unless the port is in skip-inbound-ports"
            ));
        }
        let mut path = get(h, "path").and_then(Value::as_str).unwrap_or("/").to_string();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if path.contains(',') || path.contains(char::is_whitespace) {
            return Plan::Warn(format!("httpGet probe path {path:?} is kept: it cannot be listed in --app-probe"));
        }
        return Plan::Rewrite {
            entry: format!("http:{port}{path}"),
            path: format!("{}/http/{port}{path}", names::APP_PROBE_PATH),
        };
    }
    if let Some(h) = get(probe, "tcpSocket").and_then(Value::as_mapping) {
        if get(h, "host").is_some() {
            return Plan::Keep;
        }
        return match port_of(h) {
            Some(Ok(p)) if p == admin || skip_inbound.contains(&p) => Plan::Keep,
            Some(Ok(p)) => {
                Plan::Rewrite { entry: format!("tcp:{p}"), path: format!("{}/tcp/{p}", names::APP_PROBE_PATH) }
            }
            Some(Err(e)) => Plan::Warn(format!("tcpSocket probe not rewritten: {e}")),
            None => Plan::Warn("tcpSocket probe without a port".into()),
        };
    }
    if let Some(h) = get(probe, "grpc").and_then(Value::as_mapping) {
        let port = get(h, "port").and_then(Value::as_u64).unwrap_or(0);
        if skip_inbound.contains(&(port as u16)) {
            return Plan::Keep;
        }
        return Plan::Warn(format!(
            "gRPC probe on port {port} is kept: under mtls: strict it fails unless the port is in skip-inbound-ports"
        ));
    }
    Plan::Keep // exec probes run inside the container
}

/// Rewrites the HTTP and TCP probes of one container in place.
pub fn rewrite(container: &mut Mapping, skip_inbound: &[u16], out: &mut Rewritten) {
    let name = get(container, "name").and_then(Value::as_str).unwrap_or("?").to_string();
    let mut originals = serde_json::Map::new();
    for kind in PROBE_KINDS {
        let Some(probe) = get(container, kind).and_then(Value::as_mapping).cloned() else { continue };
        match plan(container, &probe, skip_inbound) {
            Plan::Keep => {}
            Plan::Warn(w) => out.warnings.push(format!("container {name} {kind}: {w}")),
            Plan::Rewrite { entry, path } => {
                originals.insert(kind.to_string(), serde_json::to_value(&probe).unwrap_or_default());
                if !out.entries.contains(&entry) {
                    out.entries.push(entry);
                }
                let mut handler = Mapping::new();
                let headers = get(&probe, "httpGet").and_then(Value::as_mapping).and_then(|h| get(h, "httpHeaders"));
                if let Some(h) = headers {
                    handler.insert("httpHeaders".into(), h.clone());
                }
                handler.insert("path".into(), path.into());
                handler.insert("port".into(), names::ADMIN_PORT.into());
                let mut new = Mapping::new();
                for (k, v) in &probe {
                    match k.as_str() {
                        Some("httpGet") | Some("tcpSocket") => {
                            new.insert("httpGet".into(), Value::Mapping(handler.clone()));
                        }
                        _ => {
                            new.insert(k.clone(), v.clone());
                        }
                    }
                }
                container.insert(kind.into(), Value::Mapping(new));
            }
        }
    }
    if !originals.is_empty() {
        out.originals.insert(name, serde_json::Value::Object(originals));
    }
}

/// Puts back the probes recorded by [`rewrite`] (the annotation's JSON).
pub fn restore(containers: &mut [Value], originals: &serde_json::Value) -> Result<(), String> {
    let map = originals.as_object().ok_or("not a JSON object")?;
    for c in containers.iter_mut().filter_map(Value::as_mapping_mut) {
        let name = get(c, "name").and_then(Value::as_str).unwrap_or_default().to_string();
        let Some(probes) = map.get(&name).and_then(serde_json::Value::as_object) else { continue };
        for (kind, probe) in probes {
            let v: Value = serde_norway::to_value(probe).map_err(|e| e.to_string())?;
            c.insert(kind.as_str().into(), v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(yaml: &str) -> Mapping {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn http_and_tcp_probes_move_to_the_admin_port() {
        let mut c = container(
            "name: app\nports: [{name: http, containerPort: 8080}]\n\
             readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 3}\n\
             livenessProbe: {tcpSocket: {port: 9000}}\n\
             startupProbe: {exec: {command: [ok]}}\n",
        );
        let mut out = Rewritten::default();
        rewrite(&mut c, &[], &mut out);
        assert_eq!(out.entries, vec!["http:8080/healthz", "tcp:9000"]);
        let r = &c["readinessProbe"];
        assert_eq!(r["httpGet"]["port"], Value::from(4191));
        assert_eq!(r["httpGet"]["path"], Value::from("/app-probe/http/8080/healthz"));
        assert_eq!(r["periodSeconds"], Value::from(3));
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], Value::from("/app-probe/tcp/9000"));
        assert!(c["livenessProbe"].get("tcpSocket").is_none());
        assert!(c["startupProbe"].get("exec").is_some());
        let mut list = vec![Value::Mapping(c)];
        restore(
            &mut list,
            &out.originals.clone().into_iter().next().map(|(k, v)| serde_json::json!({ k: v })).unwrap(),
        )
        .unwrap();
        assert_eq!(list[0]["readinessProbe"]["httpGet"]["port"], Value::from("http"));
        assert_eq!(list[0]["livenessProbe"]["tcpSocket"]["port"], Value::from(9000));
    }

    #[test]
    fn skipped_ports_https_grpc_and_other_hosts_are_kept() {
        let mut c = container(
            "name: app\nreadinessProbe: {httpGet: {path: /, port: 8443, scheme: HTTPS}}\n\
             livenessProbe: {grpc: {port: 9090}}\nstartupProbe: {httpGet: {path: /, port: 8080}}\n",
        );
        let mut out = Rewritten::default();
        rewrite(&mut c, &[8080], &mut out);
        assert!(out.entries.is_empty());
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert_eq!(c["startupProbe"]["httpGet"]["port"], Value::from(8080));
    }
}
