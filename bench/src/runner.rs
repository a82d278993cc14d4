//! One measurement: the load generator runs as a child process where the client lives (this
//! executable's `bench load`, inside the client pod for the netns placement), and while it runs
//! its measured window the proxies' CPU and memory are metered. A run with any failed request
//! fails the benchmark, loudly.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::load::{LoadSummary, Protocol};
use crate::plan::{Series, Step};
use crate::resources::{Meter, Usage};
use crate::topology::{Deployment, Kind, Launcher};

/// What every run shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub protocol: Protocol,
    pub payload: usize,
    pub request_timeout: Duration,
    pub load_threads: usize,
}

/// One proxy process's cost in a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyUsage {
    pub role: String,
    pub pid: u32,
    pub comm: String,
    pub usage: Usage,
}

/// One measurement, as the reports use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub topology: Kind,
    pub series: Series,
    pub rep: usize,
    pub target: String,
    pub load: LoadSummary,
    pub proxies: Vec<ProxyUsage>,
}

impl RunRecord {
    /// vCPUs per 1000 requests per second, for each proxy process.
    pub fn vcpu_per_krps(&self) -> Vec<f64> {
        let krps = self.load.actual_qps / 1000.0;
        self.proxies.iter().map(|p| if krps > 0.0 { p.usage.vcpu() / krps } else { 0.0 }).collect()
    }
}

/// Where the step's load goes: a TCP listener of its own where the topology has one.
fn target(d: &Deployment, step: &Step, w: &Workload) -> std::net::SocketAddr {
    match step.protocol.unwrap_or(w.protocol) {
        Protocol::Tcp => d.tcp_target.unwrap_or(d.target),
        _ => d.target,
    }
}

fn load_args(d: &Deployment, step: &Step, w: &Workload) -> Vec<String> {
    let protocol = step.protocol.unwrap_or(w.protocol);
    let target = target(d, step, w);
    [
        "bench",
        "load",
        "--target",
        &target.to_string(),
        "--authority",
        &d.authority,
        "--protocol",
        protocol.name(),
        "--rate",
        &step.rate.to_string(),
        "--connections",
        &step.connections.to_string(),
        "--warmup-ms",
        &step.warmup.as_millis().to_string(),
        "--duration-ms",
        &step.duration.as_millis().to_string(),
        "--payload",
        &w.payload.to_string(),
        "--timeout-ms",
        &w.request_timeout.as_millis().to_string(),
        "--threads",
        &w.load_threads.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

pub fn run_id(step: &Step) -> String {
    let series = match step.protocol {
        Some(p) => format!("{}-{}", step.series.name(), p.name()),
        None => step.series.name().to_string(),
    };
    format!("{}-{}-r{}-c{}-rep{}", step.kind, series, step.rate as u64, step.connections, step.rep + 1)
}

/// Runs `step` against `d` and meters its proxies.
pub fn measure(d: &mut Deployment, step: &Step, w: &Workload, launcher: &Launcher) -> anyhow::Result<RunRecord> {
    d.check_running()?;
    let id = run_id(step);
    let log = launcher.logs.join("load.log");
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let mut cmd = crate::netns::command(d.load_ns.as_deref(), None, &launcher.tools.self_exe.display().to_string());
    cmd.args(load_args(d, step, w)).stdout(Stdio::piped()).stderr(Stdio::from(log_file)).stdin(Stdio::null());
    let mut child = cmd.spawn().context("starting the load generator")?;
    let pid = child.id();

    // A watchdog: the generator bounds itself, but a hung child must never hang the benchmark.
    let limit = step.warmup + step.duration + w.request_timeout + Duration::from_secs(30);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    });

    let pids: Vec<u32> = d.measured.iter().map(|m| m.pid).collect();
    let mut meter = None;
    let mut usage = None;
    let mut summary: Option<LoadSummary> = None;
    let stdout = child.stdout.take().context("load generator stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match line.as_str() {
            "event measure-start" => meter = Some(Meter::start(&pids)?),
            "event measure-end" => usage = meter.take().map(Meter::stop).transpose()?,
            _ => {
                if let Some(json) = line.strip_prefix("result ") {
                    summary = Some(serde_json::from_str(json).context("the load generator's result")?);
                }
            }
        }
    }
    let status = child.wait()?;
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let Some(load) = summary else {
        bail!("{id}: the load generator failed ({status}); see {}", log.display());
    };
    if load.errors > 0 {
        bail!(
            "{id}: {} of {} requests failed — a run with errors is not a measurement. By kind: {:?}. First: {:#?}. Logs: {}",
            load.errors,
            load.errors + load.requests + load.warmup_requests,
            load.errors_by_kind,
            load.first_errors,
            launcher.logs.display()
        );
    }
    d.check_running()?;
    let usage = match usage {
        Some(u) => u,
        None if pids.is_empty() => Default::default(),
        None => bail!("{id}: the load generator never reported its measured window"),
    };
    let proxies = d
        .measured
        .iter()
        .map(|m| ProxyUsage {
            role: m.role.clone(),
            pid: m.pid,
            comm: m.comm.clone(),
            usage: usage.get(&m.pid).cloned().unwrap_or_default(),
        })
        .collect();
    Ok(RunRecord {
        id,
        topology: step.kind,
        series: step.series,
        rep: step.rep,
        target: target(d, step, w).to_string(),
        load,
        proxies,
    })
}
