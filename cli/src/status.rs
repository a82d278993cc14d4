//! `weft status`: the controller's view of the mesh, as tables.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

pub fn run(admin: &str, raw: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let url = format!("{}/api/v1/state", admin.trim_end_matches('/'));
    let (status, body) = rt.block_on(crate::http_get::get(&url, Duration::from_secs(5))).with_context(|| {
        format!("asking the controller at {admin} (is weft-controller running? --controller-admin sets where)")
    })?;
    anyhow::ensure!(status == 200, "{url} answered {status}: {body}");
    if raw {
        println!("{body}");
        return Ok(());
    }
    let state: Value = serde_json::from_str(&body).context("the controller's state is not JSON")?;
    print!("{}", render(&state, crate_now_ms()));
    Ok(())
}

fn crate_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A human duration like `23h59m` or `-5m` (expired).
fn human(ms: i64) -> String {
    let neg = ms < 0;
    let secs = ms.unsigned_abs() / 1000;
    let text = if secs >= 86400 {
        format!("{}d{}h", secs / 86400, (secs % 86400) / 3600)
    } else if secs >= 3600 {
        format!("{}h{}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    };
    if neg {
        format!("expired {text} ago")
    } else {
        text
    }
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

pub fn render(state: &Value, now_ms: i64) -> String {
    let mut out = format!(
        "trust domain {}   config version {}   snapshot {}\n",
        s(&state["trust_domain"]),
        s(&state["config_version"]),
        s(&state["snapshot_version"])
    );
    if state["restart_holddown_remaining_ms"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!(
            "restart hold-down: {} left (endpoints held by proxies are kept until every proxy has reconnected)\n",
            human(state["restart_holddown_remaining_ms"].as_i64().unwrap_or(0))
        ));
    }
    out.push_str("\nSERVICES\n");
    let services: Vec<Vec<String>> = state["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|svc| {
            let eps = svc["endpoints"].as_array().cloned().unwrap_or_default();
            let connected = eps.iter().filter(|e| e["connected"].as_bool().unwrap_or(false)).count();
            vec![
                s(&svc["name"]),
                s(&svc["namespace"]),
                s(&svc["protocol"]).trim_start_matches("PROTOCOL_").to_lowercase(),
                s(&svc["mtls"]),
                if s(&svc["vip"]).is_empty() { "-".into() } else { s(&svc["vip"]) },
                format!("{}/{}", connected, eps.len()),
                eps.iter().map(|e| s(&e["address"])).collect::<Vec<_>>().join(","),
            ]
        })
        .collect();
    out.push_str(&table(&["NAME", "NAMESPACE", "PROTOCOL", "MTLS", "VIP", "UP/ENDPOINTS", "ADDRESSES"], &services));
    out.push_str("\nPROXIES\n");
    let proxies: Vec<Vec<String>> = state["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let expiry = p["cert_expires_at_unix_ms"].as_i64().unwrap_or(0);
            let acked = p["acked"].as_object().map(|m| m.len()).unwrap_or(0);
            let nacked = p["nacked"].as_object().map(|m| m.len()).unwrap_or(0);
            vec![
                s(&p["service"]),
                if s(&p["version"]).is_empty() { "-".into() } else { s(&p["version"]) },
                s(&p["instance"]),
                s(&p["address"]),
                human(now_ms - p["connected_since_unix_ms"].as_i64().unwrap_or(now_ms)),
                if expiry == 0 { "-".into() } else { human(expiry - now_ms) },
                if nacked > 0 { format!("{acked} acked, {nacked} NACKED") } else { format!("{acked} acked") },
            ]
        })
        .collect();
    out.push_str(&table(&["SERVICE", "VERSION", "INSTANCE", "ADDRESS", "UP", "CERT EXPIRES IN", "CONFIG"], &proxies));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_services_and_proxies() {
        let state = serde_json::json!({
            "trust_domain": "weft.local", "config_version": 2, "snapshot_version": 7,
            "restart_holddown_remaining_ms": 0,
            "services": [{"name": "bar", "namespace": "default", "protocol": "PROTOCOL_HTTP", "mtls": "permissive", "vip": "",
                "endpoints": [{"address": "127.0.0.1:4143", "connected": true}, {"address": "127.0.0.1:4144", "connected": false}]}],
            "proxies": [{"service": "bar", "version": "v1", "instance": "bar-1", "address": "127.0.0.1:4143",
                "connected_since_unix_ms": 1_000_000, "cert_expires_at_unix_ms": 1_000_000 + 86_400_000,
                "acked": {"a": "1", "b": "1", "c": "1"}, "nacked": {}}]
        });
        let out = render(&state, 1_000_000 + 65_000);
        assert!(out.contains("bar   default    http      permissive  -    1/2"), "{out}");
        assert!(out.contains("bar-1"));
        assert!(out.contains("23h58m"), "{out}");
        assert!(out.contains("3 acked"));
    }
}
