//! The mesh file (universal mode): trust domain, services and their policy, static endpoints.
//! Parsing reports every problem at once; a valid file becomes the per-service policies that the
//! discovery stream hands to proxies.

mod guard;
mod yaml;

pub use guard::MAX_BYTES as MAX_MESH_BYTES;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use weft_certs::{ServiceKey, SpiffeId};
use weft_proto::v1 as pb;

pub use weft_proto::duration::parse_duration;
use yaml::{Obj, Problems};

pub const RETRY_CONDITIONS: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "refused-stream",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The namespace of a service whose key and `namespace:` field name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A validated mesh file. Services are keyed `NS/NAME` (the discovery resources' names).
#[derive(Clone, Debug, PartialEq)]
pub struct MeshConfig {
    pub trust_domain: String,
    pub services: BTreeMap<String, pb::ServicePolicy>,
    pub static_endpoints: Vec<StaticEndpoint>,
}

/// An endpoint outside the mesh (no proxy): reached directly, in plaintext.
#[derive(Clone, Debug, PartialEq)]
pub struct StaticEndpoint {
    /// `NS/NAME`.
    pub service: String,
    pub address: SocketAddr,
    pub protocol: pb::Protocol,
}

impl MeshConfig {
    /// Parses and validates mesh-file text. Every problem found is returned at once.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        guard::check(text).map_err(|e| vec![e])?;
        let value: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| vec![format!("not valid YAML: {e}")])?;
        let mut p = Problems::default();
        if value.is_null() {
            return Err(vec!["the mesh file is empty: it needs at least `trust_domain: ...`".into()]);
        }
        let Some(mut root) = Obj::new("", &value, &mut p) else {
            return Err(p.0);
        };
        let trust_domain = match root.str("trust_domain", &mut p) {
            Some(td) => {
                if let Err(e) = weft_certs::spiffe::validate_trust_domain(&td) {
                    p.add("trust_domain", e);
                }
                td
            }
            None => {
                p.add("trust_domain", "required");
                String::new()
            }
        };
        let mut services = BTreeMap::new();
        if let Some(svcs) = root.obj("services", &mut p) {
            for (raw, v) in svcs.entries() {
                let path = format!("services.{raw}");
                if let Some((key, policy)) = parse_service(&path, &raw, v, &trust_domain, &mut p) {
                    let key = key.to_string();
                    if services.contains_key(&key) {
                        p.add(&path, format!("{key} is declared twice"));
                    }
                    services.insert(key, policy);
                }
            }
            // Consumed through entries(): every key is a service name.
        }
        let mut static_endpoints = Vec::new();
        if let Some(list) = root.list("endpoints", &mut p) {
            for (i, v) in list.iter().enumerate() {
                if let Some(e) = parse_static_endpoint(&format!("endpoints[{i}]"), v, &mut p) {
                    static_endpoints.push(e);
                }
            }
        }
        root.finish(&mut p);

        // Static endpoints may name services the file does not declare: give those defaults.
        for e in &static_endpoints {
            let (namespace, name) = e.service.split_once('/').unwrap_or((DEFAULT_NAMESPACE, &e.service));
            services.entry(e.service.clone()).or_insert_with(|| pb::ServicePolicy {
                name: name.to_string(),
                namespace: namespace.to_string(),
                protocol: e.protocol as i32,
                circuit_breaker: Some(default_circuit_breaker()),
                default_route: Some(pb::RoutePolicy::default()),
                ..Default::default()
            });
        }
        check_unique_vips(&services, &mut p);
        if p.0.is_empty() {
            Ok(Self { trust_domain, services, static_endpoints })
        } else {
            Err(p.0)
        }
    }
}

fn check_unique_vips(services: &BTreeMap<String, pb::ServicePolicy>, p: &mut Problems) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, s) in services {
        if s.vip.is_empty() {
            continue;
        }
        if let Some(other) = seen.insert(&s.vip, name) {
            p.add(&format!("services.{name}.vip"), format!("{} is also the VIP of {other}", s.vip));
        }
    }
}

fn parse_protocol(o: &mut Obj, p: &mut Problems) -> Option<pb::Protocol> {
    o.choice("protocol", &["http", "http2", "grpc", "tcp"], p).map(|s| match s.as_str() {
        "http" => pb::Protocol::Http,
        "http2" => pb::Protocol::Http2,
        "grpc" => pb::Protocol::Grpc,
        _ => pb::Protocol::Tcp,
    })
}

/// A service's key: `NAME` (in the `namespace:` field's namespace, else `default`) or `NS/NAME`
/// (then a `namespace:` field, if any, must agree).
fn service_key(path: &str, raw: &str, field: Option<&str>, p: &mut Problems) -> Option<ServiceKey> {
    let key = match ServiceKey::parse(raw, field.unwrap_or(DEFAULT_NAMESPACE)) {
        Ok(k) => k,
        Err(e) => {
            p.add(path, format!("invalid service key (NAME or NAMESPACE/NAME): {e}"));
            return None;
        }
    };
    if let Some(ns) = field.filter(|ns| *ns != key.namespace()) {
        p.add(&format!("{path}.namespace"), format!("{ns:?} contradicts the key's namespace {:?}", key.namespace()));
        return None;
    }
    if key.namespace() == weft_certs::spiffe::SYSTEM_NAMESPACE {
        p.add(path, "the namespace weft-system is reserved for the control plane");
        return None;
    }
    Some(key)
}

/// An `allow` entry: `SA` (the service's own namespace), `NS/SA`, or a full SPIFFE ID.
fn allowed_identity(entry: &str, namespace: &str, td: &str) -> Result<SpiffeId, String> {
    if entry.starts_with("spiffe://") {
        return entry.parse::<SpiffeId>().map_err(|e| e.to_string());
    }
    let td = if td.is_empty() { "weft.local" } else { td };
    let (ns, sa) = entry.split_once('/').unwrap_or((namespace, entry));
    SpiffeId::new(td, ns, sa).map_err(|e| format!("{e} (expected SA, NAMESPACE/SA or spiffe://...)"))
}

fn parse_service(
    path: &str,
    raw_key: &str,
    v: &serde_norway::Value,
    td: &str,
    p: &mut Problems,
) -> Option<(ServiceKey, pb::ServicePolicy)> {
    let mut o = Obj::new(path, v, p)?;
    let protocol = parse_protocol(&mut o, p).unwrap_or(pb::Protocol::Detect);
    let namespace_field = o.str("namespace", p);
    let key = service_key(path, raw_key, namespace_field.as_deref(), p);
    let namespace = key.as_ref().map_or_else(|| DEFAULT_NAMESPACE.to_string(), |k| k.namespace().to_string());
    let vip = o.str("vip", p).and_then(|s| match s.parse::<IpAddr>() {
        Ok(ip) => Some(ip.to_string()),
        Err(_) => {
            p.add(&o.child_path("vip"), format!("{s:?} is not an IP address"));
            None
        }
    });
    let mut ports = Vec::new();
    if let Some(list) = o.list("ports", p) {
        for (i, v) in list.iter().enumerate() {
            let ppath = format!("{}.ports[{i}]", path);
            let Some(mut po) = Obj::new(&ppath, v, p) else {
                continue;
            };
            let port = po.int_in("port", 1..=65535, p);
            let target = po.int_in("target_port", 1..=65535, p);
            po.finish(p);
            match (port, target) {
                (Some(port), target) => {
                    ports.push(pb::PortMapping { port: port as u32, target_port: target.unwrap_or(port) as u32 })
                }
                (None, _) => p.add(&ppath, "port is required"),
            }
        }
    }
    let mtls = match o.choice("mtls", &["permissive", "strict"], p).as_deref() {
        Some("strict") => pb::MtlsMode::Strict,
        _ => pb::MtlsMode::Permissive,
    };
    let allow = o.strings("allow", p).map(|list| {
        let mut ids = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            match allowed_identity(entry, &namespace, td) {
                Ok(id) => ids.push(id.to_string()),
                Err(e) => p.add(&format!("{path}.allow[{i}]"), e),
            }
        }
        pb::AllowList { identities: ids }
    });
    let http_only = protocol == pb::Protocol::Tcp;
    let defaults = RouteFields::parse(&mut o, p);
    let circuit_breaker = match o.obj("circuit_breaker", p) {
        Some(cb) => parse_circuit_breaker(cb, p),
        None => default_circuit_breaker(),
    };
    let mut split = Vec::new();
    if let Some(list) = o.list("split", p) {
        let mut versions = BTreeSet::new();
        for (i, v) in list.iter().enumerate() {
            let spath = format!("{path}.split[{i}]");
            let Some(mut so) = Obj::new(&spath, v, p) else {
                continue;
            };
            let version = so.str("version", p);
            let has_weight = so.get("weight").is_some();
            let weight = so.int_in("weight", 0..=1_000_000, p);
            so.finish(p);
            match (version, weight) {
                (Some(version), Some(weight)) => {
                    if !versions.insert(version.clone()) {
                        p.add(&spath, format!("version {version:?} is listed twice"));
                    }
                    split.push(pb::SplitWeight { version, weight: weight as u32 });
                }
                // An invalid weight was reported already; only a missing field is news.
                (version, _) => {
                    if version.is_none() || !has_weight {
                        p.add(&spath, "version and weight are required")
                    }
                }
            }
        }
        if !split.is_empty() && split.iter().all(|s| s.weight == 0) {
            p.add(&format!("{path}.split"), "at least one weight must be above 0");
        }
    }
    let mut routes = Vec::new();
    if let Some(list) = o.list("routes", p) {
        for (i, v) in list.iter().enumerate() {
            let rpath = format!("{path}.routes[{i}]");
            let Some(mut ro) = Obj::new(&rpath, v, p) else {
                continue;
            };
            let mut m = pb::RouteMatch::default();
            if let Some(mut mo) = ro.obj("match", p) {
                m.path_prefix = mo.str("path_prefix", p).unwrap_or_default();
                if !m.path_prefix.is_empty() && !m.path_prefix.starts_with('/') {
                    p.add(&mo.child_path("path_prefix"), "must start with '/'");
                }
                m.method = mo.str("method", p).unwrap_or_default().to_ascii_uppercase();
                if let Some(mut ho) = mo.obj("headers", p) {
                    for (k, _) in ho.entries().collect::<Vec<_>>() {
                        if let Some(val) = ho.str(&k, p) {
                            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                                p.add(&ho.child_path(&k), "not a valid header name");
                            }
                            m.headers.insert(k.to_ascii_lowercase(), val);
                        }
                    }
                    ho.finish(p);
                }
                mo.finish(p);
            }
            let fields = RouteFields::parse(&mut ro, p);
            ro.finish(p);
            routes.push(pb::Route { r#match: Some(m), policy: Some(fields.over(&defaults).into_policy()) });
        }
    }
    o.finish(p);
    if http_only && (!routes.is_empty() || defaults.retries.is_some() || defaults.faults.is_some()) {
        p.add(path, "routes, retries and faults apply to HTTP; this service's protocol is tcp");
    }
    let key = key?;
    Some((
        key.clone(),
        pb::ServicePolicy {
            name: key.name().to_string(),
            namespace,
            protocol: protocol as i32,
            vip: vip.unwrap_or_default(),
            ports,
            mtls: mtls as i32,
            allow,
            default_route: Some(defaults.into_policy()),
            routes,
            circuit_breaker: Some(circuit_breaker),
            split,
        },
    ))
}

/// The per-route policy fields; a route's absent fields fall back to the service's.
#[derive(Clone, Default)]
struct RouteFields {
    timeout: Option<Duration>,
    retries: Option<pb::RetryPolicy>,
    retryable: Option<bool>,
    faults: Option<pb::Faults>,
}

impl RouteFields {
    fn parse(o: &mut Obj, p: &mut Problems) -> Self {
        let timeout = o.duration("timeout", p);
        let retries = o.obj("retries", p).map(|r| parse_retries(r, p));
        let retryable = o.bool("retryable", p);
        let faults = o.obj("faults", p).map(|f| parse_faults(f, p));
        Self { timeout, retries, retryable, faults }
    }

    fn over(self, base: &RouteFields) -> Self {
        Self {
            timeout: self.timeout.or(base.timeout),
            retries: self.retries.or_else(|| base.retries.clone()),
            retryable: self.retryable.or(base.retryable),
            faults: self.faults.or(base.faults),
        }
    }

    fn into_policy(self) -> pb::RoutePolicy {
        pb::RoutePolicy {
            timeout_ms: self.timeout.map(|d| d.as_millis().max(1) as u64).unwrap_or(0),
            retries: self.retries,
            retryable: self.retryable.unwrap_or(false),
            faults: self.faults,
            split: Vec::new(),
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn parse_retries(mut o: Obj, p: &mut Problems) -> pb::RetryPolicy {
    let on =
        o.strings("on", p).unwrap_or_else(|| weft_proto::defaults::RETRY_ON.iter().map(|c| c.to_string()).collect());
    for c in &on {
        if !RETRY_CONDITIONS.contains(&c.as_str()) {
            p.add(&o.child_path("on"), format!("{c:?} is not one of {}", RETRY_CONDITIONS.join(", ")));
        }
    }
    let mut status_codes = Vec::new();
    if let Some(list) = o.list("status_codes", p) {
        for (i, v) in list.iter().enumerate() {
            match v.as_u64() {
                Some(c @ 100..=599) => status_codes.push(c as u32),
                _ => p.add(&format!("{}.status_codes[{i}]", o.path), "expected an HTTP status code"),
            }
        }
    }
    if on.iter().any(|c| c == "retriable-status-codes") && status_codes.is_empty() {
        p.add(&o.child_path("status_codes"), "retriable-status-codes needs at least one status code");
    }
    let max_retries =
        o.int_in("max_retries", 0..=100, p).unwrap_or(u64::from(weft_proto::defaults::MAX_RETRIES)) as u32;
    let per_try_timeout = o.duration("per_try_timeout", p);
    let (mut base, mut max) = (
        Duration::from_millis(weft_proto::defaults::BACKOFF_BASE_MS),
        Duration::from_millis(weft_proto::defaults::BACKOFF_MAX_MS),
    );
    if let Some(mut b) = o.obj("backoff", p) {
        base = b.duration("base", p).unwrap_or(base);
        max = b.duration("max", p).unwrap_or(max.max(base));
        if base.is_zero() || max < base {
            p.add(&b.path, "backoff needs 0 < base <= max");
        }
        b.finish(p);
    }
    let mut budget = default_budget();
    if let Some(mut b) = o.obj("budget", p) {
        if let Some(r) = b.f64("ratio", p) {
            if (0.0..=100.0).contains(&r) {
                budget.ratio = r;
            } else {
                p.add(&b.child_path("ratio"), "must be between 0 and 100");
            }
        }
        budget.min_per_second =
            b.int_in("min_per_second", 0..=1_000_000, p).map_or(budget.min_per_second, |v| v as u32);
        if let Some(w) = b.duration("window", p) {
            if w < Duration::from_secs(1) || w > Duration::from_secs(60) {
                p.add(&b.child_path("window"), "must be between 1s and 60s");
            } else {
                budget.window_ms = ms(w);
            }
        }
        b.finish(p);
    }
    o.finish(p);
    pb::RetryPolicy {
        on,
        status_codes,
        max_retries,
        per_try_timeout_ms: per_try_timeout.map(ms).unwrap_or(0),
        backoff_base_ms: ms(base).max(1),
        backoff_max_ms: ms(max).max(1),
        budget: Some(budget),
    }
}

use weft_proto::defaults::outlier as default_outlier;
pub use weft_proto::defaults::{circuit_breaker as default_circuit_breaker, retry_budget as default_budget};

fn parse_circuit_breaker(mut o: Obj, p: &mut Problems) -> pb::CircuitBreaker {
    let d = default_circuit_breaker();
    let cb = pb::CircuitBreaker {
        max_connections: o.int_in("max_connections", 1..=1_000_000, p).map_or(d.max_connections, |v| v as u32),
        max_requests: o.int_in("max_requests", 1..=1_000_000, p).map_or(d.max_requests, |v| v as u32),
        max_pending: o.int_in("max_pending", 0..=1_000_000, p).map_or(d.max_pending, |v| v as u32),
        max_concurrent_retries: o
            .int_in("max_concurrent_retries", 0..=1_000_000, p)
            .map_or(d.max_concurrent_retries, |v| v as u32),
        outlier: Some(match o.get("outlier") {
            Some(serde_norway::Value::Bool(false)) => pb::Outlier { enabled: false, ..default_outlier() },
            Some(v) => match Obj::new(&o.child_path("outlier"), v, p) {
                Some(mut oo) => {
                    let def = default_outlier();
                    let out = pb::Outlier {
                        enabled: oo.bool("enabled", p).unwrap_or(true),
                        consecutive_failures: oo
                            .int_in("consecutive_failures", 1..=10_000, p)
                            .map_or(def.consecutive_failures, |v| v as u32),
                        base_ejection_ms: oo.duration("base_ejection", p).map_or(def.base_ejection_ms, ms).max(1),
                        max_ejection_ms: oo.duration("max_ejection", p).map_or(def.max_ejection_ms, ms).max(1),
                        max_ejected_percent: oo
                            .int_in("max_ejected_percent", 0..=100, p)
                            .map_or(def.max_ejected_percent, |v| v as u32),
                    };
                    if out.max_ejection_ms < out.base_ejection_ms {
                        p.add(&oo.path, "max_ejection must be at least base_ejection");
                    }
                    oo.finish(p);
                    out
                }
                None => default_outlier(),
            },
            None => default_outlier(),
        }),
    };
    o.finish(p);
    cb
}

fn parse_faults(mut o: Obj, p: &mut Problems) -> pb::Faults {
    let mut f = pb::Faults::default();
    if let Some(mut a) = o.obj("abort", p) {
        f.abort_percent = a.int_in("percent", 0..=100, p).unwrap_or(0) as u32;
        f.abort_status = a.int_in("status", 200..=599, p).unwrap_or(503) as u32;
        a.finish(p);
    }
    if let Some(mut d) = o.obj("delay", p) {
        f.delay_percent = d.int_in("percent", 0..=100, p).unwrap_or(0) as u32;
        f.delay_ms = d.duration("duration", p).map(ms).unwrap_or(0);
        if f.delay_percent > 0 && f.delay_ms == 0 {
            p.add(&d.child_path("duration"), "required when percent is above 0");
        }
        d.finish(p);
    }
    o.finish(p);
    f
}

fn parse_static_endpoint(path: &str, v: &serde_norway::Value, p: &mut Problems) -> Option<StaticEndpoint> {
    let mut o = Obj::new(path, v, p)?;
    let service = o.str("service", p);
    let address = o.str("address", p);
    let protocol = parse_protocol(&mut o, p).unwrap_or(pb::Protocol::Detect);
    o.finish(p);
    let (Some(service), Some(address)) = (service, address) else {
        p.add(path, "service and address are required");
        return None;
    };
    let service = match ServiceKey::parse(&service, DEFAULT_NAMESPACE) {
        Ok(k) => k.to_string(),
        Err(e) => {
            p.add(&format!("{path}.service"), format!("{e} (expected NAME or NAMESPACE/NAME)"));
            return None;
        }
    };
    match address.parse::<SocketAddr>() {
        Ok(address) => Some(StaticEndpoint { service, address, protocol }),
        Err(_) => {
            p.add(&format!("{path}.address"), format!("{address:?} is not IP:port"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
trust_domain: weft.local
services:
  bar:
    protocol: http
    vip: 10.96.0.10
    ports: [{port: 80, target_port: 8080}]
    mtls: strict
    allow: [foo, "spiffe://weft.local/ns/other/sa/web"]
    timeout: 2s
    retries:
      on: [5xx, reset, connect-failure]
      max_retries: 2
      per_try_timeout: 500ms
      backoff: {base: 25ms, max: 250ms}
      budget: {ratio: 0.2, min_per_second: 10, window: 10s}
    circuit_breaker:
      max_connections: 100
      max_requests: 50
      max_pending: 0
      max_concurrent_retries: 3
      outlier: {consecutive_failures: 5, base_ejection: 30s, max_ejection: 300s, max_ejected_percent: 50}
    split: [{version: v1, weight: 90}, {version: v2, weight: 10}]
    faults: {abort: {percent: 0, status: 503}, delay: {percent: 0, duration: 100ms}}
    routes:
      - match: {path_prefix: /slow, method: GET, headers: {x-canary: "1"}}
        timeout: 5s
        retryable: false
endpoints:
  - {service: payments, address: "10.0.5.7:443", protocol: tcp}
"#;

    #[test]
    fn parses_the_full_example() {
        let m = MeshConfig::parse(FULL).unwrap();
        assert_eq!(m.trust_domain, "weft.local");
        let bar = &m.services["default/bar"];
        assert_eq!(bar.protocol, pb::Protocol::Http as i32);
        assert_eq!(bar.vip, "10.96.0.10");
        assert_eq!(bar.ports, vec![pb::PortMapping { port: 80, target_port: 8080 }]);
        assert_eq!(bar.mtls, pb::MtlsMode::Strict as i32);
        assert_eq!(
            bar.allow.as_ref().unwrap().identities,
            vec!["spiffe://weft.local/ns/default/sa/foo", "spiffe://weft.local/ns/other/sa/web"]
        );
        let d = bar.default_route.as_ref().unwrap();
        assert_eq!(d.timeout_ms, 2000);
        let r = d.retries.as_ref().unwrap();
        assert_eq!((r.max_retries, r.per_try_timeout_ms, r.backoff_base_ms, r.backoff_max_ms), (2, 500, 25, 250));
        assert_eq!(bar.circuit_breaker.as_ref().unwrap().max_requests, 50);
        assert_eq!(bar.split.len(), 2);
        // The route overrides the timeout and inherits the retries.
        let route = bar.routes[0].policy.as_ref().unwrap();
        assert_eq!(route.timeout_ms, 5000);
        assert_eq!(route.retries.as_ref().unwrap().max_retries, 2);
        assert_eq!(bar.routes[0].r#match.as_ref().unwrap().headers["x-canary"], "1");
        // A static endpoint's service gets defaults.
        assert_eq!(m.services["default/payments"].protocol, pb::Protocol::Tcp as i32);
        assert_eq!(m.static_endpoints[0].address, "10.0.5.7:443".parse().unwrap());
    }

    #[test]
    fn absent_sections_mean_the_documented_defaults() {
        let m = MeshConfig::parse("trust_domain: weft.local\nservices:\n  bar: {}\n").unwrap();
        let bar = &m.services["default/bar"];
        assert_eq!(bar.default_route.as_ref().unwrap().timeout_ms, 0, "no timeout unless configured");
        assert!(bar.default_route.as_ref().unwrap().retries.is_none(), "no retries unless configured");
        assert!(bar.allow.is_none(), "every mesh identity allowed");
        assert_eq!(bar.mtls, pb::MtlsMode::Permissive as i32);
        assert_eq!(bar.circuit_breaker, Some(default_circuit_breaker()));
    }

    #[test]
    fn retries_get_the_default_budget() {
        let m = MeshConfig::parse("trust_domain: weft.local\nservices:\n  bar: {retries: {max_retries: 3}}\n").unwrap();
        let r = m.services["default/bar"].default_route.clone().unwrap().retries.unwrap();
        assert_eq!(r.budget, Some(default_budget()));
        assert_eq!(r.on, vec!["5xx", "reset", "connect-failure", "refused-stream"]);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let bad = r#"
trust_domain: Bad_TD
servces: {}
services:
  bar:
    protocol: htp
    timeout: 2x
    vip: not-an-ip
    retries: {on: [sometimes], max_retries: -1}
    circuit_breaker: {max_requests: 0}
    split: [{version: v1, weight: 0}]
    colour: blue
endpoints:
  - {service: payments, address: "nowhere"}
"#;
        let errs = MeshConfig::parse(bad).unwrap_err();
        let all = errs.join("\n");
        for needle in [
            "trust_domain",
            "servces: unknown field",
            "services.bar.protocol",
            "services.bar.timeout",
            "services.bar.vip",
            "services.bar.retries.on",
            "services.bar.retries.max_retries",
            "services.bar.circuit_breaker.max_requests",
            "services.bar.split",
            "services.bar.colour: unknown field",
            "endpoints[0].address",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn rejects_duplicate_vips_and_reserved_namespace() {
        let errs = MeshConfig::parse(
            "trust_domain: weft.local\nservices:\n  a: {vip: 10.0.0.1}\n  b: {vip: 10.0.0.1}\n  c: {namespace: weft-system}\n  weft-system/d: {}\n",
        )
        .unwrap_err()
        .join("\n");
        assert!(errs.contains("also the VIP"), "{errs}");
        assert!(errs.contains("reserved"), "{errs}");
    }

    #[test]
    fn the_example_mesh_files_are_valid() {
        for text in [
            include_str!("../../../examples/quickstart/mesh.yaml"),
            include_str!("../../../examples/resilience/mesh.yaml"),
            include_str!("../../../examples/playground/mesh/mesh.yaml"),
        ] {
            MeshConfig::parse(text).unwrap_or_else(|e| panic!("{e:?}"));
        }
    }

    #[test]
    fn services_are_keyed_by_namespace_and_name() {
        let m = MeshConfig::parse(
            "trust_domain: weft.local
services:
  bar: {allow: [foo, shop/web]}
  evil/bar: {}
  pay: {namespace: shop, allow: [web, spiffe://weft.local/ns/default/sa/foo]}
endpoints:
  - {service: shop/db, address: \"10.0.0.9:5432\"}
  - {service: legacy, address: \"10.0.0.8:80\"}
",
        )
        .unwrap();
        let keys: Vec<_> = m.services.keys().map(String::as_str).collect();
        assert_eq!(keys, ["default/bar", "default/legacy", "evil/bar", "shop/db", "shop/pay"]);
        assert_eq!(m.services["evil/bar"].namespace, "evil");
        assert_eq!(m.services["evil/bar"].name, "bar");
        assert_eq!(
            m.services["default/bar"].allow.as_ref().unwrap().identities,
            ["spiffe://weft.local/ns/default/sa/foo", "spiffe://weft.local/ns/shop/sa/web"]
        );
        assert_eq!(
            m.services["shop/pay"].allow.as_ref().unwrap().identities,
            ["spiffe://weft.local/ns/shop/sa/web", "spiffe://weft.local/ns/default/sa/foo"]
        );
        assert_eq!(m.static_endpoints[0].service, "shop/db");
        assert_eq!(m.services["shop/db"].namespace, "shop");
    }

    #[test]
    fn contradicting_or_duplicate_keys_are_refused() {
        let errs = MeshConfig::parse(
            "trust_domain: weft.local\nservices:\n  a/bar: {namespace: b}\n  bar: {}\n  default/bar: {}\n  x/y/z: {}\n",
        )
        .unwrap_err()
        .join("\n");
        assert!(errs.contains("contradicts"), "{errs}");
        assert!(errs.contains("declared twice"), "{errs}");
        assert!(errs.contains("services.x/y/z"), "{errs}");
    }

    #[test]
    fn an_empty_file_and_a_bad_weight_say_what_is_wrong_once() {
        let errs = MeshConfig::parse("").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("empty"), "{errs:?}");
        let errs = MeshConfig::parse(
            "trust_domain: weft.local\nservices:\n  bar: {split: [{version: v1, weight: -5}, {version: v2, weight: 1}]}\n",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("weight"), "{errs:?}");
    }

    #[test]
    fn invalid_yaml_is_one_clear_error() {
        let errs = MeshConfig::parse("trust_domain: [unclosed").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("not valid YAML"));
    }
}
