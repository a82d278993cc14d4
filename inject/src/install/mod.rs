//! `weft install`: the control plane's manifests, in the order `kubectl apply` wants them —
//! the SMI CRDs (with discovery from the API), namespace, identity and RBAC, configuration, the controller, the webhook configuration last
//! (so that it never points at a controller that does not exist yet). Nothing in them depends on
//! the time or on map order, so the same CA and settings always render the same bytes.

mod access;
mod controller;
pub mod crds;
mod webhook;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::names;
use crate::settings::InjectSettings;
use crate::yaml_emit::to_yaml;

/// The controller's objects are all called this (Deployment, Service, account, roles).
pub const CONTROLLER: &str = "weft-controller";
pub const CA_SECRET: &str = "weft-ca";
pub const TRUST_ANCHOR_CONFIGMAP: &str = "weft-trust-anchor";
pub const INJECTOR_CONFIGMAP: &str = "weft-injector";
pub const MESH_CONFIGMAP: &str = "weft-mesh";
pub const WEBHOOK_CONFIGURATION: &str = "weft-proxy-injector";
/// The port the controller serves the webhook on (the Service maps 443 to it).
pub const WEBHOOK_PORT: i32 = 8443;
pub const GRPC_PORT: i32 = 7070;
pub const ADMIN_PORT: i32 = 7071;
/// On the controller's pod template: a digest of what the controller reads only at start (the CA
/// and the injection settings), so that applying a changed install rolls the controller.
pub const CONFIG_HASH: &str = "weft.io/config-hash";

/// The controller's user and group in its FROM-scratch image (no /etc/passwd there).
pub const CONTROLLER_UID: i64 = 65532;

/// Everything `weft install` renders from.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// The mesh file the controller starts with (`weft-mesh` ConfigMap).
    pub mesh_yaml: String,
    pub settings: InjectSettings,
    pub controller_image: String,
    pub replicas: i32,
    /// The controller reads services, endpoints and identities from the Kubernetes API
    /// (`--kubernetes`); otherwise from the mesh file and join tokens (universal mode).
    pub discovery_from_api: bool,
    pub controller_log_level: String,
    pub controller_cpu_request: String,
    pub controller_memory_request: String,
    pub controller_memory_limit: String,
    /// `Ignore` (pods start unmeshed while the webhook is down) or `Fail` (they wait for it).
    pub webhook_failure_policy: String,
    pub webhook_timeout_seconds: i32,
    /// With discovery from the API, ship the SMI CRDs ([`crds`]).
    pub smi_crds: bool,
}

impl InstallOptions {
    /// Every problem at once.
    pub fn validate(&self) -> Vec<String> {
        let mut p: Vec<String> = self.settings.validate();
        if self.controller_image.is_empty() || self.controller_image.contains(char::is_whitespace) {
            p.push(format!("controller-image {:?} is not an image reference", self.controller_image));
        }
        if !(0..=100).contains(&self.replicas) {
            p.push(format!("replicas {}: expected 0 to 100", self.replicas));
        }
        for (name, q) in [
            ("controller-cpu-request", &self.controller_cpu_request),
            ("controller-memory-request", &self.controller_memory_request),
            ("controller-memory-limit", &self.controller_memory_limit),
        ] {
            if let Err(e) = crate::settings::quantity(q) {
                p.push(format!("{name}: {e}"));
            }
        }
        if !matches!(self.webhook_failure_policy.as_str(), "Ignore" | "Fail") {
            p.push(format!("webhook-failure-policy {:?}: expected Ignore or Fail", self.webhook_failure_policy));
        }
        if !(1..=30).contains(&self.webhook_timeout_seconds) {
            p.push(format!("webhook-timeout-seconds {}: the API server accepts 1 to 30", self.webhook_timeout_seconds));
        }
        p
    }
}

/// SHA-256 over the CA certificate and the injection settings, in hex.
pub(crate) fn config_hash(o: &InstallOptions) -> String {
    let settings = to_yaml(&serde_norway::to_value(&o.settings).expect("settings serialize"));
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [o.ca_cert_pem.as_str(), "\0", settings.as_str()] {
        ctx.update(part.as_bytes());
    }
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn labels() -> BTreeMap<String, String> {
    [("app.kubernetes.io/name", CONTROLLER), ("app.kubernetes.io/part-of", "weft")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn meta(name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespaced.then(|| names::MESH_NAMESPACE.to_string()),
        labels: Some(labels()),
        ..Default::default()
    }
}

fn doc(out: &mut String, object: &impl Serialize) {
    out.push_str("---\n");
    out.push_str(&to_yaml(&serde_norway::to_value(object).expect("Kubernetes objects serialize")));
}

/// The manifests, as one multi-document YAML stream.
pub fn render(o: &InstallOptions) -> String {
    let mut out = String::new();
    out.push_str("# Weft control plane: weft install | kubectl apply -f -\n");
    if o.discovery_from_api && o.smi_crds {
        for crd in crds::smi_crds() {
            doc(&mut out, &crd);
        }
    }
    doc(&mut out, &access::namespace());
    doc(&mut out, &access::service_account());
    doc(&mut out, &access::cluster_role(o));
    doc(&mut out, &access::cluster_role_binding());
    if let Some((role, binding)) = access::config_role(o) {
        doc(&mut out, &role);
        doc(&mut out, &binding);
    }
    doc(&mut out, &access::ca_secret(o));
    for cm in access::config_maps(o) {
        doc(&mut out, &cm);
    }
    doc(&mut out, &controller::service());
    doc(&mut out, &controller::deployment(o));
    doc(&mut out, &controller::disruption_budget());
    doc(&mut out, &webhook::configuration(o));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> InstallOptions {
        InstallOptions {
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            ca_key_pem: "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n".into(),
            mesh_yaml: "trust_domain: weft.local\n".into(),
            settings: InjectSettings::default(),
            controller_image: "weft:playground".into(),
            replicas: 2,
            discovery_from_api: true,
            controller_log_level: "info".into(),
            controller_cpu_request: "50m".into(),
            controller_memory_request: "64Mi".into(),
            controller_memory_limit: "256Mi".into(),
            webhook_failure_policy: "Ignore".into(),
            webhook_timeout_seconds: 10,
            smi_crds: true,
        }
    }

    #[test]
    fn the_same_options_render_the_same_bytes() {
        let o = options();
        assert!(o.validate().is_empty(), "{:?}", o.validate());
        let a = render(&o);
        assert_eq!(a, render(&o));
        // 12 documents, the Role and RoleBinding for the weft-mesh ConfigMap and the 3 SMI CRDs
        // (Kubernetes mode).
        let count = |s: &str| s.matches("\n---\n").count() + usize::from(s.starts_with("---\n"));
        assert_eq!(count(&a), 17, "{a}");
        assert_eq!(count(&render(&InstallOptions { smi_crds: false, ..o.clone() })), 14);
        // A settings change changes the controller's pod template, so applying it rolls the controller.
        let mut tuned = o.clone();
        tuned.settings.proxy_log_level = "debug".into();
        assert_ne!(config_hash(&o), config_hash(&tuned));
        assert!(a.contains(&config_hash(&o)));
        assert!(a.contains("--kubernetes") && a.contains("tokenreviews") && a.contains("replicas: 2"), "{a}");
        let universal = render(&InstallOptions { discovery_from_api: false, ..o.clone() });
        assert!(!universal.contains("--kubernetes") && !universal.contains("tokenreviews"));
        assert!(!universal.contains("kind: Role\n"), "universal mode reads no ConfigMap through the API");
        assert!(!universal.contains("CustomResourceDefinition"), "nor SMI objects");
        let bad = InstallOptions { webhook_timeout_seconds: 31, webhook_failure_policy: "Sometimes".into(), ..o };
        assert_eq!(bad.validate().len(), 2);
    }
}
