//! The open-loop load generator (the wrk2 model): a pacing thread releases request slots at a
//! fixed rate whatever the target does, connections take the slots in order, and each request is
//! timed from its slot (corrected for coordinated omission) as well as from when it was actually
//! written (uncorrected). The run is bounded: slots still unsent shortly after the schedule ends
//! are counted as unsent, and every request has a timeout.

pub mod conn;
pub mod pacer;
pub mod recorder;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use self::conn::{Connection, RequestError, RequestTemplate};
use self::pacer::{Schedule, Tick};
pub use self::recorder::{Latency, LoadSummary, Recorder};

/// How long after the end of the schedule a slot may still be sent; later ones are unsent. Short,
/// so that a saturated target ends the run promptly instead of draining a growing backlog.
const BACKLOG_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http1,
    Http2,
    /// gRPC unary calls over HTTP/2.
    Grpc,
    /// Opaque TCP request/response (one small request, the payload back).
    Tcp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
        }
    }

    /// Whether requests wait for their connection (one at a time) rather than become streams.
    fn one_at_a_time(self) -> bool {
        matches!(self, Self::Http1 | Self::Tcp)
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Http1, Self::Http2, Self::Grpc, Self::Tcp]
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown protocol {s:?} (http1, http2, grpc, tcp)"))
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: SocketAddr,
    pub request: RequestTemplate,
    pub protocol: Protocol,
    pub rate: f64,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub request_timeout: Duration,
    /// Runtime threads for the connections (the pacer has its own thread).
    pub threads: usize,
}

/// Moments the caller may want to act on (sampling a proxy's CPU over exactly the measured window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadEvent {
    MeasureStart,
    MeasureEnd,
}

type Shared = Arc<Mutex<Recorder>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs the load on a runtime of its own; `on_event` is called at the start and the end of the
/// measured window. Errors are counted in the summary, not returned: the caller decides.
pub fn run(spec: &LoadSpec, on_event: impl Fn(LoadEvent) + Send + Sync + 'static) -> anyhow::Result<LoadSummary> {
    if spec.connections == 0 {
        bail!("at least one connection is needed");
    }
    if !(spec.rate > 0.0 && spec.rate.is_finite()) {
        bail!("the rate must be positive");
    }
    let rt = crate::backend::runtime(spec.threads).context("load runtime")?;
    rt.block_on(run_async(spec.clone(), Arc::new(on_event)))
}

async fn run_async(spec: LoadSpec, on_event: Arc<dyn Fn(LoadEvent) + Send + Sync>) -> anyhow::Result<LoadSummary> {
    // Connections first: a target that cannot be reached fails before any load.
    let mut conns = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let c = conn::connect(spec.target, spec.protocol)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {}: {}", spec.target, e.detail()))?;
        conns.push(c);
    }

    let start = Instant::now() + Duration::from_millis(20);
    let start_wall = SystemTime::now() + Duration::from_millis(20);
    let measure_start = start + spec.warmup;
    let measure_end = measure_start + spec.duration;
    let cutoff = measure_end + BACKLOG_GRACE;
    let schedule = Schedule::at_rate(start, spec.rate, spec.warmup + spec.duration);
    let recorder: Shared = Arc::new(Mutex::new(Recorder::new(measure_start, measure_end)));

    let (tx, rx) = mpsc::unbounded_channel::<Tick>();
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = pacer::spawn(schedule, tx, stop.clone());
    {
        let on_event = on_event.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_start.into()).await;
            on_event(LoadEvent::MeasureStart);
        });
    }

    let ctx = Arc::new(Ctx { spec: spec.clone(), recorder: recorder.clone(), cutoff });
    if spec.protocol.one_at_a_time() {
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let workers: Vec<_> =
            conns.into_iter().map(|c| tokio::spawn(serial_worker(c, rx.clone(), ctx.clone()))).collect();
        for w in workers {
            w.await.context("load worker")?;
        }
    } else {
        let senders: Vec<_> = conns
            .into_iter()
            .filter_map(|c| match c {
                Connection::Http2(s) => Some(s),
                Connection::Http1(_) | Connection::Tcp(_) => None,
            })
            .collect();
        http2_dispatch(senders, rx, ctx.clone()).await;
    }
    stop.store(true, Ordering::Relaxed);
    let pacer_stats = pacer.join().map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    on_event(LoadEvent::MeasureEnd);

    let mut s = lock(&recorder).summary();
    s.target_rate = spec.rate;
    s.connections = spec.connections;
    s.protocol = spec.protocol.name().into();
    s.warmup_s = spec.warmup.as_secs_f64();
    s.duration_s = spec.duration.as_secs_f64();
    s.pacer_max_late_us = pacer_stats.max_late.as_micros() as u64;
    s.pacer_late_over_1ms = pacer_stats.late_over_1ms;
    s.start_unix_ms = unix_ms(start_wall + spec.warmup);
    s.end_unix_ms = unix_ms(start_wall + spec.warmup + spec.duration);
    Ok(s)
}

struct Ctx {
    spec: LoadSpec,
    recorder: Shared,
    cutoff: Instant,
}

impl Ctx {
    fn record(&self, tick: Tick, sent: Instant, result: Result<Result<(), RequestError>, tokio::time::error::Elapsed>) {
        let done = Instant::now();
        let mut r = lock(&self.recorder);
        match result {
            Ok(Ok(())) => r.success(tick.intended, sent, done),
            Ok(Err(e)) => r.error(&e.kind(), e.detail()),
            Err(_) => {
                let e = RequestError::Timeout(self.spec.request_timeout);
                r.error(&e.kind(), e.detail());
            }
        }
    }

    /// Whether a slot taken now is too late to send (the run is over).
    fn too_late(&self) -> bool {
        if Instant::now() > self.cutoff {
            lock(&self.recorder).unsent();
            return true;
        }
        false
    }
}

/// One HTTP/1.1 or TCP connection: takes the next slot when it is free (slots queue while every
/// connection is busy — exactly the wait the corrected latency includes).
async fn serial_worker(first: Connection, rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Tick>>>, ctx: Arc<Ctx>) {
    let mut conn = Some(first);
    let mut buf = Vec::new();
    loop {
        let tick = { rx.lock().await.recv().await };
        let Some(tick) = tick else { return };
        if ctx.too_late() {
            continue;
        }
        // A connection the target closed is replaced (the failed request was counted already).
        if conn.as_ref().is_none_or(|c| matches!(c, Connection::Http1(s) if s.is_closed())) {
            match conn::connect(ctx.spec.target, ctx.spec.protocol).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    lock(&ctx.recorder).error(&e.kind(), e.detail());
                    conn = None;
                    continue;
                }
            }
        }
        let sent = Instant::now();
        let timeout = ctx.spec.request_timeout;
        let result = match conn.as_mut() {
            Some(Connection::Http1(s)) => tokio::time::timeout(timeout, conn::send_http1(s, &ctx.spec.request)).await,
            Some(Connection::Tcp(t)) => {
                tokio::time::timeout(timeout, conn::send_tcp(t, &ctx.spec.request, &mut buf)).await
            }
            // Never: serial workers get HTTP/1.1 or TCP connections. Counted, not lost.
            Some(Connection::Http2(_)) | None => {
                lock(&ctx.recorder).unsent();
                continue;
            }
        };
        if !matches!(result, Ok(Ok(()))) {
            // After a failure or a timeout the connection's state is unknown: start afresh.
            conn = None;
        }
        ctx.record(tick, sent, result);
    }
}

/// HTTP/2: every slot becomes a stream right away, round-robin over the connections.
async fn http2_dispatch(
    senders: Vec<hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>>,
    mut rx: mpsc::UnboundedReceiver<Tick>,
    ctx: Arc<Ctx>,
) {
    // Each request task holds a clone of `done_tx`; when all are dropped, every request is done.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut next = 0usize;
    while let Some(tick) = rx.recv().await {
        if ctx.too_late() {
            continue;
        }
        let send = senders[next % senders.len()].clone();
        next += 1;
        let ctx = ctx.clone();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let result = tokio::time::timeout(
                ctx.spec.request_timeout,
                conn::send_http2(send, &ctx.spec.request, ctx.spec.protocol),
            )
            .await;
            ctx.record(tick, sent, result);
            drop(done_tx);
        });
    }
    drop(done_tx);
    let _ = done_rx.recv().await;
}

#[cfg(test)]
mod tests;
