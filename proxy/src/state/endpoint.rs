//! Endpoints and request-level load balancing: power of two choices over peak-EWMA latency
//! (Linkerd's balancer). Each endpoint's cost is its latency estimate × (requests in flight + 1);
//! the estimate jumps to any slower sample at once and decays towards faster ones, and decays
//! while unused so that a recovered endpoint is tried again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::{Duration, Instant};
use weft_certs::SpiffeId;

use crate::resilience::outlier::OutlierState;
use crate::state::policy::Protocol;

/// How fast old latency samples fade. Linkerd uses 10 s; a shorter memory lets an endpoint that
/// had one slow moment (a cold connection, a GC pause) back in within a second or two, so that
/// equally fast endpoints keep sharing traffic even when requests come one at a time.
const DECAY: Duration = Duration::from_secs(1);
/// Added to every estimate so that in-flight requests weigh even on a fresh endpoint.
const FLOOR_NS: f64 = 1_000.0;

#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The peer proxy's identity; None for a static endpoint outside the mesh (plaintext).
    pub identity: Option<SpiffeId>,
    pub version: String,
    pub instance: String,
    pub app_ports: Vec<u16>,
    /// Further IPs of the same workload (a dual-stack pod's other family), each with its own
    /// pooled connection: a transparent caller dials the IP its app asked for, so the peer reaches
    /// its app on that address family too.
    pub other_ips: Vec<std::net::IpAddr>,
    other_h2: Vec<crate::net::pool::ConnSlot>,
    pub protocol: Protocol,
    pub load: Load,
    pub outlier: OutlierState,
    /// The pooled HTTP/2 connection to this peer.
    pub h2: crate::net::pool::ConnSlot,
}

impl Endpoint {
    pub fn new(
        addr: SocketAddr,
        identity: Option<SpiffeId>,
        version: String,
        instance: String,
        app_ports: Vec<u16>,
        protocol: Protocol,
    ) -> Self {
        Self {
            addr,
            identity,
            version,
            instance,
            app_ports,
            other_ips: Vec::new(),
            other_h2: Vec::new(),
            protocol,
            load: Load::default(),
            outlier: OutlierState::default(),
            h2: Default::default(),
        }
    }

    /// Sets the further IPs (and their connection slots).
    pub fn with_other_ips(mut self, ips: Vec<std::net::IpAddr>) -> Self {
        self.other_h2 = ips.iter().map(|_| Default::default()).collect();
        self.other_ips = ips;
        self
    }

    /// The address to dial (and its pooled HTTP/2 connection) for a caller whose app asked for
    /// `ip`: that IP when it is one of this workload's, else its announced address.
    pub fn dial(&self, ip: Option<std::net::IpAddr>) -> (SocketAddr, &crate::net::pool::ConnSlot) {
        match ip.and_then(|ip| self.other_ips.iter().position(|o| *o == ip)) {
            Some(i) => (SocketAddr::new(self.other_ips[i], self.addr.port()), &self.other_h2[i]),
            None => (self.addr, &self.h2),
        }
    }

    /// The same endpoint (so its load and outlier state carry over a config update).
    pub fn same_as(&self, other: &Endpoint) -> bool {
        self.addr == other.addr && self.identity == other.identity && self.instance == other.instance
    }
}

#[derive(Debug, Default)]
pub struct Load {
    pending: AtomicU32,
    /// (estimate in ns, when it was last updated).
    ewma: Mutex<Option<(f64, Instant)>>,
}

/// Counts one request in flight; report its latency with `finish`.
pub struct InFlight<'a> {
    load: &'a Load,
    started: Instant,
}

impl InFlight<'_> {
    /// Records the request's latency, minus `setup` (time spent opening a connection, which says
    /// nothing about how fast the endpoint answers).
    pub fn finish(self, setup: Duration) {
        let rtt = self.started.elapsed().saturating_sub(setup);
        self.load.observe(rtt, Instant::now());
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.load.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Load {
    pub fn start(&self) -> InFlight<'_> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        InFlight { load: self, started: Instant::now() }
    }

    fn decayed(est: f64, since: Instant, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(since).as_secs_f64();
        est * (-elapsed / DECAY.as_secs_f64()).exp()
    }

    pub fn observe(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos() as f64;
        let mut e = self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        let next = match *e {
            None => sample,
            Some((est, at)) => {
                let est = Self::decayed(est, at, now);
                if sample > est {
                    sample
                } else {
                    // Each sample moves the estimate at least 30 % of the way: a few fast answers
                    // outweigh one stale slow one.
                    let w = (-(now.saturating_duration_since(at).as_secs_f64()) / DECAY.as_secs_f64()).exp().min(0.7);
                    est * w + sample * (1.0 - w)
                }
            }
        };
        *e = Some((next, now));
    }

    /// The latency estimate in nanoseconds, decayed to `now` (0 before any sample).
    pub fn estimate_ns(&self, now: Instant) -> f64 {
        match *self.ewma.lock().unwrap_or_else(|e| e.into_inner()) {
            None => 0.0,
            Some((est, at)) => Self::decayed(est, at, now),
        }
    }

    pub fn cost(&self, now: Instant) -> f64 {
        (self.estimate_ns(now) + FLOOR_NS) * f64::from(self.pending.load(Ordering::Acquire) + 1)
    }

    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Acquire)
    }

    /// The current latency estimate (decayed to `now`), for `/config`.
    pub fn estimate(&self, now: Instant) -> Duration {
        Duration::from_nanos(self.estimate_ns(now) as u64)
    }
}

/// Latency estimates within 25 % or within 1 ms of each other count as equal: such endpoints are
/// compared by requests in flight alone, ties broken at random, so equally fast endpoints share
/// traffic even when requests come one at a time (sub-millisecond differences are scheduling
/// noise), while a clearly slower one still loses every comparison.
const TIE_RATIO: f64 = 0.75;
const TIE_NS: f64 = 1_000_000.0;

/// A small share of picks ignores cost, so that an endpoint whose estimate is stale (one slow
/// sample, then no traffic to correct it) gets fresh samples: exploration keeps equally fast
/// endpoints sharing traffic, and costs a clearly slower one only this share.
const EXPLORE: f64 = 0.05;

/// Power of two choices: two distinct random candidates, the cheaper one wins.
pub fn p2c<'a>(candidates: &[&'a Arc<Endpoint>], now: Instant) -> Option<&'a Arc<Endpoint>> {
    p2c_by(candidates.len(), |i| candidates[i], now)
}

/// The same over a slice of endpoints (no list of references to build).
pub fn p2c_slice(endpoints: &[Arc<Endpoint>], now: Instant) -> Option<&Arc<Endpoint>> {
    p2c_by(endpoints.len(), |i| &endpoints[i], now)
}

fn p2c_by<'a>(n: usize, get: impl Fn(usize) -> &'a Arc<Endpoint>, now: Instant) -> Option<&'a Arc<Endpoint>> {
    match n {
        0 => None,
        1 => Some(get(0)),
        n => {
            let a = rand::random_range(0..n);
            let mut b = rand::random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (ea, eb) = (get(a), get(b));
            if rand::random::<f64>() < EXPLORE {
                return Some(ea);
            }
            let (la, lb) = (ea.load.estimate_ns(now), eb.load.estimate_ns(now));
            let close = la.min(lb) >= TIE_RATIO * la.max(lb) || (la - lb).abs() < TIE_NS;
            if close {
                // Equally fast: the one with fewer requests in flight; `a` is already a random
                // pick, so on a full tie it wins.
                return Some(if ea.load.pending() <= eb.load.pending() { ea } else { eb });
            }
            Some(if ea.load.cost(now) <= eb.load.cost(now) { ea } else { eb })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> Arc<Endpoint> {
        Arc::new(Endpoint::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            None,
            String::new(),
            port.to_string(),
            vec![],
            Protocol::Detect,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn prefers_the_faster_endpoint() {
        let (fast, slow) = (ep(1), ep(2));
        let now = Instant::now();
        fast.load.observe(Duration::from_millis(1), now);
        slow.load.observe(Duration::from_millis(50), now);
        let picks = (0..100).filter(|_| Arc::ptr_eq(p2c(&[&fast, &slow], now).unwrap(), &fast)).count();
        assert!(picks >= 90, "{picks}");
    }

    #[tokio::test(start_paused = true)]
    async fn peak_sensitive_and_decaying() {
        let e = ep(1);
        let now = Instant::now();
        e.load.observe(Duration::from_millis(1), now);
        e.load.observe(Duration::from_millis(100), now);
        assert!(e.load.cost(now) > 99e6, "a slow sample is taken at once");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(e.load.cost(Instant::now()) < 10e6, "and fades while unused");
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_raise_the_cost() {
        let (a, b) = (ep(1), ep(2));
        let now = Instant::now();
        let _busy: Vec<_> = (0..5).map(|_| a.load.start()).collect();
        let picks = (0..50).filter(|_| Arc::ptr_eq(p2c(&[&a, &b], now).unwrap(), &b)).count();
        assert!(picks >= 40, "{picks}");
    }

    #[tokio::test(start_paused = true)]
    async fn near_equal_endpoints_share() {
        let (a, b) = (ep(1), ep(2));
        let now = Instant::now();
        a.load.observe(Duration::from_micros(900), now);
        b.load.observe(Duration::from_micros(1000), now);
        let picks_b = (0..1000).filter(|_| Arc::ptr_eq(p2c(&[&a, &b], now).unwrap(), &b)).count();
        assert!((350..=650).contains(&picks_b), "{picks_b}");
    }
}
