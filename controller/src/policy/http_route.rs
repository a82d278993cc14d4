//! Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`) attached to a Service (GAMMA: a
//! `parentRef` of kind Service) reduced to what Weft's per-service policy can carry: weighted
//! backend Services, path-prefix / method / exact-header matches, and request timeouts. Whatever
//! else a route says is listed as ignored, so that it is reported rather than silently dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{Backend, ObjectRef, MAX_WEIGHT};

pub const GROUP: &str = "gateway.networking.k8s.io";
pub const VERSIONS: [&str; 1] = ["v1"];
pub const PLURAL: &str = "httproutes";

/// One match as the proxy matches: every non-empty field must agree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    /// Empty: any path.
    pub path_prefix: String,
    pub method: String,
    /// Lower-case names, exact values.
    pub headers: BTreeMap<String, String>,
}

impl Match {
    pub fn is_catch_all(&self) -> bool {
        self.path_prefix.is_empty() && self.method.is_empty() && self.headers.is_empty()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// The matches Weft can apply (no `matches` in the object: one catch-all).
    pub matches: Vec<Match>,
    pub backends: Vec<Backend>,
    /// `timeouts.request`: Some(0) says "none" explicitly.
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRouteRecord {
    pub object: ObjectRef,
    /// The Services (in the route's namespace) it attaches to.
    pub parents: Vec<String>,
    pub rules: Vec<Rule>,
    pub invalid: Vec<String>,
    pub ignored: Vec<String>,
}

impl HttpRouteRecord {
    pub fn from_json(obj: &Value) -> Option<Self> {
        let object = ObjectRef::from_json(obj)?;
        let spec = &obj["spec"];
        let (mut invalid, mut ignored) = (Vec::new(), Vec::new());
        let mut parents = Vec::new();
        for (i, p) in spec["parentRefs"].as_array().into_iter().flatten().enumerate() {
            let group = p["group"].as_str().unwrap_or(GROUP);
            let kind = p["kind"].as_str().unwrap_or("Gateway");
            // A route to a Gateway is for the Gateway's implementation, not for the mesh.
            if kind != "Service" || !(group.is_empty() || group == "core") {
                continue;
            }
            let Some(name) = p["name"].as_str().filter(|n| !n.is_empty()) else {
                invalid.push(format!("spec.parentRefs[{i}].name is required"));
                continue;
            };
            match p["namespace"].as_str().filter(|ns| *ns != object.namespace) {
                Some(ns) => ignored.push(format!(
                    "spec.parentRefs[{i}]: Service {ns}/{name} is in another namespace (a consumer route); \
                     Weft applies a Service's routes to every caller, so only producer routes are applied"
                )),
                None if p["port"].is_number() => ignored
                    .push(format!("spec.parentRefs[{i}].port: the route is applied to every port of Service {name}")),
                None => {}
            }
            if p["namespace"].as_str().is_none_or(|ns| ns == object.namespace) && !parents.iter().any(|n| n == name) {
                parents.push(name.to_string());
            }
        }
        let mut rules = Vec::new();
        for (i, r) in spec["rules"].as_array().into_iter().flatten().enumerate() {
            rules.push(rule(&format!("spec.rules[{i}]"), r, &object.namespace, &mut invalid, &mut ignored));
        }
        if rules.is_empty() {
            // The API's default: one rule, every request, to the parent.
            rules.push(Rule { matches: vec![Match::default()], ..Default::default() });
        }
        Some(Self { object, parents, rules, invalid, ignored })
    }

    pub fn describe(&self) -> String {
        format!("HTTPRoute {}/{}", self.object.namespace, self.object.name)
    }
}

fn rule(path: &str, r: &Value, ns: &str, invalid: &mut Vec<String>, ignored: &mut Vec<String>) -> Rule {
    let mut out = Rule::default();
    match r["matches"].as_array() {
        Some(list) if !list.is_empty() => {
            for (j, m) in list.iter().enumerate() {
                if let Some(m) = one_match(&format!("{path}.matches[{j}]"), m, ignored) {
                    out.matches.push(m);
                }
            }
        }
        _ => out.matches.push(Match::default()),
    }
    for (j, b) in r["backendRefs"].as_array().into_iter().flatten().enumerate() {
        let bpath = format!("{path}.backendRefs[{j}]");
        let kind = b["kind"].as_str().unwrap_or("Service");
        let group = b["group"].as_str().unwrap_or("");
        if kind != "Service" || !group.is_empty() {
            ignored.push(format!("{bpath}: only Services are backends ({group}/{kind} is left out)"));
            continue;
        }
        let Some(name) = b["name"].as_str().filter(|n| !n.is_empty()) else {
            invalid.push(format!("{bpath}.name is required"));
            continue;
        };
        if b["namespace"].as_str().is_some_and(|n| n != ns) {
            ignored.push(format!("{bpath}: {name} is in another namespace (needs a ReferenceGrant); left out"));
            continue;
        }
        let weight = match &b["weight"] {
            Value::Null => 1,
            Value::Number(n) if n.as_u64().is_some_and(|w| w <= MAX_WEIGHT) => n.as_u64().unwrap_or(0) as u32,
            other => {
                invalid.push(format!("{bpath}.weight: {other} is not a whole number in 0..={MAX_WEIGHT}"));
                continue;
            }
        };
        if b["filters"].as_array().is_some_and(|f| !f.is_empty()) {
            ignored.push(format!("{bpath}.filters are not applied"));
        }
        if out.backends.iter().any(|x: &Backend| x.service == name) {
            invalid.push(format!("{bpath}: {name} is listed twice"));
            continue;
        }
        out.backends.push(Backend { service: name.to_string(), weight });
    }
    if !out.backends.is_empty() && out.backends.iter().all(|b| b.weight == 0) {
        invalid.push(format!("{path}.backendRefs: at least one weight must be above 0"));
    }
    if let Some(filters) = r["filters"].as_array().filter(|f| !f.is_empty()) {
        let kinds: Vec<&str> = filters.iter().filter_map(|f| f["type"].as_str()).collect();
        ignored.push(format!("{path}.filters ({}) are not applied", kinds.join(", ")));
    }
    match r["timeouts"]["request"].as_str().map(gateway_duration) {
        Some(Ok(d)) => out.timeout_ms = Some(d.as_millis().min(u128::from(u64::MAX)) as u64),
        Some(Err(e)) => invalid.push(format!("{path}.timeouts.request: {e}")),
        None => {}
    }
    if r["timeouts"]["backendRequest"].is_string() {
        ignored.push(format!(
            "{path}.timeouts.backendRequest is not applied (a per-try timeout belongs to retries, set in the mesh file)"
        ));
    }
    for field in ["retry", "sessionPersistence"] {
        if !r[field].is_null() {
            ignored.push(format!("{path}.{field} is not applied"));
        }
    }
    out
}

fn one_match(path: &str, m: &Value, ignored: &mut Vec<String>) -> Option<Match> {
    let mut out = Match::default();
    let p = &m["path"];
    let ptype = p["type"].as_str().unwrap_or("PathPrefix");
    let pvalue = p["value"].as_str().unwrap_or("/");
    match ptype {
        "PathPrefix" => out.path_prefix = if pvalue == "/" { String::new() } else { pvalue.to_string() },
        other => {
            ignored.push(format!(
                "{path}: path type {other} cannot be expressed (the proxy matches prefixes); match left out"
            ));
            return None;
        }
    }
    for h in m["headers"].as_array().into_iter().flatten() {
        let name = h["name"].as_str().unwrap_or_default().to_ascii_lowercase();
        match (h["type"].as_str().unwrap_or("Exact"), h["value"].as_str()) {
            ("Exact", Some(v)) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                out.headers.insert(name, v.to_string());
            }
            (t, _) => {
                ignored.push(format!("{path}: header match {name:?} ({t}) cannot be expressed; match left out"));
                return None;
            }
        }
    }
    if m["queryParams"].as_array().is_some_and(|q| !q.is_empty()) {
        ignored.push(format!("{path}: query-parameter matches cannot be expressed; match left out"));
        return None;
    }
    out.method = m["method"].as_str().unwrap_or_default().to_ascii_uppercase();
    Some(out)
}

/// A Gateway API duration: `1h`, `30s`, `500ms`, or several (`1m30s`); `0s` is zero.
fn gateway_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (like 10s, 500ms or 1m30s)");
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, tail) = rest.split_at(digits);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let (unit, tail) = if let Some(t) = tail.strip_prefix("ms") {
            (Duration::from_millis(1), t)
        } else if let Some(t) = tail.strip_prefix('s') {
            (Duration::from_secs(1), t)
        } else if let Some(t) = tail.strip_prefix('m') {
            (Duration::from_secs(60), t)
        } else if let Some(t) = tail.strip_prefix('h') {
            (Duration::from_secs(3600), t)
        } else {
            return Err(bad());
        };
        total = total
            .checked_add(unit.checked_mul(u32::try_from(n).map_err(|_| bad())?).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn route(spec: Value) -> HttpRouteRecord {
        HttpRouteRecord::from_json(&json!({"metadata": {"namespace": "shop", "name": "r"}, "spec": spec})).unwrap()
    }

    #[test]
    fn reads_a_gamma_canary_with_a_header_match() {
        let r = route(json!({
            "parentRefs": [{"group": "", "kind": "Service", "name": "bar", "port": 80}, {"name": "edge-gateway"}],
            "rules": [
                {"matches": [{"headers": [{"name": "X-Canary", "value": "yes"}]}], "timeouts": {"request": "1m30s"},
                 "backendRefs": [{"name": "bar-canary", "port": 80}]},
                {"backendRefs": [{"name": "bar-v1", "port": 80, "weight": 90}, {"name": "bar-v2", "weight": 10}],
                 "timeouts": {"request": "500ms"}}
            ]
        }));
        assert!(r.invalid.is_empty(), "{:?}", r.invalid);
        assert_eq!(r.parents, ["bar"], "the Gateway parent is not the mesh's");
        assert_eq!(r.rules[0].matches[0].headers["x-canary"], "yes");
        assert_eq!(r.rules[0].timeout_ms, Some(90_000));
        assert_eq!(r.rules[0].backends, [Backend { service: "bar-canary".into(), weight: 1 }]);
        assert!(r.rules[1].matches[0].is_catch_all());
        assert_eq!(r.rules[1].timeout_ms, Some(500));
        assert_eq!(r.ignored.len(), 1, "the parentRef port: {:?}", r.ignored);
    }

    #[test]
    fn what_the_proxy_cannot_match_is_left_out_and_said() {
        let r = route(json!({
            "parentRefs": [{"kind": "Service", "group": "", "name": "bar"}],
            "rules": [{"matches": [
                {"path": {"type": "Exact", "value": "/a"}},
                {"path": {"type": "PathPrefix", "value": "/api"}, "method": "get"},
                {"headers": [{"type": "RegularExpression", "name": "x", "value": ".*"}]},
                {"queryParams": [{"name": "q", "value": "1"}]}],
                "filters": [{"type": "RequestHeaderModifier"}],
                "timeouts": {"request": "soon"}}]
        }));
        assert_eq!(
            r.rules[0].matches,
            [Match { path_prefix: "/api".into(), method: "GET".into(), ..Default::default() }]
        );
        assert_eq!(r.ignored.len(), 4, "{:?}", r.ignored);
        assert_eq!(r.invalid.len(), 1, "{:?}", r.invalid);
    }

    #[test]
    fn gateway_durations() {
        assert_eq!(gateway_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(gateway_duration("1h2m3s4ms").unwrap(), Duration::from_millis(3_723_004));
        for bad in ["", "10", "1.5s", "s", "-1s", "10x"] {
            assert!(gateway_duration(bad).is_err(), "{bad}");
        }
    }
}
