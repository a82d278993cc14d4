//! The real `weft-controller` under test: started on loopback with the generated mesh file and
//! the benchmark's CA, waited for until `/ready`, killed and started again for the reconnect
//! storm; and what it costs, sampled from `/proc` every 100 ms (CPU ticks and VmRSS), so each
//! phase gets its CPU seconds, its busiest second and its peak memory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::procs::Proc;
use crate::resources::{clock_ticks, cpu_ticks, memory};

const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How the controller is started (the same for its restart).
#[derive(Debug, Clone)]
pub struct ControllerSpec {
    pub binary: PathBuf,
    pub mesh: PathBuf,
    pub ca_dir: PathBuf,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub restart_holddown: Duration,
    pub log_dir: PathBuf,
}

/// A running controller and its sampler.
pub struct Controller {
    pub proc: Proc,
    pub sampler: Sampler,
    /// From spawning to `/ready` answering 200.
    pub startup: Duration,
    born: Mark,
}

impl Controller {
    /// The process's start, as a phase mark.
    pub fn born(&self) -> Mark {
        self.born.clone()
    }
}

impl ControllerSpec {
    /// Starts the controller (`name` labels its log) and waits until it is ready.
    pub async fn start(&self, name: &str) -> anyhow::Result<Controller> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--mesh")
            .arg(&self.mesh)
            .arg("--ca-dir")
            .arg(&self.ca_dir)
            .args(["--grpc-addr", &self.grpc.to_string(), "--admin-addr", &self.admin.to_string()])
            .args(["--restart-holddown", &format!("{}ms", self.restart_holddown.as_millis())])
            // The default level: what an operator runs.
            .args(["--log-level", "info"]);
        let started = Instant::now();
        let mut proc = Proc::spawn(name, cmd, self.log_dir.join(format!("{name}.log")))?;
        let born = Mark { at: started, ticks: 0 };
        let sampler = Sampler::start(proc.pid())?;
        wait_ready(&mut proc, &format!("http://{}/ready", self.admin), READY_TIMEOUT).await?;
        Ok(Controller { proc, sampler, startup: started.elapsed(), born })
    }
}

/// Polls `url` until it answers 200, failing with the log's tail if the process exits or
/// `timeout` passes.
pub async fn wait_ready(proc: &mut Proc, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        proc.check_running()?;
        let u = url.to_string();
        let ok = tokio::task::spawn_blocking(move || crate::probe::get(&u, Duration::from_secs(2)))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|(status, _)| status == 200);
        if ok {
            return Ok(());
        }
        if started.elapsed() > timeout {
            anyhow::bail!("{} not ready after {timeout:?}; log:\n{}", proc.name, proc.log_tail(20));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the controller cost over one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseCost {
    pub window_seconds: f64,
    pub cpu_seconds: f64,
    /// cpu_seconds / window_seconds.
    pub vcpu_mean: f64,
    /// The busiest second of the phase (CPU seconds in any 1 s between samples).
    pub vcpu_peak_1s: f64,
    pub rss_peak_bytes: u64,
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    ticks: u64,
    rss_kb: u64,
}

/// Samples one process until dropped.
pub struct Sampler {
    pid: u32,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> anyhow::Result<Self> {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("cp-sampler".into()).spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let (Ok(ticks), Ok(mem)) = (cpu_ticks(pid), memory(pid)) {
                    s.lock().unwrap_or_else(|e| e.into_inner()).push(Sample {
                        at: Instant::now(),
                        ticks,
                        rss_kb: mem.vm_rss_kb,
                    });
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        })?;
        Ok(Self { pid, samples, stop, thread: Some(thread) })
    }

    /// A phase starts now.
    pub fn mark(&self) -> Mark {
        Mark { at: Instant::now(), ticks: cpu_ticks(self.pid).unwrap_or(0) }
    }

    /// The cost from `from` to now.
    pub fn cost_since(&self, from: &Mark) -> PhaseCost {
        let end = self.mark();
        let tick = clock_ticks() as f64;
        let window = end.at.duration_since(from.at).as_secs_f64();
        let cpu = end.ticks.saturating_sub(from.ticks) as f64 / tick;
        let samples: Vec<Sample> = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.at >= from.at && s.at <= end.at)
            .copied()
            .collect();
        let mut peak = 0.0f64;
        for (k, a) in samples.iter().enumerate() {
            // The first sample at least a second later.
            if let Some(b) = samples[k..].iter().find(|b| b.at.duration_since(a.at) >= Duration::from_secs(1)) {
                let secs = b.at.duration_since(a.at).as_secs_f64();
                peak = peak.max(b.ticks.saturating_sub(a.ticks) as f64 / tick / secs);
            }
        }
        let rss_now = memory(self.pid).map(|m| m.vm_rss_kb).unwrap_or(0);
        let rss_peak_kb = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0).max(rss_now);
        PhaseCost {
            window_seconds: window,
            cpu_seconds: cpu,
            vcpu_mean: if window > 0.0 { cpu / window } else { 0.0 },
            // A phase shorter than a second: its mean is its busiest second.
            vcpu_peak_1s: if peak > 0.0 {
                peak
            } else if window > 0.0 {
                cpu / window
            } else {
                0.0
            },
            rss_peak_bytes: rss_peak_kb * 1024,
        }
    }

    /// The kernel's high-water mark of the process's RSS, in bytes.
    pub fn hwm_bytes(&self) -> u64 {
        memory(self.pid).map(|m| m.vm_hwm_kb * 1024).unwrap_or(0)
    }

    /// CPU seconds of the whole life of the process so far.
    pub fn total_cpu_seconds(&self) -> f64 {
        cpu_ticks(self.pid).unwrap_or(0) as f64 / clock_ticks() as f64
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The start of a phase.
#[derive(Clone)]
pub struct Mark {
    at: Instant,
    ticks: u64,
}

impl Mark {
    pub fn at(&self) -> Instant {
        self.at
    }
}
