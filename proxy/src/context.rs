//! What every connection handler needs, shared by both runtimes: the config snapshot, identity,
//! connection pools, metrics, readiness and the drain signal.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::sync::{mpsc, watch};
use weft_certs::{IdentityStore, TrustBundle};
use weft_proto::types;

use crate::config::ProxyConfig;
use crate::net::pool::peer::PeerPool;
use crate::net::pool::plain::PlainClient;
use crate::state::Snapshot;
use crate::telemetry::metrics::ProxyMetrics;

pub struct ProxyContext {
    pub cfg: ProxyConfig,
    pub trust_domain: String,
    pub identity: Arc<IdentityStore>,
    pub bundle: TrustBundle,
    pub view: ArcSwap<Snapshot>,
    pub metrics: ProxyMetrics,
    pub peers: PeerPool,
    pub plain: PlainClient,
    pub inbound_tls: Arc<ServerConfig>,
    /// The inbound listener's bound address (its port is what peers dial).
    pub inbound_bound: std::net::SocketAddr,
    /// Services the data plane wants discovery for (transparent mode learns them on demand).
    pub subscribe: mpsc::UnboundedSender<String>,
    /// The services already asked for.
    pub subscribed: Mutex<HashSet<String>>,
    /// Woken whenever a new config snapshot is installed.
    pub view_changed: tokio::sync::Notify,
    pub readiness: Readiness,
    pub drain: Drain,
    /// Requests from peers in progress, bounded by `--max-inbound-requests`.
    pub inbound_requests: ConcurrencyLimit,
    /// The own service's policy from the current view.
    pub own_policy: arc_swap::ArcSwapOption<crate::state::policy::Policy>,
}

/// A bound on things in progress that never waits: past it, the caller is refused at once. (A
/// semaphore would do, but releasing one takes a lock on every request.)
pub struct ConcurrencyLimit {
    max: usize,
    current: std::sync::atomic::AtomicUsize,
}

/// One slot of a [`ConcurrencyLimit`], given back when dropped.
pub struct Slot<'a>(&'a ConcurrencyLimit);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConcurrencyLimit {
    pub fn new(max: usize) -> Self {
        Self { max, current: Default::default() }
    }

    /// A slot, or None when `max` are taken.
    pub fn try_enter(&self) -> Option<Slot<'_>> {
        self.current.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1)).ok()?;
        Some(Slot(self))
    }
}

impl ProxyContext {
    /// The current config snapshot.
    pub fn view(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.view.load()
    }

    /// Installs a new config snapshot (one atomic swap; in-flight requests keep the old one).
    pub fn set_view(&self, view: Snapshot) {
        self.own_policy.store(view.service(&self.cfg.own_service).and_then(|s| s.policy.clone()));
        self.view.store(Arc::new(view));
        self.view_changed.notify_waiters();
    }

    /// This workload's own policy, if held (looked up once per config update, not per request).
    pub fn own_policy(&self) -> Option<Arc<crate::state::policy::Policy>> {
        self.own_policy.load_full()
    }

    /// Asks the controller for a service's policy and endpoints (once).
    pub fn subscribe_to(&self, service: &str) {
        let mut subscribed = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
        if subscribed.insert(service.to_string()) {
            let _ = self.subscribe.send(service.to_string());
        }
    }

    /// Every service subscribed to so far (sent again on each new stream).
    pub fn subscriptions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.subscribed.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        v.sort();
        v
    }
}

/// Ready once a certificate is held and every discovery type has been accepted once, until
/// shutdown begins.
#[derive(Default)]
pub struct Readiness {
    cert: AtomicBool,
    accepted: Mutex<HashSet<String>>,
    draining: AtomicBool,
    /// Why the last attempt to get a certificate or a discovery stream failed (cleared on success).
    problem: Mutex<Option<String>>,
}

impl Readiness {
    pub fn set_cert(&self) {
        self.cert.store(true, Ordering::Release);
    }
    pub fn accepted(&self, type_url: &str) {
        self.accepted.lock().unwrap_or_else(|e| e.into_inner()).insert(type_url.to_string());
    }
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
    /// Records (Some) or clears (None) the control plane's latest problem, shown by `/ready`.
    pub fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }
    pub fn is_ready(&self) -> bool {
        let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        self.cert.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
            && types::ALL.iter().all(|t| accepted.contains(*t))
    }
    /// Why not ready, for `/ready`'s body.
    pub fn explain(&self) -> String {
        let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        let mut missing = Vec::new();
        if self.draining.load(Ordering::Acquire) {
            missing.push("shutting down".to_string());
        }
        if !self.cert.load(Ordering::Acquire) {
            missing.push("no certificate yet".to_string());
        }
        for t in types::ALL {
            if !accepted.contains(t) {
                missing.push(format!("waiting for {t}"));
            }
        }
        if let Some(p) = self.problem.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            missing.push(format!("last problem: {p}"));
        }
        missing.join("; ")
    }
}

/// Shutdown coordination: listeners stop, connections close gracefully, the process waits for
/// them up to the grace period.
pub struct Drain {
    /// Set first: the proxy is leaving (its endpoint is withdrawn, it still serves).
    leaving: watch::Sender<bool>,
    /// Set after the shutdown delay: listeners stop, connections close gracefully.
    tx: watch::Sender<bool>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    idle: tokio::sync::Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            leaving: watch::channel(false).0,
            tx: watch::channel(false).0,
            open: Arc::default(),
            idle: tokio::sync::Notify::new(),
        }
    }
}

/// Counts one open connection for the drain.
pub struct ConnGuard<'a>(&'a Drain);

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// Announces the shutdown: the controller is told to withdraw this endpoint, while the proxy
    /// keeps serving for the shutdown delay so callers can move away first.
    pub fn announce(&self) {
        self.leaving.send_replace(true);
    }
    pub fn leaving(&self) -> watch::Receiver<bool> {
        self.leaving.subscribe()
    }
    pub fn start(&self) {
        self.tx.send_replace(true);
    }
    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }
    /// Resolves when draining starts.
    pub fn signal(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
    pub fn track(&self) -> ConnGuard<'_> {
        self.open.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self)
    }
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
    /// Waits until no tracked connection is open.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Resolves once draining has started.
pub async fn drained(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|d| *d).await;
}
