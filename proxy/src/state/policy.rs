//! Service policy as the data plane uses it: compiled (and checked) from the controller's
//! `ServicePolicy` resource. A resource that does not compile is NACKed and the previous one stays.

use std::net::IpAddr;
use std::time::Duration;

use weft_proto::v1 as pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Detect from the first bytes.
    Detect,
    Http1,
    Http2,
    Grpc,
    Tcp,
}

impl Protocol {
    pub fn from_pb(p: i32) -> Self {
        match pb::Protocol::try_from(p) {
            Ok(pb::Protocol::Http) => Protocol::Http1,
            Ok(pb::Protocol::Http2) => Protocol::Http2,
            Ok(pb::Protocol::Grpc) => Protocol::Grpc,
            Ok(pb::Protocol::Tcp) => Protocol::Tcp,
            _ => Protocol::Detect,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RetryConfig {
    pub on: RetryOn,
    pub max_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub budget: BudgetConfig,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetConfig {
    pub ratio: f64,
    pub min_per_second: u32,
    pub window: Duration,
}

/// Which outcomes may be retried.
#[derive(Clone, Debug, Default)]
pub struct RetryOn {
    pub any_5xx: bool,
    pub gateway_error: bool,
    pub reset: bool,
    pub connect_failure: bool,
    pub refused_stream: bool,
    pub status_codes: Vec<u16>,
    /// gRPC status codes (from trailers-only responses).
    pub grpc_codes: Vec<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    pub abort_percent: u32,
    pub abort_status: u16,
    pub delay_percent: u32,
    pub delay: Duration,
}

impl Faults {
    /// No fault injected.
    pub const NONE: Faults = Faults { abort_percent: 0, abort_status: 0, delay_percent: 0, delay: Duration::ZERO };
}

#[derive(Clone, Debug)]
pub struct RoutePolicy {
    pub timeout: Option<Duration>,
    pub retries: Option<RetryConfig>,
    pub retryable: bool,
    pub faults: Faults,
    /// This route's own split over the service's version labels; empty: the service's.
    pub split: Vec<(String, u32)>,
}

#[derive(Clone, Debug, Default)]
pub struct RouteMatch {
    pub path_prefix: String,
    pub method: String,
    pub headers: Vec<(http::HeaderName, String)>,
}

impl RouteMatch {
    fn matches(&self, method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) -> bool {
        (self.path_prefix.is_empty() || uri.path().starts_with(&self.path_prefix))
            && (self.method.is_empty() || method.as_str() == self.method)
            && self.headers.iter().all(|(k, v)| headers.get(k).is_some_and(|h| h.as_bytes() == v.as_bytes()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutlierConfig {
    pub enabled: bool,
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    pub max_connections: u32,
    pub max_requests: u32,
    pub max_pending: u32,
    pub max_concurrent_retries: u32,
    pub outlier: OutlierConfig,
}

impl Default for BreakerConfig {
    /// The contract's defaults (`weft_proto::defaults`), as the controller fills them in.
    fn default() -> Self {
        Self::compile(&weft_proto::defaults::circuit_breaker())
    }
}

impl BreakerConfig {
    fn compile(cb: &pb::CircuitBreaker) -> Self {
        let ms = Duration::from_millis;
        let o = cb.outlier.unwrap_or_else(weft_proto::defaults::outlier);
        Self {
            max_connections: cb.max_connections.max(1),
            max_requests: cb.max_requests.max(1),
            max_pending: cb.max_pending,
            max_concurrent_retries: cb.max_concurrent_retries,
            outlier: OutlierConfig {
                enabled: o.enabled,
                consecutive_failures: o.consecutive_failures.max(1),
                base_ejection: ms(o.base_ejection_ms.max(1)),
                max_ejection: ms(o.max_ejection_ms.max(o.base_ejection_ms).max(1)),
                max_ejected_percent: o.max_ejected_percent.min(100),
            },
        }
    }
}

impl BudgetConfig {
    fn compile(b: &pb::RetryBudget) -> Self {
        Self { ratio: b.ratio, min_per_second: b.min_per_second, window: Duration::from_millis(b.window_ms) }
    }
}

impl Default for BudgetConfig {
    /// The contract's default budget (`weft_proto::defaults`).
    fn default() -> Self {
        Self::compile(&weft_proto::defaults::retry_budget())
    }
}

#[derive(Debug)]
pub struct Policy {
    pub source: pb::ServicePolicy,
    pub name: String,
    pub protocol: Protocol,
    pub vip: Option<IpAddr>,
    pub ports: Vec<(u16, u16)>,
    pub mtls_strict: bool,
    /// None: every mesh identity may call. A list, not a set: allow lists are short, and comparing
    /// a few strings is cheaper than hashing one on every request.
    pub allow: Option<Vec<String>>,
    pub default_route: RoutePolicy,
    pub routes: Vec<(RouteMatch, RoutePolicy)>,
    pub breaker: BreakerConfig,
    pub split: Vec<(String, u32)>,
}

impl Policy {
    /// The policy of the first matching route, else the service's.
    pub fn route(&self, parts: &http::request::Parts) -> &RoutePolicy {
        self.route_for(&parts.method, &parts.uri, &parts.headers)
    }

    pub fn route_for(&self, method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) -> &RoutePolicy {
        self.routes.iter().find(|(m, _)| m.matches(method, uri, headers)).map(|(_, p)| p).unwrap_or(&self.default_route)
    }

    /// The port a peer's app is reached on for a caller in explicit mode: the first target port.
    pub fn first_target_port(&self) -> Option<u16> {
        self.ports.first().map(|(_, t)| *t)
    }

    /// The target port for a service port (VIP traffic in transparent mode).
    pub fn target_port_for(&self, port: u16) -> u16 {
        self.ports.iter().find(|(p, _)| *p == port).map(|(_, t)| *t).unwrap_or(port)
    }

    pub fn compile(src: &pb::ServicePolicy) -> Result<Self, String> {
        let ms = Duration::from_millis;
        let port = |v: u32, what: &str| {
            u16::try_from(v).ok().filter(|p| *p != 0).ok_or_else(|| format!("{what} {v} is not a port"))
        };
        let vip = if src.vip.is_empty() {
            None
        } else {
            Some(src.vip.parse::<IpAddr>().map_err(|_| format!("vip {:?} is not an IP", src.vip))?)
        };
        let ports = src
            .ports
            .iter()
            .map(|p| Ok((port(p.port, "port")?, port(p.target_port, "target_port")?)))
            .collect::<Result<Vec<_>, String>>()?;
        let compile_route = |r: &pb::RoutePolicy| -> Result<RoutePolicy, String> {
            let retries = match &r.retries {
                None => None,
                Some(rt) => {
                    let mut on = RetryOn::default();
                    for c in &rt.on {
                        match c.as_str() {
                            "5xx" => on.any_5xx = true,
                            "gateway-error" => on.gateway_error = true,
                            "reset" => on.reset = true,
                            "connect-failure" => on.connect_failure = true,
                            "refused-stream" => on.refused_stream = true,
                            "retriable-status-codes" => {
                                on.status_codes = rt.status_codes.iter().map(|c| *c as u16).collect();
                            }
                            "cancelled" => on.grpc_codes.push(1),
                            "deadline-exceeded" => on.grpc_codes.push(4),
                            "resource-exhausted" => on.grpc_codes.push(8),
                            "internal" => on.grpc_codes.push(13),
                            "unavailable" => on.grpc_codes.push(14),
                            other => return Err(format!("unknown retry condition {other:?}")),
                        }
                    }
                    let budget = rt.budget.unwrap_or_else(weft_proto::defaults::retry_budget);
                    if !(0.0..=100.0).contains(&budget.ratio) || budget.window_ms == 0 {
                        return Err("invalid retry budget".into());
                    }
                    Some(RetryConfig {
                        on,
                        max_retries: rt.max_retries,
                        per_try_timeout: (rt.per_try_timeout_ms > 0).then(|| ms(rt.per_try_timeout_ms)),
                        backoff_base: ms(rt.backoff_base_ms.max(1)),
                        backoff_max: ms(rt.backoff_max_ms.max(rt.backoff_base_ms).max(1)),
                        budget: BudgetConfig::compile(&budget),
                    })
                }
            };
            let faults = r.faults.as_ref().map_or(Ok(Faults::default()), |f| {
                if f.abort_percent > 100 || f.delay_percent > 100 {
                    return Err("fault percentages must be 0..=100".to_string());
                }
                Ok(Faults {
                    abort_percent: f.abort_percent,
                    abort_status: u16::try_from(f.abort_status).ok().filter(|s| (200..600).contains(s)).unwrap_or(503),
                    delay_percent: f.delay_percent,
                    delay: ms(f.delay_ms),
                })
            })?;
            Ok(RoutePolicy {
                timeout: (r.timeout_ms > 0).then(|| ms(r.timeout_ms)),
                retries,
                retryable: r.retryable,
                faults,
                split: r.split.iter().map(|s| (s.version.clone(), s.weight)).collect(),
            })
        };
        let default_route = compile_route(&src.default_route.clone().unwrap_or_default())?;
        let mut routes = Vec::new();
        for r in &src.routes {
            let m = r.r#match.clone().unwrap_or_default();
            let mut headers = Vec::new();
            for (k, v) in &m.headers {
                let name =
                    http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("invalid header name {k:?}"))?;
                headers.push((name, v.clone()));
            }
            let policy = compile_route(&r.policy.clone().unwrap_or_default())?;
            routes.push((RouteMatch { path_prefix: m.path_prefix, method: m.method, headers }, policy));
        }
        let breaker = src.circuit_breaker.as_ref().map_or_else(BreakerConfig::default, BreakerConfig::compile);
        Ok(Self {
            source: src.clone(),
            name: src.name.clone(),
            protocol: Protocol::from_pb(src.protocol),
            vip,
            ports,
            mtls_strict: src.mtls == pb::MtlsMode::Strict as i32,
            allow: src.allow.as_ref().map(|a| {
                let mut ids = a.identities.clone();
                ids.sort();
                ids.dedup();
                ids
            }),
            default_route,
            routes,
            breaker,
            split: src.split.iter().map(|s| (s.version.clone(), s.weight)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_in_order_with_fallback() {
        let src = pb::ServicePolicy {
            name: "bar".into(),
            default_route: Some(pb::RoutePolicy { timeout_ms: 1000, ..Default::default() }),
            routes: vec![pb::Route {
                r#match: Some(pb::RouteMatch {
                    path_prefix: "/slow".into(),
                    method: "GET".into(),
                    headers: [("x-canary".to_string(), "1".to_string())].into(),
                }),
                policy: Some(pb::RoutePolicy { timeout_ms: 5000, ..Default::default() }),
            }],
            ..Default::default()
        };
        let p = Policy::compile(&src).unwrap();
        let req = |m: &str, path: &str, canary: bool| {
            let mut b = http::Request::builder().method(m).uri(path);
            if canary {
                b = b.header("x-canary", "1");
            }
            b.body(()).unwrap().into_parts().0
        };
        assert_eq!(p.route(&req("GET", "/slow/x", true)).timeout, Some(Duration::from_secs(5)));
        assert_eq!(p.route(&req("GET", "/slow/x", false)).timeout, Some(Duration::from_secs(1)));
        assert_eq!(p.route(&req("POST", "/slow", true)).timeout, Some(Duration::from_secs(1)));
    }

    #[test]
    fn bad_resources_do_not_compile() {
        let bad = pb::ServicePolicy { name: "x".into(), vip: "nope".into(), ..Default::default() };
        assert!(Policy::compile(&bad).is_err());
        let bad_port =
            pb::ServicePolicy { ports: vec![pb::PortMapping { port: 70000, target_port: 1 }], ..Default::default() };
        assert!(Policy::compile(&bad_port).is_err());
    }
}
