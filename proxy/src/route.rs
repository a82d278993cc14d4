//! The route decision, made from the config snapshot before any I/O and the same way for HTTP,
//! opaque TCP and upgrades: which service a connection or request is for, which route policy
//! applies, which endpoint serves it, which address is dialled and which port it asks for on the
//! other side.
//!
//! One rule for a transparent caller's original destination: a service VIP is balanced over the
//! service's endpoints; an endpoint's own IP is that endpoint or nothing (the app named a pod — it
//! never silently gets another one).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::time::Instant;

use crate::respond::ProxyError;
use crate::state::endpoint::Endpoint;
use crate::state::policy::{Faults, RoutePolicy};
use crate::state::{Service, Snapshot};
use crate::telemetry::metrics::{ProxyMetrics, RequestSeries};

/// Where outbound traffic goes: fixed for a listener (explicit mode) or a connection (transparent).
pub(crate) struct Target {
    /// `NS/NAME`.
    pub service: String,
    /// The name and namespace alone (metric labels).
    pub name: String,
    pub namespace: String,
    /// The original destination port (transparent mode); None in explicit mode.
    pub dst_port: Option<u16>,
    /// The original destination (transparent mode) when it is one endpoint, not a VIP.
    pub endpoint: Option<SocketAddr>,
    pub series: RequestSeries,
}

impl Target {
    pub(crate) fn new(
        metrics: &ProxyMetrics,
        service: String,
        dst_port: Option<u16>,
        endpoint: Option<SocketAddr>,
    ) -> Self {
        let series = RequestSeries::new(metrics, "outbound", &service, "true", "");
        let (namespace, name) = service.split_once('/').unwrap_or(("", &service));
        let (name, namespace) = (name.to_string(), namespace.to_string());
        Self { service, name, namespace, dst_port, endpoint, series }
    }
}

/// The policy of a service the proxy has no policy for yet: nothing configured, nothing assumed.
static NO_POLICY: RoutePolicy =
    RoutePolicy { timeout: None, retries: None, retryable: false, faults: Faults::NONE, split: Vec::new() };

/// The target's service, as the snapshot knows it.
pub(crate) fn service(snapshot: &Snapshot, target: &Target) -> Result<Arc<Service>, ProxyError> {
    snapshot.service(&target.service).cloned().ok_or_else(|| ProxyError::NoEndpoints(target.service.clone()))
}

/// The route policy for a request: the first matching route's, else the service's.
pub(crate) fn route_policy<'a>(
    svc: &'a Service,
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> &'a RoutePolicy {
    match &svc.policy {
        Some(p) => p.route_for(method, uri, headers),
        None => &NO_POLICY,
    }
}

/// The endpoint chosen for one attempt or connection.
#[derive(Clone)]
pub(crate) struct Pick {
    pub endpoint: Arc<Endpoint>,
    /// The IP the app asked for (transparent mode), when it is one of the endpoint's.
    via: Option<IpAddr>,
    /// The port asked for on the peer's side.
    pub port: u16,
}

impl Pick {
    /// The address dialled and its pooled HTTP/2 connection.
    pub(crate) fn dial(&self) -> (SocketAddr, &crate::net::pool::ConnSlot) {
        self.endpoint.dial(self.via)
    }
}

/// Chooses the endpoint: the pinned one (transparent, an endpoint's IP) or the balancer's pick
/// (skipping `avoid`, the previous attempt's, when there is another), weighted by the route's own
/// split when it has one (`split`; empty: the service's).
pub(crate) fn pick(
    svc: &Service,
    target: &Target,
    now: Instant,
    avoid: Option<SocketAddr>,
    split: &[(String, u32)],
) -> Option<Pick> {
    let (endpoint, via) = match target.endpoint {
        Some(dst) => (svc.endpoint_at(dst.ip())?, Some(dst.ip())),
        None => (svc.choose_with(now, avoid, split)?, None),
    };
    let port = dst_port(target, svc, &endpoint);
    Some(Pick { endpoint, via, port })
}

/// The port on the peer's side: the original destination port (transparent; a VIP's port maps to
/// its target port), else the service's first target port, else the endpoint's app port.
fn dst_port(target: &Target, svc: &Service, ep: &Endpoint) -> u16 {
    if let Some(p) = target.dst_port {
        return match (&svc.policy, target.endpoint) {
            (Some(pol), None) => pol.target_port_for(p),
            _ => p,
        };
    }
    svc.policy.as_ref().and_then(|p| p.first_target_port()).or_else(|| ep.app_ports.first().copied()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::types;
    use weft_proto::v1 as pb;

    const BAR: &str = "default/bar";

    /// A snapshot holding bar's policy (VIP port 80 → 8080, or none) and its endpoints.
    fn snapshot(policy: bool, endpoints: &[(&str, &[u32], &[&str])]) -> Snapshot {
        let mut snap = Snapshot::default();
        if policy {
            let p = pb::ServicePolicy {
                name: "bar".into(),
                namespace: "default".into(),
                vip: "10.96.0.10".into(),
                ports: vec![pb::PortMapping { port: 80, target_port: 8080 }],
                ..Default::default()
            };
            let r = pb::Resource { name: BAR.into(), version: "1".into(), body: Some(pb::resource::Body::Service(p)) };
            let resp =
                pb::DiscoveryResponse { type_url: types::SERVICE.into(), resources: vec![r], ..Default::default() };
            snap = snap.apply(&resp).0;
        }
        let set = pb::EndpointSet {
            endpoints: endpoints
                .iter()
                .map(|(addr, ports, others)| pb::Endpoint {
                    address: addr.to_string(),
                    identity: "spiffe://weft.local/ns/default/sa/bar".into(),
                    instance: addr.to_string(),
                    app_ports: ports.to_vec(),
                    other_ips: others.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                })
                .collect(),
        };
        let r = pb::Resource { name: BAR.into(), version: "1".into(), body: Some(pb::resource::Body::Endpoints(set)) };
        let resp =
            pb::DiscoveryResponse { type_url: types::ENDPOINTS.into(), resources: vec![r], ..Default::default() };
        snap.apply(&resp).0
    }

    fn target(dst_port: Option<u16>, endpoint: Option<&str>) -> Target {
        Target::new(&ProxyMetrics::new(), BAR.into(), dst_port, endpoint.map(|e| e.parse().unwrap()))
    }

    #[tokio::test(start_paused = true)]
    async fn explicit_callers_ask_for_the_first_target_port_else_the_app_port() {
        let snap = snapshot(true, &[("10.0.0.2:4143", &[9000], &[])]);
        let svc = service(&snap, &target(None, None)).unwrap();
        let p = pick(&svc, &target(None, None), Instant::now(), None, &[]).unwrap();
        assert_eq!((p.endpoint.addr, p.port), ("10.0.0.2:4143".parse().unwrap(), 8080));
        let bare = snapshot(false, &[("10.0.0.2:4143", &[9000], &[])]);
        let svc = service(&bare, &target(None, None)).unwrap();
        assert_eq!(pick(&svc, &target(None, None), Instant::now(), None, &[]).unwrap().port, 9000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_vip_is_balanced_and_maps_its_port_to_the_target_port() {
        let snap = snapshot(true, &[("10.0.0.2:4143", &[], &[]), ("10.0.0.3:4143", &[], &[])]);
        let t = target(Some(80), None);
        let svc = service(&snap, &t).unwrap();
        let p = pick(&svc, &t, Instant::now(), None, &[]).unwrap();
        assert_eq!(p.port, 8080);
        // A retry avoids the endpoint that just failed.
        for _ in 0..20 {
            let again = pick(&svc, &t, Instant::now(), Some(p.endpoint.addr), &[]).unwrap();
            assert_ne!(again.endpoint.addr, p.endpoint.addr);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pinned_endpoint_is_that_endpoint_or_nothing() {
        let snap = snapshot(true, &[("10.0.0.2:4143", &[], &[]), ("10.0.0.3:4143", &[], &[])]);
        let t = target(Some(8080), Some("10.0.0.3:8080"));
        let svc = service(&snap, &t).unwrap();
        for _ in 0..20 {
            let p = pick(&svc, &t, Instant::now(), Some("10.0.0.3:4143".parse().unwrap()), &[]).unwrap();
            assert_eq!(p.endpoint.addr, "10.0.0.3:4143".parse().unwrap(), "even on a retry");
            assert_eq!(p.port, 8080, "the original port, not mapped");
        }
        // The pod left: no endpoint, rather than another pod the app did not ask for.
        let gone = target(Some(8080), Some("10.0.0.9:8080"));
        assert!(pick(&svc, &gone, Instant::now(), None, &[]).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pinned_second_address_dials_that_family() {
        let snap = snapshot(true, &[("[fd00::2]:4143", &[], &["10.0.0.2"])]);
        let t = target(Some(8080), Some("10.0.0.2:8080"));
        let svc = service(&snap, &t).unwrap();
        let p = pick(&svc, &t, Instant::now(), None, &[]).unwrap();
        assert_eq!(p.dial().0, "10.0.0.2:4143".parse().unwrap());
        let v6 = target(Some(8080), Some("[fd00::2]:8080"));
        assert_eq!(pick(&svc, &v6, Instant::now(), None, &[]).unwrap().dial().0, "[fd00::2]:4143".parse().unwrap());
    }

    #[test]
    fn an_unknown_service_has_no_endpoints_and_no_policy_means_none_assumed() {
        let snap = Snapshot::default();
        assert!(matches!(service(&snap, &target(None, None)), Err(ProxyError::NoEndpoints(_))));
        let bare = snapshot(false, &[]);
        let svc = service(&bare, &target(None, None)).unwrap();
        let req = http::Request::get("/x").body(()).unwrap();
        let r = route_policy(&svc, req.method(), req.uri(), req.headers());
        assert!(r.timeout.is_none() && r.retries.is_none() && !r.retryable);
    }
}
