//! Transparent mode: connections that iptables redirected to the proxy. The original destination
//! (`SO_ORIGINAL_DST`, through socket2, IPv4 and IPv6) says where each was going: outbound, a
//! service VIP or a mesh endpoint (learnt on demand from the controller) goes through the mesh, a
//! mesh destination without endpoints or the outbound listener itself is refused, and anything else
//! passes through untouched; inbound, a redirected app port from outside the mesh is served in
//! plaintext only when the service's policy admits plaintext callers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::context::ProxyContext;
use crate::detect::{self, Detected, Outcome, Prefixed};
use crate::inbound::authorize::{authorize, Refusal};
use crate::inbound::{AppTarget, Caller};
use crate::outbound::{Framing, OpenGauge, Target};
use crate::policy::Protocol;

/// How long a first connection to a newly seen service waits for its endpoints.
const DISCOVERY_WAIT: Duration = Duration::from_secs(5);

/// The destination a redirected connection was sent to.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let v4_first = stream.local_addr().ok().is_some_and(|a| match a.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    });
    let (first, second) = if v4_first {
        (sock.original_dst_v4(), sock.original_dst_v6())
    } else {
        (sock.original_dst_v6(), sock.original_dst_v4())
    };
    let addr = first.or(second).ok()?.as_socket()?;
    Some(match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    })
}

/// The outbound listener that iptables feeds (`--outbound`).
pub async fn serve_outbound(ctx: Arc<ProxyContext>, listener: TcpListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("transparent accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _open = ctx.drain.track();
            let _gauge = OpenGauge::new(&ctx, "outbound");
            let _ = stream.set_nodelay(true);
            let Some(dst) = original_dst(&stream) else {
                tracing::debug!("outbound connection without an original destination; closing");
                return;
            };
            // A connection made straight to this listener was never redirected: its "original
            // destination" is the listener itself, and passing it through would loop until the
            // descriptors run out.
            if stream.local_addr().is_ok_and(|local| local == dst) {
                refuse(&ctx, "loop", || format!("{dst} is this proxy's own outbound listener"));
                return;
            }
            match resolve(&ctx, dst).await {
                Resolved::Mesh(target) => {
                    crate::outbound::serve(&ctx, stream, Arc::from(target), Some(dst.port())).await
                }
                Resolved::Outside => crate::outbound::passthrough(&ctx, stream, dst).await,
                // A mesh destination is never reached in plaintext behind the mesh's back.
                Resolved::NoEndpoints(service) => {
                    refuse(&ctx, "no-endpoints", || {
                        format!("{dst} belongs to {service}, which has no endpoints; closing rather than passing it through")
                    })
                }
            }
        });
    }
}

/// Counts and (rate-limited) logs an outbound connection refused, then drops it.
fn refuse(ctx: &ProxyContext, reason: &'static str, why: impl FnOnce() -> String) {
    ctx.metrics.proxy_errors.with(&["outbound", reason]).inc();
    weft_telemetry::log_limit::warn("outbound-refused", why);
}

/// Where an original destination goes.
enum Resolved {
    Mesh(Box<Target>),
    /// Not a mesh address: passed through as it is.
    Outside,
    /// A mesh service whose endpoints were not learnt in time.
    NoEndpoints(String),
}

/// Maps an original destination to a mesh target, subscribing to the service on first sight.
async fn resolve(ctx: &ProxyContext, dst: SocketAddr) -> Resolved {
    let Some(service) = ctx.view().lookup_address(dst).map(str::to_string) else {
        return Resolved::Outside;
    };
    ctx.subscribe_to(&service);
    let deadline = tokio::time::Instant::now() + DISCOVERY_WAIT;
    loop {
        let changed = ctx.view_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let view = ctx.view();
        if let Some(svc) = view.service(&service).filter(|s| s.endpoints_known) {
            if svc.endpoints.is_empty() {
                return Resolved::NoEndpoints(service);
            }
            let is_vip = svc.policy.as_ref().and_then(|p| p.vip) == Some(dst.ip());
            return Resolved::Mesh(Box::new(Target::new(ctx, service, Some(dst.port()), (!is_vip).then_some(dst))));
        }
        drop(view);
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Resolved::NoEndpoints(service);
        }
    }
}

/// A redirected connection to an app port from a client outside the mesh: served in plaintext when
/// the service's policy admits plaintext callers, as its protocol says.
pub async fn inbound_plaintext(ctx: &Arc<ProxyContext>, stream: TcpStream, remote: SocketAddr, orig: SocketAddr) {
    let policy = crate::inbound::own_policy(ctx);
    match authorize(policy.as_deref(), None) {
        Ok(()) => {}
        // HTTP callers that are merely not in an allow list are told so per request (403).
        Err(Refusal::Unauthorized) if policy.as_ref().is_some_and(|p| p.protocol != Protocol::Tcp) => {}
        Err(r) => {
            weft_telemetry::log_limit::debug("inbound-refused", || {
                format!("plaintext from {remote} refused: {}", r.reason())
            });
            ctx.metrics.proxy_errors.with(&["inbound", r.reason()]).inc();
            return;
        }
    }
    let (ns, name) = ctx.cfg.own_service.split_once('/').unwrap_or(("", ""));
    ctx.metrics.tcp_connections.with(&["inbound", name, ns, "false", "false"]).inc();
    let caller = Arc::new(Caller::new(ctx, None, remote));
    let app = AppTarget { ip: orig.ip(), default_port: Some(orig.port()), fixed: true };
    let protocol = policy.as_ref().map_or(Protocol::Detect, |p| p.protocol);
    let framing = Framing::of(protocol, Some(orig.port()));
    if framing == Framing::Opaque && policy.as_ref().is_some_and(|p| p.allow.is_some()) {
        // Bytes can't be told "403": a plaintext caller of a service with an allow list is closed.
        ctx.metrics.proxy_errors.with(&["inbound", "unauthorized"]).inc();
        return;
    }
    let mut stream = stream;
    match framing {
        Framing::Detect => match detect::detect(&mut stream, Some(ctx.cfg.detect_timeout), ctx.cfg.header_read_timeout)
            .await
        {
            Ok(Outcome::Known(Detected::Opaque, prefix)) => {
                crate::inbound::tcp::serve_stream(ctx, Prefixed::new(prefix, stream), caller, app, Framing::Opaque)
                    .await
            }
            Ok(Outcome::Known(d, prefix)) => {
                crate::inbound::http::serve(ctx, Prefixed::new(prefix, stream), caller, app, d).await
            }
            Ok(Outcome::Silent) => crate::inbound::tcp::serve_stream(ctx, stream, caller, app, Framing::Detect).await,
            Err(_) => ctx.metrics.proxy_errors.with(&["inbound", "detect-timeout"]).inc(),
        },
        other => crate::inbound::tcp::serve_stream(ctx, stream, caller, app, other).await,
    }
}
