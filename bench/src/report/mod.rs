//! The documents a run leaves in `--out`: one JSON per measurement shaped after the Service Mesh
//! Performance spec (`runs/*.json`), `summary.json` with the aggregated figures, `report.md` with
//! the tables, and `latency-vs-rate.svg`.

pub mod chart;
pub mod markdown;
pub mod smp;
pub mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::plan::Settings;
use crate::runner::{RunRecord, Workload};
use crate::topology::{Kind, Measured, Placement};

/// The machine the run was made on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_mb: u64,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mb = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb / 1024)
            .unwrap_or(0);
        Self {
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            mem_total_mb,
        }
    }
}

/// The host's own activity over the session, for the noise notes: on a shared machine other work
/// (and, in a VM, the hypervisor's "steal") competes with the benchmark.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostLoad {
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// Share of CPU time stolen by the hypervisor over the session.
    pub steal_percent: f64,
    /// Share of CPU time busy (anything but idle and iowait) over the session.
    pub busy_percent: f64,
}

/// `/proc/stat`'s aggregate `cpu` line: (busy, steal, total) jiffies.
fn cpu_jiffies() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    if f.len() < 8 {
        return (0, 0, 0);
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = f[..8].iter().sum();
    (total - f[3] - f[4], f[7], total)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Started at the beginning of a session, finished at its end.
pub struct HostLoadMeter {
    loadavg: String,
    jiffies: (u64, u64, u64),
}

impl HostLoadMeter {
    pub fn start() -> Self {
        Self { loadavg: loadavg(), jiffies: cpu_jiffies() }
    }

    pub fn finish(self) -> HostLoad {
        let (b1, s1, t1) = cpu_jiffies();
        let (b0, s0, t0) = self.jiffies;
        let total = t1.saturating_sub(t0).max(1) as f64;
        HostLoad {
            loadavg_start: self.loadavg,
            loadavg_end: loadavg(),
            steal_percent: 100.0 * s1.saturating_sub(s0) as f64 / total,
            busy_percent: 100.0 * b1.saturating_sub(b0) as f64 / total,
        }
    }
}

/// One topology as it ran: versions, settings, and its measured processes (with idle memory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyMeta {
    pub kind: Kind,
    pub info: BTreeMap<String, String>,
    pub proxies: Vec<Measured>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub command: String,
    pub placement: Placement,
    pub quick: bool,
    pub started: String,
    pub finished: String,
    pub machine: Machine,
    pub host_load: HostLoad,
    pub settings: Settings,
    pub workload: Workload,
    pub topologies: Vec<TopologyMeta>,
    pub weft_version: String,
}

impl Meta {
    pub fn topology(&self, kind: Kind) -> Option<&TopologyMeta> {
        self.topologies.iter().find(|t| t.kind == kind)
    }
}

/// What was written.
pub struct Written {
    pub runs: Vec<PathBuf>,
    pub summary: PathBuf,
    pub markdown: PathBuf,
    pub chart: PathBuf,
}

/// Writes every document into `out`.
pub fn write(out: &Path, meta: &Meta, records: &[RunRecord]) -> anyhow::Result<Written> {
    let runs_dir = out.join("runs");
    std::fs::create_dir_all(&runs_dir).with_context(|| format!("creating {}", runs_dir.display()))?;
    let mut runs = vec![];
    for r in records {
        let path = runs_dir.join(format!("{}.json", r.id));
        std::fs::write(&path, serde_json::to_string_pretty(&smp::document(meta, r))?)?;
        runs.push(path);
    }
    let summary = stats::summarize(meta, records);
    let summary_path = out.join("summary.json");
    std::fs::write(
        &summary_path,
        serde_json::to_string_pretty(&serde_json::json!({ "meta": meta, "summary": summary }))?,
    )?;
    let markdown = out.join("report.md");
    std::fs::write(&markdown, markdown::render(meta, &summary))?;
    let chart = out.join("latency-vs-rate.svg");
    chart::render(&chart, meta, records)?;
    Ok(Written { runs, summary: summary_path, markdown, chart })
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// RFC 3339 UTC time for a Unix time in milliseconds, e.g. `2026-11-22T01:02:03.456Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, unix_ms % 1000)
}

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_798_765_432_109), "2027-01-01T01:03:52.109Z");
    }
}
