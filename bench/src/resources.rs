//! What a proxy process costs: CPU seconds from `/proc/PID/stat` (user + system, every thread,
//! over exactly the measured window) and memory from `/proc/PID/status` (VmRSS, VmHWM and RssAnon
//! — Envoy's large binary is mostly shared pages, so RssAnon says what is really its own), sampled
//! through the window for a steady (median) and a peak figure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`; 100 on Linux in practice).
pub fn clock_ticks() -> u64 {
    static T: OnceLock<u64> = OnceLock::new();
    *T.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// utime + stime of a process, in clock ticks, from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("no ')' in stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    if f.len() < 13 {
        bail!("short stat line");
    }
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid}"))?;
    parse_stat_cpu(&stat)
}

/// Memory figures of `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub vm_rss_kb: u64,
    pub vm_hwm_kb: u64,
    pub rss_anon_kb: u64,
}

pub fn parse_status(status: &str) -> Memory {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory { vm_rss_kb: field("VmRSS:"), vm_hwm_kb: field("VmHWM:"), rss_anon_kb: field("RssAnon:") }
}

pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid}"))?;
    Ok(parse_status(&status))
}

/// The command name of a process (to show in reports that we measured the right one).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// One process's cost over a measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub window_seconds: f64,
    /// Median of the samples taken through the window.
    pub vm_rss_steady_kb: u64,
    /// Largest sample in the window.
    pub vm_rss_peak_kb: u64,
    /// The kernel's high-water mark for the process's whole life, read at the end.
    pub vm_hwm_kb: u64,
    pub rss_anon_steady_kb: u64,
    pub rss_anon_peak_kb: u64,
}

impl Usage {
    /// vCPUs used on average through the window.
    pub fn vcpu(&self) -> f64 {
        if self.window_seconds > 0.0 {
            self.cpu_seconds / self.window_seconds
        } else {
            0.0
        }
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// Measures a set of processes between [`Meter::start`] and [`Meter::stop`].
pub struct Meter {
    pids: Vec<u32>,
    start_ticks: Vec<u64>,
    started: Instant,
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<Vec<Vec<Memory>>>,
}

impl Meter {
    pub fn start(pids: &[u32]) -> anyhow::Result<Self> {
        let start_ticks = pids.iter().map(|p| cpu_ticks(*p)).collect::<anyhow::Result<Vec<_>>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (pids_c, stop_c) = (pids.to_vec(), stop.clone());
        let sampler = std::thread::Builder::new().name("bench-meter".into()).spawn(move || {
            let mut samples = vec![vec![]; pids_c.len()];
            while !stop_c.load(Ordering::Relaxed) {
                for (i, pid) in pids_c.iter().enumerate() {
                    if let Ok(m) = memory(*pid) {
                        samples[i].push(m);
                    }
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            samples
        })?;
        Ok(Self { pids: pids.to_vec(), start_ticks, started: Instant::now(), stop, sampler })
    }

    pub fn stop(self) -> anyhow::Result<BTreeMap<u32, Usage>> {
        let end_ticks = self.pids.iter().map(|p| cpu_ticks(*p)).collect::<anyhow::Result<Vec<_>>>()?;
        let window = self.started.elapsed().as_secs_f64();
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.sampler.join().map_err(|_| anyhow::anyhow!("the memory sampler panicked"))?;
        let tick = clock_ticks() as f64;
        let mut out = BTreeMap::new();
        for (i, pid) in self.pids.iter().enumerate() {
            let s = &samples[i];
            let last = memory(*pid).unwrap_or_default();
            out.insert(
                *pid,
                Usage {
                    cpu_seconds: end_ticks[i].saturating_sub(self.start_ticks[i]) as f64 / tick,
                    window_seconds: window,
                    vm_rss_steady_kb: median(s.iter().map(|m| m.vm_rss_kb).collect()),
                    vm_rss_peak_kb: s.iter().map(|m| m.vm_rss_kb).max().unwrap_or(last.vm_rss_kb),
                    vm_hwm_kb: last.vm_hwm_kb,
                    rss_anon_steady_kb: median(s.iter().map(|m| m.rss_anon_kb).collect()),
                    rss_anon_peak_kb: s.iter().map(|m| m.rss_anon_kb).max().unwrap_or(last.rss_anon_kb),
                },
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_counts_fields_after_the_command_name() {
        let stat = "1234 (weird) name)) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_stat_cpu(stat).unwrap(), 325);
        assert!(parse_stat_cpu("1 (x) S 1").is_err());
    }

    #[test]
    fn status_memory_fields_are_read_in_kib() {
        let status =
            "Name:\tenvoy\nVmHWM:\t   70000 kB\nVmRSS:\t   68000 kB\nRssAnon:\t   15000 kB\nRssFile:\t 53000 kB\n";
        assert_eq!(parse_status(status), Memory { vm_rss_kb: 68000, vm_hwm_kb: 70000, rss_anon_kb: 15000 });
    }

    #[test]
    fn meter_sees_our_own_cpu_and_memory() {
        let me = std::process::id();
        let m = Meter::start(&[me]).unwrap();
        // Burn 300 ms of CPU time, not of wall time: on a loaded machine the wall clock says little.
        let own_cpu = || cpu_ticks(me).unwrap() as f64 / clock_ticks() as f64;
        let burn_from = own_cpu();
        let mut x = 0u64;
        while own_cpu() - burn_from < 0.3 {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let u = m.stop().unwrap()[&me].clone();
        assert!(u.cpu_seconds >= 0.2, "{u:?}");
        assert!(u.vm_rss_steady_kb > 0 && u.vm_rss_peak_kb >= u.vm_rss_steady_kb && u.rss_anon_steady_kb > 0, "{u:?}");
        // At most the whole machine; at least something (how much depends on the machine's load).
        assert!(u.vcpu() > 0.0 && u.vcpu() <= 2.5, "{}", u.vcpu());
    }
}
