//! Circuit breaking per upstream service (Envoy's limits): active requests, a bounded queue of
//! pending ones (none by default: an immediate 503), concurrent retries and open connections.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::state::policy::BreakerConfig;

#[derive(Debug, Default)]
pub struct Breaker {
    active: AtomicU32,
    pending: AtomicU32,
    retries: AtomicU32,
    connections: AtomicU32,
    released: Notify,
}

/// Why the breaker said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Requests,
    Pending,
    Retries,
    Connections,
}

impl Overflow {
    pub fn label(self) -> &'static str {
        match self {
            Overflow::Requests => "requests",
            Overflow::Pending => "pending",
            Overflow::Retries => "retries",
            Overflow::Connections => "connections",
        }
    }
}

/// Held while a request is active; frees its slot when dropped.
pub struct RequestPermit(Arc<Breaker>);

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_one();
    }
}

/// Held while a retry is in progress.
pub struct RetryPermit(Arc<Breaker>);

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Held while a connection to the upstream is open.
pub struct ConnectionPermit(Arc<Breaker>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

fn try_increment(counter: &AtomicU32, max: u32) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
}

impl Breaker {
    /// Admits a request, queueing it (up to `max_pending`) when all request slots are taken.
    pub async fn enter(self: &Arc<Self>, cfg: &BreakerConfig) -> Result<RequestPermit, Overflow> {
        if try_increment(&self.active, cfg.max_requests) {
            return Ok(RequestPermit(self.clone()));
        }
        if !try_increment(&self.pending, cfg.max_pending) {
            return Err(if cfg.max_pending == 0 { Overflow::Requests } else { Overflow::Pending });
        }
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if try_increment(&self.active, cfg.max_requests) {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                return Ok(RequestPermit(self.clone()));
            }
            released.await;
        }
    }

    pub fn try_retry(self: &Arc<Self>, cfg: &BreakerConfig) -> Result<RetryPermit, Overflow> {
        if try_increment(&self.retries, cfg.max_concurrent_retries) {
            Ok(RetryPermit(self.clone()))
        } else {
            Err(Overflow::Retries)
        }
    }

    pub fn try_connect(self: &Arc<Self>, cfg: &BreakerConfig) -> Result<ConnectionPermit, Overflow> {
        if try_increment(&self.connections, cfg.max_connections) {
            Ok(ConnectionPermit(self.clone()))
        } else {
            Err(Overflow::Connections)
        }
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_requests: u32, max_pending: u32) -> BreakerConfig {
        BreakerConfig { max_requests, max_pending, ..BreakerConfig::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_max_requests_is_rejected_at_once() {
        let b = Arc::new(Breaker::default());
        let c = cfg(2, 0);
        let p1 = b.enter(&c).await.unwrap();
        let _p2 = b.enter(&c).await.unwrap();
        assert_eq!(b.enter(&c).await.err(), Some(Overflow::Requests));
        drop(p1);
        assert!(b.enter(&c).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn pending_requests_wait_for_a_slot() {
        let b = Arc::new(Breaker::default());
        let c = cfg(1, 1);
        let p1 = b.enter(&c).await.unwrap();
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.enter(&c).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        // The queue holds one; a third is refused.
        assert_eq!(b.enter(&c).await.err(), Some(Overflow::Pending));
        drop(p1);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn concurrent_retries_are_limited() {
        let b = Arc::new(Breaker::default());
        let c = BreakerConfig { max_concurrent_retries: 1, ..BreakerConfig::default() };
        let r = b.try_retry(&c).unwrap();
        assert_eq!(b.try_retry(&c).err(), Some(Overflow::Retries));
        drop(r);
        assert!(b.try_retry(&c).is_ok());
    }
}
