//! The MutatingWebhookConfiguration: pod creations in every namespace except `kube-system`,
//! `weft-system` and those labelled `weft.io/admission-webhooks: disabled` go to the controller.
//! A selector matches labels only; the webhook reads the `weft.io/inject` annotation itself.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::ByteString;

use super::{meta, InstallOptions, CONTROLLER, WEBHOOK_CONFIGURATION};
use crate::names;

pub fn configuration(o: &InstallOptions) -> MutatingWebhookConfiguration {
    let not_in = |key: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.into(),
        operator: "NotIn".into(),
        values: Some(values.iter().map(|v| v.to_string()).collect()),
    };
    MutatingWebhookConfiguration {
        metadata: meta(WEBHOOK_CONFIGURATION, false),
        webhooks: Some(vec![MutatingWebhook {
            name: "inject.weft.io".into(),
            admission_review_versions: vec!["v1".into()],
            client_config: WebhookClientConfig {
                ca_bundle: Some(ByteString(o.ca_cert_pem.clone().into_bytes())),
                service: Some(ServiceReference {
                    name: CONTROLLER.into(),
                    namespace: names::MESH_NAMESPACE.into(),
                    path: Some(crate::webhook::PATH.into()),
                    port: Some(443),
                }),
                url: None,
            },
            failure_policy: Some(o.webhook_failure_policy.clone()),
            match_policy: Some("Equivalent".into()),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![
                    not_in("kubernetes.io/metadata.name", &[names::KUBE_SYSTEM, names::MESH_NAMESPACE]),
                    not_in(names::ADMISSION_WEBHOOKS_LABEL, &["disabled"]),
                ]),
                match_labels: None,
            }),
            reinvocation_policy: Some("Never".into()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            side_effects: "None".into(),
            timeout_seconds: Some(o.webhook_timeout_seconds),
            ..Default::default()
        }]),
    }
}
