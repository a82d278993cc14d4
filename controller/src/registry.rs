//! Workloads registered by connected proxies. A workload stays a short grace period after its
//! stream ends, so a proxy that reconnects (or a controller blip) does not churn endpoints.

use std::collections::BTreeMap;
use std::time::SystemTime;

use tokio::time::{Duration, Instant};
use weft_certs::SpiffeId;
use weft_proto::v1 as pb;

#[derive(Clone, Debug)]
pub struct WorkloadRecord {
    pub workload: pb::Workload,
    pub identity: SpiffeId,
    /// The stream currently serving this workload.
    pub session: u64,
    pub connected_since: SystemTime,
    /// Set when the stream ended; the record goes after the grace period.
    pub disconnected_at: Option<Instant>,
}

impl WorkloadRecord {
    /// One record per identity and instance.
    pub fn key(identity: &SpiffeId, instance: &str) -> String {
        format!("{identity}#{instance}")
    }
}

#[derive(Default)]
pub struct Registry {
    records: BTreeMap<String, WorkloadRecord>,
}

impl Registry {
    pub fn iter(&self) -> impl Iterator<Item = &WorkloadRecord> + Clone {
        self.records.values()
    }

    /// Registers (or re-binds) a workload to `session`. Returns true if what peers see changed.
    pub fn connect(&mut self, identity: SpiffeId, workload: pb::Workload, session: u64) -> bool {
        let key = WorkloadRecord::key(&identity, &workload.instance);
        let changed = self.records.get(&key).is_none_or(|r| r.workload != workload);
        self.records.insert(
            key,
            WorkloadRecord { workload, identity, session, connected_since: SystemTime::now(), disconnected_at: None },
        );
        changed
    }

    /// Marks the workload of `session` as gone (if no newer stream took it over).
    pub fn disconnect(&mut self, identity: &SpiffeId, instance: &str, session: u64, now: Instant) {
        if let Some(r) = self.records.get_mut(&WorkloadRecord::key(identity, instance)) {
            if r.session == session {
                r.disconnected_at = Some(now);
            }
        }
    }

    /// Removes the workload of `session` now. Returns true if it was there.
    pub fn remove(&mut self, identity: &SpiffeId, instance: &str, session: u64) -> bool {
        let key = WorkloadRecord::key(identity, instance);
        if self.records.get(&key).is_some_and(|r| r.session == session) {
            self.records.remove(&key);
            return true;
        }
        false
    }

    /// Removes workloads whose grace period has passed. Returns true if any went.
    pub fn expire(&mut self, grace: Duration, now: Instant) -> bool {
        let before = self.records.len();
        self.records.retain(|_, r| r.disconnected_at.is_none_or(|t| now.duration_since(t) < grace));
        before != self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl(instance: &str) -> pb::Workload {
        pb::Workload {
            service: "bar".into(),
            namespace: "default".into(),
            instance: instance.into(),
            inbound_address: "127.0.0.1:4143".into(),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn disconnected_workloads_leave_after_the_grace_period() {
        let id: SpiffeId = "spiffe://weft.local/ns/default/sa/bar".parse().unwrap();
        let mut r = Registry::default();
        assert!(r.connect(id.clone(), wl("a"), 1));
        r.disconnect(&id, "a", 1, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!r.expire(Duration::from_secs(10), Instant::now()));
        assert_eq!(r.iter().count(), 1);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(r.expire(Duration::from_secs(10), Instant::now()));
        assert_eq!(r.iter().count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_within_grace_keeps_the_workload() {
        let id: SpiffeId = "spiffe://weft.local/ns/default/sa/bar".parse().unwrap();
        let mut r = Registry::default();
        r.connect(id.clone(), wl("a"), 1);
        // The new stream binds before the old one is noticed as gone.
        assert!(!r.connect(id.clone(), wl("a"), 2), "same workload: nothing changes for peers");
        r.disconnect(&id, "a", 1, Instant::now());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!r.expire(Duration::from_secs(10), Instant::now()));
        assert_eq!(r.iter().count(), 1);
    }
}
