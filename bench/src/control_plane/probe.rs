//! What the benchmark is waiting for: a change, the proxies that must see it, when each one first
//! held content that matches it, and what every proxy received meanwhile (to prove that proxies
//! that need not see a change get nothing).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::layout::Layout;
use super::view::View;

/// The content that proves a proxy has seen the change.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// A full config from a stream that started after the probe: every type answered on it, its
    /// own policy, and the policy and complete endpoint set of every service it calls.
    Complete,
    /// The service's route timeout is this.
    Timeout {
        service: String,
        ms: u64,
    },
    EndpointPresent {
        service: String,
        address: String,
    },
    EndpointAbsent {
        service: String,
        address: String,
    },
}

/// One proxy's session as the probe needs to know it.
pub struct SessionFacts {
    pub started: Instant,
    /// Every type answered (ACKed or NACKed) at least once on this stream.
    pub all_types_answered: bool,
}

pub struct Probe {
    pub expect: Expect,
    pub started: Instant,
    must: Vec<bool>,
    /// Nanoseconds from `started` to when the proxy first matched, plus one; 0: not yet.
    seen: Vec<AtomicU64>,
    messages: Vec<AtomicU64>,
    bytes: Vec<AtomicU64>,
    remaining: AtomicUsize,
}

impl Probe {
    /// `must[i]`: proxy `i` must see the change (index `N` is the extra proxy).
    pub fn new(expect: Expect, must: Vec<bool>) -> Arc<Self> {
        let n = must.len();
        let remaining = must.iter().filter(|m| **m).count();
        let zeros = || (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Arc::new(Self {
            expect,
            started: Instant::now(),
            must,
            seen: zeros(),
            messages: zeros(),
            bytes: zeros(),
            remaining: AtomicUsize::new(remaining),
        })
    }

    pub fn remaining(&self) -> usize {
        self.remaining.load(Ordering::Acquire)
    }

    pub fn must_count(&self) -> usize {
        self.must.iter().filter(|m| **m).count()
    }

    /// A response of `bytes` reached proxy `i`.
    pub fn received(&self, i: usize, bytes: usize) {
        if let (Some(m), Some(b)) = (self.messages.get(i), self.bytes.get(i)) {
            m.fetch_add(1, Ordering::Relaxed);
            b.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// Checks proxy `i`'s view after it applied a response (or connected).
    pub fn observe(&self, i: usize, layout: &Layout, view: &View, session: &SessionFacts) {
        if !self.must.get(i).copied().unwrap_or(false) || self.seen[i].load(Ordering::Relaxed) != 0 {
            return;
        }
        if !self.matches(i, layout, view, session) {
            return;
        }
        let ns = self.started.elapsed().as_nanos() as u64 + 1;
        if self.seen[i].compare_exchange(0, ns, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.remaining.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn matches(&self, i: usize, layout: &Layout, view: &View, session: &SessionFacts) -> bool {
        match &self.expect {
            Expect::Complete => {
                session.started >= self.started && session.all_types_answered && complete(i, layout, view)
            }
            Expect::Timeout { service, ms } => view.timeout_ms(service) == Some(*ms),
            Expect::EndpointPresent { service, address } => view.has_endpoint(service, address),
            Expect::EndpointAbsent { service, address } => !view.has_endpoint(service, address),
        }
    }

    /// Times (from the probe's start) of the proxies that saw it, and how many must have.
    pub fn latencies(&self) -> (Vec<Duration>, usize) {
        let seen = self
            .seen
            .iter()
            .zip(&self.must)
            .filter(|(_, m)| **m)
            .filter_map(|(s, _)| match s.load(Ordering::Acquire) {
                0 => None,
                ns => Some(Duration::from_nanos(ns - 1)),
            })
            .collect();
        (seen, self.must_count())
    }

    /// Bytes and responses received while the probe was in force by every proxy but `except`
    /// (the proxy that made the change: what it gets for itself is not the change's cost).
    pub fn traffic(&self, except: Option<usize>) -> (u64, u64) {
        let sum = |v: &[AtomicU64]| {
            v.iter().enumerate().filter(|(i, _)| Some(*i) != except).map(|(_, a)| a.load(Ordering::Relaxed)).sum()
        };
        (sum(&self.bytes), sum(&self.messages))
    }

    /// Proxies that were not meant to see the change but received something, leaving out
    /// `except` (the proxy that made the change).
    pub fn unexpected_recipients(&self, except: Option<usize>) -> usize {
        (0..self.must.len())
            .filter(|i| Some(*i) != except && !self.must[*i] && self.messages[*i].load(Ordering::Relaxed) > 0)
            .count()
    }
}

/// Whether proxy `i` holds a whole config: its own policy, and for every service it calls the
/// policy and every instance's endpoint.
pub fn complete(i: usize, layout: &Layout, view: &View) -> bool {
    let own = Layout::service_key(layout.service_of(i));
    view.services.contains_key(&own)
        && layout.subscriptions(i).into_iter().all(|s| {
            let key = Layout::service_key(s);
            let want: Vec<String> = layout.instances_of(s).map(|p| Layout::inbound(p).to_string()).collect();
            view.services.contains_key(&key) && view.endpoints_are(&key, &want)
        })
}

/// Whether proxy `i` holds at least every instance of the services it calls (a proxy that once
/// held them must never lose one, even while the controller restarts).
pub fn holds_all_endpoints(i: usize, layout: &Layout, view: &View) -> bool {
    layout.subscriptions(i).into_iter().all(|s| {
        let want: Vec<String> = layout.instances_of(s).map(|p| Layout::inbound(p).to_string()).collect();
        view.endpoints_include(&Layout::service_key(s), &want)
    })
}

/// The probe in force, shared by every simulated proxy.
#[derive(Default)]
pub struct CurrentProbe(RwLock<Option<Arc<Probe>>>);

impl CurrentProbe {
    pub fn get(&self) -> Option<Arc<Probe>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set(&self, p: Option<Arc<Probe>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = p;
    }
}
