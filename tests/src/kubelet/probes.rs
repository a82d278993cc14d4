//! Probes as the kubelet runs them: HTTP GET to the pod's IP (success is 200–399), a TCP
//! connect, or a command in the container; each bounded by `timeoutSeconds`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use super::docker;

/// A probe's port: a number or the name of one of the container's ports.
pub fn port(container: &Value, p: &Value) -> u16 {
    if let Some(n) = p.as_u64() {
        return n as u16;
    }
    let name = p.as_str().expect("probe port");
    if let Ok(n) = name.parse() {
        return n;
    }
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|cp| cp["name"] == name)
        .and_then(|cp| cp["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("named port {name} is not declared")) as u16
}

fn http_get(addr: SocketAddr, path: &str, headers: &[(String, String)], timeout: Duration) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.37\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("no HTTP answer: {text:?}"))
}

/// Runs a probe once: Ok on success, Err with what happened.
pub fn once(probe: &Value, container: &Value, docker_name: &str, pod_ip: &str) -> Result<(), String> {
    let timeout = Duration::from_secs(probe["timeoutSeconds"].as_u64().unwrap_or(1));
    if let Some(h) = probe.get("httpGet") {
        assert!(h["scheme"].as_str().is_none_or(|s| s == "HTTP"), "the runner probes over plain HTTP only");
        let addr: SocketAddr = format!("{pod_ip}:{}", port(container, &h["port"])).parse().expect("address");
        let path = h["path"].as_str().unwrap_or("/");
        let headers: Vec<(String, String)> = h["httpHeaders"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| (x["name"].as_str().unwrap_or("").into(), x["value"].as_str().unwrap_or("").into()))
            .collect();
        return match http_get(addr, path, &headers, timeout) {
            Ok(code) if (200..400).contains(&code) => Ok(()),
            Ok(code) => Err(format!("GET {addr}{path}: {code}")),
            Err(e) => Err(format!("GET {addr}{path}: {e}")),
        };
    }
    if let Some(t) = probe.get("tcpSocket") {
        let addr: SocketAddr = format!("{pod_ip}:{}", port(container, &t["port"])).parse().expect("address");
        return TcpStream::connect_timeout(&addr, timeout).map(|_| ()).map_err(|e| format!("connect {addr}: {e}"));
    }
    if let Some(e) = probe.get("exec") {
        let mut a = docker::args(&["exec", docker_name]);
        a.extend(e["command"].as_array().expect("exec command").iter().map(|c| c.as_str().unwrap_or("").to_string()));
        let out = docker::docker(&a);
        return if out.status.success() {
            Ok(())
        } else {
            Err(format!("exec: {}", String::from_utf8_lossy(&out.stderr)))
        };
    }
    panic!("the runner does not handle this probe: {probe}")
}
