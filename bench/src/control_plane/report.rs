//! The control-plane run's documents: `control-plane.json` (the session and every size's
//! figures) and `control-plane.md` (the table).

use std::fmt::Write as _;

use serde::Serialize;

use super::scenario::SizeResult;
use crate::report::{HostLoad, Machine};

#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub command: String,
    pub quick: bool,
    pub started: String,
    pub finished: String,
    pub machine: Machine,
    pub host_load: HostLoad,
    pub weft_version: String,
    pub controller_binary: String,
    pub repetitions: usize,
    pub restart_holddown_ms: u64,
    /// The soft open-file limit in force.
    pub nofile_limit: u64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Document {
    pub meta: Meta,
    pub sizes: Vec<SizeResult>,
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn kb(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        mb(bytes)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

pub fn markdown(doc: &Document) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Control plane: one controller, N simulated proxies, M = N/2 services\n");
    let _ = writeln!(
        s,
        "| proxies / services | initial sync, all complete | change p50 / p99 / max | policy edit p99 | endpoint join p99 | endpoint leave p99 | bytes per change (edit / join / leave) | unexpected recipients | controller peak RSS | controller CPU (whole run) | vCPU peak 1 s, churn / restart | restart: all reconnected and complete | lost endpoints | one real proxy's RSS, ready / after churn |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &doc.sizes {
        let change = |k: &str| r.changes.iter().find(|c| c.kind == k);
        let p99 = |k: &str| change(k).map(|c| ms(c.convergence_ms.p99)).unwrap_or_default();
        let unexpected: usize = r.changes.iter().map(|c| c.unexpected_recipients).sum();
        let done = |l: &super::stats::Latency, settled: f64| {
            if l.complete() {
                ms(settled)
            } else {
                format!("**{} of {}**", l.count, l.expected)
            }
        };
        let _ = writeln!(
            s,
            "| {} / {}{} | {} | {} / {} / {} | {} | {} | {} | {} / {} / {} | {} | {} | {:.1} s | {:.2} / {:.2} | {} | {} | {} / {} |",
            r.proxies,
            r.services,
            if r.mode == "transparent" { " (transparent)" } else { "" },
            done(&r.initial_sync.complete_ms, r.initial_sync.settled_ms),
            ms(r.convergence_ms.p50),
            ms(r.convergence_ms.p99),
            ms(r.convergence_ms.max),
            p99("policy_edit"),
            p99("endpoint_join"),
            p99("endpoint_leave"),
            kb(r.bytes_pushed.policy_edit),
            kb(r.bytes_pushed.endpoint_join),
            kb(r.bytes_pushed.endpoint_leave),
            unexpected,
            mb(r.controller_peak_rss_bytes),
            r.controller_cpu_seconds,
            r.controller_phases.churn.vcpu_peak_1s,
            r.controller_phases.restart.vcpu_peak_1s,
            done(&r.restart.reconnect.complete_ms, r.restart.reconnect.settled_ms),
            r.restart.lost_endpoints,
            mb(r.real_proxy_rss_bytes.ready),
            mb(r.real_proxy_rss_bytes.after_churn),
        );
    }
    let _ = writeln!(s);
    for n in &doc.meta.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}
