//! One size of the benchmark, phase by phase: certificates for every simulated proxy, the connect
//! storm, changes (a policy edit in the mesh file, an endpoint registering, an endpoint leaving),
//! and the controller killed and started again with every proxy reconnecting. Every wait is
//! bounded; a proxy that does not converge in time is counted, not waited for.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_certs::tls::{IdentityStore, TrustBundle};
use weft_certs::SpiffeId;

use super::controller::{ControllerSpec, PhaseCost};
use super::layout::{Layout, HOT};
use super::probe::{CurrentProbe, Expect, Probe};
use super::real_proxy::RealProxy;
use super::sim::{self, Command, Shared};
use super::stats::{round, Latency};
use crate::pki::{BenchPki, TRUST_DOMAIN};

/// Certificate requests in flight at once (the controller admits 64 connections without a
/// client certificate).
const CERTIFY_CONCURRENCY: usize = 16;
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
const HOT_TIMEOUT_MS: u64 = 1000;

/// How one size is run.
#[derive(Debug, Clone)]
pub struct SizeSpec {
    pub proxies: usize,
    pub services: usize,
    /// Each kind of change is made this many times.
    pub repetitions: usize,
    /// After the last proxy that had to see a change saw it: how long to keep listening for
    /// pushes to proxies that should get nothing.
    pub quiet: Duration,
    pub restart_holddown: Duration,
    /// The simulated proxies register as transparent ones (they then hold the address directory).
    pub transparent: bool,
}

impl SizeSpec {
    fn storm_timeout(&self) -> Duration {
        Duration::from_secs(30) + Duration::from_millis(30) * self.proxies as u32
    }
}

/// The connect storm (or the reconnect storm after a restart).
#[derive(Debug, Clone, Serialize)]
pub struct StormResult {
    /// From the storm's start until each proxy held a complete config.
    pub complete_ms: Latency,
    /// Until the last one did (0 if some never did).
    pub settled_ms: f64,
    pub bytes_pushed: u64,
    pub responses: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeResult {
    pub kind: &'static str,
    pub changes: usize,
    /// Proxies that must see each change.
    pub must_see: usize,
    /// Pooled over the changes: per proxy, from the change to holding content that matches it.
    pub convergence_ms: Latency,
    /// Protobuf bytes of the responses all proxies received per change (mean).
    pub bytes_pushed_per_change: u64,
    pub responses_per_change: u64,
    /// Proxies that need not see a change but received something (summed over the changes).
    pub unexpected_recipients: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestartResult {
    /// From the kill until the new controller answered `/ready`.
    pub controller_startup_ms: f64,
    /// From the kill until each proxy held a complete config on a new stream.
    pub reconnect: StormResult,
    /// Responses after which a proxy held fewer endpoints than it had (must be 0).
    pub lost_endpoints: u64,
    pub holddown_ms: u64,
    /// What the end of the hold-down pushed (the authoritative sets after the merges).
    pub holddown_end_bytes_pushed: u64,
    pub holddown_end_responses: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phases {
    pub certify: PhaseCost,
    pub initial_sync: PhaseCost,
    pub churn: PhaseCost,
    /// The restarted controller from its start through the end of its hold-down.
    pub restart: PhaseCost,
}

#[derive(Debug, Clone, Serialize)]
pub struct BytesPushed {
    pub initial_sync: u64,
    pub policy_edit: u64,
    pub endpoint_join: u64,
    pub endpoint_leave: u64,
    pub restart_storm: u64,
    pub holddown_end: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    pub proxies: usize,
    pub services: usize,
    /// `explicit`: proxies subscribe to the services they call; `transparent`: they also hold the
    /// address directory.
    pub mode: &'static str,
    pub subscriptions_per_proxy: f64,
    pub hot_service_subscribers: usize,
    pub certify_seconds: f64,
    pub initial_sync: StormResult,
    pub changes: Vec<ChangeResult>,
    /// Every change pooled (policy edits, endpoints registering and leaving).
    pub convergence_ms: Latency,
    pub restart: RestartResult,
    /// One real `weft-proxy` calling three services (one of them the hot one): its VmRSS once
    /// ready and settled, and after the churn. It must not grow with the mesh.
    pub real_proxy_rss_bytes: RealProxyRss,
    /// The larger VmHWM of the two controller processes.
    pub controller_peak_rss_bytes: u64,
    /// Both controller processes, their whole lives.
    pub controller_cpu_seconds: f64,
    pub controller_phases: Phases,
    pub bytes_pushed: BytesPushed,
    pub nacks: u64,
    /// Every proxy converged in every phase, nobody lost an endpoint, nobody got what it did not need.
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RealProxyRss {
    pub ready: u64,
    pub after_churn: u64,
}

/// Waits until every proxy that must see the probe's change has, or `timeout`; then listens
/// `quiet` longer.
async fn settle(probe: &Probe, timeout: Duration, quiet: Duration) {
    let deadline = Instant::now() + timeout;
    while probe.remaining() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(quiet).await;
}

fn storm_result(probe: &Probe) -> StormResult {
    let (lat, expected) = probe.latencies();
    let complete_ms = Latency::of(&lat, expected);
    let (bytes, responses) = probe.traffic(None);
    StormResult {
        settled_ms: if complete_ms.complete() { complete_ms.max } else { 0.0 },
        complete_ms,
        bytes_pushed: bytes,
        responses,
    }
}

/// Writes the mesh file as an editor that saves by renaming does: a reader never sees half of it.
fn write_mesh(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Every proxy's certificate, through the controller's identity service.
async fn certify_all(shared: &Arc<Shared>, tokens: &[String]) -> anyhow::Result<Vec<Arc<IdentityStore>>> {
    let count = shared.layout.proxies + 1;
    let results: Vec<(usize, anyhow::Result<Arc<IdentityStore>>)> = futures_util::stream::iter(0..count)
        .map(|i| {
            let shared = shared.clone();
            let token = tokens[shared.layout.service_of(i)].clone();
            async move {
                let mut last = None;
                for attempt in 0..5u32 {
                    match sim::certify(&shared, i, &token).await {
                        Ok(id) => return (i, Ok(id)),
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(200) * (attempt + 1)).await;
                }
                (i, Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt"))))
            }
        })
        .buffer_unordered(CERTIFY_CONCURRENCY)
        .collect()
        .await;
    let mut out: Vec<Option<Arc<IdentityStore>>> = vec![None; count];
    for (i, r) in results {
        out[i] = Some(r.with_context(|| format!("certificate of simulated proxy {i}"))?);
    }
    Ok(out.into_iter().map(|o| o.expect("every index answered")).collect())
}

/// A proxy's task and the handle that tells it to leave.
struct Running {
    task: JoinHandle<()>,
    command: watch::Sender<Command>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn spawn(i: usize, shared: &Arc<Shared>, identity: &Arc<IdentityStore>) -> Running {
    let (command, rx) = watch::channel(Command::Run);
    Running { task: tokio::spawn(sim::run(i, shared.clone(), identity.clone(), rx)), command }
}

/// Runs one size with its own CA, mesh file and controller under `dir`.
pub async fn run(spec: &SizeSpec, dir: &Path, controller_bin: &Path, proxy_bin: &Path) -> anyhow::Result<SizeResult> {
    let layout = Layout::new(spec.proxies, spec.services)?;
    std::fs::create_dir_all(dir)?;
    let pki = BenchPki::create(dir)?;
    let tokens: Vec<String> = (0..layout.services)
        .map(|s| {
            let id = SpiffeId::new(TRUST_DOMAIN, "default", &Layout::service_name(s))?;
            Ok(pki.ca.join_token(&id, Duration::from_secs(24 * 3600), None)?.0)
        })
        .collect::<anyhow::Result<_>>()?;
    let mesh = dir.join("mesh.yaml");
    write_mesh(&mesh, &layout.mesh_yaml(TRUST_DOMAIN, HOT_TIMEOUT_MS))?;
    let ctl_spec = ControllerSpec {
        binary: controller_bin.to_path_buf(),
        mesh: mesh.clone(),
        ca_dir: pki.ca_dir.clone(),
        grpc: format!("127.0.0.1:{}", crate::procs::free_port()?).parse()?,
        admin: format!("127.0.0.1:{}", crate::procs::free_port()?).parse()?,
        restart_holddown: spec.restart_holddown,
        log_dir: dir.to_path_buf(),
    };
    let ctl = ctl_spec.start("controller").await?;
    let shared = Arc::new(Shared {
        layout: layout.clone(),
        controller: ctl_spec.grpc,
        trust_domain: TRUST_DOMAIN.to_string(),
        bundle: TrustBundle::new(vec![pki.ca.cert_der().clone()]).map_err(anyhow::Error::msg)?,
        probe: CurrentProbe::default(),
        lost_endpoints: Default::default(),
        connected: Default::default(),
        nacks: Default::default(),
        transparent: spec.transparent,
    });
    let n = layout.proxies;
    let extra = layout.extra();

    // Certificates, through the real identity service.
    let mark = ctl.sampler.mark();
    let started = Instant::now();
    let identities = certify_all(&shared, &tokens).await?;
    let certify_seconds = started.elapsed().as_secs_f64();
    let certify_cost = ctl.sampler.cost_since(&mark);
    eprintln!("  {n} proxies: certificates in {certify_seconds:.1} s; connecting all at once");

    // The connect storm: every proxy at once.
    let mut must = vec![true; n + 1];
    must[extra] = false;
    let probe = Probe::new(Expect::Complete, must);
    shared.probe.set(Some(probe.clone()));
    let mark = ctl.sampler.mark();
    let running: Vec<Running> = (0..n).map(|i| spawn(i, &shared, &identities[i])).collect();
    settle(&probe, spec.storm_timeout(), spec.quiet).await;
    let initial_sync = storm_result(&probe);
    let initial_cost = ctl.sampler.cost_since(&mark);
    eprintln!(
        "  initial sync: {}/{} complete, last at {:.0} ms",
        initial_sync.complete_ms.count, n, initial_sync.complete_ms.max
    );

    // One real proxy joins the synced mesh.
    let upstreams = [HOT, HOT + 1, HOT + 2].map(Layout::service_key);
    let real = RealProxy::start(proxy_bin, &pki, ctl_spec.grpc, &upstreams, dir).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let real_ready_rss = real.rss_bytes();
    eprintln!("  one real weft-proxy: ready, VmRSS {:.1} MB", real_ready_rss as f64 / 1e6);

    // Churn.
    let mark = ctl.sampler.mark();
    let hot = Layout::service_key(HOT);
    let subscribers: Vec<usize> = layout.subscribers_of(HOT).collect();
    let mask = |who: &[usize]| {
        let mut m = vec![false; n + 1];
        for i in who {
            m[*i] = true;
        }
        m
    };
    let mut policy_must: Vec<usize> = subscribers.clone();
    policy_must.extend(layout.instances_of(HOT));
    let extra_addr = Layout::inbound(extra).to_string();
    let mut samples: [Samples; 3] = Default::default();
    for rep in 0..spec.repetitions {
        // A policy edit, timed from the mesh file's write.
        let ms = HOT_TIMEOUT_MS + 1 + rep as u64;
        let probe = Probe::new(Expect::Timeout { service: hot.clone(), ms }, mask(&policy_must));
        shared.probe.set(Some(probe.clone()));
        write_mesh(&mesh, &layout.mesh_yaml(TRUST_DOMAIN, ms))?;
        settle(&probe, CHANGE_TIMEOUT, spec.quiet).await;
        record(&mut samples[0], &probe, None);

        // An endpoint registers: timed from the new proxy's connect.
        let probe = Probe::new(
            Expect::EndpointPresent { service: hot.clone(), address: extra_addr.clone() },
            mask(&subscribers),
        );
        shared.probe.set(Some(probe.clone()));
        let joined = spawn(extra, &shared, &identities[extra]);
        settle(&probe, CHANGE_TIMEOUT, spec.quiet).await;
        record(&mut samples[1], &probe, Some(extra));

        // It leaves: timed from its draining notice.
        let probe = Probe::new(
            Expect::EndpointAbsent { service: hot.clone(), address: extra_addr.clone() },
            mask(&subscribers),
        );
        shared.probe.set(Some(probe.clone()));
        joined.command.send_replace(Command::Leave);
        settle(&probe, CHANGE_TIMEOUT, spec.quiet).await;
        record(&mut samples[2], &probe, Some(extra));
        drop(joined);
    }
    shared.probe.set(None);
    let churn_cost = ctl.sampler.cost_since(&mark);
    let real_proxy_rss_bytes = RealProxyRss { ready: real_ready_rss, after_churn: real.rss_bytes() };
    let kinds = ["policy_edit", "endpoint_join", "endpoint_leave"];
    let musts = [policy_must.len(), subscribers.len(), subscribers.len()];
    let changes: Vec<ChangeResult> = samples
        .iter()
        .zip(kinds)
        .zip(musts)
        .map(|((s, kind), must_see)| ChangeResult {
            kind,
            changes: spec.repetitions,
            must_see,
            convergence_ms: Latency::of(&s.latencies, s.expected),
            bytes_pushed_per_change: s.bytes / spec.repetitions.max(1) as u64,
            responses_per_change: s.responses / spec.repetitions.max(1) as u64,
            unexpected_recipients: s.unexpected,
        })
        .collect();
    let pooled: Vec<Duration> = samples.iter().flat_map(|s| s.latencies.iter().copied()).collect();
    let convergence_ms = Latency::of(&pooled, samples.iter().map(|s| s.expected).sum());
    eprintln!(
        "  changes: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} proxy-changes",
        convergence_ms.p50, convergence_ms.p99, convergence_ms.max, convergence_ms.count
    );

    // The controller killed and started again: every proxy reconnects at once.
    let first_hwm = ctl.sampler.hwm_bytes();
    let first_cpu = ctl.sampler.total_cpu_seconds();
    let lost_before = shared.lost_endpoints.load(Ordering::Relaxed);
    let mut must = vec![true; n + 1];
    must[extra] = false;
    let probe = Probe::new(Expect::Complete, must);
    shared.probe.set(Some(probe.clone()));
    let killed = Instant::now();
    drop(ctl);
    let ctl = ctl_spec.start("controller-restarted").await?;
    let startup = killed.elapsed();
    debug_assert!(ctl.startup <= startup);
    let born = ctl.born();
    settle(&probe, spec.storm_timeout(), Duration::ZERO).await;
    let reconnect = storm_result(&probe);
    // Then the end of the hold-down: the authoritative sets replace the merges.
    let after = Probe::new(Expect::Complete, vec![false; n + 1]);
    shared.probe.set(Some(after.clone()));
    let holddown_end = born.at() + spec.restart_holddown;
    tokio::time::sleep_until(holddown_end.into()).await;
    tokio::time::sleep(spec.quiet.max(Duration::from_secs(1))).await;
    shared.probe.set(None);
    let restart_cost = ctl.sampler.cost_since(&born);
    let (holddown_bytes, holddown_responses) = after.traffic(None);
    let lost_endpoints = shared.lost_endpoints.load(Ordering::Relaxed) - lost_before;
    eprintln!(
        "  restart: {}/{} reconnected and complete, last at {:.0} ms after the kill; {lost_endpoints} lost endpoints",
        reconnect.complete_ms.count, n, reconnect.complete_ms.max
    );
    let controller_peak_rss_bytes = first_hwm.max(ctl.sampler.hwm_bytes());
    let controller_cpu_seconds = round(first_cpu + ctl.sampler.total_cpu_seconds());
    drop(running);
    drop(real);
    drop(ctl);

    let restart = RestartResult {
        controller_startup_ms: round(startup.as_secs_f64() * 1000.0),
        reconnect,
        lost_endpoints,
        holddown_ms: spec.restart_holddown.as_millis() as u64,
        holddown_end_bytes_pushed: holddown_bytes,
        holddown_end_responses: holddown_responses,
    };
    let nacks = shared.nacks.load(Ordering::Relaxed);
    let complete = initial_sync.complete_ms.complete()
        // In transparent mode every proxy must receive the directory: not a leak of the change.
        && changes.iter().all(|c| c.convergence_ms.complete() && (spec.transparent || c.unexpected_recipients == 0))
        && restart.reconnect.complete_ms.complete()
        && lost_endpoints == 0
        && nacks == 0;
    let per_change = |k: &str| changes.iter().find(|c| c.kind == k).map(|c| c.bytes_pushed_per_change).unwrap_or(0);
    Ok(SizeResult {
        proxies: n,
        services: layout.services,
        mode: if spec.transparent { "transparent" } else { "explicit" },
        subscriptions_per_proxy: (0..n).map(|i| layout.subscriptions(i).len()).sum::<usize>() as f64 / n as f64,
        hot_service_subscribers: subscribers.len(),
        certify_seconds: round(certify_seconds),
        bytes_pushed: BytesPushed {
            initial_sync: initial_sync.bytes_pushed,
            policy_edit: per_change("policy_edit"),
            endpoint_join: per_change("endpoint_join"),
            endpoint_leave: per_change("endpoint_leave"),
            restart_storm: restart.reconnect.bytes_pushed,
            holddown_end: restart.holddown_end_bytes_pushed,
        },
        initial_sync,
        changes,
        convergence_ms,
        restart,
        real_proxy_rss_bytes,
        controller_peak_rss_bytes,
        controller_cpu_seconds,
        controller_phases: Phases {
            certify: certify_cost,
            initial_sync: initial_cost,
            churn: churn_cost,
            restart: restart_cost,
        },
        nacks,
        complete,
    })
}

/// One kind of change's figures, over its repetitions.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    expected: usize,
    unexpected: usize,
    bytes: u64,
    responses: u64,
}

/// Adds one change's figures; `except` made the change.
fn record(acc: &mut Samples, probe: &Probe, except: Option<usize>) {
    let (lat, expected) = probe.latencies();
    let (bytes, responses) = probe.traffic(except);
    acc.latencies.extend(lat);
    acc.expected += expected;
    acc.unexpected += probe.unexpected_recipients(except);
    acc.bytes += bytes;
    acc.responses += responses;
}
