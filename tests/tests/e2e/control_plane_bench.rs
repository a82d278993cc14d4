//! `weft bench control-plane --quick` (issue #14) as CI runs it: the real `weft` binary simulates
//! 60 proxies with real discovery streams against a real `weft-controller` with 30 services, makes
//! its changes, restarts the controller, and writes its reports; the figures must be complete and
//! plausible.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_tests::harness::{bin, TestDir};

fn latency_ok(l: &Value, what: &str) {
    let (p50, p99, max) = (l["p50"].as_f64().unwrap(), l["p99"].as_f64().unwrap(), l["max"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max && max < 60_000.0, "{what}: {l}");
    assert!(l["count"].as_u64().unwrap() > 0, "{what}: nobody had to see it: {l}");
    assert_eq!(l["count"], l["expected"], "{what}: not every proxy converged: {l}");
}

#[test]
fn quick_control_plane_bench_converges_everywhere_and_reports_plausible_figures() {
    let dir = TestDir::new("control-plane-bench");
    let out = dir.path().join("out");
    let started = Instant::now();
    let run = Command::new(bin("weft"))
        .args(["bench", "control-plane", "--quick", "--out"])
        .arg(&out)
        .output()
        .expect("weft bench control-plane");
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "weft bench control-plane --quick failed ({}):\n{stderr}\n{stdout}", run.status);
    assert!(started.elapsed() < Duration::from_secs(90), "the quick run took {:?}", started.elapsed());

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(out.join("control-plane.json")).unwrap()).unwrap();
    let sizes = doc["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 1);
    let s = &sizes[0];
    assert_eq!((s["proxies"].as_u64(), s["services"].as_u64()), (Some(60), Some(30)));
    assert_eq!(s["complete"], true, "{s}");
    assert_eq!(s["mode"], "explicit");
    latency_ok(&s["initial_sync"]["complete_ms"], "initial sync");
    assert_eq!(s["initial_sync"]["complete_ms"]["count"], 60);
    latency_ok(&s["convergence_ms"], "changes");
    let kinds: Vec<&str> = s["changes"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["policy_edit", "endpoint_join", "endpoint_leave"]);
    for c in s["changes"].as_array().unwrap() {
        latency_ok(&c["convergence_ms"], c["kind"].as_str().unwrap());
        assert_eq!(c["unexpected_recipients"], 0, "{c}");
        assert!(c["bytes_pushed_per_change"].as_u64().unwrap() > 0, "{c}");
        // Half the mesh calls the hot service: the change reaches them, not the other half.
        let must = c["must_see"].as_u64().unwrap();
        assert!((25..=35).contains(&must), "{c}");
        assert!(c["responses_per_change"].as_u64().unwrap() >= must, "{c}");
    }
    let restart = &s["restart"];
    latency_ok(&restart["reconnect"]["complete_ms"], "reconnect storm");
    assert_eq!(restart["lost_endpoints"], 0, "{restart}");
    assert!(restart["controller_startup_ms"].as_f64().unwrap() > 0.0);
    let rss = s["controller_peak_rss_bytes"].as_u64().unwrap();
    assert!(rss > 1_000_000 && rss < 1_000_000_000, "peak RSS {rss}");
    let cpu = s["controller_cpu_seconds"].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu < 60.0, "CPU {cpu}");
    for k in ["initial_sync", "policy_edit", "endpoint_join", "endpoint_leave", "restart_storm"] {
        assert!(s["bytes_pushed"][k].as_u64().unwrap() > 0, "bytes_pushed.{k}: {}", s["bytes_pushed"]);
    }
    for phase in ["certify", "initial_sync", "churn", "restart"] {
        let p = &s["controller_phases"][phase];
        assert!(
            p["window_seconds"].as_f64().unwrap() > 0.0 && p["rss_peak_bytes"].as_u64().unwrap() > 0,
            "{phase}: {p}"
        );
    }
    assert_eq!(s["nacks"], 0);

    let md = std::fs::read_to_string(out.join("control-plane.md")).unwrap();
    assert!(md.contains("| 60 / 30 |"), "no row for the size:\n{md}");
    assert!(stdout.contains("## Control plane"), "the table is printed too");
}
