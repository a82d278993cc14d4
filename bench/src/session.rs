//! One `weft bench` session: resolve what to run and with which binaries, start every topology
//! (side by side, so rounds can interleave), run the plan with a progress bar, and write the
//! reports. Any failure stops the session with everything cleaned up: processes, namespaces.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::{parse_duration, parse_list, BenchArgs};
use crate::plan::{self, Settings};
use crate::procs::{find_binary, install_interrupt_cleanup, self_exe};
use crate::progress::Progress;
use crate::report::{self, Machine, Meta, TopologyMeta};
use crate::runner::{self, RunRecord, Workload};
use crate::topology::{self, Deployment, Kind, Launcher, Placement, Setup, Site, Tools};

/// The settings of this session: `--quick` or the full method, then any explicit flags.
pub fn settings(a: &BenchArgs) -> anyhow::Result<Settings> {
    let mut s = if a.quick { Settings::quick() } else { Settings::full() };
    if let Some(r) = a.tuning.rate {
        if r.is_nan() || r <= 0.0 {
            bail!("--rate must be positive");
        }
        s.rate = r;
    }
    if let Some(c) = &a.tuning.connections {
        if c.is_empty() || c.contains(&0) {
            bail!("--connections needs positive counts");
        }
        s.connections = c.clone();
        s.rate_sweep_connections = *c.iter().max().unwrap_or(&16);
    }
    if let Some(d) = &a.tuning.duration {
        s.duration = parse_duration(d)?;
    }
    if let Some(d) = &a.tuning.warmup {
        s.warmup = parse_duration(d)?;
    }
    if let Some(r) = a.tuning.repetitions {
        s.repetitions = r.max(1);
    }
    if let Some(c) = &a.tuning.connection_sweep {
        s.connection_sweep = parse_list(c)?;
    }
    if let Some(r) = &a.tuning.rate_sweep {
        s.rate_sweep = parse_list(r)?;
        if s.rate_sweep.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
            bail!("--rate-sweep needs positive rates");
        }
    }
    if let Some(p) = &a.tuning.protocols {
        s.protocols = parse_list(p)?;
    }
    // The main protocol is measured already; a row of its own would repeat it.
    s.protocols.retain(|p| *p != a.tuning.protocol);
    if s.duration.is_zero() {
        bail!("--duration must be positive");
    }
    Ok(s)
}

/// The topologies of this session, in a fixed order, the baseline always first.
pub fn kinds(a: &BenchArgs) -> anyhow::Result<Vec<Kind>> {
    let mut kinds: Vec<Kind> = match &a.proxies {
        Some(list) => list.iter().map(|s| Kind::parse(s.trim())).collect::<anyhow::Result<_>>()?,
        None => {
            let mut k = vec![Kind::Baseline, Kind::Floor, Kind::Weft, Kind::Envoy];
            if a.linkerd2_proxy.is_some() && !a.quick {
                k.push(Kind::Linkerd);
            }
            k
        }
    };
    kinds.push(Kind::Baseline);
    kinds.sort();
    kinds.dedup();
    if kinds.contains(&Kind::Linkerd) && a.placement != Placement::Netns {
        bail!("linkerd2-proxy needs --placement netns (it takes its target from iptables' original destination and refuses loopback endpoints)");
    }
    Ok(kinds)
}

fn tools(a: &BenchArgs, kinds: &[Kind]) -> anyhow::Result<Tools> {
    let need = |k: Kind| kinds.contains(&k);
    let linkerd = match (&a.linkerd2_proxy, need(Kind::Linkerd)) {
        (Some(p), true) if p.is_file() => Some(p.clone()),
        (Some(p), true) => bail!("--linkerd2-proxy {}: no such file", p.display()),
        (None, true) => bail!("linkerd2-proxy is requested but --linkerd2-proxy PATH is not given"),
        (_, false) => None,
    };
    let envoy = match (&a.envoy, need(Kind::Envoy)) {
        (Some(p), true) if p.is_file() => Some(p.clone()),
        (Some(p), true) => bail!("--envoy {}: no such file", p.display()),
        (None, true) => Some(topology::envoy::find()?),
        (_, false) => None,
    };
    Ok(Tools {
        self_exe: self_exe()?,
        weft_proxy: if need(Kind::Weft) { Some(find_binary("weft-proxy")?) } else { None },
        weft_controller: if need(Kind::Weft) { Some(find_binary("weft-controller")?) } else { None },
        envoy,
        linkerd,
    })
}

fn line(r: &RunRecord) -> String {
    let l = &r.load;
    let cpu: Vec<String> = r.vcpu_per_krps().iter().map(|v| format!("{v:.3}")).collect();
    format!(
        "{:<44} p50 {:>6} µs  p90 {:>6} µs  p99 {:>7} µs  {:>7.0} rps{}{}",
        r.id,
        l.corrected.p50_us,
        l.corrected.p90_us,
        l.corrected.p99_us,
        l.actual_qps,
        if cpu.is_empty() { String::new() } else { format!("  vCPU/krps {}", cpu.join(" ")) },
        if plan::sustained(l) { "" } else { "  (not sustained)" }
    )
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    install_interrupt_cleanup();
    let settings = settings(&a)?;
    let kinds = kinds(&a)?;
    let tools = tools(&a, &kinds)?;
    let work = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let result = session(&a, &settings, &kinds, tools, &work, logs);
    match &result {
        Ok(()) if !a.keep_work_dir => {
            let _ = std::fs::remove_dir_all(&work);
        }
        Ok(()) => eprintln!("weft bench: working directory kept: {}", work.display()),
        Err(_) => eprintln!("weft bench: certificates, configs and logs are in {}", work.display()),
    }
    result
}

fn session(
    a: &BenchArgs,
    settings: &Settings,
    kinds: &[Kind],
    tools: Tools,
    work: &std::path::Path,
    logs: PathBuf,
) -> anyhow::Result<()> {
    let started = report::now_rfc3339();
    let host_load = report::HostLoadMeter::start();
    let pki = crate::pki::BenchPki::create(&work.join("pki"))?;
    let launcher = Launcher { logs, tools };
    // Declared before the deployments, so dropped after them: processes go before their namespaces.
    let mut lab = match a.placement {
        Placement::Netns => Some(crate::netns::Lab::new()?),
        Placement::Loopback => None,
    };
    let mut deployments: Vec<Deployment> = vec![];
    let base_id = 20_000 + (std::process::id() % 10_000) * 4;
    for (i, &kind) in kinds.iter().enumerate() {
        let site = match lab.as_mut() {
            Some(lab) => {
                let n = 10 + 2 * i as u8;
                Site {
                    switch_ns: Some(lab.switch().to_string()),
                    client_ns: Some(lab.pod(&format!("{}a", kind.short()), n)?),
                    server_ns: Some(lab.pod(&format!("{}b", kind.short()), n + 1)?),
                    client_ip: std::net::Ipv4Addr::new(198, 18, 0, n),
                    server_ip: std::net::Ipv4Addr::new(198, 18, 0, n + 1),
                }
            }
            None => Site::loopback(),
        };
        let setup = Setup {
            kind,
            site,
            launcher: &launcher,
            pki: &pki,
            dir: work.join(kind.name()),
            payload: a.tuning.payload,
            base_id: base_id + 2 * i as u32,
        };
        let mut d = topology::start(&setup)?;
        if kind == Kind::Linkerd {
            if let Some(c) = &a.linkerd2_proxy_commit {
                let reported = d.info.insert("linkerd2_proxy_commit".into(), c.clone()).unwrap_or_default();
                d.info.insert("linkerd2_proxy_commit_reported".into(), reported);
            }
        }
        let idle: Vec<String> = d
            .measured
            .iter()
            .map(|m| format!("{} {} {:.1} MB", m.role, m.comm, m.idle.vm_rss_kb as f64 / 1024.0))
            .collect();
        eprintln!("weft bench: {kind} ready ({})", if idle.is_empty() { "no proxy".into() } else { idle.join(", ") });
        deployments.push(d);
    }

    let workload = Workload {
        protocol: a.tuning.protocol,
        payload: a.tuning.payload,
        request_timeout: Duration::from_secs(10),
        load_threads: 1,
    };
    let progress = Progress::new(plan::planned_seconds(settings, kinds));
    let mut records = vec![];
    let mut run_step = |step: &plan::Step, records: &mut Vec<RunRecord>| -> anyhow::Result<bool> {
        let d = deployments.iter_mut().find(|d| d.kind == step.kind).context("deployment")?;
        progress.start(&runner::run_id(step));
        let r = runner::measure(d, step, &workload, &launcher)?;
        progress.finish((step.warmup + step.duration).as_secs_f64(), &line(&r));
        let ok = plan::sustained(&r.load);
        records.push(r);
        // A breath between runs: sockets from the last run close before the next one starts.
        std::thread::sleep(Duration::from_millis(200));
        Ok(ok)
    };
    for step in plan::fixed_steps(settings, kinds) {
        run_step(&step, &mut records)?;
    }
    let mut active = kinds.to_vec();
    for rate in plan::sweep_rates(settings) {
        if active.is_empty() {
            break;
        }
        for step in plan::rate_round(settings, rate, &active) {
            if !run_step(&step, &mut records)? {
                progress.note(&format!("{} saturated at {rate} rps: its sweep stops here", step.kind));
                active.retain(|k| *k != step.kind);
            }
        }
    }
    progress.done();

    let meta = Meta {
        command: std::env::args()
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
            .collect::<Vec<_>>()
            .join(" "),
        placement: a.placement,
        quick: a.quick,
        started,
        finished: report::now_rfc3339(),
        machine: Machine::detect(),
        host_load: host_load.finish(),
        settings: settings.clone(),
        workload,
        topologies: deployments
            .iter()
            .map(|d| TopologyMeta { kind: d.kind, info: d.info.clone(), proxies: d.measured.clone() })
            .collect(),
        weft_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    drop(deployments);
    drop(lab.take());
    let written = report::write(&a.out, &meta, &records)?;
    println!("{}", std::fs::read_to_string(&written.markdown)?);
    eprintln!(
        "weft bench: {} run documents in {}, {}, {}, {}",
        written.runs.len(),
        a.out.join("runs").display(),
        written.summary.display(),
        written.markdown.display(),
        written.chart.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Top {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(extra: &[&str]) -> BenchArgs {
        Top::parse_from(std::iter::once("bench").chain(extra.iter().copied())).bench
    }

    #[test]
    fn baseline_is_always_measured_and_linkerd_needs_pods() {
        assert_eq!(kinds(&args(&["--proxies", "weft"])).unwrap(), [Kind::Baseline, Kind::Weft]);
        assert_eq!(kinds(&args(&[])).unwrap(), [Kind::Baseline, Kind::Floor, Kind::Weft, Kind::Envoy]);
        assert!(kinds(&args(&["--proxies", "linkerd2-proxy"])).is_err());
        let k = kinds(&args(&["--placement", "netns", "--linkerd2-proxy", "/x"])).unwrap();
        assert_eq!(k, Kind::ALL);
        assert!(kinds(&args(&["--proxies", "istio"])).is_err());
    }

    #[test]
    fn flags_override_the_method() {
        let s = settings(&args(&["--quick", "--rate", "500", "--connections", "2,8", "--rate-sweep", "none"])).unwrap();
        assert_eq!((s.rate, s.connections.clone(), s.rate_sweep_connections), (500.0, vec![2, 8], 8));
        assert!(s.rate_sweep.is_empty() && plan::sweep_rates(&s).is_empty());
        let s = settings(&args(&["--protocols", "tcp,grpc"])).unwrap();
        assert_eq!(s.protocols, [crate::load::Protocol::Tcp, crate::load::Protocol::Grpc]);
        let s = settings(&args(&["--protocol", "http2"])).unwrap();
        assert_eq!(s.protocols, [crate::load::Protocol::Grpc, crate::load::Protocol::Tcp], "no second http2 row");
        assert!(settings(&args(&["--protocols", "quic"])).is_err());
        for bad in ["nan", "inf", "0", "-5"] {
            assert!(settings(&args(&[&format!("--rate-sweep={bad}")])).is_err(), "{bad}");
        }
        let s = settings(&args(&["--duration", "3s", "--repetitions", "2", "--connection-sweep", "8,100"])).unwrap();
        assert_eq!((s.duration, s.repetitions, s.connection_sweep.clone()), (Duration::from_secs(3), 2, vec![8, 100]));
        assert!(settings(&args(&["--rate", "0"])).is_err());
    }
}
