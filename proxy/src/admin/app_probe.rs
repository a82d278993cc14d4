//! Kubelet probes answered for the app on the admin port. Under `mtls: strict` the app's ports
//! take only mTLS, so a kubelet's plaintext probe would fail; the injector rewrites each httpGet or
//! tcpSocket probe of an app container to `GET /app-probe/http/PORT/PATH` or `/app-probe/tcp/PORT`
//! on the admin port (which interception leaves alone) and lists it with `--app-probe`. Only listed
//! probes are served, so the admin port is no way around mTLS to anything else on the app.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use weft_telemetry::admin::{self, AdminBody};

use crate::config::AppProbe;
use crate::context::ProxyContext;

/// A kubelet's probe timeout defaults to 1 s and tops out far below this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `GET /app-probe/<rest>` (`rest` without the prefix).
pub async fn answer(ctx: &ProxyContext, rest: &str, query: Option<&str>) -> http::Response<AdminBody> {
    let Some(probe) = requested(rest, query).filter(|p| ctx.cfg.app_probes.contains(p)) else {
        return admin::text(
            StatusCode::NOT_FOUND,
            "no such probe (the proxy serves only the probes given with --app-probe)\n",
        );
    };
    let ip = ctx.cfg.app.map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, check(ctx, ip, &probe)).await.unwrap_or(Err("timed out".into()));
    match outcome {
        Ok(status) if status.is_success() || status.is_redirection() => admin::text(status, "ok\n"),
        Ok(status) => admin::text(status, format!("the app answered {status}\n")),
        Err(e) => admin::text(StatusCode::SERVICE_UNAVAILABLE, format!("the app did not answer: {e}\n")),
    }
}

/// The probe a request path names: `http/PORT/PATH[?QUERY]` or `tcp/PORT`.
fn requested(rest: &str, query: Option<&str>) -> Option<AppProbe> {
    if let Some(r) = rest.strip_prefix("http/") {
        let (port, path) = r.split_at(r.find('/').unwrap_or(r.len()));
        let path = match query {
            Some(q) => format!("{}?{q}", if path.is_empty() { "/" } else { path }),
            None if path.is_empty() => "/".to_string(),
            None => path.to_string(),
        };
        return Some(AppProbe::Http { port: port.parse().ok()?, path });
    }
    rest.strip_prefix("tcp/").and_then(|p| p.parse().ok()).map(|port| AppProbe::Tcp { port })
}

/// Probes the app as the kubelet would have.
async fn check(ctx: &ProxyContext, ip: IpAddr, probe: &AppProbe) -> Result<StatusCode, String> {
    match probe {
        AppProbe::Tcp { port } => {
            crate::net::connect::connect(SocketAddr::new(ip, *port), ctx.cfg.connect_timeout)
                .await
                .map_err(|e| e.to_string())?;
            Ok(StatusCode::OK)
        }
        AppProbe::Http { port, path } => {
            let addr = SocketAddr::new(ip, *port);
            let req = Request::get(path.as_str())
                .header(http::header::HOST, addr.to_string())
                .header(http::header::USER_AGENT, "weft-proxy app-probe")
                .body(crate::http::empty())
                .map_err(|e| e.to_string())?;
            let resp = ctx.plain.send(addr, false, req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            // Read (and drop) the body so the connection can be reused.
            let _ = resp.into_body().collect().await;
            Ok(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_probes() {
        assert_eq!(requested("http/8080/healthz", None), Some(AppProbe::Http { port: 8080, path: "/healthz".into() }));
        assert_eq!(
            requested("http/8080/ready", Some("full=1")),
            Some(AppProbe::Http { port: 8080, path: "/ready?full=1".into() })
        );
        assert_eq!(requested("http/8080", None), Some(AppProbe::Http { port: 8080, path: "/".into() }));
        assert_eq!(requested("tcp/5432", None), Some(AppProbe::Tcp { port: 5432 }));
        assert_eq!(requested("tcp/x", None), None);
        assert_eq!(requested("udp/53", None), None);
    }
}
