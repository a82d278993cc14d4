//! The discovery stream, proxy side: register the workload, report what is held on reconnect,
//! apply each response to a new config snapshot and ACK it (or NACK the resources that do not
//! compile, keeping their last good version). When the controller goes away the proxy keeps
//! serving with what it has and reconnects with jittered backoff (10 ms doubling to 15 s).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::v1 as pb;

use crate::context::ProxyContext;
use crate::resilience::backoff::ExpBackoff;

/// A stream that stayed up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);

pub async fn run(
    ctx: Arc<ProxyContext>,
    mut subscriptions: mpsc::UnboundedReceiver<String>,
    mut cert_expiry: watch::Receiver<i64>,
) {
    let mut backoff = ExpBackoff::new(Duration::from_millis(10), Duration::from_secs(15));
    let leaving = ctx.drain.leaving();
    loop {
        if *leaving.borrow() {
            // A draining proxy does not register again.
            return;
        }
        // The stream needs the workload certificate.
        while ctx.identity.current().is_none() {
            if cert_expiry.changed().await.is_err() {
                return;
            }
        }
        let started = Instant::now();
        let problem = match session(&ctx, &mut subscriptions, &mut cert_expiry).await {
            Ok(()) => "discovery stream closed by the controller".to_string(),
            Err(e) => format!("discovery stream failed: {}", describe(&e)),
        };
        tracing::warn!("{problem}; reconnecting");
        ctx.readiness.set_problem(Some(problem));
        ctx.metrics.control_plane_connected.with(&[]).set(0);
        if started.elapsed() >= STABLE {
            backoff.reset();
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// The address peers dial: the flag, else this host's address towards the controller with the
/// inbound port (or the inbound listener's own IP when it is bound to one).
pub fn advertise_addr(ctx: &ProxyContext, local: SocketAddr) -> SocketAddr {
    if let Some(a) = ctx.cfg.advertise {
        return a;
    }
    let bound = ctx.inbound_bound;
    if bound.ip().is_unspecified() {
        SocketAddr::new(local.ip().to_canonical(), bound.port())
    } else {
        bound
    }
}

/// An error's message; a controller's refusal reads as its status message.
fn describe(e: &anyhow::Error) -> String {
    match e.downcast_ref::<tonic::Status>() {
        Some(s) => format!("{}: {}", s.code(), s.message()),
        None => format!("{e:#}"),
    }
}

fn workload(ctx: &ProxyContext, inbound: SocketAddr) -> pb::Workload {
    let mut proxy_ports = vec![u32::from(ctx.inbound_bound.port()), u32::from(ctx.cfg.admin.port())];
    if ctx.cfg.transparent {
        proxy_ports.push(u32::from(ctx.cfg.outbound.port()));
    }
    proxy_ports.extend(ctx.cfg.upstreams.iter().map(|u| u32::from(u.listen.port())));
    pb::Workload {
        service: ctx.cfg.service.clone(),
        namespace: ctx.cfg.namespace.clone(),
        version: ctx.cfg.version.clone(),
        instance: ctx.cfg.instance.clone(),
        inbound_address: inbound.to_string(),
        app_ports: ctx.cfg.app.map(|a| vec![u32::from(a.port())]).unwrap_or_default(),
        transparent: ctx.cfg.transparent,
        proxy_version: env!("CARGO_PKG_VERSION").to_string(),
        proxy_ports,
        attest_address: false,
    }
}

/// A transparent workload on a dual-stack host proves its other address family: a short stream
/// to the controller from that family's address (the controller records the source IP, so a
/// caller whose original destination is that IP reaches this workload over mTLS too). A
/// controller not reachable over that family leaves it at the one address.
async fn attest_other_addresses(ctx: &ProxyContext, main: SocketAddr) {
    let Ok(addrs) = super::connect::controller_addrs(ctx).await else { return };
    for addr in addrs.into_iter().filter(|a| a.is_ipv4() != main.is_ipv4()) {
        let attempt = async {
            let conn = super::connect::connect_to(ctx, true, Some(addr)).await?;
            let mut w = workload(ctx, SocketAddr::new(conn.local_addr.ip(), ctx.inbound_bound.port()));
            w.attest_address = true;
            let first = pb::DiscoveryRequest { workload: Some(w), ..Default::default() };
            let mut client = pb::discovery_client::DiscoveryClient::new(conn.channel);
            let mut stream = client.stream(tokio_stream::iter([first])).await?.into_inner();
            while stream.message().await?.is_some() {}
            anyhow::Ok(conn.local_addr)
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(local)) => tracing::info!(address = %local.ip(), "proved this workload's other address"),
            Ok(Err(e)) => tracing::debug!(controller = %addr, "could not prove the other address: {e:#}"),
            Err(_) => tracing::debug!(controller = %addr, "proving the other address timed out"),
        }
    }
}

async fn session(
    ctx: &Arc<ProxyContext>,
    subscriptions: &mut mpsc::UnboundedReceiver<String>,
    cert_expiry: &mut watch::Receiver<i64>,
) -> anyhow::Result<()> {
    let conn = super::connect::connect(ctx, true).await?;
    let inbound = advertise_addr(ctx, conn.local_addr);
    let (tx, rx) = mpsc::channel::<pb::DiscoveryRequest>(64);
    // Requests queued before this stream are covered by the full list sent now.
    while subscriptions.try_recv().is_ok() {}
    let held = ctx.view().held.clone();
    let expiry = *cert_expiry.borrow_and_update();
    tx.send(pb::DiscoveryRequest {
        workload: Some(workload(ctx, inbound)),
        initial_versions: held.into_iter().map(|(t, v)| (t, pb::ResourceVersions { versions: v })).collect(),
        subscribe: ctx.subscriptions(),
        cert_expires_at_unix_ms: expiry,
        ..Default::default()
    })
    .await?;
    let mut client = pb::discovery_client::DiscoveryClient::new(conn.channel)
        // A large mesh's directory is big; bounded all the same.
        .max_decoding_message_size(64 * 1024 * 1024);
    let mut stream = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut leaving = ctx.drain.leaving();
    let mut announced = false;
    ctx.metrics.control_plane_connected.with(&[]).set(1);
    ctx.readiness.set_problem(None);
    tracing::info!(inbound = %inbound, "discovery stream established");
    if ctx.cfg.transparent {
        attest_other_addresses(ctx, conn.local_addr).await;
    }
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(resp) = msg? else { return Ok(()) };
                let reply = apply(ctx, &resp);
                tx.send(reply).await?;
            }
            Some(name) = subscriptions.recv() => {
                tracing::debug!(service = %name, "subscribing");
                tx.send(pb::DiscoveryRequest { subscribe: vec![name], ..Default::default() }).await?;
            }
            res = leaving.changed(), if !announced => {
                let now_leaving = res.is_ok() && *leaving.borrow_and_update();
                if now_leaving {
                    announced = true;
                    tx.send(pb::DiscoveryRequest { draining: true, ..Default::default() }).await?;
                }
            }
            changed = cert_expiry.changed() => {
                if changed.is_ok() {
                    let ms = *cert_expiry.borrow_and_update();
                    tx.send(pb::DiscoveryRequest { cert_expires_at_unix_ms: ms, ..Default::default() }).await?;
                }
            }
        }
    }
}

/// Applies one response and returns its ACK or NACK.
pub fn apply(ctx: &ProxyContext, resp: &pb::DiscoveryResponse) -> pb::DiscoveryRequest {
    tracing::debug!(
        type_url = %resp.type_url, nonce = %resp.nonce,
        resources = ?resp.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), removed = ?resp.removed,
        "discovery response"
    );
    let (next, rejected) = ctx.view().apply(resp);
    let accepted_version = next.accepted.get(&resp.type_url).cloned().unwrap_or_default();
    ctx.set_view(next);
    ctx.metrics.config_updates.with(&[short_type(&resp.type_url)]).inc();
    let mut reply = pb::DiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        version_info: accepted_version,
        ..Default::default()
    };
    if rejected.is_empty() {
        ctx.readiness.accepted(&resp.type_url);
    } else {
        ctx.metrics.config_rejected.with(&[short_type(&resp.type_url)]).add(rejected.len() as u64);
        let message = rejected.iter().map(|(n, e)| format!("{n}: {e}")).collect::<Vec<_>>().join("; ");
        tracing::warn!(type_url = %resp.type_url, "rejected resources (keeping their last good version): {message}");
        reply.error_detail =
            Some(pb::ErrorDetail { message, rejected: rejected.into_iter().map(|(n, _)| n).collect() });
    }
    reply
}

fn short_type(type_url: &str) -> &'static str {
    match type_url {
        weft_proto::types::SERVICE => "service",
        weft_proto::types::ENDPOINTS => "endpoints",
        weft_proto::types::DIRECTORY => "directory",
        _ => "unknown",
    }
}
