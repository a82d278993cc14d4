//! Traffic policy from the Kubernetes API, I/O-free: SMI `TrafficSplit`s, SMI access control
//! (`TrafficTarget`, `HTTPRouteGroup`) and GAMMA `HTTPRoute`s reduced to records, and the one function ([`apply`]) that lays them over the mesh file's
//! policies with a fixed precedence and reports every conflict and every field it cannot carry.

pub mod access;
pub mod http_route;
pub mod merge;
pub mod traffic_split;
pub mod traffic_target;

#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod merge_tests;

use serde_json::Value;

pub use http_route::HttpRouteRecord;
pub use merge::{apply, ApiPolicy, Finding, FindingKind};
pub use traffic_split::TrafficSplitRecord;
pub use traffic_target::{HttpRouteGroupRecord, TrafficTargetRecord};

/// Where an API object is, and when it was made (the older of two conflicting objects wins, as
/// Gateway API's own conflict rule says).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// RFC 3339, as the API writes it: compares in time order.
    pub created: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn from_json(obj: &Value) -> Option<Self> {
        let m = &obj["metadata"];
        Some(Self {
            created: m["creationTimestamp"].as_str().unwrap_or_default().to_string(),
            namespace: m["namespace"].as_str()?.to_string(),
            name: m["name"].as_str()?.to_string(),
        })
    }

    /// `(namespace, name)`, the index's key.
    pub fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }
}

/// One weighted backend: a Service in the object's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub service: String,
    pub weight: u32,
}

/// The largest weight accepted (the mesh file's bound).
pub const MAX_WEIGHT: u64 = 1_000_000;
