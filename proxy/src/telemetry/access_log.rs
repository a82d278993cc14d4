//! The optional JSON access log: one line per request on stdout.

use std::io::Write;
use std::time::Duration;

pub fn write(
    direction: &str,
    service: &str,
    method: &http::Method,
    path: &str,
    status: u16,
    elapsed: Duration,
    client_id: &str,
) {
    let line = serde_json::json!({
        "ts_unix_ms": crate::http::deadline::unix_now_ms(),
        "direction": direction,
        "service": service,
        "method": method.as_str(),
        "path": path,
        "status": status,
        "duration_ms": elapsed.as_secs_f64() * 1000.0,
        "client_id": client_id,
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
