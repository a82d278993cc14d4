//! Weft: a controller and two `weft-proxy` sidecars with one worker each, mutual TLS between them
//! and the benchmark's policy (timeout, retries with budget, breaker, outlier ejection) in the mesh
//! file. On loopback the client-side proxy has an `--upstream` listener the client calls; in pods
//! both proxies are transparent (`weft-proxy init` rules, UID 2102) and the client calls the server
//! pod's address, as an unmodified app would.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use super::policy::{ms, POLICY};
use super::{Deployment, MtlsCheck, Setup};
use crate::netns::SWITCH_IP;
use crate::procs::run_ok;

pub const PROXY_UID: u32 = 2102;
const CLIENT: &str = "bench-client";
const SERVER: &str = "bench-server";

/// The mesh file: the two services, the server with the shared policy, callable by the client only.
/// No protocol is declared: the server app speaks HTTP/1.1, HTTP/2, gRPC and opaque TCP on one
/// port, so each connection is detected and the app is called in the protocol the client used
/// (`protocol: http` would mean HTTP/1.1 to the app, and gRPC's trailers would not survive it).
pub fn mesh_yaml() -> String {
    let p = POLICY;
    format!(
        "trust_domain: {td}
services:
  {CLIENT}: {{}}
  {SERVER}:
    allow: [{CLIENT}]
    timeout: {timeout}
    retries:
      on: [5xx, reset, connect-failure]
      max_retries: {retries}
      per_try_timeout: {per_try}
      backoff: {{base: {base}, max: {max}}}
      budget: {{ratio: {ratio}, min_per_second: {min}, window: 10s}}
    circuit_breaker:
      max_connections: {conns}
      max_requests: {reqs}
      max_pending: 0
      max_concurrent_retries: 3
      outlier: {{consecutive_failures: {cf}, base_ejection: {be}, max_ejection: {me}, max_ejected_percent: {mep}}}
",
        td = crate::pki::TRUST_DOMAIN,
        timeout = ms(p.timeout),
        retries = p.max_retries,
        per_try = ms(p.per_try_timeout),
        base = ms(p.backoff_base),
        max = ms(p.backoff_max),
        ratio = p.budget_ratio,
        min = p.budget_min_per_second,
        conns = p.max_connections,
        reqs = p.max_requests,
        cf = p.consecutive_failures,
        be = ms(p.base_ejection),
        me = ms(p.max_ejection),
        mep = p.max_ejected_percent,
    )
}

/// The workspace version (the proxy is built with this benchmark) and, when the binary sits in a
/// git work tree's target directory, that tree's commit.
fn weft_version(proxy: &std::path::Path) -> String {
    let mut v = format!("weft-proxy {}", env!("CARGO_PKG_VERSION"));
    let commit = proxy.parent().and_then(|dir| {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(dir)
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    if let Some(c) = commit.filter(|c| !c.is_empty()) {
        v.push_str(&format!(" (git {c})"));
    }
    v
}

pub fn start(s: &Setup<'_>) -> anyhow::Result<Deployment> {
    let tools = &s.launcher.tools;
    let proxy = tools.weft_proxy.clone().context("weft-proxy not found")?;
    let controller = tools.weft_controller.clone().context("weft-controller not found")?;
    let (backend, backend_addr) = s.launcher.backend(s.kind, &s.site, s.payload)?;
    let mesh = s.dir.join("mesh.yaml");
    std::fs::write(&mesh, mesh_yaml())?;
    let netns = s.site.is_netns();

    // The controller: on loopback, or in the switch namespace that every pod can reach.
    let (ctl_ip, grpc, admin) = if netns {
        (SWITCH_IP.to_string(), 7070, 7071)
    } else {
        ("127.0.0.1".to_string(), crate::procs::free_port()?, crate::procs::free_port()?)
    };
    let ctl_args: Vec<String> = [
        "--mesh",
        &mesh.display().to_string(),
        "--ca-dir",
        &s.pki.ca_dir.display().to_string(),
        "--grpc-addr",
        &format!("{ctl_ip}:{grpc}"),
        "--admin-addr",
        &format!("{ctl_ip}:{admin}"),
        "--log-level",
        "warn",
    ]
    .map(String::from)
    .to_vec();
    let mut procs = vec![backend];
    procs.push(s.launcher.spawn("weft-controller", s.site.switch_ns.as_deref(), None, &controller, &ctl_args, &[])?);
    s.launcher.wait_ok(
        s.site.switch_ns.as_deref(),
        &format!("http://{ctl_ip}:{admin}/ready"),
        Duration::from_secs(20),
        &mut procs,
    )?;

    let common = |service: &str| -> anyhow::Result<Vec<String>> {
        let token = s.pki.join_token(service)?;
        if netns {
            // The token is private to its owner: the proxy's own UID.
            std::os::unix::fs::chown(&token, Some(PROXY_UID), Some(PROXY_UID))?;
        }
        Ok([
            "--controller",
            &format!("https://{ctl_ip}:{grpc}"),
            "--trust-anchor",
            &s.pki.ca_cert().display().to_string(),
            "--token-file",
            &token.display().to_string(),
            "--service",
            service,
            "--instance",
            service,
            "--workers",
            "1",
            "--log-level",
            "warn",
        ]
        .map(String::from)
        .to_vec())
    };

    let (target, server_admin) = if netns {
        let (client_ns, server_ns) =
            (s.site.client_ns.clone().unwrap_or_default(), s.site.server_ns.clone().unwrap_or_default());
        for ns in [&client_ns, &server_ns] {
            run_ok(crate::netns::command(Some(ns), None, &proxy.display().to_string()).arg("init"))
                .with_context(|| format!("weft-proxy init in {ns}"))?;
        }
        let mut server_args = common(SERVER)?;
        server_args.push("--transparent".into());
        procs.push(s.launcher.spawn(
            "weft-server-proxy",
            Some(&server_ns),
            Some(PROXY_UID),
            &proxy,
            &server_args,
            &[],
        )?);
        s.launcher.wait_ok(Some(&server_ns), "http://127.0.0.1:4191/ready", Duration::from_secs(20), &mut procs)?;
        let mut client_args = common(CLIENT)?;
        client_args.push("--transparent".into());
        procs.push(s.launcher.spawn(
            "weft-client-proxy",
            Some(&client_ns),
            Some(PROXY_UID),
            &proxy,
            &client_args,
            &[],
        )?);
        s.launcher.wait_ok(Some(&client_ns), "http://127.0.0.1:4191/ready", Duration::from_secs(20), &mut procs)?;
        // An unmodified client calls the server pod's app port; iptables hands it to the proxy.
        (backend_addr, "http://127.0.0.1:4191".to_string())
    } else {
        let (s_in, s_admin) = (crate::procs::free_port()?, crate::procs::free_port()?);
        let mut server_args = common(SERVER)?;
        server_args.extend(
            [
                "--app",
                &backend_addr.to_string(),
                "--inbound",
                &format!("127.0.0.1:{s_in}"),
                "--admin",
                &format!("127.0.0.1:{s_admin}"),
            ]
            .map(String::from),
        );
        procs.push(s.launcher.spawn("weft-server-proxy", None, None, &proxy, &server_args, &[])?);
        s.launcher.wait_ok(None, &format!("http://127.0.0.1:{s_admin}/ready"), Duration::from_secs(20), &mut procs)?;
        let (c_in, c_admin, upstream) =
            (crate::procs::free_port()?, crate::procs::free_port()?, crate::procs::free_port()?);
        let mut client_args = common(CLIENT)?;
        client_args.extend(
            [
                // The client app makes no inbound calls; its proxy still needs an app address.
                "--app",
                "127.0.0.1:9",
                "--upstream",
                &format!("{SERVER}=127.0.0.1:{upstream}"),
                "--inbound",
                &format!("127.0.0.1:{c_in}"),
                "--admin",
                &format!("127.0.0.1:{c_admin}"),
            ]
            .map(String::from),
        );
        procs.push(s.launcher.spawn("weft-client-proxy", None, None, &proxy, &client_args, &[])?);
        s.launcher.wait_ok(None, &format!("http://127.0.0.1:{c_admin}/ready"), Duration::from_secs(20), &mut procs)?;
        (SocketAddr::from(([127, 0, 0, 1], upstream)), format!("http://127.0.0.1:{s_admin}"))
    };
    let info = [
        ("weft_proxy_version".to_string(), weft_version(&proxy)),
        (
            "mode".to_string(),
            if netns { "transparent (weft-proxy init, UID 2102)" } else { "explicit (--upstream)" }.to_string(),
        ),
        ("workers".to_string(), "1".to_string()),
    ]
    .into();
    Ok(Deployment {
        kind: s.kind,
        target,
        tcp_target: None,
        authority: SERVER.into(),
        load_ns: s.site.client_ns.clone(),
        measured: vec![],
        info,
        procs,
        roles: vec![("client-side", 3), ("server-side", 2)],
        mtls_check: Some(MtlsCheck {
            ns: s.site.server_ns.clone(),
            url: format!("{server_admin}/metrics"),
            line_has: vec![
                "weft_requests_total{".into(),
                "direction=\"inbound\"".into(),
                "tls=\"true\"".into(),
                format!("client_id=\"spiffe://{}/ns/default/sa/{CLIENT}\"", crate::pki::TRUST_DOMAIN),
            ],
        }),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn mesh_file_carries_the_shared_policy() {
        let y = super::mesh_yaml();
        assert!(y.contains("timeout: 5000ms"), "{y}");
        assert!(y.contains("max_retries: 2") && y.contains("per_try_timeout: 2000ms"), "{y}");
        assert!(y.contains("consecutive_failures: 5, base_ejection: 30000ms"), "{y}");
        assert!(y.contains("allow: [bench-client]"), "{y}");
        assert!(!y.contains("protocol:"), "every protocol is detected: {y}");
    }
}
