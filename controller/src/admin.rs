//! The controller's admin endpoints: `/metrics`, `/live`, `/ready` for anyone; `/api/v1/state`
//! (the mesh's topology) and `/log-level` for loopback callers unless `--admin-open`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Method, StatusCode};
use tokio::net::TcpListener;
use weft_telemetry::admin::{self, AdminRequest};
use weft_telemetry::logging::LogLevel;

use crate::state::MeshState;

/// The flag that opens the loopback-only endpoints.
pub const OPEN_FLAG: &str = "--admin-open";

pub async fn serve(listener: TcpListener, state: Arc<MeshState>, ready: Arc<AtomicBool>, log: LogLevel, open: bool) {
    admin::serve(listener, move |req: AdminRequest| {
        let state = state.clone();
        let ready = ready.clone();
        let log = log.clone();
        async move {
            let restricted = matches!(req.path.as_str(), "/api/v1/state" | "/log-level");
            if restricted && !open && !admin::is_loopback(req.peer) {
                return admin::loopback_only(&req.path, OPEN_FLAG);
            }
            match (req.method.clone(), req.path.as_str()) {
                (Method::GET, "/metrics") => admin::metrics(state.metrics.registry.render()),
                (Method::GET, "/live") => admin::text(StatusCode::OK, "live\n"),
                (Method::GET, "/ready") => {
                    if ready.load(Ordering::Relaxed) {
                        admin::text(StatusCode::OK, "ready\n")
                    } else {
                        admin::text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
                (Method::GET, "/api/v1/state") => {
                    admin::json(StatusCode::OK, serde_json::to_string_pretty(&state.state_json()).unwrap_or_default())
                }
                (Method::GET, "/log-level") => admin::text(StatusCode::OK, format!("{}\n", log.get())),
                (Method::PUT, "/log-level") | (Method::POST, "/log-level") => {
                    match log.set(&String::from_utf8_lossy(&req.body)) {
                        Ok(()) => admin::text(StatusCode::OK, format!("{}\n", log.get())),
                        Err(e) => admin::text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                    }
                }
                _ => admin::text(
                    StatusCode::NOT_FOUND,
                    "not found: try /metrics, /ready, /live, /api/v1/state, /log-level\n",
                ),
            }
        }
    })
    .await
}
