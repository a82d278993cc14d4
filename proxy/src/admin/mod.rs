//! The proxy's admin port: `/metrics`, `/live`, `/ready` and the kubelet's `/app-probe/…` for
//! anyone; `/config` (the topology), `/log-level` and `POST /shutdown` for loopback callers only
//! unless `--admin-open`.

pub(crate) mod app_probe;
mod policy_json;

use std::sync::Arc;

use http::{Method, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use weft_telemetry::admin::{self, AdminRequest};
use weft_telemetry::logging::LogLevel;

use crate::context::ProxyContext;

pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    log: LogLevel,
    shutdown: mpsc::UnboundedSender<&'static str>,
) {
    admin::serve(listener, move |req: AdminRequest| {
        let ctx = ctx.clone();
        let log = log.clone();
        let shutdown = shutdown.clone();
        async move {
            let restricted = matches!(req.path.as_str(), "/config" | "/log-level" | "/shutdown");
            if restricted && !ctx.cfg.admin_open && !admin::is_loopback(req.peer) {
                return admin::loopback_only(&req.path, "--admin-open");
            }
            if let Some(probe) = req.path.strip_prefix("/app-probe/") {
                return crate::admin::app_probe::answer(&ctx, probe, req.query.as_deref()).await;
            }
            match (req.method.clone(), req.path.as_str()) {
                (Method::GET, "/metrics") => {
                    refresh_gauges(&ctx);
                    admin::metrics(ctx.metrics.registry.render())
                }
                (Method::GET, "/live") => admin::text(StatusCode::OK, "live\n"),
                (Method::GET, "/ready") => {
                    if ctx.readiness.is_ready() {
                        admin::text(StatusCode::OK, "ready\n")
                    } else {
                        admin::text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {}\n", ctx.readiness.explain()),
                        )
                    }
                }
                (Method::GET, "/config") => admin::json(StatusCode::OK, config_json(&ctx)),
                (Method::GET, "/log-level") => admin::text(StatusCode::OK, format!("{}\n", log.get())),
                (Method::PUT, "/log-level") | (Method::POST, "/log-level") => {
                    match log.set(&String::from_utf8_lossy(&req.body)) {
                        Ok(()) => admin::text(StatusCode::OK, format!("{}\n", log.get())),
                        Err(e) => admin::text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                    }
                }
                (Method::POST, "/shutdown") => {
                    let _ = shutdown.send("POST /shutdown");
                    admin::text(StatusCode::OK, "shutting down\n")
                }
                _ => admin::text(
                    StatusCode::NOT_FOUND,
                    "not found: try /metrics, /live, /ready, /config, /log-level, POST /shutdown\n",
                ),
            }
        }
    })
    .await
}

/// Gauges that follow time rather than events, brought up to date for a scrape: an ejected
/// endpoint whose ejection ran out counts as back even if no request has been sent to it since.
fn refresh_gauges(ctx: &ProxyContext) {
    let now = tokio::time::Instant::now();
    for s in ctx.view().services.values().filter(|s| !s.endpoints.is_empty()) {
        ctx.metrics.endpoints_ejected.with(&[&s.name, &s.namespace]).set(s.ejected(now) as i64);
    }
}

/// The active configuration and its versions, as JSON.
fn config_json(ctx: &ProxyContext) -> String {
    use serde_json::json;
    let view = ctx.view();
    let mut services: Vec<_> = view
        .services
        .values()
        .map(|s| {
            let policy = s.policy.as_ref().map(|p| policy_json::service_policy(&p.source));
            json!({
                "name": s.name,
                "namespace": s.namespace,
                "key": s.key,
                "policy": policy,
                "endpoints": s.endpoints.iter().map(|e| json!({
                    "address": e.addr.to_string(),
                    "identity": e.identity.as_ref().map(|i| i.to_string()),
                    "version": e.version,
                    "instance": e.instance,
                    "app_ports": e.app_ports,
                    "pending": e.load.pending(),
                    "latency_estimate_ms": e.load.estimate(tokio::time::Instant::now()).as_secs_f64() * 1000.0,
                    "ejected": e.outlier.is_ejected(tokio::time::Instant::now()),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    services.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let identity = ctx.identity.current();
    serde_json::to_string_pretty(&json!({
        "service": ctx.cfg.service,
        "namespace": ctx.cfg.namespace,
        "instance": ctx.cfg.instance,
        "identity": identity.as_ref().map(|i| i.id.to_string()),
        "certificate_expires_unix": identity.as_ref().map(|i| i.not_after_unix),
        "ready": ctx.readiness.is_ready(),
        "versions": view.accepted,
        "held": view.held,
        "directory": *view.directory,
        "services": services,
    }))
    .unwrap_or_default()
}
