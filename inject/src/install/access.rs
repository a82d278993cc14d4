//! The namespace, the controller's service account and the least RBAC it needs (reading
//! namespaces, for the webhook's `weft.io/inject` lookups; with discovery from the API, watching
//! Services, EndpointSlices and Pods and creating TokenReviews; and the policy: SMI TrafficSplits,
//! TrafficTargets and HTTPRouteGroups, Gateway API HTTPRoutes, and the `weft-mesh` ConfigMap through a Role in `weft-system` only),
//! the CA Secret and the ConfigMaps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::ByteString;

use super::{meta, InstallOptions, CA_SECRET, CONTROLLER, INJECTOR_CONFIGMAP, MESH_CONFIGMAP, TRUST_ANCHOR_CONFIGMAP};
use crate::names;
use crate::yaml_emit::to_yaml;

pub fn namespace() -> Namespace {
    let mut m = meta(names::MESH_NAMESPACE, false);
    let labels = m.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(names::ADMISSION_WEBHOOKS_LABEL.into(), "disabled".into());
    // The controller runs under the restricted Pod Security Standard; nothing else belongs here.
    labels.insert("pod-security.kubernetes.io/enforce".into(), "restricted".into());
    m.annotations = Some([(names::INJECT.to_string(), "disabled".to_string())].into());
    Namespace { metadata: m, ..Default::default() }
}

pub fn service_account() -> ServiceAccount {
    ServiceAccount { metadata: meta(CONTROLLER, true), ..Default::default() }
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

pub fn cluster_role(o: &InstallOptions) -> ClusterRole {
    let mut rules = vec![rule("", &["namespaces"], &["get"])];
    if o.discovery_from_api {
        // The watchers list and watch; a pod the watch has not delivered yet is read with get.
        rules.push(rule("", &["pods"], &["get", "list", "watch"]));
        rules.push(rule("", &["services"], &["list", "watch"]));
        rules.push(rule("discovery.k8s.io", &["endpointslices"], &["list", "watch"]));
        rules.push(rule("authentication.k8s.io", &["tokenreviews"], &["create"]));
        // Traffic policy from the API (read where the CRDs are installed).
        rules.push(rule("split.smi-spec.io", &["trafficsplits"], &["list", "watch"]));
        rules.push(rule("access.smi-spec.io", &["traffictargets"], &["list", "watch"]));
        rules.push(rule("specs.smi-spec.io", &["httproutegroups"], &["list", "watch"]));
        rules.push(rule("gateway.networking.k8s.io", &["httproutes"], &["list", "watch"]));
        // Policy conflicts and rejected ConfigMap edits, as Events beside their objects.
        rules.push(rule("", &["events"], &["create"]));
    }
    ClusterRole { metadata: meta(CONTROLLER, false), rules: Some(rules), ..Default::default() }
}

/// With discovery from the API, the controller watches the `weft-mesh` ConfigMap: ConfigMaps of
/// its own namespace only (a Role, not the ClusterRole, so no other namespace's are readable).
pub fn config_role(o: &InstallOptions) -> Option<(Role, RoleBinding)> {
    if !o.discovery_from_api {
        return None;
    }
    let role =
        Role { metadata: meta(CONTROLLER, true), rules: Some(vec![rule("", &["configmaps"], &["list", "watch"])]) };
    let binding = RoleBinding {
        metadata: meta(CONTROLLER, true),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: CONTROLLER.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: CONTROLLER.into(),
            namespace: Some(names::MESH_NAMESPACE.into()),
            ..Default::default()
        }]),
    };
    Some((role, binding))
}

pub fn cluster_role_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(CONTROLLER, false),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: CONTROLLER.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: CONTROLLER.into(),
            namespace: Some(names::MESH_NAMESPACE.into()),
            ..Default::default()
        }]),
    }
}

pub fn ca_secret(o: &InstallOptions) -> Secret {
    let data: BTreeMap<String, ByteString> = [
        ("ca.crt".to_string(), ByteString(o.ca_cert_pem.clone().into_bytes())),
        ("ca.key".to_string(), ByteString(o.ca_key_pem.clone().into_bytes())),
    ]
    .into();
    Secret { metadata: meta(CA_SECRET, true), type_: Some("Opaque".into()), data: Some(data), ..Default::default() }
}

fn config_map(name: &str, key: &str, value: String) -> ConfigMap {
    ConfigMap { metadata: meta(name, true), data: Some([(key.to_string(), value)].into()), ..Default::default() }
}

/// The trust anchor, the injector's settings and the mesh file.
pub fn config_maps(o: &InstallOptions) -> Vec<ConfigMap> {
    let settings = to_yaml(&serde_norway::to_value(&o.settings).expect("settings serialize"));
    vec![
        config_map(TRUST_ANCHOR_CONFIGMAP, "ca.crt", o.ca_cert_pem.clone()),
        config_map(INJECTOR_CONFIGMAP, "settings.yaml", settings),
        config_map(MESH_CONFIGMAP, "mesh.yaml", o.mesh_yaml.clone()),
    ]
}
