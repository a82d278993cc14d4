//! Transparent mode: connections that iptables redirected to the proxy. The original destination
//! (`SO_ORIGINAL_DST`, through socket2, IPv4 and IPv6) says where each was going: outbound, a
//! service VIP or a mesh endpoint (learnt on demand from the controller) goes through the mesh and
//! anything else passes through untouched; inbound, a redirected app port from outside the mesh is
//! served in plaintext only when the service's mTLS mode is permissive.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use weft_proto::contract::OPAQUE_PORTS;

use crate::context::ProxyContext;
use crate::detect::{self, Detected, Prefixed};
use crate::inbound::{AppTarget, Caller};
use crate::outbound::{OpenGauge, Target};
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
            match resolve(&ctx, dst).await {
                Some(target) => crate::outbound::serve(&ctx, stream, Arc::new(target), Some(dst.port())).await,
                None => crate::outbound::passthrough(&ctx, stream, dst).await,
            }
        });
    }
}

/// Maps an original destination to a mesh target, subscribing to the service on first sight.
async fn resolve(ctx: &ProxyContext, dst: SocketAddr) -> Option<Target> {
    let service = ctx.view().lookup_address(dst)?.to_string();
    ctx.subscribe_to(&service);
    let deadline = tokio::time::Instant::now() + DISCOVERY_WAIT;
    loop {
        let changed = ctx.view_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let view = ctx.view();
        if let Some(svc) = view.service(&service).filter(|s| s.endpoints_known) {
            let is_vip = svc.policy.as_ref().and_then(|p| p.vip) == Some(dst.ip());
            return Some(Target::new(ctx, service, Some(dst.port()), (!is_vip).then_some(dst)));
        }
        drop(view);
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            tracing::warn!(%service, %dst, "no endpoints learnt in time; passing the connection through");
            return None;
        }
    }
}

/// A redirected connection to an app port from a client outside the mesh.
pub async fn inbound_plaintext(ctx: &Arc<ProxyContext>, mut stream: TcpStream, remote: SocketAddr, orig: SocketAddr) {
    let service = ctx.cfg.service.clone();
    let policy = ctx.view().service(&service).and_then(|s| s.policy.clone());
    if policy.as_ref().is_some_and(|p| p.mtls_strict) {
        tracing::debug!(%remote, port = orig.port(), "plaintext refused: mtls is strict");
        ctx.metrics.proxy_errors.with(&["inbound", "plaintext-refused"]).inc();
        return;
    }
    ctx.metrics.tcp_connections.with(&["inbound", &service, "false", "false"]).inc();
    let caller = Arc::new(Caller::new(ctx, None, remote));
    let app = AppTarget { ip: orig.ip(), default_port: Some(orig.port()) };
    let opaque = policy.as_ref().is_some_and(|p| p.protocol == Protocol::Tcp) || OPAQUE_PORTS.contains(&orig.port());
    let (detected, prefix) = if opaque {
        (Detected::Opaque, bytes::Bytes::new())
    } else {
        match detect::detect(&mut stream, ctx.cfg.detect_timeout).await {
            Ok(x) => x,
            Err(_) => return,
        }
    };
    let mut io = Prefixed::new(prefix, stream);
    match detected {
        Detected::Http1 => {
            let c = ctx.clone();
            crate::serve::http1(ctx, io, move |req| crate::inbound::http::handle(c.clone(), caller.clone(), app, req))
                .await
        }
        Detected::Http2 => {
            let c = ctx.clone();
            crate::serve::http2(ctx, io, move |req| crate::inbound::http::handle(c.clone(), caller.clone(), app, req))
                .await
        }
        Detected::Opaque => crate::inbound::tcp::relay_to_app(ctx, &mut io, orig).await,
    }
}
