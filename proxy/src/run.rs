//! Starting the proxy: two runtimes (the data plane on its own, sized by `--workers`; control
//! stream, certificate rotation and admin on a current-thread runtime, so a slow scrape or a
//! config push never shows in request latency), the listeners, and the shutdown sequence.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use tokio::sync::{mpsc, watch};
use weft_certs::tls::{self, SpiffeClientVerifier};
use weft_certs::{IdentityStore, TrustBundle};
use weft_telemetry::logging::LogLevel;

use crate::config::ProxyConfig;
use crate::context::{Drain, ProxyContext, Readiness};
use crate::net::pool::peer::{PeerConnector, PeerPool};
use crate::net::pool::plain::PlainClient;
use crate::state::Snapshot;
use crate::telemetry::metrics::ProxyMetrics;

/// Binds a listening socket; an unspecified IPv6 address listens on IPv4 too.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(SockProtocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The inbound listener: `[::]:port` where IPv6 exists, else `0.0.0.0:port`.
fn bind_inbound(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    match bind(addr) {
        Ok(l) => Ok(l),
        Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            bind(v4).with_context(|| format!("binding --inbound {v4} (after {addr}: {e})"))
        }
        Err(e) => Err(e).with_context(|| format!("binding --inbound {addr}")),
    }
}

/// The trust domain named by the trust anchors (`spiffe://TD` in the CA certificate).
fn trust_domain_of(bundle: &TrustBundle) -> anyhow::Result<String> {
    for der in bundle.ders() {
        if let Some(td) = weft_certs::x509::trust_domain(&der) {
            return Ok(td);
        }
    }
    anyhow::bail!(
        "the trust anchor names no trust domain (a spiffe://TD URI SAN); use the CA certificate from `weft ca init`"
    )
}

/// Runs the proxy until it is told to stop (SIGTERM, SIGINT or `POST /shutdown`).
pub fn run(cfg: ProxyConfig, log: LogLevel) -> anyhow::Result<()> {
    tls::install_provider();
    let bundle = TrustBundle::from_pem(&cfg.trust_anchor_pem).map_err(|e| anyhow::anyhow!("--trust-anchor: {e}"))?;
    let trust_domain = trust_domain_of(&bundle)?;
    let identity = IdentityStore::new();
    let verifier = SpiffeClientVerifier::new(bundle.clone(), &trust_domain, true);
    let inbound_tls =
        Arc::new(tls::server_config(identity.clone(), verifier, &[tls::ALPN_H2, tls::ALPN_HTTP1, tls::ALPN_TCP]));
    let connector = Arc::new(PeerConnector::new(identity.clone(), bundle.clone(), &trust_domain, cfg.connect_timeout));

    // Bind everything up front so that a taken port is a clear error at start.
    let inbound = bind_inbound(cfg.inbound)?;
    let inbound_bound = inbound.local_addr()?;
    let admin = bind(cfg.admin).with_context(|| format!("binding --admin {}", cfg.admin))?;
    let mut upstreams = Vec::new();
    for u in &cfg.upstreams {
        upstreams.push((
            u.service.clone(),
            bind(u.listen).with_context(|| format!("binding --upstream {}={}", u.service, u.listen))?,
        ));
    }
    let mut transparent = Vec::new();
    if cfg.transparent {
        transparent.push(bind(cfg.outbound).with_context(|| format!("binding --outbound {}", cfg.outbound))?);
        if cfg.outbound.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) {
            // ip6tables redirects to [::1] on the same port.
            if let Ok(l) = bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), cfg.outbound.port())) {
                transparent.push(l);
            }
        }
    }

    let (subscribe_tx, subscribe_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(ProxyContext {
        peers: PeerPool::new(connector, cfg.max_header_bytes as u32),
        plain: PlainClient::new(cfg.connect_timeout, cfg.pool_idle_timeout, cfg.max_header_bytes),
        subscribed: Mutex::new(HashSet::new()),
        view: ArcSwap::from_pointee(Snapshot::default()),
        view_changed: tokio::sync::Notify::new(),
        metrics: ProxyMetrics::new(),
        readiness: Readiness::default(),
        drain: Drain::default(),
        inbound_requests: crate::context::ConcurrencyLimit::new(cfg.max_inbound_requests),
        own_policy: Default::default(),
        subscribe: subscribe_tx,
        trust_domain,
        identity,
        bundle,
        inbound_tls,
        inbound_bound,
        cfg,
    });
    // The services this proxy calls, and its own (for inbound policy).
    for u in &ctx.cfg.upstreams {
        ctx.subscribe_to(&u.service);
    }

    // The data plane.
    let (stop_tx, stop_rx) = watch::channel(false);
    let data_ctx = ctx.clone();
    let workers = ctx.cfg.workers;
    let data_thread = std::thread::Builder::new().name("weft-data".into()).spawn(move || -> anyhow::Result<()> {
        let rt = if workers == 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("weft-data")
                .enable_all()
                .build()?
        };
        rt.block_on(async move {
            let inbound = tokio::net::TcpListener::from_std(inbound)?;
            tokio::spawn(crate::inbound::accept(data_ctx.clone(), inbound));
            for (service, l) in upstreams {
                tokio::spawn(crate::outbound::accept_upstream(
                    data_ctx.clone(),
                    tokio::net::TcpListener::from_std(l)?,
                    service,
                ));
            }
            for l in transparent {
                tokio::spawn(crate::outbound::transparent::accept_redirected(
                    data_ctx.clone(),
                    tokio::net::TcpListener::from_std(l)?,
                ));
            }
            let mut stop = stop_rx;
            let _ = stop.wait_for(|s| *s).await;
            Ok::<_, anyhow::Error>(())
        })?;
        // Dropping the runtime cancels what is left (connections past the grace period).
        rt.shutdown_timeout(std::time::Duration::from_millis(100));
        Ok(())
    })?;

    // The control plane and admin, on this thread.
    let control = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = control.block_on(async move {
        let (shutdown_tx, mut shutdown_rx) = mpsc::unbounded_channel::<&'static str>();
        let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<String>();
        let admin = tokio::net::TcpListener::from_std(admin)?;
        tracing::info!(
            service = %ctx.cfg.service, instance = %ctx.cfg.instance, inbound = %ctx.inbound_bound,
            admin = %admin.local_addr()?, controller = %format!("{}:{}", ctx.cfg.controller_host, ctx.cfg.controller_port),
            "weft-proxy started"
        );
        tokio::spawn(crate::admin::serve(admin, ctx.clone(), log, shutdown_tx));
        tokio::spawn(ctx.metrics.registry.clone().upkeep_loop());
        tokio::spawn(crate::net::memory::trim_loop());
        tokio::spawn({
            let (ctx, every) = (ctx.clone(), ctx.cfg.pool_idle_timeout.max(std::time::Duration::from_secs(1)));
            async move {
                loop {
                    tokio::time::sleep(every).await;
                    ctx.plain.sweep();
                }
            }
        });
        let (expiry_tx, expiry_rx) = watch::channel(0i64);
        tokio::spawn(crate::control::identity::run(ctx.clone(), expiry_tx, fatal_tx));
        tokio::spawn(crate::control::discovery::run(ctx.clone(), subscribe_rx, expiry_rx));
        let reason = tokio::select! {
            r = shutdown_rx.recv() => r.unwrap_or("admin"),
            s = signal() => s,
            Some(why) = fatal_rx.recv() => {
                // Nothing to drain: a proxy without a first certificate never served.
                tracing::error!("stopping: {why}");
                return Err(anyhow::anyhow!(why));
            }
        };
        tracing::info!(reason, grace = ?ctx.cfg.shutdown_grace, open = ctx.drain.open_connections(), "draining");
        ctx.readiness.set_draining();
        ctx.drain.announce();
        // Keep serving while callers learn that this endpoint is gone.
        if ctx.drain.open_connections() > 0 || ctx.identity.current().is_some() {
            tokio::time::sleep(ctx.cfg.shutdown_delay).await;
        }
        ctx.drain.start();
        if tokio::time::timeout(ctx.cfg.shutdown_grace, ctx.drain.idle()).await.is_err() {
            tracing::warn!(open = ctx.drain.open_connections(), "grace period over; closing the remaining connections");
        }
        Ok::<_, anyhow::Error>(())
    });
    let _ = stop_tx.send(true);
    match data_thread.join() {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("the data-plane thread panicked"),
    }
    tracing::info!("weft-proxy stopped");
    result
}

async fn signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return "never";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
