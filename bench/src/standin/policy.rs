//! The policy answers: inbound "allow everyone" servers, outbound policies for meshed destinations
//! (NotFound for the rest, which linkerd2-proxy forwards in plaintext), and Destination lookups
//! rejected as InvalidArgument (the proxy then uses no profile and never retries the lookup).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use linkerd2_proxy_api::destination::{
    self as dst, destination_server, protocol_hint, tls_identity, DestinationProfile, GetDestination, ProtocolHint,
    TlsIdentity, WeightedAddr,
};
use linkerd2_proxy_api::http_route::Timeouts;
use linkerd2_proxy_api::inbound::{self as inb, inbound_server_policies_server, PortSpec};
use linkerd2_proxy_api::meta::{metadata, Metadata};
use linkerd2_proxy_api::net::IpNetwork;
use linkerd2_proxy_api::outbound::{
    self as out, backend, failure_accrual, http_route, opaque_route, outbound_policies_server, proxy_protocol,
    traffic_spec, Backend, ExponentialBackoff, FailureAccrual, HttpRoute, OpaqueRoute, OutboundPolicy, Queue,
    TrafficSpec,
};
use tonic::{Request, Response, Status};

use super::Directory;
use crate::topology::policy::POLICY;

type Watch<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// One message, then the stream stays open (the proxy treats a closed watch as an error to retry).
fn hold<T: Send + 'static>(msg: T) -> Watch<T> {
    use tokio_stream::StreamExt;
    Box::pin(tokio_stream::once(Ok(msg)).chain(tokio_stream::pending()))
}

fn meta(name: &str) -> Option<Metadata> {
    Some(Metadata { kind: Some(metadata::Kind::Default(name.to_string())) })
}

fn dur(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
}

/// Every client may connect, authenticated or not (mTLS is still used: the client proxy is told
/// the server's identity). `labels["name"]` is required, or the proxy fails the port.
pub fn inbound_server() -> inb::Server {
    let any = |ip: std::net::IpAddr| inb::Network { net: Some(IpNetwork::from((ip, 0u8))), except: vec![] };
    inb::Server {
        protocol: Some(inb::ProxyProtocol {
            kind: Some(inb::proxy_protocol::Kind::Detect(inb::proxy_protocol::Detect {
                timeout: dur(Duration::from_secs(10)),
                http_routes: vec![],
                http_local_rate_limit: None,
            })),
        }),
        server_ips: vec![],
        authorizations: vec![inb::Authz {
            networks: vec![any([0, 0, 0, 0].into()), any(std::net::Ipv6Addr::UNSPECIFIED.into())],
            authentication: Some(inb::Authn {
                permit: Some(inb::authn::Permit::Unauthenticated(inb::authn::PermitUnauthenticated {})),
            }),
            labels: Default::default(),
            metadata: meta("all-unauthenticated"),
        }],
        labels: [("name", "all-unauthenticated"), ("kind", "default")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A forward backend to `addr`, with mTLS to `identity`, HTTP/2 between the proxies, and opaque
/// transport to the peer's inbound port (so the server pod needs no inbound redirect).
fn backend(addr: SocketAddr, identity: &str, inbound_port: u16) -> Backend {
    let name = tls_identity::DnsLikeIdentity { name: identity.to_string() };
    Backend {
        metadata: meta("weft-bench"),
        queue: Some(Queue { capacity: POLICY.max_requests, failfast_timeout: dur(Duration::from_secs(3)) }),
        kind: Some(backend::Kind::Forward(WeightedAddr {
            addr: Some(addr.into()),
            weight: 10_000,
            metric_labels: Default::default(),
            tls_identity: Some(TlsIdentity {
                server_name: Some(name.clone()),
                strategy: Some(tls_identity::Strategy::DnsLikeIdentity(name)),
            }),
            protocol_hint: Some(ProtocolHint {
                opaque_transport: Some(protocol_hint::OpaqueTransport { inbound_port: inbound_port.into() }),
                protocol: Some(protocol_hint::Protocol::H2(protocol_hint::H2 {})),
            }),
            authority_override: None,
            http2: None,
            resource_ref: None,
        })),
    }
}

fn backoff(min: Duration, max: Duration) -> Option<ExponentialBackoff> {
    Some(ExponentialBackoff {
        min_backoff: dur(min),
        max_backoff: dur(max),
        jitter_ratio: 1.0,
        respect_retry_after_hint: false,
    })
}

/// The HTTP route: match everything, the shared timeout and retry settings, one backend.
fn http_route(be: &Backend) -> HttpRoute {
    HttpRoute {
        metadata: meta("weft-bench"),
        hosts: vec![],
        rules: vec![http_route::Rule {
            matches: vec![],
            filters: vec![],
            backends: Some(http_route::Distribution {
                kind: Some(http_route::distribution::Kind::FirstAvailable(http_route::distribution::FirstAvailable {
                    backends: vec![http_route::RouteBackend {
                        backend: Some(be.clone()),
                        filters: vec![],
                        ..Default::default()
                    }],
                })),
            }),
            timeouts: Some(Timeouts { request: dur(POLICY.timeout), response: None, idle: None }),
            retry: Some(http_route::Retry {
                max_retries: POLICY.max_retries,
                max_request_bytes: 64 * 1024,
                conditions: Some(http_route::retry::Conditions {
                    status_ranges: vec![http_route::retry::conditions::StatusRange { start: 500, end: 599 }],
                }),
                timeout: dur(POLICY.per_try_timeout),
                backoff: backoff(POLICY.backoff_base, POLICY.backoff_max),
            }),
            ..Default::default()
        }],
    }
}

/// The outbound policy for a meshed destination.
pub fn outbound_policy(addr: SocketAddr, identity: &str, inbound_port: u16) -> OutboundPolicy {
    let be = backend(addr, identity, inbound_port);
    let route = http_route(&be);
    let accrual = Some(FailureAccrual {
        ejection: None,
        kind: Some(failure_accrual::Kind::ConsecutiveFailures(failure_accrual::ConsecutiveFailures {
            max_failures: POLICY.consecutive_failures,
            backoff: backoff(POLICY.base_ejection, POLICY.max_ejection),
        })),
    });
    let opaque = OpaqueRoute {
        metadata: meta("weft-bench"),
        rules: vec![opaque_route::Rule {
            backends: Some(opaque_route::Distribution {
                kind: Some(opaque_route::distribution::Kind::FirstAvailable(
                    opaque_route::distribution::FirstAvailable {
                        backends: vec![opaque_route::RouteBackend { backend: Some(be.clone()), filters: vec![] }],
                    },
                )),
            }),
            filters: vec![],
        }],
    };
    OutboundPolicy {
        metadata: meta("weft-bench"),
        protocol: Some(out::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Detect(proxy_protocol::Detect {
                timeout: dur(Duration::from_secs(10)),
                opaque: Some(proxy_protocol::Opaque { routes: vec![opaque] }),
                http1: Some(proxy_protocol::Http1 { routes: vec![route.clone()], failure_accrual: accrual }),
                http2: Some(proxy_protocol::Http2 { routes: vec![route], failure_accrual: accrual }),
            })),
        }),
    }
}

pub struct Inbound;

#[tonic::async_trait]
impl inbound_server_policies_server::InboundServerPolicies for Inbound {
    async fn get_port(&self, _req: Request<PortSpec>) -> Result<Response<inb::Server>, Status> {
        Ok(Response::new(inbound_server()))
    }

    type WatchPortStream = Watch<inb::Server>;

    async fn watch_port(&self, _req: Request<PortSpec>) -> Result<Response<Self::WatchPortStream>, Status> {
        Ok(Response::new(hold(inbound_server())))
    }
}

pub struct Outbound {
    pub dir: Arc<Directory>,
}

impl Outbound {
    fn policy(&self, spec: &TrafficSpec) -> Result<OutboundPolicy, Status> {
        let Some(traffic_spec::Target::Addr(addr)) = spec.target.clone() else {
            return Err(Status::not_found("only address targets are known"));
        };
        let addr = SocketAddr::try_from(addr).map_err(|e| Status::invalid_argument(e.to_string()))?;
        match self.dir.meshed.get(&addr) {
            Some(identity) => Ok(outbound_policy(addr, identity, self.dir.inbound_port)),
            None => Err(Status::not_found(format!("{addr} is not meshed"))),
        }
    }
}

#[tonic::async_trait]
impl outbound_policies_server::OutboundPolicies for Outbound {
    async fn get(&self, req: Request<TrafficSpec>) -> Result<Response<OutboundPolicy>, Status> {
        Ok(Response::new(self.policy(req.get_ref())?))
    }

    type WatchStream = Watch<OutboundPolicy>;

    async fn watch(&self, req: Request<TrafficSpec>) -> Result<Response<Self::WatchStream>, Status> {
        Ok(Response::new(hold(self.policy(req.get_ref())?)))
    }
}

pub struct Destination;

#[tonic::async_trait]
impl destination_server::Destination for Destination {
    type GetStream = Watch<dst::Update>;

    async fn get(&self, _req: Request<GetDestination>) -> Result<Response<Self::GetStream>, Status> {
        Err(Status::invalid_argument("the stand-in has no destination service"))
    }

    type GetProfileStream = Watch<DestinationProfile>;

    async fn get_profile(&self, _req: Request<GetDestination>) -> Result<Response<Self::GetProfileStream>, Status> {
        Err(Status::invalid_argument("the stand-in has no profiles"))
    }
}
