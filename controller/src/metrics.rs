//! The controller's metrics.

use std::sync::Arc;

use weft_telemetry::{CounterVec, GaugeVec, Registry};

#[derive(Clone)]
pub struct ControllerMetrics {
    pub registry: Arc<Registry>,
    pub config_rejected: CounterVec,
    pub config_reloads: CounterVec,
    pub config_version: GaugeVec,
    pub proxies_connected: GaugeVec,
    pub certificates_issued: CounterVec,
    pub certify_refused: CounterVec,
    pub pushes: CounterVec,
    pub nacks: CounterVec,
    pub registrations_refused: CounterVec,
    pub app_ports_refused: CounterVec,
    pub connections_refused: CounterVec,
    pub revoked_tokens: GaugeVec,
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            config_rejected: r.counter(
                "weft_config_rejected_total",
                "Mesh-file versions rejected as invalid (the last good one stays).",
                &[],
            ),
            config_reloads: r.counter("weft_config_reloads_total", "Mesh-file versions applied.", &[]),
            config_version: r.gauge(
                "weft_config_version",
                "Version of the mesh file in force (increments on each applied change).",
                &[],
            ),
            proxies_connected: r.gauge(
                "weft_controller_proxies_connected",
                "Proxies with an open discovery stream.",
                &[],
            ),
            certificates_issued: r.counter(
                "weft_certificates_issued_total",
                "Workload certificates issued.",
                &["kind"],
            ),
            certify_refused: r.counter("weft_certify_refused_total", "Certificate requests refused.", &["reason"]),
            pushes: r.counter("weft_discovery_pushes_total", "Discovery responses sent.", &["type"]),
            nacks: r.counter("weft_discovery_nacks_total", "Discovery responses NACKed by proxies.", &["type"]),
            registrations_refused: r.counter(
                "weft_registrations_refused_total",
                "Workload registrations refused, by reason.",
                &["reason"],
            ),
            app_ports_refused: r.counter(
                "weft_registration_app_ports_refused_total",
                "App ports left out of registrations because another identity holds them on that IP.",
                &[],
            ),
            connections_refused: r.counter(
                "weft_grpc_connections_refused_total",
                "Connections to the gRPC port closed by a limit, by reason.",
                &["reason"],
            ),
            revoked_tokens: r.gauge("weft_revoked_tokens", "Join-token ids in the revocation list.", &[]),
            registry: r,
        }
    }
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
