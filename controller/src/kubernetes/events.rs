//! Kubernetes Events for what an operator should see with `kubectl describe` or `kubectl get
//! events`: each policy finding as it first appears (on the object concerned: the TrafficSplit,
//! TrafficTarget or HTTPRoute, or the `weft-mesh` ConfigMap for the mesh file), and each rejected
//! edit of the `weft-mesh` ConfigMap. An Event's name is derived from what it says, so the
//! replicas, which all see the same findings, report each once: the second create answers
//! `409 AlreadyExists` and is taken as done.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;

use crate::policy::{Finding, FindingKind};
use crate::state::MeshState;

/// The Events' reporter.
pub const COMPONENT: &str = "weft-controller";

/// What an Event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Involved {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Involved {
    /// The `weft-system/weft-mesh` ConfigMap (the mesh file in Kubernetes mode).
    pub fn mesh_config_map() -> Self {
        Self {
            api_version: "v1",
            kind: "ConfigMap",
            namespace: weft_inject::names::MESH_NAMESPACE.into(),
            name: super::policy_watch::MESH_CONFIGMAP.into(),
        }
    }
}

/// The object a finding's `source` names (`TrafficSplit shop/bar`, `mesh file`, …).
pub fn involved(source: &str) -> Option<Involved> {
    if source == "mesh file" {
        return Some(Involved::mesh_config_map());
    }
    let (kind, at) = source.split_once(' ')?;
    let (namespace, name) = at.split_once('/')?;
    let (api_version, kind) = match kind {
        "TrafficSplit" => ("split.smi-spec.io/v1alpha2", "TrafficSplit"),
        "TrafficTarget" => ("access.smi-spec.io/v1alpha3", "TrafficTarget"),
        "HTTPRoute" => ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        _ => return None,
    };
    Some(Involved { api_version, kind, namespace: namespace.into(), name: name.into() })
}

/// FNV-1a, 64 bits: a stable digest of an Event's content for its name (not for security).
fn digest(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The Event for `(reason, message)` about `on`; `warning`: type Warning, else Normal.
pub fn event(on: &Involved, reason: &str, message: &str, warning: bool, now: Time) -> Event {
    // Names are at most 253 characters; the object's name is cut, the digest keeps it unique.
    let prefix: String = on.name.chars().take(200).collect();
    let name = format!("{prefix}.weft.{:016x}", digest(&[on.kind, &on.namespace, &on.name, reason, message]));
    Event {
        metadata: ObjectMeta { name: Some(name), namespace: Some(on.namespace.clone()), ..Default::default() },
        involved_object: ObjectReference {
            api_version: Some(on.api_version.into()),
            kind: Some(on.kind.into()),
            namespace: Some(on.namespace.clone()),
            name: Some(on.name.clone()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        // The API server caps messages at 1 KiB.
        message: Some(message.chars().take(1000).collect()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource { component: Some(COMPONENT.into()), host: None }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(std::env::var("HOSTNAME").unwrap_or_else(|_| COMPONENT.into())),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    }
}

/// A finding's Event (None when its source is no API object, e.g. a route without a service).
pub fn finding_event(f: &Finding, now: Time) -> Option<Event> {
    let on = involved(&f.source)?;
    let (reason, warning) = match f.kind {
        FindingKind::Overridden => ("PolicyOverridden", true),
        FindingKind::Unsupported => ("PolicyNotCarried", true),
        FindingKind::Invalid => ("PolicyInvalid", true),
        FindingKind::Combined => ("PolicyCombined", false),
    };
    let message = if f.service.is_empty() { f.message.clone() } else { format!("{}: {}", f.service, f.message) };
    Some(event(&on, reason, &message, warning, now))
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Creates the Event; an Event of that name already there (another replica's) is success.
pub async fn publish(client: &kube::Client, e: Event) {
    let ns = e.metadata.namespace.clone().unwrap_or_default();
    let api: kube::Api<Event> = kube::Api::namespaced(client.clone(), &ns);
    match api.create(&PostParams::default(), &e).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 || s.is_already_exists() => {}
        Err(err) => weft_telemetry::log_limit::warn("kubernetes-events", || format!("creating an Event: {err}")),
    }
}

/// The ConfigMap edit was rejected: one Warning Event with the problems.
pub async fn config_rejected(client: &kube::Client, problems: &[String]) {
    let message = format!("rejected; the last good mesh config stays in force: {}", problems.join("; "));
    publish(client, event(&Involved::mesh_config_map(), "ConfigRejected", &message, true, now())).await;
}

/// For the life of the controller: an Event for each finding as it first appears.
pub async fn report_findings(client: kube::Client, state: Arc<MeshState>) {
    let mut snapshots = state.snapshots();
    let mut seen: BTreeSet<Finding> = BTreeSet::new();
    loop {
        let findings = snapshots.borrow_and_update().findings.clone();
        for f in findings.iter().filter(|f| !seen.contains(*f)) {
            if let Some(e) = finding_event(f, now()) {
                publish(&client, e).await;
            }
        }
        // Forgotten once gone, so that one coming back is reported again.
        seen = findings.into_iter().collect();
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: FindingKind, source: &str) -> Finding {
        Finding { service: "shop/bar".into(), kind, source: source.into(), message: "why".into() }
    }

    #[test]
    fn a_finding_becomes_an_event_on_the_object_it_names() {
        let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let e = finding_event(&finding(FindingKind::Overridden, "TrafficSplit shop/bar"), t.clone()).unwrap();
        assert_eq!(e.involved_object.kind.as_deref(), Some("TrafficSplit"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"), "an Event lives beside its object");
        assert_eq!((e.reason.as_deref(), e.type_.as_deref()), (Some("PolicyOverridden"), Some("Warning")));
        assert_eq!(e.message.as_deref(), Some("shop/bar: why"));
        let mesh = finding_event(&finding(FindingKind::Combined, "mesh file"), t.clone()).unwrap();
        assert_eq!(mesh.involved_object.name.as_deref(), Some("weft-mesh"));
        assert_eq!(mesh.type_.as_deref(), Some("Normal"));
        assert!(finding_event(&finding(FindingKind::Invalid, "somewhere else"), t).is_none());
    }

    #[test]
    fn the_name_follows_the_content_so_replicas_report_once() {
        let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let a = finding_event(&finding(FindingKind::Invalid, "HTTPRoute shop/r"), t.clone()).unwrap();
        let b = finding_event(&finding(FindingKind::Invalid, "HTTPRoute shop/r"), t.clone()).unwrap();
        let c = finding_event(&finding(FindingKind::Overridden, "HTTPRoute shop/r"), t).unwrap();
        assert_eq!(a.metadata.name, b.metadata.name);
        assert_ne!(a.metadata.name, c.metadata.name);
        let long = Involved { name: "x".repeat(300), ..Involved::mesh_config_map() };
        let e = event(&long, "R", "m", true, Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(e.metadata.name.unwrap().len() <= 253);
    }
}
