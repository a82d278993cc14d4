//! The containers and volumes injection adds: `weft-init` (the iptables rules, NET_ADMIN and
//! NET_RAW only), `weft-proxy` (non-root UID 2102, read-only root, no capabilities) and the
//! projected volume with the proxy's identity material.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, DownwardAPIProjection, DownwardAPIVolumeFile, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretProjection, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names;
use crate::settings::PodSettings;

/// What the proxy container needs to know beyond the settings.
pub struct ProxyInputs<'a> {
    pub app_probes: &'a [String],
    /// The pod's `version` label (traffic splits).
    pub version: Option<&'a str>,
}

fn restricted(user: i64, non_root: bool, caps: Capabilities) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(caps),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_group: Some(user),
        run_as_non_root: Some(non_root),
        run_as_user: Some(user),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

fn quantities(pairs: &[(&str, &Option<String>)]) -> Option<BTreeMap<String, Quantity>> {
    let m: BTreeMap<String, Quantity> =
        pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), Quantity(v.clone())))).collect();
    (!m.is_empty()).then_some(m)
}

fn ports_arg(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// `weft-proxy init` as root with NET_ADMIN and NET_RAW, every other capability dropped.
pub fn init_container(s: &PodSettings) -> Container {
    let b = &s.base;
    let uid = names::PROXY_UID.to_string();
    let mut args: Vec<String> = vec!["init".into()];
    for (flag, value) in [
        ("--proxy-uid", uid.clone()),
        ("--proxy-gid", uid),
        ("--inbound-port", names::INBOUND_PORT.to_string()),
        ("--outbound-port", names::OUTBOUND_PORT.to_string()),
        ("--admin-port", names::ADMIN_PORT.to_string()),
    ] {
        args.extend([flag.to_string(), value]);
    }
    if !b.skip_inbound_ports.is_empty() {
        args.extend(["--skip-inbound-ports".into(), ports_arg(&b.skip_inbound_ports)]);
    }
    if !b.skip_outbound_ports.is_empty() {
        args.extend(["--skip-outbound-ports".into(), ports_arg(&b.skip_outbound_ports)]);
    }
    if !b.skip_subnets.is_empty() {
        args.extend(["--skip-subnets".into(), b.skip_subnets.join(",")]);
    }
    let caps = Capabilities { add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]), drop: Some(vec!["ALL".into()]) };
    Container {
        name: names::INIT_CONTAINER.into(),
        image: Some(b.init_image.clone()),
        image_pull_policy: Some(b.image_pull_policy.clone()),
        command: Some(vec!["weft-proxy".into()]),
        args: Some(args),
        resources: Some(ResourceRequirements {
            limits: quantities(&[("memory", &Some("64Mi".into()))]),
            requests: quantities(&[("cpu", &Some("10m".into())), ("memory", &Some("10Mi".into()))]),
            ..Default::default()
        }),
        security_context: Some(restricted(0, false, caps)),
        // iptables takes its lock under /run; the root filesystem is read-only.
        volume_mounts: Some(vec![VolumeMount {
            name: names::INIT_RUN_VOLUME.into(),
            mount_path: "/run".into(),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

fn admin_get(path: &str) -> Option<HTTPGetAction> {
    Some(HTTPGetAction { path: Some(path.into()), port: IntOrString::Int(names::ADMIN_PORT), ..Default::default() })
}

/// The proxy: transparent mode, configured entirely through `WEFT_PROXY_*` variables.
pub fn proxy_container(s: &PodSettings, inputs: &ProxyInputs<'_>) -> Container {
    let b = &s.base;
    let file = |f: &str| format!("{}/{f}", names::IDENTITY_DIR);
    // Downward API first: later values refer to them as $(NAME).
    let mut envs = vec![
        field_env(names::ENV_POD_NAME, "metadata.name"),
        field_env(names::ENV_POD_NAMESPACE, "metadata.namespace"),
        field_env(names::ENV_POD_IP, "status.podIP"),
        field_env(names::ENV_NODE_NAME, "spec.nodeName"),
        field_env(names::ENV_SERVICE_ACCOUNT, "spec.serviceAccountName"),
        env("WEFT_PROXY_CONTROLLER", &b.controller),
        env("WEFT_PROXY_TRUST_ANCHOR", file(names::TRUST_ANCHOR_FILE)),
        env("WEFT_PROXY_IDENTITY_TOKEN_FILE", file(names::IDENTITY_TOKEN_FILE)),
    ];
    if b.join_token_secret.is_some() {
        envs.push(env("WEFT_PROXY_TOKEN_FILE", file(names::JOIN_TOKEN_FILE)));
    }
    let service = s.service.clone().unwrap_or_else(|| format!("$({})", names::ENV_SERVICE_ACCOUNT));
    envs.extend([
        env("WEFT_PROXY_SERVICE", service),
        env("WEFT_PROXY_NAMESPACE", format!("$({})", names::ENV_POD_NAMESPACE)),
        env("WEFT_PROXY_INSTANCE", format!("$({})", names::ENV_POD_NAME)),
    ]);
    if let Some(v) = inputs.version {
        envs.push(env("WEFT_PROXY_VERSION", v));
    }
    envs.extend([env("WEFT_PROXY_TRANSPARENT", "true"), env("WEFT_PROXY_LOG_LEVEL", &b.proxy_log_level)]);
    if !inputs.app_probes.is_empty() {
        envs.push(env("WEFT_PROXY_APP_PROBES", inputs.app_probes.join(",")));
    }
    if !b.opaque_ports.is_empty() {
        envs.push(env("WEFT_PROXY_OPAQUE_PORTS", ports_arg(&b.opaque_ports)));
    }
    if let Some(g) = &b.shutdown_grace_period {
        envs.push(env("WEFT_PROXY_SHUTDOWN_GRACE", g));
    }
    let port = |name: &str, n: i32| ContainerPort {
        name: Some(name.into()),
        container_port: n,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: admin_get(path),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Default::default()
    };
    let caps = Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() };
    let mut c = Container {
        name: names::PROXY_CONTAINER.into(),
        image: Some(b.proxy_image.clone()),
        image_pull_policy: Some(b.image_pull_policy.clone()),
        command: Some(vec!["weft-proxy".into()]),
        env: Some(envs),
        ports: Some(vec![port("weft-inbound", names::INBOUND_PORT), port("weft-admin", names::ADMIN_PORT)]),
        // The app starts once this passes: a certificate is held and the first config accepted.
        startup_probe: Some(probe("/ready", 1, 120)),
        readiness_probe: Some(probe("/ready", 10, 3)),
        liveness_probe: Some(probe("/live", 10, 3)),
        resources: Some(ResourceRequirements {
            limits: quantities(&[("cpu", &b.proxy_cpu_limit), ("memory", &b.proxy_memory_limit)]),
            requests: quantities(&[("cpu", &b.proxy_cpu_request), ("memory", &b.proxy_memory_request)]),
            ..Default::default()
        }),
        security_context: Some(restricted(names::PROXY_UID, true, caps)),
        volume_mounts: Some(vec![VolumeMount {
            name: names::IDENTITY_VOLUME.into(),
            mount_path: names::IDENTITY_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    if b.native_sidecar {
        c.restart_policy = Some("Always".into());
    } else {
        // A classic sidecar: the kubelet starts the next container only once this hook returns,
        // that is once the proxy is ready. (`await` needs a command to run then: a last check.)
        c.lifecycle = Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(
                        [
                            "weft-proxy",
                            "await",
                            "--timeout",
                            "120s",
                            "--",
                            "weft-proxy",
                            "probe",
                            "http://127.0.0.1:4191/ready",
                        ]
                        .map(String::from)
                        .to_vec(),
                    ),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    c
}

/// The proxy's identity volume (service-account token, trust anchor, optional join token) and
/// the init container's scratch `/run`.
pub fn volumes(s: &PodSettings) -> Vec<Volume> {
    let b = &s.base;
    let mut sources = vec![
        VolumeProjection {
            service_account_token: Some(ServiceAccountTokenProjection {
                audience: Some(names::IDENTITY_AUDIENCE.into()),
                expiration_seconds: Some(b.identity_token_expiration_seconds),
                path: names::IDENTITY_TOKEN_FILE.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeProjection {
            downward_api: Some(DownwardAPIProjection {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: names::TRUST_ANCHOR_FILE.into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{}']", names::TRUST_ANCHOR),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        },
    ];
    if let Some(secret) = &b.join_token_secret {
        sources.push(VolumeProjection {
            secret: Some(SecretProjection {
                name: secret.clone(),
                items: Some(vec![KeyToPath {
                    key: "token".into(),
                    path: names::JOIN_TOKEN_FILE.into(),
                    ..Default::default()
                }]),
                optional: Some(false),
            }),
            ..Default::default()
        });
    }
    vec![
        Volume {
            name: names::IDENTITY_VOLUME.into(),
            projected: Some(ProjectedVolumeSource { sources: Some(sources), ..Default::default() }),
            ..Default::default()
        },
        Volume {
            name: names::INIT_RUN_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("1Mi".into())),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}
