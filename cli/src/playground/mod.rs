//! `weft playground`: the demo mesh as local processes on loopback, no Docker needed. It starts
//! the controller, the demo services web → foo → bar (v1 and v2) with their sidecars, and a steady
//! load in front of web; prints where to look; keeps a one-screen summary; and on Ctrl-C (or after
//! `--duration`) stops everything it started.

mod load;
mod processes;
mod summary;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use processes::Topology;

#[derive(Args, Debug, Clone)]
pub struct PlaygroundArgs {
    /// Stop after this long (e.g. 15 or 15s, 10m; a bare number is seconds); default: until Ctrl-C.
    #[arg(long)]
    pub duration: Option<String>,
    /// Requests per second the load generator sends to web.
    #[arg(long, default_value_t = 20)]
    pub rps: u32,
    /// The first of the ports the playground uses (controller, then 10 per workload).
    #[arg(long, default_value_t = 16000)]
    pub base_port: u16,
    /// Where to keep the CA, the mesh file and the logs (default: a new temporary folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one summary line per second instead of redrawing the screen.
    #[arg(long)]
    pub plain: bool,
}

/// How long to run: a duration with its unit, or a bare number of seconds (as `timeout 15`).
fn run_time(s: &str) -> anyhow::Result<Duration> {
    match s.trim().parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => weft_proto::duration::parse_duration(s).map_err(anyhow::Error::msg),
    }
}

pub fn run(args: PlaygroundArgs) -> anyhow::Result<()> {
    let duration = args.duration.as_deref().map(run_time).transpose().context("--duration")?;
    anyhow::ensure!((1..=2000).contains(&args.rps), "--rps must be 1 to 2000");
    anyhow::ensure!(args.base_port >= 1024 && args.base_port <= 65000, "--base-port must be 1024 to 65000");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(playground(args, duration))
}

async fn playground(args: PlaygroundArgs, duration: Option<Duration>) -> anyhow::Result<()> {
    let mut topo = Topology::start(&args).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = load::Load::start(format!("http://{}/", topo.web_app_addr()), args.rps, stop.clone());
    let interactive = !args.plain && std::io::IsTerminal::is_terminal(&std::io::stdout());
    println!("{}", topo.guide());
    let started = Instant::now();
    let mut sampler = summary::Sampler::new(topo.proxies());
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown_signal() => {
                eprintln!("\nstopping the playground…");
                break;
            }
        }
        let view = sampler.sample(&load.snapshot()).await;
        if interactive {
            print!("\x1b[2J\x1b[H{}\n{}", topo.guide_short(), view.render(started.elapsed()));
        } else {
            println!("{}", view.line(started.elapsed()));
        }
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if let Some(dead) = topo.unexpected_exit() {
            eprintln!("note: {dead} exited (see its log in {})", topo.dir().display());
        }
    }
    stop.store(true, Ordering::SeqCst);
    load.finish().await;
    let totals = sampler.totals(&load.snapshot()).await;
    topo.stop().await;
    println!("{}", totals.render_final());
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Where to send GET requests, e.g. http://web:8080/.
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value_t = 10)]
    pub rps: u32,
    /// Stop after this long (a bare number is seconds); default: until stopped.
    #[arg(long)]
    pub duration: Option<String>,
}

/// `weft load`: the playground's load generator on its own (the compose playground runs it).
pub fn load_command(args: LoadArgs) -> anyhow::Result<()> {
    let duration = args.duration.as_deref().map(run_time).transpose().context("--duration")?;
    anyhow::ensure!((1..=2000).contains(&args.rps), "--rps must be 1 to 2000");
    anyhow::ensure!(args.url.starts_with("http://"), "--url must be an http:// URL");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = load::Load::start(args.url.clone(), args.rps, stop.clone());
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown_signal() => break,
            }
            let s = load.snapshot();
            let mut lat: Vec<Duration> = s.window.iter().map(|(d, _)| *d).collect();
            lat.sort();
            let q = |q: f64| {
                lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
                    .map(|d| format!("{:.1}ms", d.as_secs_f64() * 1000.0))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "t={}s sent={} ok={} failed={} p50={} p99={}",
                started.elapsed().as_secs(),
                s.sent,
                s.ok,
                s.failed,
                q(0.5),
                q(0.99)
            );
            if duration.is_some_and(|d| started.elapsed() >= d) {
                break;
            }
        }
        stop.store(true, Ordering::SeqCst);
        load.finish().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_takes_bare_seconds_or_a_unit() {
        assert_eq!(run_time("15").unwrap(), Duration::from_secs(15));
        assert_eq!(run_time("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(run_time("2m").unwrap(), Duration::from_secs(120));
        assert!(run_time("15x").is_err());
        assert!(run_time("-1").is_err());
    }
}
