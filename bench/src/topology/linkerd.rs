//! linkerd2-proxy, given as a path (there is no package; it is built from its public source outside
//! this repository). It takes its target from the original destination and refuses loopback
//! endpoints, so it runs only in pods, transparently: iptables redirects the client pod's egress
//! (except the proxy's own UID) to its outbound port, and a stand-in control plane (`standin`,
//! re-executed from this binary) on each pod's loopback certifies it and describes the server pod
//! as meshed (mTLS, HTTP/2, opaque transport to port 4143). One worker (`LINKERD2_PROXY_CORES=1`).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use super::{Deployment, MtlsCheck, Setup};
use crate::procs::run_ok;

pub const PROXY_UID: u32 = 2102;
pub const CLIENT_NAME: &str = "bench-client.default.serviceaccount.identity.linkerd.cluster.local";
pub const SERVER_NAME: &str = "bench-server.default.serviceaccount.identity.linkerd.cluster.local";
/// The `linkerd2-proxy-api` release the stand-in is built on (bench/Cargo.toml pins 0.20).
pub const API_VERSION: &str = "0.20.0";
const STANDIN: &str = "127.0.0.1:8090";

/// What the binary says it is: its release line and the commit in it, e.g.
/// `release 0.0.0-dev (29637b64f)`. Started with no configuration it prints this and exits.
pub fn version(bin: &Path) -> (String, String) {
    let line = super::version_line(bin, &[], "release ");
    let release =
        line.split("linkerd2_proxy: ").nth(1).unwrap_or(&line).split(" by ").next().unwrap_or_default().to_string();
    let commit =
        release.split_once('(').and_then(|(_, r)| r.split_once(')')).map(|(c, _)| c.to_string()).unwrap_or_default();
    (release, commit)
}

pub fn start(s: &Setup<'_>) -> anyhow::Result<Deployment> {
    let bin = s.launcher.tools.linkerd.clone().context("--linkerd2-proxy PATH not given")?;
    let (Some(client_ns), Some(server_ns)) = (s.site.client_ns.clone(), s.site.server_ns.clone()) else {
        bail!(
            "linkerd2-proxy needs --placement netns: it takes its target from SO_ORIGINAL_DST (iptables) and refuses loopback endpoints"
        );
    };
    let (backend, backend_addr) = s.launcher.backend(s.kind, &s.site, s.payload)?;
    let client = s.pki.linkerd_identity(CLIENT_NAME)?;
    let server = s.pki.linkerd_identity(SERVER_NAME)?;
    let anchors = std::fs::read_to_string(s.pki.ca_cert())?;

    // Interception as Linkerd's proxy-init does it: the client pod's TCP egress (not the proxy's
    // own, nor loopback) to the outbound port; the server pod's app port to the inbound port (meshed
    // calls arrive on 4143 directly, with opaque transport; the rule also keeps conntrack on).
    let ipt = |ns: &str, rule: &str| {
        let mut c = crate::netns::command(Some(ns), None, "iptables");
        c.args(["-w", "-t", "nat"]).args(rule.split_whitespace());
        run_ok(&mut c).with_context(|| format!("iptables in {ns}"))
    };
    ipt(
        &client_ns,
        &format!("-A OUTPUT -p tcp ! -d 127.0.0.0/8 -m owner ! --uid-owner {PROXY_UID} -j REDIRECT --to-ports 4140"),
    )?;
    ipt(&server_ns, &format!("-A PREROUTING -p tcp --dport {} -j REDIRECT --to-ports 4143", backend_addr.port()))?;

    let ca_dir = s.pki.ca_dir.display().to_string();
    let standin = |meshed: Option<String>| {
        let mut a = vec!["standin".to_string(), "--listen".into(), STANDIN.into(), "--ca-dir".into(), ca_dir.clone()];
        if let Some(m) = meshed {
            a.extend(["--meshed".into(), m]);
        }
        a
    };
    let mut procs = vec![backend];
    procs.push(s.launcher.spawn_self(
        "l5d-client-standin",
        Some(&client_ns),
        &standin(Some(format!("{backend_addr}={SERVER_NAME}"))),
    )?);
    procs.push(s.launcher.spawn_self("l5d-server-standin", Some(&server_ns), &standin(None))?);
    for ns in [&client_ns, &server_ns] {
        s.launcher.wait_ok(Some(ns), &format!("tcp://{STANDIN}"), Duration::from_secs(10), &mut procs)?;
    }

    let env = |id: &crate::pki::LinkerdIdentity, pod: &str, inbound_ports: Option<u16>| {
        let mut e: Vec<(String, String)> = [
            ("LINKERD2_PROXY_LOG", "warn"),
            ("LINKERD2_PROXY_CORES", "1"),
            ("LINKERD2_PROXY_IDENTITY_DIR", &id.dir.display().to_string()),
            ("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", &id.token.display().to_string()),
            ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", &anchors),
            ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", &id.name),
            ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", STANDIN),
            ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", STANDIN),
            ("LINKERD2_PROXY_POLICY_SVC_ADDR", STANDIN),
            ("LINKERD2_PROXY_POLICY_WORKLOAD", &format!("{{\"ns\":\"bench\",\"pod\":\"{pod}\"}}")),
            ("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "all-unauthenticated"),
            ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:4191"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(p) = inbound_ports {
            e.push(("LINKERD2_PROXY_INBOUND_PORTS".into(), p.to_string()));
        }
        e
    };
    procs.push(s.launcher.spawn(
        "l5d-server-proxy",
        Some(&server_ns),
        Some(PROXY_UID),
        &bin,
        &[],
        &env(&server, "server", Some(backend_addr.port())),
    )?);
    procs.push(s.launcher.spawn(
        "l5d-client-proxy",
        Some(&client_ns),
        Some(PROXY_UID),
        &bin,
        &[],
        &env(&client, "client", None),
    )?);
    for ns in [&server_ns, &client_ns] {
        s.launcher.wait_ok(Some(ns), "http://127.0.0.1:4191/ready", Duration::from_secs(30), &mut procs)?;
    }
    let (release, commit) = version(&bin);
    let info = [
        ("linkerd2_proxy_release".to_string(), release),
        ("linkerd2_proxy_commit".to_string(), commit),
        ("linkerd2_proxy_api".to_string(), API_VERSION.to_string()),
        ("linkerd2_proxy_binary".to_string(), bin.display().to_string()),
        ("mode".to_string(), "transparent (iptables, UID 2102), stand-in control plane per pod".to_string()),
        ("cores".to_string(), "1".to_string()),
    ]
    .into();
    Ok(Deployment {
        kind: s.kind,
        target: backend_addr,
        tcp_target: None,
        authority: "bench-server".into(),
        load_ns: Some(client_ns),
        measured: vec![],
        info,
        procs,
        roles: vec![("client-side", 4), ("server-side", 3)],
        mtls_check: Some(MtlsCheck {
            ns: Some(server_ns),
            url: "http://127.0.0.1:4191/metrics".into(),
            line_has: vec![
                "direction=\"inbound\"".into(),
                "tls=\"true\"".into(),
                format!("client_id=\"{CLIENT_NAME}\""),
            ],
        }),
    })
}
