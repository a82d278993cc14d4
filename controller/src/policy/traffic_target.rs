//! SMI access control reduced to records: `TrafficTarget` (`access.smi-spec.io` v1alpha3, what
//! Open Service Mesh wrote, and v1alpha2, same shape) names a destination service account, the
//! source service accounts that may call it and the rules (traffic specs) they may call;
//! `HTTPRouteGroup` (`specs.smi-spec.io` v1alpha4, v1alpha3, v1alpha2) names the HTTP matches a
//! rule refers to. What the proxy can enforce from them is decided in [`super::access`].

use serde_json::Value;

use super::ObjectRef;

pub const GROUP: &str = "access.smi-spec.io";
pub const VERSIONS: [&str; 2] = ["v1alpha3", "v1alpha2"];
pub const PLURAL: &str = "traffictargets";

pub const ROUTE_GROUP_GROUP: &str = "specs.smi-spec.io";
pub const ROUTE_GROUP_VERSIONS: [&str; 3] = ["v1alpha4", "v1alpha3", "v1alpha2"];
pub const ROUTE_GROUP_PLURAL: &str = "httproutegroups";

/// A service account `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Account {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One entry of `spec.rules`: a traffic spec by kind and name (in the target's namespace), and
/// which of its matches (by name; empty: all of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub kind: String,
    pub name: String,
    pub matches: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficTargetRecord {
    pub object: ObjectRef,
    /// None when `spec.destination` names no service account of the target's own namespace: such
    /// an object is reported and touches no service.
    pub destination: Option<Account>,
    /// `spec.destination.port`, when given.
    pub port: Option<u16>,
    pub rules: Vec<RuleRef>,
    /// The service accounts granted; entries that are not service accounts are left out (and
    /// listed in `problems`).
    pub sources: Vec<Account>,
    /// What is wrong with the object; it still grants what its valid parts grant, never more.
    pub problems: Vec<String>,
}

/// A DNS-1123 name as the API accepts for namespaces and service accounts (hostile input: these
/// become SPIFFE IDs).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

impl TrafficTargetRecord {
    pub fn from_json(obj: &Value) -> Option<Self> {
        let object = ObjectRef::from_json(obj)?;
        let spec = &obj["spec"];
        let mut problems = Vec::new();
        let dest = &spec["destination"];
        let destination = match (dest["kind"].as_str(), dest["name"].as_str()) {
            (Some("ServiceAccount"), Some(name)) if valid_name(name) => {
                let ns = dest["namespace"].as_str().unwrap_or(&object.namespace);
                if ns == object.namespace {
                    Some(Account { namespace: ns.to_string(), name: name.to_string() })
                } else {
                    // Only the destination's own namespace may open it to callers.
                    problems.push(format!(
                        "spec.destination.namespace {ns:?} is not the TrafficTarget's namespace: a TrafficTarget \
                         only grants access to its own namespace's service accounts"
                    ));
                    None
                }
            }
            (Some("ServiceAccount"), _) => {
                problems.push("spec.destination.name must be a service account name".into());
                None
            }
            (kind, _) => {
                problems.push(format!("spec.destination.kind {:?} is not ServiceAccount", kind.unwrap_or_default()));
                None
            }
        };
        let port = match &dest["port"] {
            Value::Null => None,
            v => match v.as_u64().filter(|p| (1..=65535).contains(p)) {
                Some(p) => Some(p as u16),
                None => {
                    problems.push(format!("spec.destination.port {v} is not a port number"));
                    // An unreadable restriction is still a restriction: no port matches it.
                    Some(0)
                }
            },
        };
        let mut rules = Vec::new();
        for (i, r) in spec["rules"].as_array().into_iter().flatten().enumerate() {
            let (Some(kind), Some(name)) = (r["kind"].as_str(), r["name"].as_str().filter(|n| !n.is_empty())) else {
                problems.push(format!("spec.rules[{i}] needs a kind and a name"));
                continue;
            };
            let matches =
                r["matches"].as_array().into_iter().flatten().filter_map(|m| m.as_str().map(str::to_string)).collect();
            rules.push(RuleRef { kind: kind.to_string(), name: name.to_string(), matches });
        }
        if rules.is_empty() {
            problems.push("spec.rules: at least one rule is required; nothing is granted".into());
        }
        let mut sources = Vec::new();
        for (i, s) in spec["sources"].as_array().into_iter().flatten().enumerate() {
            let ns = s["namespace"].as_str().unwrap_or(&object.namespace);
            match (s["kind"].as_str(), s["name"].as_str()) {
                (Some("ServiceAccount"), Some(name)) if valid_name(name) && valid_name(ns) => {
                    let a = Account { namespace: ns.to_string(), name: name.to_string() };
                    if !sources.contains(&a) {
                        sources.push(a);
                    }
                }
                (Some("ServiceAccount"), _) => {
                    problems.push(format!("spec.sources[{i}]: not a valid service account name; left out"))
                }
                (kind, _) => problems.push(format!(
                    "spec.sources[{i}].kind {:?} is not ServiceAccount; left out",
                    kind.unwrap_or_default()
                )),
            }
        }
        if sources.is_empty() {
            problems.push("spec.sources: no service account is granted".into());
        }
        Some(Self { object, destination, port, rules, sources, problems })
    }

    pub fn describe(&self) -> String {
        format!("TrafficTarget {}/{}", self.object.namespace, self.object.name)
    }
}

/// One named match of an `HTTPRouteGroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMatch {
    pub name: String,
    /// None: any path.
    pub path_regex: Option<String>,
    /// Empty, or holding `*`: any method.
    pub methods: Vec<String>,
    /// `(name, value regex)` filters.
    pub headers: Vec<(String, String)>,
}

/// Regexes that match every path (SMI anchors `pathRegex` at the start).
const ANY_PATH: [&str; 6] = [".*", "/.*", "^.*", "^/.*", ".*$", "^.*$"];

impl GroupMatch {
    /// Matches every request: what a per-service allow list can carry.
    pub fn is_catch_all(&self) -> bool {
        self.path_regex.as_deref().is_none_or(|p| p.is_empty() || ANY_PATH.contains(&p))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == "*"))
            && self.headers.is_empty()
    }

    /// `GET,HEAD /api/.*` (and headers), for findings.
    pub fn describe(&self) -> String {
        let methods = if self.methods.is_empty() { "*".to_string() } else { self.methods.join(",") };
        let mut s = format!("{methods} {}", self.path_regex.as_deref().unwrap_or(".*"));
        for (k, v) in &self.headers {
            s.push_str(&format!(" {k}~{v}"));
        }
        s
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRouteGroupRecord {
    pub object: ObjectRef,
    pub matches: Vec<GroupMatch>,
}

impl HttpRouteGroupRecord {
    pub fn from_json(obj: &Value) -> Option<Self> {
        let object = ObjectRef::from_json(obj)?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
        };
        let matches = obj["spec"]["matches"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| GroupMatch {
                name: m["name"].as_str().unwrap_or_default().to_string(),
                path_regex: m["pathRegex"].as_str().map(str::to_string),
                methods: strings(&m["methods"]),
                headers: m["headers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    // A value that is not a string still restricts: kept, so it is never a catch-all.
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                    .collect(),
            })
            .collect();
        Some(Self { object, matches })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn target(spec: Value) -> TrafficTargetRecord {
        TrafficTargetRecord::from_json(&json!({"metadata": {"namespace": "shop", "name": "t"}, "spec": spec})).unwrap()
    }

    /// The controller looks for exactly the versions `weft install` ships, for all three SMI kinds.
    #[test]
    fn the_versions_read_are_the_versions_shipped() {
        let crds = weft_inject::install::crds::smi_crds();
        let read = [
            (super::super::traffic_split::GROUP, &super::super::traffic_split::VERSIONS[..]),
            (GROUP, &VERSIONS[..]),
            (ROUTE_GROUP_GROUP, &ROUTE_GROUP_VERSIONS[..]),
        ];
        for (group, versions) in read {
            let crd = crds.iter().find(|c| c["spec"]["group"] == group).expect(group);
            let mut shipped: Vec<&str> =
                crd["spec"]["versions"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
            let mut read = versions.to_vec();
            shipped.sort();
            read.sort();
            assert_eq!(shipped, read, "{group}");
        }
    }

    #[test]
    fn reads_what_osm_writes() {
        let t = target(json!({
            "destination": {"kind": "ServiceAccount", "name": "bar", "namespace": "shop"},
            "rules": [{"kind": "HTTPRouteGroup", "name": "all", "matches": ["everything"]}],
            "sources": [{"kind": "ServiceAccount", "name": "foo", "namespace": "shop"},
                        {"kind": "ServiceAccount", "name": "web", "namespace": "front"}]
        }));
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert_eq!(t.destination, Some(Account { namespace: "shop".into(), name: "bar".into() }));
        assert_eq!(t.sources.iter().map(ToString::to_string).collect::<Vec<_>>(), ["shop/foo", "front/web"]);
        assert_eq!(t.rules[0].matches, ["everything"]);
        assert_eq!(t.port, None);
    }

    #[test]
    fn a_destination_in_another_namespace_touches_nothing() {
        let t = target(json!({
            "destination": {"kind": "ServiceAccount", "name": "pay", "namespace": "bank"},
            "rules": [{"kind": "HTTPRouteGroup", "name": "all"}],
            "sources": [{"kind": "ServiceAccount", "name": "foo"}]
        }));
        assert_eq!(t.destination, None);
        assert!(t.problems[0].contains("own namespace"), "{:?}", t.problems);
    }

    #[test]
    fn hostile_fields_are_reported_and_left_out() {
        let t = target(json!({
            "destination": {"kind": "ServiceAccount", "name": "bar", "port": "eighty"},
            "rules": [{"kind": "HTTPRouteGroup"}],
            "sources": [{"kind": "Group", "name": "admins"}, {"kind": "ServiceAccount", "name": "../evil"},
                        {"kind": "ServiceAccount", "name": "foo"}]
        }));
        let all = t.problems.join("\n");
        for needle in ["port", "rules[0]", "sources[0].kind", "sources[1]", "at least one rule"] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
        assert_eq!(t.port, Some(0), "an unreadable port still restricts");
        assert_eq!(t.sources, [Account { namespace: "shop".into(), name: "foo".into() }]);
    }

    #[test]
    fn only_a_match_of_every_request_is_a_catch_all() {
        let g = HttpRouteGroupRecord::from_json(&json!({
            "metadata": {"namespace": "shop", "name": "g"},
            "spec": {"matches": [
                {"name": "everything", "pathRegex": ".*", "methods": ["*"]},
                {"name": "bare"},
                {"name": "metrics", "pathRegex": "/metrics", "methods": ["GET"]},
                {"name": "gets", "pathRegex": ".*", "methods": ["GET"]},
                {"name": "root", "pathRegex": "/", "methods": ["*"]},
                {"name": "android", "headers": {"user-agent": ".*Android.*"}},
                {"name": "odd", "headers": {"x": 1}}
            ]}
        }))
        .unwrap();
        let catch_all: Vec<bool> = g.matches.iter().map(GroupMatch::is_catch_all).collect();
        assert_eq!(catch_all, [true, true, false, false, false, false, false]);
        assert_eq!(g.matches[2].describe(), "GET /metrics");
    }
}
