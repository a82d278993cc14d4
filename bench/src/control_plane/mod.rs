//! `weft bench control-plane`: how the controller grows with the mesh. One process simulates N
//! proxies — each with its own certificate, its own 127.x source address and a real discovery
//! stream over TLS — against a real `weft-controller` with a generated mesh file of M = N/2
//! services, and measures the initial sync, change convergence, isolation, the controller's CPU
//! and memory, bytes pushed, and the reconnect storm after a restart.

pub mod controller;
pub mod layout;
pub mod limits;
pub mod probe;
pub mod real_proxy;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod stats;
pub mod view;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use self::scenario::SizeSpec;

#[derive(Args, Debug, Clone)]
pub struct ControlPlaneArgs {
    /// CI's smoke run: 60 proxies and 30 services, each change twice, a 2 s hold-down.
    #[arg(long)]
    pub quick: bool,
    /// Where control-plane.json and control-plane.md go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Simulated proxy counts, comma-separated (services: half as many). Default 100,500,2000.
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// How many times each change (policy edit, endpoint join, endpoint leave) is made per size.
    #[arg(long)]
    pub repetitions: Option<usize>,
    /// The controller's --restart-holddown (default: its own default, 20s; --quick: 2s).
    #[arg(long)]
    pub restart_holddown: Option<String>,
    /// The weft-controller binary (default: beside this executable, else on PATH).
    #[arg(long)]
    pub controller: Option<PathBuf>,
    /// The weft-proxy binary of the one real proxy in the mesh (default: beside this executable,
    /// else on PATH).
    #[arg(long)]
    pub proxy: Option<PathBuf>,
    /// Simulated proxies register as transparent (pod) proxies: each also holds the address
    /// directory (64 shards; a registration changes the shard of its IP, which every transparent
    /// proxy then receives). Shows that cost.
    #[arg(long)]
    pub transparent: bool,
    /// Keep the working directory (CA, mesh files, controller logs).
    #[arg(long)]
    pub keep_work_dir: bool,
}

/// The settings a run uses, from the flags.
struct Plan {
    sizes: Vec<usize>,
    repetitions: usize,
    holddown: Duration,
    quiet: Duration,
}

fn plan(a: &ControlPlaneArgs) -> anyhow::Result<Plan> {
    let sizes = a.sizes.clone().unwrap_or_else(|| if a.quick { vec![60] } else { vec![100, 500, 2000] });
    if sizes.is_empty() {
        anyhow::bail!("--sizes: give at least one proxy count");
    }
    for n in &sizes {
        if *n < 6 || *n > layout::MAX_PROXIES || n / 2 > layout::MAX_SERVICES {
            anyhow::bail!(
                "--sizes {n}: between 6 and {} proxies (the mesh file holds at most {} services)",
                2 * layout::MAX_SERVICES,
                layout::MAX_SERVICES
            );
        }
    }
    let repetitions = a.repetitions.unwrap_or(if a.quick { 2 } else { 5 });
    if !(1..=100).contains(&repetitions) {
        anyhow::bail!("--repetitions {repetitions}: between 1 and 100");
    }
    let holddown = match &a.restart_holddown {
        Some(s) => crate::cli::parse_duration(s).context("--restart-holddown")?,
        None if a.quick => Duration::from_secs(2),
        None => Duration::from_secs(20),
    };
    if holddown > Duration::from_secs(120) {
        anyhow::bail!("--restart-holddown: at most 120s");
    }
    Ok(Plan {
        sizes,
        repetitions,
        holddown,
        quiet: if a.quick { Duration::from_millis(500) } else { Duration::from_secs(1) },
    })
}

pub fn main(a: ControlPlaneArgs) -> anyhow::Result<()> {
    let plan = plan(&a)?;
    let largest = plan.sizes.iter().copied().max().unwrap_or(0);
    let nofile = limits::raise_nofile(largest + 1)?;
    let controller_bin = match &a.controller {
        Some(p) => p.clone(),
        None => crate::procs::find_binary("weft-controller")?,
    };
    let proxy_bin = match &a.proxy {
        Some(p) => p.clone(),
        None => crate::procs::find_binary("weft-proxy")?,
    };
    crate::procs::install_interrupt_cleanup();
    weft_certs::tls::install_provider();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let work = std::env::temp_dir().join(format!("weft-bench-control-plane-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let started = crate::report::now_rfc3339();
    let host = crate::report::HostLoadMeter::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut sizes = Vec::new();
    for n in &plan.sizes {
        let spec = SizeSpec {
            proxies: *n,
            services: n / 2,
            repetitions: plan.repetitions,
            quiet: plan.quiet,
            restart_holddown: plan.holddown,
            transparent: a.transparent,
        };
        eprintln!("weft bench control-plane: {} proxies, {} services", spec.proxies, spec.services);
        let dir = work.join(format!("n{n}"));
        let result = rt.block_on(scenario::run(&spec, &dir, &controller_bin, &proxy_bin));
        let result = result.with_context(|| format!("the run with {n} proxies (logs in {})", dir.display()))?;
        sizes.push(result);
    }
    drop(rt);
    let meta = report::Meta {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        quick: a.quick,
        started,
        finished: crate::report::now_rfc3339(),
        machine: crate::report::Machine::detect(),
        host_load: host.finish(),
        weft_version: env!("CARGO_PKG_VERSION").to_string(),
        controller_binary: controller_bin.display().to_string(),
        repetitions: plan.repetitions,
        restart_holddown_ms: plan.holddown.as_millis() as u64,
        nofile_limit: nofile,
        notes: vec![
            if a.transparent {
                "Transparent mode: each proxy subscribes to the 2-3 services it calls and also holds the address \
                 directory (64 shards): a registration changes its IP's shard, which every transparent proxy receives."
            } else {
                "Explicit mode: each proxy subscribes to the 2-3 services it calls; transparent mode's address \
                 directory (a changed shard goes to every transparent proxy) is not exercised (--transparent does)."
            }
            .into(),
            "Changes: the hot service's timeout edited in the mesh file (timed from the file's rename; the \
             controller polls the file every 500 ms and waits 150 ms for it to settle), an instance of it \
             registering (from its connect) and leaving (from its draining notice). Half the proxies call the \
             hot service; the others must receive nothing."
                .into(),
            "One real weft-proxy (explicit mode, one worker) joins after the initial sync and calls three \
             services, the hot one among them; its VmRSS is read 2 s after it is ready and again after the churn."
                .into(),
            "Restart: the controller is killed and started again; timed from the kill. Bytes are protobuf \
             payloads as received."
                .into(),
        ],
    };
    let doc = report::Document { meta, sizes };
    let json = a.out.join("control-plane.json");
    std::fs::write(&json, serde_json::to_string_pretty(&doc)?)?;
    let md = report::markdown(&doc);
    std::fs::write(a.out.join("control-plane.md"), &md)?;
    println!("{md}");
    eprintln!("weft bench control-plane: reports in {}", a.out.display());
    if a.keep_work_dir {
        eprintln!("work directory kept: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    let incomplete: Vec<String> =
        doc.sizes.iter().filter(|s| !s.complete).map(|s| format!("{} proxies", s.proxies)).collect();
    if !incomplete.is_empty() {
        anyhow::bail!(
            "not every proxy converged, or one lost endpoints or received what it did not need, at: {} \
             (see {})",
            incomplete.join(", "),
            json.display()
        );
    }
    Ok(())
}
