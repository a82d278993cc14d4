//! The controller's Deployment, Service and PodDisruptionBudget: replicas that each read the
//! Kubernetes API (`--kubernetes`) and keep no state of their own, so any of them serves any proxy
//! (2 by default); restricted security context; probes on the admin port (ready once the replica
//! has listed the cluster).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    labels, meta, InstallOptions, ADMIN_PORT, CA_SECRET, CONTROLLER, CONTROLLER_UID, GRPC_PORT, INJECTOR_CONFIGMAP,
    MESH_CONFIGMAP, TRUST_ANCHOR_CONFIGMAP, WEBHOOK_PORT,
};
use crate::names;

fn selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some([("app.kubernetes.io/name".to_string(), CONTROLLER.to_string())].into()),
        ..Default::default()
    }
}

pub fn service() -> Service {
    let port = |name: &str, port: i32, target: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata: meta(CONTROLLER, true),
        spec: Some(ServiceSpec {
            selector: selector().match_labels,
            ports: Some(vec![
                port("grpc", GRPC_PORT, GRPC_PORT),
                port("admin", ADMIN_PORT, ADMIN_PORT),
                port("webhook", 443, WEBHOOK_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Where each ConfigMap or Secret is mounted, and what the controller's flags say about it.
const MOUNTS: [(&str, &str); 4] = [
    ("ca", "/etc/weft/ca"),
    ("mesh", "/etc/weft/mesh"),
    ("injector", "/etc/weft/injector"),
    ("trust", "/etc/weft/trust"),
];

fn container(o: &InstallOptions) -> Container {
    let args: Vec<String> = [
        "--mesh",
        "/etc/weft/mesh/mesh.yaml",
        "--ca-dir",
        "/etc/weft/ca",
        "--webhook-addr",
        "0.0.0.0:8443",
        "--webhook-settings",
        "/etc/weft/injector/settings.yaml",
        "--webhook-trust-anchor",
        "/etc/weft/trust/ca.crt",
        "--webhook-dns-names",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("{CONTROLLER}.{}.svc", names::MESH_NAMESPACE)])
    .chain(o.discovery_from_api.then(|| "--kubernetes".to_string()))
    .collect();
    let port = |name: &str, n: i32| ContainerPort {
        name: Some(name.into()),
        container_port: n,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let q = |v: &str| Quantity(v.to_string());
    Container {
        name: CONTROLLER.into(),
        image: Some(o.controller_image.clone()),
        image_pull_policy: Some(o.settings.image_pull_policy.clone()),
        command: Some(vec!["weft-controller".into()]),
        args: Some(args),
        env: Some(vec![EnvVar {
            name: "WEFT_CONTROLLER_LOG_LEVEL".into(),
            value: Some(o.controller_log_level.clone()),
            ..Default::default()
        }]),
        ports: Some(vec![port("grpc", GRPC_PORT), port("admin", ADMIN_PORT), port("webhook", WEBHOOK_PORT)]),
        readiness_probe: Some(probe("/ready")),
        liveness_probe: Some(probe("/live")),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_string(), q(&o.controller_cpu_request)),
                    ("memory".to_string(), q(&o.controller_memory_request)),
                ]
                .into(),
            ),
            limits: Some([("memory".to_string(), q(&o.controller_memory_limit))].into()),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(CONTROLLER_UID),
            run_as_group: Some(CONTROLLER_UID),
            ..Default::default()
        }),
        volume_mounts: Some(
            MOUNTS
                .iter()
                .map(|(name, path)| VolumeMount {
                    name: name.to_string(),
                    mount_path: path.to_string(),
                    read_only: Some(true),
                    ..Default::default()
                })
                .collect(),
        ),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

fn volumes() -> Vec<Volume> {
    let cm = |name: &str, cm: &str| Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource { name: cm.into(), ..Default::default() }),
        ..Default::default()
    };
    vec![
        Volume {
            name: "ca".into(),
            // Group-readable: the pod's fsGroup is the controller's group.
            secret: Some(SecretVolumeSource {
                secret_name: Some(CA_SECRET.into()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
        cm("mesh", MESH_CONFIGMAP),
        cm("injector", INJECTOR_CONFIGMAP),
        cm("trust", TRUST_ANCHOR_CONFIGMAP),
    ]
}

pub fn deployment(o: &InstallOptions) -> Deployment {
    let pod = PodSpec {
        service_account_name: Some(CONTROLLER.into()),
        containers: vec![container(o)],
        volumes: Some(volumes()),
        security_context: Some(PodSecurityContext {
            fs_group: Some(CONTROLLER_UID),
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        // Replicas on different nodes when there are several (and nodes to spare).
        affinity: Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(selector()),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..Default::default()
                    },
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Deployment {
        metadata: meta(CONTROLLER, true),
        spec: DeploymentSpec {
            replicas: Some(o.replicas),
            selector: selector(),
            // The webhook stays up through a rollout: the new pod is ready before the old one goes.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    annotations: Some(
                        [
                            (names::INJECT.to_string(), "disabled".to_string()),
                            (super::CONFIG_HASH.to_string(), super::config_hash(o)),
                        ]
                        .into(),
                    ),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// At most one controller down by choice at a time. `maxUnavailable` rather than `minAvailable`:
/// with one replica, `minAvailable: 1` would block every node drain.
pub fn disruption_budget() -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(CONTROLLER, true),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector()),
            ..Default::default()
        }),
        ..Default::default()
    }
}
