//! `weft-demo`: the playground's demo service. It answers HTTP (and gRPC echo on the same port),
//! calls its downstreams through its local proxy while carrying the deadline and trace headers,
//! reports its name and version, and can be told to fail a share of requests or to add latency —
//! at start with flags, or live with `PUT /control`.
#![forbid(unsafe_code)]

mod behaviour;
mod grpc;
mod http_app;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(name = "weft-demo", version, about = "A demo service for the Weft playground")]
pub struct Args {
    /// This service's name.
    #[arg(long, env = "WEFT_DEMO_NAME", default_value = "demo")]
    pub name: String,
    /// The version label reported in answers.
    #[arg(long, env = "WEFT_DEMO_VERSION", default_value = "v1")]
    pub version: String,
    #[arg(long, env = "WEFT_DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A downstream to call on each request, as http://HOST:PORT[/path] (the local proxy's
    /// upstream listener in explicit mode, or the service's address in transparent mode).
    #[arg(long = "call", env = "WEFT_DEMO_CALLS", value_delimiter = ',')]
    pub calls: Vec<String>,
    /// Share of requests answered 500 (0–100).
    #[arg(long, env = "WEFT_DEMO_FAIL_PERCENT", default_value_t = 0)]
    pub fail_percent: u32,
    /// Also serve `/control` and `/healthz` (only those) here: a port to publish for the
    /// playground's tour while the app itself stays behind its proxy.
    #[arg(long, env = "WEFT_DEMO_CONTROL")]
    pub control: Option<SocketAddr>,
    /// Also serve raw TCP here: echo what clients send (after `--banner`, if given).
    #[arg(long, env = "WEFT_DEMO_TCP")]
    pub tcp: Option<SocketAddr>,
    /// A line the TCP server sends first (a server-speaks-first protocol, like SMTP or MySQL).
    #[arg(long, env = "WEFT_DEMO_BANNER")]
    pub banner: Option<String>,
    /// Added to every answer, e.g. 20ms.
    #[arg(long, env = "WEFT_DEMO_LATENCY", default_value = "0ms")]
    pub latency: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let latency = match weft_proto::duration::parse_duration(&args.latency) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("weft-demo: --latency: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.fail_percent > 100 {
        eprintln!("weft-demo: --fail-percent must be 0 to 100");
        return std::process::ExitCode::from(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let state = Arc::new(behaviour::Shared::new(&args, latency));
    if let Some(addr) = args.tcp {
        let banner = args.banner.clone();
        rt.spawn(async move {
            if let Err(e) = tcp_echo(addr, banner).await {
                eprintln!("weft-demo: TCP on {addr}: {e}");
                std::process::exit(1);
            }
        });
    }
    // As PID 1 in a container nothing handles SIGTERM for us: without this, a stop waits out
    // its grace period and kills the app (exit 137).
    let served = rt.block_on(async {
        tokio::select! {
            r = http_app::serve(args, state) => r,
            () = terminated() => Ok(()),
        }
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-demo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // No signal handling here: only a kill stops us, as before.
        _ => std::future::pending().await,
    }
}

/// A TCP echo server, optionally greeting first.
async fn tcp_echo(addr: SocketAddr, banner: Option<String>) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let banner = banner.clone();
        tokio::spawn(async move {
            if let Some(b) = banner {
                if s.write_all(format!("{b}\r\n").as_bytes()).await.is_err() {
                    return;
                }
            }
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
