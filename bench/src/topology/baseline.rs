//! No proxy: the client talks to the backend directly. Every other figure is reported as added to
//! this one, measured in the same run.

use super::{Deployment, Setup};

pub fn start(s: &Setup<'_>) -> anyhow::Result<Deployment> {
    let (backend, addr) = s.launcher.backend(s.kind, &s.site, s.payload)?;
    Ok(Deployment {
        kind: s.kind,
        target: addr,
        tcp_target: None,
        authority: "backend".into(),
        load_ns: s.site.client_ns.clone(),
        measured: vec![],
        info: Default::default(),
        procs: vec![backend],
        roles: vec![],
        mtls_check: None,
    })
}
