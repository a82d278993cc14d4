//! SMI `TrafficSplit` (`split.smi-spec.io` v1alpha2, v1alpha3 and v1alpha4, the versions Flagger
//! writes) reduced to what the mesh applies: a root Service and weighted backend Services in the
//! same namespace. A malformed object is kept with its problems, to be reported, never applied.

use serde_json::Value;

use super::{Backend, ObjectRef, MAX_WEIGHT};

/// The API group and the versions looked for, newest first.
pub const GROUP: &str = "split.smi-spec.io";
pub const VERSIONS: [&str; 3] = ["v1alpha4", "v1alpha3", "v1alpha2"];
pub const PLURAL: &str = "trafficsplits";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficSplitRecord {
    pub object: ObjectRef,
    /// `spec.service`: the root (apex) Service callers address.
    pub service: String,
    pub backends: Vec<Backend>,
    /// Why it cannot be applied; empty when it can.
    pub invalid: Vec<String>,
    /// What it says that Weft does not act on.
    pub ignored: Vec<String>,
}

impl TrafficSplitRecord {
    pub fn from_json(obj: &Value) -> Option<Self> {
        let object = ObjectRef::from_json(obj)?;
        let spec = &obj["spec"];
        let mut invalid = Vec::new();
        let mut ignored = Vec::new();
        let service = spec["service"].as_str().unwrap_or_default().to_string();
        if service.is_empty() {
            invalid.push("spec.service is required".to_string());
        }
        let mut backends = Vec::new();
        match spec["backends"].as_array() {
            Some(list) if !list.is_empty() => {
                for (i, b) in list.iter().enumerate() {
                    let name = b["service"].as_str().unwrap_or_default();
                    match (name, weight(&b["weight"])) {
                        ("", _) => invalid.push(format!("spec.backends[{i}].service is required")),
                        (_, Err(e)) => invalid.push(format!("spec.backends[{i}].weight: {e}")),
                        (name, Ok(_)) if backends.iter().any(|b: &Backend| b.service == name) => {
                            invalid.push(format!("spec.backends[{i}]: {name} is listed twice"))
                        }
                        (name, Ok(w)) => backends.push(Backend { service: name.to_string(), weight: w }),
                    }
                }
                if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
                    invalid.push("spec.backends: at least one weight must be above 0".to_string());
                }
            }
            _ => invalid.push("spec.backends: at least one backend is required".to_string()),
        }
        if spec["matches"].as_array().is_some_and(|m| !m.is_empty()) {
            ignored
                .push("spec.matches (HTTPRouteGroup matches) are not applied: the split covers every request".into());
        }
        Some(Self { object, service, backends, invalid, ignored })
    }

    /// `NS/SERVICE`: the mesh service it splits.
    pub fn root(&self) -> String {
        format!("{}/{}", self.object.namespace, self.service)
    }

    pub fn describe(&self) -> String {
        format!("TrafficSplit {}/{}", self.object.namespace, self.object.name)
    }
}

/// An integer weight (v1alpha2 and later); a string of digits is taken too (what YAML tools write
/// when a weight was quoted). v1alpha1's quantities (`500m`) are not.
fn weight(v: &Value) -> Result<u32, String> {
    let n = match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{n} is not a whole number >= 0"))?,
        Value::String(s) => s.parse::<u64>().map_err(|_| format!("{s:?} is not a whole number >= 0"))?,
        Value::Null => return Err("required".into()),
        other => return Err(format!("{other} is not a whole number")),
    };
    if n > MAX_WEIGHT {
        return Err(format!("{n} is above {MAX_WEIGHT}"));
    }
    Ok(n as u32)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn split(spec: Value) -> TrafficSplitRecord {
        TrafficSplitRecord::from_json(&json!({"metadata": {"namespace": "shop", "name": "bar"}, "spec": spec})).unwrap()
    }

    #[test]
    fn reads_what_flagger_writes() {
        let s = split(json!({"service": "bar", "backends": [
            {"service": "bar-primary", "weight": 90}, {"service": "bar-canary", "weight": "10"}]}));
        assert!(s.invalid.is_empty(), "{:?}", s.invalid);
        assert_eq!(s.root(), "shop/bar");
        assert_eq!(
            s.backends,
            [
                Backend { service: "bar-primary".into(), weight: 90 },
                Backend { service: "bar-canary".into(), weight: 10 }
            ]
        );
    }

    #[test]
    fn says_what_is_wrong_instead_of_guessing() {
        let s = split(
            json!({"backends": [{"service": "a", "weight": -1}, {"weight": 5}, {"service": "b", "weight": "500m"}]}),
        );
        let all = s.invalid.join("\n");
        for needle in ["spec.service", "backends[0].weight", "backends[1].service", "backends[2].weight"] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
        let zero = split(json!({"service": "bar", "backends": [{"service": "a", "weight": 0}]}));
        assert!(zero.invalid[0].contains("above 0"));
        let matches = split(json!({"service": "bar", "backends": [{"service": "a", "weight": 1}],
                                   "matches": [{"kind": "HTTPRouteGroup", "name": "canary"}]}));
        assert!(matches.invalid.is_empty() && matches.ignored.len() == 1);
    }
}
