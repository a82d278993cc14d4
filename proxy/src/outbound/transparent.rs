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
        let svc = view.service(&service);
        if let Some(route) = route_to(svc.map(|s| &**s), dst, false) {
            return route.resolved(&ctx.metrics, service, dst);
        }
        drop(view);
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            let view = ctx.view();
            return match route_to(view.service(&service).map(|s| &**s), dst, true) {
                Some(route) => route.resolved(&ctx.metrics, service, dst),
                None => Resolved::NoEndpoints(service),
            };
        }
    }
}

/// Where a connection to a mesh service goes, once the proxy knows enough to say.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// Through the balancer (a VIP).
    Balanced,
    /// To the one endpoint that owns the destination IP.
    Pinned,
    /// Nowhere: the service has no endpoints.
    Nowhere,
}

impl Route {
    fn resolved(self, metrics: &crate::telemetry::metrics::ProxyMetrics, service: String, dst: SocketAddr) -> Resolved {
        let pinned = match self {
            Route::Nowhere => return Resolved::NoEndpoints(service),
            Route::Balanced => None,
            Route::Pinned => Some(dst),
        };
        Resolved::Mesh(Box::new(Target::new(metrics, service, Some(dst.port()), pinned)))
    }
}

/// Decides from what the proxy holds, or `None` to wait for more. Endpoints and policy arrive as
/// separate resources, in either order: a destination that is not an endpoint's IP is a VIP,
/// whose port mapping is in the policy, so that waits for the policy too (`give_up`: the wait is
/// over, decide with what there is).
fn route_to(svc: Option<&crate::state::Service>, dst: SocketAddr, give_up: bool) -> Option<Route> {
    let svc = svc.filter(|s| s.endpoints_known)?;
    if svc.endpoints.is_empty() {
        return Some(Route::Nowhere);
    }
    if svc.endpoint_at(dst.ip()).is_some() {
        return Some(Route::Pinned);
    }
    (svc.policy.is_some() || give_up).then_some(Route::Balanced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::types;
    use weft_proto::v1 as pb;

    use crate::state::Snapshot;

    const BAR: &str = "default/bar";

    fn apply(snap: &Snapshot, type_url: &str, body: pb::resource::Body) -> Snapshot {
        let r = pb::Resource { name: BAR.into(), version: "1".into(), body: Some(body) };
        let resp = pb::DiscoveryResponse { type_url: type_url.into(), resources: vec![r], ..Default::default() };
        snap.apply(&resp).0
    }

    fn policy(snap: &Snapshot) -> Snapshot {
        let p = pb::ServicePolicy {
            name: "bar".into(),
            namespace: "default".into(),
            vip: "10.96.0.10".into(),
            ports: vec![pb::PortMapping { port: 80, target_port: 8080 }],
            ..Default::default()
        };
        apply(snap, types::SERVICE, pb::resource::Body::Service(p))
    }

    fn endpoints(snap: &Snapshot, addrs: &[&str]) -> Snapshot {
        let endpoints = addrs
            .iter()
            .map(|a| pb::Endpoint { address: a.to_string(), instance: a.to_string(), ..Default::default() })
            .collect();
        apply(snap, types::ENDPOINTS, pb::resource::Body::Endpoints(pb::EndpointSet { endpoints }))
    }

    #[test]
    fn a_vip_waits_for_the_policy_even_when_the_endpoints_came_first() {
        let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
        let pod: SocketAddr = "10.1.0.11:8080".parse().unwrap();
        let empty = Snapshot::default();
        assert_eq!(route_to(empty.service(BAR).map(|s| &**s), vip, false), None);
        // Endpoints first (the race a first connection can meet): a VIP waits, a pod IP need not.
        let eps = endpoints(&empty, &["10.1.0.11:4143"]);
        assert_eq!(route_to(eps.service(BAR).map(|s| &**s), vip, false), None);
        assert_eq!(route_to(eps.service(BAR).map(|s| &**s), pod, false), Some(Route::Pinned));
        assert_eq!(route_to(eps.service(BAR).map(|s| &**s), vip, true), Some(Route::Balanced));
        let both = policy(&eps);
        assert_eq!(route_to(both.service(BAR).map(|s| &**s), vip, false), Some(Route::Balanced));
        // Policy first: still waiting for the endpoints; none at all: nowhere.
        let pol = policy(&empty);
        assert_eq!(route_to(pol.service(BAR).map(|s| &**s), vip, false), None);
        let none = endpoints(&pol, &[]);
        assert_eq!(route_to(none.service(BAR).map(|s| &**s), vip, false), Some(Route::Nowhere));
    }
}
