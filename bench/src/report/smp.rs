//! One measurement as a document shaped after the Service Mesh Performance (SMP) spec
//! (`service_mesh_performance.proto`): `performance_test_config` (the load: clients, rate,
//! duration), `service_mesh_config` (`mesh_type`, `proxy_concurrency`, `mtls_enabled`, `sidecar`),
//! `environment_config` (the node), and `performance_test_result` (`latencies_ms` p50/p90/p99/max,
//! `actual_qps`, start and end times). SMP has no field for p99.9 or for uncorrected latency: those
//! go in the result's `labels`, as strings like every SMP label. The raw measurement follows under
//! `weft_bench`, so a report can be rebuilt from these files alone.

use serde_json::{json, Value};

use super::{rfc3339, Meta};
use crate::runner::RunRecord;
use crate::topology::Kind;

/// SMP's `ServiceMeshes.Type` has no entry for Weft, a bare relay or no mesh: the name is given as
/// a string, and `linkerd`/`istio` where the spec has one (Envoy standalone is what Istio runs).
fn mesh_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Baseline => "none",
        Kind::Floor => "tls-relay",
        Kind::Weft => "weft",
        Kind::Envoy => "envoy",
        Kind::Linkerd => "linkerd",
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn document(meta: &Meta, r: &RunRecord) -> Value {
    let l = &r.load;
    let info = meta.topology(r.topology).map(|t| t.info.clone()).unwrap_or_default();
    let proxy_build = ["weft_proxy_version", "envoy_version", "linkerd2_proxy_release", "floor"]
        .iter()
        .find_map(|k| info.get(*k).cloned())
        .unwrap_or_default();
    let cpu_total: f64 = r.proxies.iter().map(|p| p.usage.vcpu()).sum();
    let mem_total_kb: u64 = r.proxies.iter().map(|p| p.usage.vm_rss_steady_kb).sum();
    let mut labels = serde_json::Map::new();
    let mut label = |k: &str, v: String| {
        labels.insert(k.to_string(), Value::String(v));
    };
    label("p99_9_ms", format!("{:.3}", ms(l.corrected.p999_us)));
    label("coordinated_omission", "corrected (timed from the intended send)".into());
    for (name, v) in [
        ("min", l.uncorrected.min_us),
        ("p50", l.uncorrected.p50_us),
        ("p90", l.uncorrected.p90_us),
        ("p99", l.uncorrected.p99_us),
        ("p99_9", l.uncorrected.p999_us),
        ("max", l.uncorrected.max_us),
    ] {
        label(&format!("uncorrected_{name}_ms"), format!("{:.3}", ms(v)));
    }
    label("requests", l.requests.to_string());
    label("errors", l.errors.to_string());
    label("unsent", l.unsent.to_string());
    label("target_qps", l.target_rate.to_string());
    label("series", r.series.name().into());
    label("repetition", (r.rep + 1).to_string());
    for p in &r.proxies {
        let u = &p.usage;
        label(&format!("{}_cpu_seconds", p.role), format!("{:.3}", u.cpu_seconds));
        label(&format!("{}_vcpu", p.role), format!("{:.4}", u.vcpu()));
        label(&format!("{}_vm_rss_steady_kb", p.role), u.vm_rss_steady_kb.to_string());
        label(&format!("{}_vm_rss_peak_kb", p.role), u.vm_rss_peak_kb.to_string());
        label(&format!("{}_rss_anon_steady_kb", p.role), u.rss_anon_steady_kb.to_string());
    }
    // SMP's client protocols are HTTP, TCP and gRPC; the HTTP version goes in `http_version`.
    let protocol = match l.protocol.as_str() {
        "tcp" => "tcp",
        "grpc" => "grpc",
        _ => "http",
    };
    json!({
        "smp_version": "v1 (shape of service_mesh_performance.proto)",
        "id": r.id,
        "performance_test_config": {
            "id": r.id,
            "name": format!("weft bench: {} {} ({}) at {} rps, {} connections, repetition {}", r.topology, r.series.name(), l.protocol, l.target_rate, l.connections, r.rep + 1),
            "labels": {"topology": r.topology.name(), "placement": serde_json::to_value(meta.placement).unwrap_or_default(), "series": r.series.name()},
            "clients": [{
                "internal": true,
                "load_generator": "weft-bench (open-loop, pacing thread, coordinated-omission corrected, HdrHistogram µs)",
                "protocol": protocol,
                "connections": l.connections,
                "rps": l.target_rate as i64,
                "headers": {},
                "cookies": {},
                "body": "",
                "content_type": "",
                "endpoint_url": [format!("{}://{}/", if protocol == "tcp" { "tcp" } else { "http" }, r.target)],
            }],
            "duration": format!("{}s", l.duration_s),
            "warmup": format!("{}s", l.warmup_s),
            "http_version": l.protocol,
            "response_bytes": meta.workload.payload,
        },
        "service_mesh_config": {
            "id": r.topology.name(),
            "mesh_type": mesh_type(r.topology),
            "proxy_concurrency": if r.topology.has_proxies() { 1 } else { 0 },
            "mtls_enabled": r.topology.has_proxies(),
            "proxy_build": proxy_build,
            "sidecar": {
                "count": r.proxies.len(),
                "cpu_mCores": (cpu_total * 1000.0).round() as i64,
                "mem_mb": (mem_total_kb as f64 / 1024.0).round() as i64,
                "rps": l.actual_qps.round() as i64,
            },
            "labels": info,
        },
        "environment_config": {
            "node": [{"type": meta.machine.cpu_model, "cores": meta.machine.nproc, "mem_mb": meta.machine.mem_total_mb}],
            "labels": {"kernel": meta.machine.kernel, "placement": serde_json::to_value(meta.placement).unwrap_or_default()},
        },
        "performance_test_result": {
            "id": r.id,
            "labels": labels,
            "start_time": rfc3339(l.start_unix_ms),
            "end_time": rfc3339(l.end_unix_ms),
            "latencies_ms": {
                "min": ms(l.corrected.min_us),
                "average": l.corrected.mean_us / 1000.0,
                "p50": ms(l.corrected.p50_us),
                "p90": ms(l.corrected.p90_us),
                "p99": ms(l.corrected.p99_us),
                "max": ms(l.corrected.max_us),
            },
            "actual_qps": l.actual_qps,
        },
        "weft_bench": r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Series;
    use crate::report::stats::tests::{meta, record};

    #[test]
    fn document_has_the_smp_shape_and_the_extra_figures_in_labels() {
        let m = meta(&[Kind::Weft]);
        let r = record(Kind::Weft, Series::Main, 1000.0, 16, 2, 250, 0.8);
        let d = document(&m, &r);
        assert_eq!(d["service_mesh_config"]["mesh_type"], "weft");
        assert_eq!(d["service_mesh_config"]["mtls_enabled"], true);
        assert_eq!(d["service_mesh_config"]["proxy_concurrency"], 1);
        assert_eq!(d["service_mesh_config"]["sidecar"]["count"], 2);
        assert_eq!(d["service_mesh_config"]["sidecar"]["cpu_mCores"], 160);
        assert_eq!(d["performance_test_config"]["clients"][0]["connections"], 16);
        assert_eq!(d["performance_test_result"]["latencies_ms"]["p50"], 0.25);
        assert_eq!(d["performance_test_result"]["latencies_ms"]["p99"], 1.0);
        assert_eq!(d["performance_test_result"]["actual_qps"], 1000.0);
        assert_eq!(d["performance_test_result"]["labels"]["p99_9_ms"], "2.000");
        assert_eq!(d["performance_test_result"]["labels"]["uncorrected_p50_ms"], "0.250");
        assert_eq!(d["performance_test_result"]["labels"]["repetition"], "3");
        assert_eq!(d["weft_bench"]["topology"], "weft");
    }
}
