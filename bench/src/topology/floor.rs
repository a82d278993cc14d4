//! The floor: the bench's own bare TLS 1.3 relay pair (see `relay`), each side a process of its
//! own so its CPU and memory are measured like a proxy's. Explicit in both placements: the client
//! connects to the client-side relay, which relays to the server side's port 4143.

use std::time::Duration;

use super::{Deployment, Setup};

pub fn start(s: &Setup<'_>) -> anyhow::Result<Deployment> {
    let (backend, backend_addr) = s.launcher.backend(s.kind, &s.site, s.payload)?;
    let client_id = s.pki.spiffe_identity("floor-client")?;
    let server_id = s.pki.spiffe_identity("floor-server")?;
    let ca = s.pki.ca_cert().display().to_string();
    let (out_port, in_port) = (s.site.port(4140)?, s.site.port(4143)?);
    let server_listen = if s.site.is_netns() { format!("0.0.0.0:{in_port}") } else { format!("127.0.0.1:{in_port}") };
    // The server side reaches the backend over its own loopback in a pod.
    let app = if s.site.is_netns() { format!("127.0.0.1:{}", backend_addr.port()) } else { backend_addr.to_string() };
    let relay =
        |side: &str, listen: String, connect: String, me: &crate::pki::PemIdentity, peer: &crate::pki::PemIdentity| {
            vec![
                "relay".to_string(),
                "--side".into(),
                side.into(),
                "--listen".into(),
                listen,
                "--connect".into(),
                connect,
                "--cert".into(),
                me.cert.display().to_string(),
                "--key".into(),
                me.key.display().to_string(),
                "--ca".into(),
                ca.clone(),
                "--peer-id".into(),
                peer.id.to_string(),
            ]
        };
    let server = s.launcher.spawn_self(
        "floor-server-relay",
        s.site.server_ns.as_deref(),
        &relay("server", server_listen, app, &server_id, &client_id),
    )?;
    let client = s.launcher.spawn_self(
        "floor-client-relay",
        s.site.client_ns.as_deref(),
        &relay(
            "client",
            format!("127.0.0.1:{out_port}"),
            format!("{}:{in_port}", s.site.server_ip),
            &client_id,
            &server_id,
        ),
    )?;
    let mut procs = vec![backend, server, client];
    // Both relays must be listening before the end-to-end check.
    std::thread::sleep(Duration::from_millis(200));
    for p in &mut procs {
        p.check_running()?;
    }
    Ok(Deployment {
        kind: s.kind,
        target: ([127, 0, 0, 1], out_port).into(),
        tcp_target: None,
        authority: "backend".into(),
        load_ns: s.site.client_ns.clone(),
        measured: vec![],
        info: [(
            "floor".to_string(),
            "weft bench relay: TLS 1.3 (rustls, ring), mutual, one TLS connection per TCP connection".to_string(),
        )]
        .into(),
        procs,
        roles: vec![("client-side", 2), ("server-side", 1)],
        // No metrics to read: the relays themselves refuse a peer without the expected identity.
        mtls_check: None,
    })
}
