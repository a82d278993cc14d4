//! Transparent mode, outbound: connections iptables redirected to the outbound listener. The
//! original destination says where each was going: a service VIP or a mesh endpoint (learnt on
//! demand from the controller) goes through the mesh, a mesh destination without endpoints or the
//! outbound listener itself is refused, and anything else passes through untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::context::ProxyContext;
use crate::net::accept::accept_loop;
use crate::net::original_dst::original_dst;
use crate::respond::{close_with_warning, ProxyError};
use crate::route::Target;

/// How long a first connection to a newly seen service waits for its endpoints.
const DISCOVERY_WAIT: Duration = Duration::from_secs(5);

/// The outbound listener that iptables feeds (`--outbound`).
pub async fn accept_redirected(ctx: Arc<ProxyContext>, listener: TcpListener) {
    // Outbound keeps serving during the drain: the app may still be finishing its work.
    let never = std::future::pending();
    accept_loop(ctx, listener, "outbound", never, |ctx, stream, _| async move {
        let Some(dst) = original_dst(&stream) else {
            tracing::debug!("outbound connection without an original destination; closing");
            return;
        };
        // A connection made straight to this listener was never redirected: its "original
        // destination" is the listener itself, and passing it through would loop until the
        // descriptors run out.
        if stream.local_addr().is_ok_and(|local| local == dst) {
            return close_with_warning(&ctx.metrics, "outbound", &ProxyError::Loop, || {
                format!("{dst} is this proxy's own outbound listener")
            });
        }
        match resolve(&ctx, dst).await {
            Resolved::Mesh(target) => {
                crate::outbound::connection(&ctx, stream, Arc::from(target), Some(dst.port())).await
            }
            Resolved::Outside => crate::outbound::passthrough(&ctx, stream, dst).await,
            // A mesh destination is never reached in plaintext behind the mesh's back.
            Resolved::NoEndpoints(service) => {
                let e = ProxyError::NoEndpoints(service.clone());
                close_with_warning(&ctx.metrics, "outbound", &e, || {
                    format!(
                        "{dst} belongs to {service}, which has no endpoints; closing rather than passing it through"
                    )
                })
            }
        }
    })
    .await
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
            return Resolved::Mesh(Box::new(Target::new(
                &ctx.metrics,
                service,
                Some(dst.port()),
                (!is_vip).then_some(dst),
            )));
        }
        drop(view);
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Resolved::NoEndpoints(service);
        }
    }
}
