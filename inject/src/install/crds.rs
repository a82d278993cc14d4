//! The SMI CustomResourceDefinitions `weft install` ships (SMI is not part of Kubernetes; the
//! Gateway API's CRDs belong to the cluster and are not shipped): `TrafficSplit`
//! (`split.smi-spec.io` v1alpha2 stored, v1alpha3 and v1alpha4 served), `TrafficTarget`
//! (`access.smi-spec.io` v1alpha3 stored, v1alpha2 served) and `HTTPRouteGroup`
//! (`specs.smi-spec.io` v1alpha4 stored, v1alpha3 and v1alpha2 served). The versions of a kind
//! have one shape, so no conversion is needed; each schema is structural (every node typed) and
//! says what Weft reads, so that the API server refuses what could never be applied.

use serde_json::{json, Value};

/// One CRD: the versions served (the first is stored) and the one schema they share.
struct Crd {
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short: &'static str,
    versions: &'static [&'static str],
    spec: Value,
}

fn string() -> Value {
    json!({"type": "string"})
}

fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

/// A reference to a service account (`kind: ServiceAccount`, its name and namespace).
fn subject() -> Value {
    json!({
        "type": "object",
        "required": ["kind", "name"],
        "properties": {
            "kind": {"type": "string", "enum": ["ServiceAccount"]},
            "name": {"type": "string", "minLength": 1},
            "namespace": {"type": "string"},
        }
    })
}

fn traffic_split() -> Crd {
    Crd {
        group: "split.smi-spec.io",
        kind: "TrafficSplit",
        plural: "trafficsplits",
        singular: "trafficsplit",
        short: "ts",
        versions: &["v1alpha2", "v1alpha3", "v1alpha4"],
        spec: json!({
            "type": "object",
            "required": ["service", "backends"],
            "properties": {
                "service": {"type": "string", "minLength": 1, "description": "The root Service callers address."},
                "backends": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["service", "weight"],
                        "properties": {
                            "service": {"type": "string", "minLength": 1},
                            "weight": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
                        }
                    }
                },
                "matches": {
                    "type": "array",
                    "description": "Traffic specs (HTTPRouteGroups) limiting the split; Weft reports and does not apply them.",
                    "items": {
                        "type": "object",
                        "required": ["kind", "name"],
                        "properties": {"kind": string(), "name": string(), "apiGroup": string()}
                    }
                },
            }
        }),
    }
}

fn traffic_target() -> Crd {
    Crd {
        group: "access.smi-spec.io",
        kind: "TrafficTarget",
        plural: "traffictargets",
        singular: "traffictarget",
        short: "tt",
        versions: &["v1alpha3", "v1alpha2"],
        spec: json!({
            "type": "object",
            "required": ["destination", "rules", "sources"],
            "properties": {
                "destination": {
                    "type": "object",
                    "required": ["kind", "name"],
                    "properties": {
                        "kind": {"type": "string", "enum": ["ServiceAccount"]},
                        "name": {"type": "string", "minLength": 1},
                        "namespace": string(),
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    }
                },
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["kind", "name"],
                        "properties": {"kind": string(), "name": string(), "matches": strings()}
                    }
                },
                "sources": {"type": "array", "minItems": 1, "items": subject()},
            }
        }),
    }
}

fn http_route_group() -> Crd {
    Crd {
        group: "specs.smi-spec.io",
        kind: "HTTPRouteGroup",
        plural: "httproutegroups",
        singular: "httproutegroup",
        short: "htr",
        versions: &["v1alpha4", "v1alpha3", "v1alpha2"],
        spec: json!({
            "type": "object",
            "required": ["matches"],
            "properties": {
                "matches": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "pathRegex": string(),
                            "methods": strings(),
                            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                        }
                    }
                }
            }
        }),
    }
}

fn render(c: &Crd) -> Value {
    let versions: Vec<Value> = c
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "name": v,
                "served": true,
                "storage": i == 0,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {"spec": c.spec}
                }}
            })
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{}", c.plural, c.group),
            "labels": super::labels(),
        },
        "spec": {
            "group": c.group,
            "scope": "Namespaced",
            "names": {
                "kind": c.kind,
                "listKind": format!("{}List", c.kind),
                "plural": c.plural,
                "singular": c.singular,
                "shortNames": [c.short],
                "categories": ["smi"],
            },
            "versions": versions,
        }
    })
}

/// The three CRDs, in the order they are applied.
pub fn smi_crds() -> Vec<Value> {
    [traffic_split(), traffic_target(), http_route_group()].iter().map(render).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every schema node has a type (the API server's rule for a structural schema), and every
    /// object node says which properties it has.
    fn structural(path: &str, v: &Value, problems: &mut Vec<String>) {
        let Some(t) = v["type"].as_str() else {
            problems.push(format!("{path}: no type"));
            return;
        };
        match t {
            "object" => match (&v["properties"], &v["additionalProperties"]) {
                (Value::Object(props), Value::Null) => {
                    for (k, p) in props {
                        structural(&format!("{path}.{k}"), p, problems);
                    }
                }
                (Value::Null, extra @ Value::Object(_)) => structural(&format!("{path}[*]"), extra, problems),
                _ => problems.push(format!("{path}: an object needs properties or additionalProperties, not both")),
            },
            "array" => structural(&format!("{path}[]"), &v["items"], problems),
            "string" | "integer" | "boolean" | "number" => {}
            other => problems.push(format!("{path}: type {other}")),
        }
    }

    #[test]
    fn three_crds_with_one_stored_version_each_and_structural_schemas() {
        let crds = smi_crds();
        let names: Vec<&str> = crds.iter().map(|c| c["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "trafficsplits.split.smi-spec.io",
                "traffictargets.access.smi-spec.io",
                "httproutegroups.specs.smi-spec.io"
            ]
        );
        for c in &crds {
            let versions = c["spec"]["versions"].as_array().unwrap();
            assert_eq!(versions.iter().filter(|v| v["storage"] == true).count(), 1, "{c}");
            let mut problems = Vec::new();
            for v in versions {
                structural(v["name"].as_str().unwrap(), &v["schema"]["openAPIV3Schema"], &mut problems);
            }
            assert!(problems.is_empty(), "{problems:?}");
        }
        // The controller looks for the versions shipped here.
        assert_eq!(crds[1]["spec"]["versions"][0]["name"], "v1alpha3");
    }
}
