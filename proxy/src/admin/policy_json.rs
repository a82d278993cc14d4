//! A service's policy for `/config`, in the mesh file's shape (`"timeout": "2s"`, `retries: {…}`)
//! with every value explicit, defaults included, so what the proxy holds can be compared with
//! what was written.

use serde_json::{json, Map, Value};
use weft_proto::v1 as pb;

/// The policy as a mesh-file service entry.
pub(crate) fn service_policy(p: &pb::ServicePolicy) -> Value {
    let mut out = Map::new();
    out.insert("protocol".into(), json!(protocol(p.protocol)));
    out.insert("vip".into(), if p.vip.is_empty() { Value::Null } else { json!(p.vip) });
    out.insert("ports".into(), p.ports.iter().map(|m| json!({"port": m.port, "target_port": m.target_port})).collect());
    out.insert("mtls".into(), json!(if p.mtls == pb::MtlsMode::Strict as i32 { "strict" } else { "permissive" }));
    out.insert("allow".into(), p.allow.as_ref().map_or(Value::Null, |a| json!(a.identities)));
    route_fields(&mut out, p.default_route.as_ref());
    out.insert("circuit_breaker".into(), p.circuit_breaker.as_ref().map_or(Value::Null, circuit_breaker));
    out.insert("split".into(), p.split.iter().map(|s| json!({"version": s.version, "weight": s.weight})).collect());
    out.insert(
        "routes".into(),
        p.routes
            .iter()
            .map(|r| {
                let mut route = Map::new();
                let m = r.r#match.clone().unwrap_or_default();
                route.insert(
                    "match".into(),
                    json!({
                        "path_prefix": non_empty(&m.path_prefix),
                        "method": non_empty(&m.method),
                        "headers": m.headers,
                    }),
                );
                route_fields(&mut route, r.policy.as_ref());
                Value::Object(route)
            })
            .collect(),
    );
    Value::Object(out)
}

/// The fields a route and the service's default share: timeout, retries, retryable, faults.
fn route_fields(out: &mut Map<String, Value>, r: Option<&pb::RoutePolicy>) {
    let r = r.cloned().unwrap_or_default();
    out.insert("timeout".into(), optional_duration(r.timeout_ms));
    out.insert("retries".into(), r.retries.as_ref().map_or(Value::Null, retries));
    out.insert("retryable".into(), json!(r.retryable));
    out.insert("faults".into(), r.faults.as_ref().map_or(Value::Null, faults));
    if !r.split.is_empty() {
        let split: Map<String, Value> = r.split.iter().map(|s| (s.version.clone(), json!(s.weight))).collect();
        out.insert("split".into(), Value::Object(split));
    }
}

fn retries(r: &pb::RetryPolicy) -> Value {
    let budget = r.budget.unwrap_or_default();
    json!({
        "on": r.on,
        "status_codes": r.status_codes,
        "max_retries": r.max_retries,
        "per_try_timeout": optional_duration(r.per_try_timeout_ms),
        "backoff": {"base": duration(r.backoff_base_ms), "max": duration(r.backoff_max_ms)},
        "budget": {
            "ratio": budget.ratio,
            "min_per_second": budget.min_per_second,
            "window": duration(budget.window_ms),
        },
    })
}

fn faults(f: &pb::Faults) -> Value {
    json!({
        "abort": {"percent": f.abort_percent, "status": f.abort_status},
        "delay": {"percent": f.delay_percent, "duration": duration(f.delay_ms)},
    })
}

fn circuit_breaker(cb: &pb::CircuitBreaker) -> Value {
    let outlier = cb.outlier.as_ref().map_or(Value::Null, |o| {
        json!({
            "enabled": o.enabled,
            "consecutive_failures": o.consecutive_failures,
            "base_ejection": duration(o.base_ejection_ms),
            "max_ejection": duration(o.max_ejection_ms),
            "max_ejected_percent": o.max_ejected_percent,
        })
    });
    json!({
        "max_connections": cb.max_connections,
        "max_requests": cb.max_requests,
        "max_pending": cb.max_pending,
        "max_concurrent_retries": cb.max_concurrent_retries,
        "outlier": outlier,
    })
}

/// The mesh file's spelling of a protocol; `detect` is what an absent `protocol:` means.
fn protocol(p: i32) -> &'static str {
    match pb::Protocol::try_from(p).unwrap_or(pb::Protocol::Detect) {
        pb::Protocol::Detect => "detect",
        pb::Protocol::Http => "http",
        pb::Protocol::Http2 => "http2",
        pb::Protocol::Grpc => "grpc",
        pb::Protocol::Tcp => "tcp",
    }
}

fn non_empty(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        json!(s)
    }
}

/// `0` means "none" for timeouts: null.
fn optional_duration(ms: u64) -> Value {
    if ms == 0 {
        Value::Null
    } else {
        duration(ms)
    }
}

/// A duration in the largest unit that writes it exactly, as the mesh file accepts it back.
fn duration(ms: u64) -> Value {
    const UNITS: [(u64, &str); 4] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")];
    let text = UNITS
        .iter()
        .find(|(size, _)| ms > 0 && ms.is_multiple_of(*size))
        .map_or_else(|| format!("{ms}ms"), |(size, unit)| format!("{}{unit}", ms / size));
    json!(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back_as_written() {
        for (ms, text) in
            [(0, "0ms"), (250, "250ms"), (1500, "1500ms"), (2000, "2s"), (300_000, "5m"), (7_200_000, "2h")]
        {
            assert_eq!(duration(ms), json!(text));
            let back = weft_proto::duration::parse_duration(text).unwrap();
            assert_eq!(back.as_millis() as u64, ms);
        }
    }

    #[test]
    fn a_policy_is_explicit_json_in_the_mesh_file_shape() {
        let p = pb::ServicePolicy {
            name: "bar".into(),
            namespace: "default".into(),
            protocol: pb::Protocol::Http as i32,
            mtls: pb::MtlsMode::Strict as i32,
            allow: Some(pb::AllowList { identities: vec!["spiffe://weft.local/ns/default/sa/foo".into()] }),
            default_route: Some(pb::RoutePolicy {
                timeout_ms: 2000,
                retries: Some(pb::RetryPolicy {
                    on: vec!["5xx".into()],
                    max_retries: 2,
                    backoff_base_ms: 25,
                    backoff_max_ms: 250,
                    budget: Some(weft_proto::defaults::retry_budget()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            routes: vec![pb::Route {
                r#match: Some(pb::RouteMatch { path_prefix: "/slow".into(), ..Default::default() }),
                policy: Some(pb::RoutePolicy { timeout_ms: 10_000, ..Default::default() }),
            }],
            circuit_breaker: Some(weft_proto::defaults::circuit_breaker()),
            split: vec![pb::SplitWeight { version: "v1".into(), weight: 90 }],
            ..Default::default()
        };
        let j = service_policy(&p);
        assert_eq!(j["protocol"], "http");
        assert_eq!(j["mtls"], "strict");
        assert_eq!(j["timeout"], "2s");
        assert_eq!(j["retries"]["backoff"], json!({"base": "25ms", "max": "250ms"}));
        assert_eq!(j["retries"]["per_try_timeout"], Value::Null);
        assert_eq!(j["routes"][0]["match"]["path_prefix"], "/slow");
        assert_eq!(j["routes"][0]["timeout"], "10s");
        assert_eq!(j["split"][0], json!({"version": "v1", "weight": 90}));
        assert!(j["circuit_breaker"]["max_requests"].is_u64());
        assert!(j["circuit_breaker"]["outlier"]["base_ejection"].is_string());
        assert_eq!(j["vip"], Value::Null);
        // Nothing in it is a Rust Debug string.
        let text = j.to_string();
        for debug in ["Some(", "RoutePolicy", "Duration", "{ "] {
            assert!(!text.contains(debug), "{debug} in {text}");
        }
    }
}
