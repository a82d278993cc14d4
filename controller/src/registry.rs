//! Workloads registered by connected proxies. A workload stays a short grace period after its
//! stream ends, so a proxy that reconnects (or a controller blip) does not churn endpoints.
//!
//! Admission rules, so that no registration can remove or shadow another workload's entry: the
//! registered IP is the one the stream comes from (checked by the discovery stream), instances per
//! identity are capped, an `IP:port` another identity already holds (as its inbound address or an
//! app port) is refused or dropped from the newcomer, and order of arrival decides who owns a pod
//! IP in the directory (see the snapshot).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use tokio::time::{Duration, Instant};
use weft_certs::SpiffeId;
use weft_proto::v1 as pb;

#[derive(Clone, Debug)]
pub struct WorkloadRecord {
    /// As registered, less the app ports it was refused.
    pub workload: pb::Workload,
    pub identity: SpiffeId,
    /// The service it belongs to, `NS/NAME`.
    pub service: String,
    /// The inbound address peers dial; its IP is the stream's source IP.
    pub inbound: SocketAddr,
    /// Further IPs of this workload, each proven by a stream from it (a dual-stack pod's other
    /// family).
    pub extra_ips: BTreeSet<IpAddr>,
    /// The stream currently serving this workload.
    pub session: u64,
    /// Order of first registration: the earlier workload owns what two claim.
    pub seq: u64,
    pub connected_since: SystemTime,
    /// Set when the stream ended; the record goes after the grace period.
    pub disconnected_at: Option<Instant>,
    /// The proxy has ACKed its own policy: only then is it announced to callers.
    pub ready: bool,
}

impl WorkloadRecord {
    /// One record per identity and instance.
    pub fn key(identity: &SpiffeId, instance: &str) -> String {
        format!("{identity}#{instance}")
    }

    /// Every IP this workload has proven.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.inbound.ip()).chain(self.extra_ips.iter().copied())
    }

    /// Whether this workload holds `ip:port`: its inbound address, an app port, or any port of a
    /// transparent workload's IPs (the pod is the workload).
    fn holds(&self, ip: IpAddr, port: u16) -> bool {
        (self.inbound.ip() == ip && self.inbound.port() == port)
            || (self.ips().any(|i| i == ip)
                && (self.workload.transparent || self.workload.app_ports.contains(&u32::from(port))))
    }
}

/// A registration the discovery stream checked: identity, service and source address agree.
pub struct Registration {
    pub identity: SpiffeId,
    pub service: String,
    pub workload: pb::Workload,
    pub inbound: SocketAddr,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{identity} already has {max} registered instances (--max-instances-per-identity)")]
    TooManyInstances { identity: String, max: usize },
    #[error("inbound address {addr} is registered by another workload ({holder})")]
    AddressTaken { addr: SocketAddr, holder: String },
    #[error("instance {0} is bound to its join token and already connected")]
    InstanceConnected(String),
}

impl Refused {
    /// The label of `weft_registrations_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::TooManyInstances { .. } => "too-many-instances",
            Refused::AddressTaken { .. } => "address-taken",
            Refused::InstanceConnected(_) => "instance-connected",
        }
    }
}

/// What a successful registration changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admitted {
    /// What peers see changed (a republish is due).
    pub changed: bool,
    /// App ports refused because another identity holds them on this IP.
    pub dropped_ports: Vec<u32>,
}

#[derive(Default)]
pub struct Registry {
    records: BTreeMap<String, WorkloadRecord>,
    next_seq: u64,
}

impl Registry {
    pub fn iter(&self) -> impl Iterator<Item = &WorkloadRecord> + Clone {
        self.records.values()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Registers (or re-binds) a workload to `session`. `exclusive`: the instance is bound to its
    /// token, so a second live stream for it is refused rather than taking it over.
    pub fn connect(
        &mut self,
        reg: Registration,
        session: u64,
        max_instances: usize,
        exclusive: bool,
    ) -> Result<Admitted, Refused> {
        let Registration { identity, service, mut workload, inbound } = reg;
        let key = WorkloadRecord::key(&identity, &workload.instance);
        let existing = self.records.get(&key);
        if exclusive && existing.is_some_and(|r| r.disconnected_at.is_none() && r.session != session) {
            return Err(Refused::InstanceConnected(workload.instance.clone()));
        }
        if existing.is_none() && self.instances_of(&identity) >= max_instances {
            return Err(Refused::TooManyInstances { identity: identity.to_string(), max: max_instances });
        }
        // Another identity's workload holding `ip:port`. The address test comes first: it is a
        // few integer comparisons, and a connect storm runs this over every record per connect.
        let held_by_another = |ip: IpAddr, port: u16| {
            self.records.iter().find(|(k, r)| r.holds(ip, port) && **k != key && r.identity != identity).map(|(_, r)| r)
        };
        if let Some(holder) = held_by_another(inbound.ip(), inbound.port()) {
            return Err(Refused::AddressTaken { addr: inbound, holder: holder.identity.to_string() });
        }
        // App ports are published on every IP the workload has proven (a reconnect keeps them),
        // so each is checked on all of them, not just the inbound address's.
        let ips: Vec<IpAddr> = std::iter::once(inbound.ip())
            .chain(self.records.get(&key).into_iter().flat_map(|r| r.extra_ips.iter().copied()))
            .collect();
        let mut dropped_ports = Vec::new();
        workload.app_ports.retain(|p| {
            let taken = u16::try_from(*p).is_ok_and(|port| ips.iter().any(|ip| held_by_another(*ip, port).is_some()));
            if taken {
                dropped_ports.push(*p);
            }
            !taken
        });
        let same = self.records.get(&key).is_some_and(|r| r.workload == workload && r.inbound == inbound);
        let (seq, extra_ips, ready) = match self.records.get(&key) {
            // A reconnect of the same workload keeps its place (it was first to its addresses),
            // its proven IPs and its readiness (the proxy still holds its policy).
            Some(r) if same => (r.seq, r.extra_ips.clone(), r.ready),
            // One that now claims something else goes to the back of the line: what it newly
            // claims (a port, or every port as a transparent pod) never displaces an entry
            // another workload registered in the meantime. Its proven IPs stay.
            Some(r) => {
                self.next_seq += 1;
                (self.next_seq, r.extra_ips.clone(), false)
            }
            None => {
                self.next_seq += 1;
                (self.next_seq, BTreeSet::new(), false)
            }
        };
        let changed =
            self.records.get(&key).is_none_or(|r| r.workload != workload || r.inbound != inbound || r.ready != ready);
        self.records.insert(
            key,
            WorkloadRecord {
                workload,
                identity,
                service,
                inbound,
                extra_ips,
                session,
                seq,
                connected_since: SystemTime::now(),
                disconnected_at: None,
                ready,
            },
        );
        Ok(Admitted { changed, dropped_ports })
    }

    /// The registered instances of `identity`: their keys (`IDENTITY#INSTANCE`) sort together.
    fn instances_of(&self, identity: &SpiffeId) -> usize {
        let prefix = format!("{identity}#");
        self.records.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).count()
    }

    /// Marks the workload of `session` as holding its own policy. Returns true if it changed.
    pub fn set_ready(&mut self, identity: &SpiffeId, instance: &str, session: u64) -> bool {
        match self.records.get_mut(&WorkloadRecord::key(identity, instance)) {
            Some(r) if r.session == session && !r.ready => {
                r.ready = true;
                true
            }
            _ => false,
        }
    }

    /// Adds an IP a workload proved with a second stream (its other address family). An IP another
    /// identity already uses is not added. Returns true if it was added.
    pub fn add_ip(&mut self, identity: &SpiffeId, instance: &str, ip: IpAddr) -> bool {
        let key = WorkloadRecord::key(identity, instance);
        let taken = self.records.iter().any(|(k, r)| *k != key && r.identity != *identity && r.ips().any(|i| i == ip));
        match self.records.get_mut(&key) {
            Some(r) if !taken && r.inbound.ip() != ip => r.extra_ips.insert(ip),
            _ => false,
        }
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

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::new("weft.local", "default", sa).unwrap()
    }

    fn reg(sa: &str, instance: &str, addr: &str, app_ports: &[u32]) -> Registration {
        Registration {
            identity: id(sa),
            service: format!("default/{sa}"),
            workload: pb::Workload {
                service: sa.into(),
                namespace: "default".into(),
                instance: instance.into(),
                inbound_address: addr.into(),
                app_ports: app_ports.to_vec(),
                ..Default::default()
            },
            inbound: addr.parse().unwrap(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn disconnected_workloads_leave_after_the_grace_period() {
        let mut r = Registry::default();
        assert!(r.connect(reg("bar", "a", "127.0.0.1:4143", &[]), 1, 10, false).unwrap().changed);
        r.disconnect(&id("bar"), "a", 1, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!r.expire(Duration::from_secs(10), Instant::now()));
        assert_eq!(r.iter().count(), 1);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(r.expire(Duration::from_secs(10), Instant::now()));
        assert_eq!(r.iter().count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_within_grace_keeps_the_workload_and_its_readiness() {
        let mut r = Registry::default();
        r.connect(reg("bar", "a", "127.0.0.1:4143", &[]), 1, 10, false).unwrap();
        assert!(r.set_ready(&id("bar"), "a", 1));
        // The new stream binds before the old one is noticed as gone.
        let again = r.connect(reg("bar", "a", "127.0.0.1:4143", &[]), 2, 10, false).unwrap();
        assert!(!again.changed, "same workload: nothing changes for peers");
        assert!(r.iter().next().unwrap().ready);
        r.disconnect(&id("bar"), "a", 1, Instant::now());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!r.expire(Duration::from_secs(10), Instant::now()));
        assert_eq!(r.iter().count(), 1);
    }

    #[test]
    fn instances_per_identity_are_capped() {
        let mut r = Registry::default();
        for i in 0..3 {
            r.connect(reg("bar", &format!("i{i}"), &format!("127.0.0.{}:4143", i + 1), &[]), i, 3, false).unwrap();
        }
        let err = r.connect(reg("bar", "i9", "127.0.0.9:4143", &[]), 9, 3, false).unwrap_err();
        assert!(matches!(err, Refused::TooManyInstances { max: 3, .. }), "{err:?}");
        // Re-binding an existing instance is not a new one.
        r.connect(reg("bar", "i0", "127.0.0.1:4143", &[]), 10, 3, false).unwrap();
        // Another identity has its own allowance.
        r.connect(reg("foo", "f", "127.0.0.8:4143", &[]), 11, 3, false).unwrap();
    }

    #[test]
    fn another_identitys_address_or_app_port_cannot_be_claimed() {
        let mut r = Registry::default();
        r.connect(reg("bar", "b", "127.0.0.1:4143", &[8081]), 1, 10, false).unwrap();
        // evil claims bar's inbound address: refused.
        let err = r.connect(reg("evil", "e", "127.0.0.1:4143", &[]), 2, 10, false).unwrap_err();
        assert!(matches!(err, Refused::AddressTaken { .. }), "{err:?}");
        // evil claims bar's app port on the same IP: admitted without it.
        let a = r.connect(reg("evil", "e", "127.0.0.1:4150", &[8081, 9000]), 3, 10, false).unwrap();
        assert_eq!(a.dropped_ports, vec![8081]);
        let evil = r.iter().find(|w| w.identity == id("evil")).unwrap();
        assert_eq!(evil.workload.app_ports, vec![9000]);
        let bar = r.iter().find(|w| w.identity == id("bar")).unwrap();
        assert_eq!(bar.workload.app_ports, vec![8081], "bar keeps what it had");
    }

    #[test]
    fn a_bound_instance_admits_one_live_stream() {
        let mut r = Registry::default();
        r.connect(reg("bar", "b0", "127.0.0.1:4143", &[]), 1, 10, true).unwrap();
        let err = r.connect(reg("bar", "b0", "127.0.0.2:4143", &[]), 2, 10, true).unwrap_err();
        assert_eq!(err, Refused::InstanceConnected("b0".into()));
        r.disconnect(&id("bar"), "b0", 1, Instant::now());
        r.connect(reg("bar", "b0", "127.0.0.1:4143", &[]), 3, 10, true).unwrap();
    }

    #[test]
    fn a_second_ip_is_added_only_when_free() {
        let mut r = Registry::default();
        r.connect(reg("bar", "b", "10.0.0.2:4143", &[]), 1, 10, false).unwrap();
        r.connect(reg("foo", "f", "10.0.0.3:4143", &[]), 2, 10, false).unwrap();
        assert!(r.add_ip(&id("bar"), "b", "fd00::2".parse().unwrap()));
        assert!(!r.add_ip(&id("foo"), "f", "fd00::2".parse().unwrap()), "bar proved it first");
        assert!(!r.add_ip(&id("foo"), "f", "10.0.0.2".parse().unwrap()), "bar's primary");
    }

    /// Found by the `snapshot` fuzz target: a workload that proved a second IP, then reconnected
    /// with an app port another identity holds on that IP, kept it — and, registered earlier,
    /// took that address in the directory. Ports are now checked on every proven IP.
    #[test]
    fn a_reconnect_cannot_claim_an_app_port_on_its_second_ip() {
        let mut r = Registry::default();
        r.connect(reg("a", "a0", "10.0.0.1:8080", &[]), 1, 10, false).unwrap();
        assert!(r.add_ip(&id("a"), "a0", "10.0.0.9".parse().unwrap()));
        // b can use 10.0.0.9:9090: a holds no such port there (yet).
        r.connect(reg("b", "b0", "10.0.0.9:4143", &[9090]), 2, 10, false).unwrap();
        let again = r.connect(reg("a", "a0", "10.0.0.1:8080", &[9090]), 3, 10, false).unwrap();
        assert_eq!(again.dropped_ports, vec![9090], "b holds 9090 on a's second IP");
        let b = r.iter().find(|w| w.identity == id("b")).unwrap();
        assert_eq!(b.workload.app_ports, vec![9090]);
    }

    /// Found by the `snapshot` fuzz target: a workload proved a second IP, another identity
    /// registered there, and the first reconnected as a transparent pod (which owns every port of
    /// its IPs). Keeping its old place, it took the other's directory entry; a reconnect that
    /// claims something new now goes to the back of the line.
    #[test]
    fn a_reconnect_with_new_claims_loses_its_place_in_line() {
        let mut r = Registry::default();
        r.connect(reg("a", "a0", "10.0.0.1:4143", &[]), 1, 10, false).unwrap();
        assert!(r.add_ip(&id("a"), "a0", "10.0.0.9".parse().unwrap()));
        r.connect(reg("b", "b0", "10.0.0.9:4143", &[]), 2, 10, false).unwrap();
        let seq = |r: &Registry, who: &str| r.iter().find(|w| w.identity == id(who)).unwrap().seq;
        let (a_before, b) = (seq(&r, "a"), seq(&r, "b"));
        r.connect(reg("a", "a0", "10.0.0.1:4143", &[]), 3, 10, false).unwrap();
        assert_eq!(seq(&r, "a"), a_before, "the same claims keep their place");
        let mut transparent = reg("a", "a0", "10.0.0.1:4143", &[]);
        transparent.workload.transparent = true;
        r.connect(transparent, 4, 10, false).unwrap();
        assert!(seq(&r, "a") > b, "new claims queue behind b");
    }
}
