//! The proxy's metrics (names and labels are part of the user-facing contract).

use std::sync::Arc;
use std::time::Duration;

use weft_telemetry::{Counter, CounterVec, GaugeVec, Histogram, HistogramVec, Registry};

#[derive(Clone)]
pub struct ProxyMetrics {
    pub registry: Arc<Registry>,
    pub requests: CounterVec,
    pub request_duration: HistogramVec,
    pub retries: CounterVec,
    pub retry_budget_exhausted: CounterVec,
    pub deadline_exceeded: CounterVec,
    pub breaker_rejections: CounterVec,
    pub endpoint_ejections: CounterVec,
    pub endpoints_ejected: GaugeVec,
    pub tcp_open: GaugeVec,
    pub tcp_connections: CounterVec,
    pub tcp_bytes: CounterVec,
    pub cert_expiry: GaugeVec,
    pub control_plane_connected: GaugeVec,
    pub config_rejected: CounterVec,
    pub config_updates: CounterVec,
    pub proxy_errors: CounterVec,
    pub grpc_responses: CounterVec,
}

impl ProxyMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            requests: r.counter(
                "weft_requests_total",
                "HTTP requests by direction, service, status code, TLS and (inbound) caller identity.",
                &["direction", "service", "namespace", "status_code", "tls", "client_id"],
            ),
            request_duration: r.histogram(
                "weft_request_duration_seconds",
                "Time from request to response headers.",
                &["direction", "service", "namespace"],
            ),
            retries: r.counter(
                "weft_retries_total",
                "Retries made, by the reason for retrying.",
                &["service", "namespace", "reason"],
            ),
            retry_budget_exhausted: r.counter(
                "weft_retry_budget_exhausted_total",
                "Retries not made because the retry budget was empty.",
                &["service", "namespace"],
            ),
            deadline_exceeded: r.counter(
                "weft_deadline_exceeded_total",
                "Requests ended because their deadline or timeout passed.",
                &["direction", "service", "namespace"],
            ),
            breaker_rejections: r.counter(
                "weft_circuit_breaker_rejections_total",
                "Requests or connections refused by a circuit-breaker limit.",
                &["service", "namespace", "reason"],
            ),
            endpoint_ejections: r.counter(
                "weft_endpoint_ejections_total",
                "Endpoints ejected by outlier detection.",
                &["service", "namespace"],
            ),
            endpoints_ejected: r.gauge(
                "weft_endpoints_ejected",
                "Endpoints currently ejected.",
                &["service", "namespace"],
            ),
            tcp_open: r.gauge("weft_tcp_connections_open", "Open TCP connections.", &["direction"]),
            tcp_connections: r.counter(
                "weft_tcp_connections_total",
                "Accepted TCP connections by direction, service, TLS and whether the peer is meshed.",
                &["direction", "service", "namespace", "tls", "meshed"],
            ),
            tcp_bytes: r.counter(
                "weft_tcp_bytes_total",
                "Bytes relayed on opaque TCP connections.",
                &["direction", "flow"],
            ),
            cert_expiry: r.gauge(
                "weft_identity_cert_expiry_timestamp_seconds",
                "When the current workload certificate expires (Unix seconds).",
                &[],
            ),
            control_plane_connected: r.gauge(
                "weft_control_plane_connected",
                "1 while the discovery stream is up.",
                &[],
            ),
            config_rejected: r.counter(
                "weft_config_rejected_total",
                "Discovery resources rejected (NACKed).",
                &["type"],
            ),
            config_updates: r.counter("weft_config_updates_total", "Discovery responses applied.", &["type"]),
            proxy_errors: r.counter(
                "weft_proxy_errors_total",
                "Responses made by the proxy itself, by reason.",
                &["direction", "reason"],
            ),
            grpc_responses: r.counter(
                "weft_grpc_responses_total",
                "gRPC answers by status (read from the headers of a trailers-only answer, else at the end of the stream).",
                &["direction", "service", "namespace", "grpc_status"],
            ),
            registry: r,
        }
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Status codes as label values, without allocating per request.
pub fn status_str(code: u16) -> &'static str {
    static TABLE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..1000).map(|c| c.to_string()).collect());
    table.get(code as usize).map(String::as_str).unwrap_or("0")
}

/// The request series of one stream of requests whose labels are fixed but for the status code
/// (an upstream listener, an inbound connection): the usual answer's counter and the latency
/// histogram are looked up once, not per request.
pub struct RequestSeries {
    requests: CounterVec,
    ok: Counter,
    duration: Histogram,
    labels: [String; 5],
}

impl RequestSeries {
    /// `service`: `NS/NAME`, labelled as `service="NAME", namespace="NS"`.
    pub fn new(m: &ProxyMetrics, direction: &str, service: &str, tls: &str, client_id: &str) -> Self {
        let (namespace, name) = service.split_once('/').unwrap_or(("", service));
        Self {
            requests: m.requests.clone(),
            ok: m.requests.with(&[direction, name, namespace, "200", tls, client_id]),
            duration: m.request_duration.with(&[direction, name, namespace]),
            labels: [
                direction.to_string(),
                name.to_string(),
                namespace.to_string(),
                tls.to_string(),
                client_id.to_string(),
            ],
        }
    }

    pub fn record(&self, status: u16, elapsed: Duration) {
        if status == 200 {
            self.ok.inc();
        } else {
            let [direction, service, namespace, tls, client_id] = &self.labels;
            self.requests.with(&[direction, service, namespace, status_str(status), tls, client_id]).inc();
        }
        self.duration.observe(elapsed);
    }
}
