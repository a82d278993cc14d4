//! The simulated mesh's shape: N proxies and M services, which service each proxy is, the
//! services it calls, its own loopback source address, and the mesh file the controller reads.
//!
//! Proxy `i` is an instance of service `i mod M` (two instances per service when M = N/2). Every
//! proxy calls its two neighbours (`s+1`, `s+2`); even-numbered proxies also call one hot service
//! (service 0, like an auth or a config service), so a change to it must reach half the mesh and
//! a change to it must reach nobody else — the isolation the benchmark checks.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::bail;

/// The service many proxies call.
pub const HOT: usize = 0;
/// The port every simulated proxy advertises as its inbound listener (nobody dials it).
const INBOUND_PORT: u16 = 4143;
/// The mesh file's size limit (1 MiB) allows about this many of the generated services.
pub const MAX_SERVICES: usize = 5_000;
/// Source addresses are 127.a.b.c; far more than any run needs.
pub const MAX_PROXIES: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Layout {
    pub proxies: usize,
    pub services: usize,
}

impl Layout {
    pub fn new(proxies: usize, services: usize) -> anyhow::Result<Self> {
        if services < 3 {
            bail!("at least 3 services are needed (each proxy calls two neighbours), got {services}");
        }
        if proxies < services {
            bail!("{proxies} proxies cannot give each of {services} services an instance");
        }
        if proxies > MAX_PROXIES || services > MAX_SERVICES {
            bail!("at most {MAX_PROXIES} proxies and {MAX_SERVICES} services, got {proxies} and {services}");
        }
        Ok(Self { proxies, services })
    }

    /// The index of the extra proxy that registers and leaves during the churn (an instance of
    /// the hot service); the N simulated proxies are `0..N`.
    pub fn extra(&self) -> usize {
        self.proxies
    }

    pub fn service_name(s: usize) -> String {
        format!("svc-{s:05}")
    }

    /// `NS/NAME`, the discovery resources' name.
    pub fn service_key(s: usize) -> String {
        format!("default/{}", Self::service_name(s))
    }

    pub fn service_of(&self, i: usize) -> usize {
        if i == self.extra() {
            HOT
        } else {
            i % self.services
        }
    }

    pub fn instance(i: usize) -> String {
        format!("sim-{i}")
    }

    /// Proxy `i`'s own source address: 127.a.b.c, never 127.0.0.1 (the controller's).
    pub fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 1 + (i / 62_500) as u8, ((i / 250) % 250) as u8, (i % 250 + 1) as u8)
    }

    pub fn inbound(i: usize) -> SocketAddr {
        SocketAddr::new(Self::ip(i).into(), INBOUND_PORT)
    }

    /// The services proxy `i` calls (subscribes to), never its own.
    pub fn subscriptions(&self, i: usize) -> Vec<usize> {
        let s = self.service_of(i);
        let mut out = Vec::with_capacity(3);
        if i.is_multiple_of(2) && s != HOT && i != self.extra() {
            out.push(HOT);
        }
        for d in [1, 2] {
            let t = (s + d) % self.services;
            if t != s && !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// The simulated proxies (not the extra one) that are instances of `s`.
    pub fn instances_of(&self, s: usize) -> impl Iterator<Item = usize> {
        (s..self.proxies).step_by(self.services)
    }

    /// The simulated proxies that call `s`.
    pub fn subscribers_of(&self, s: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.proxies).filter(move |i| self.subscriptions(*i).contains(&s))
    }

    /// The mesh file: every service with a realistic policy; the hot one's timeout is the knob
    /// the policy edits turn.
    pub fn mesh_yaml(&self, trust_domain: &str, hot_timeout_ms: u64) -> String {
        let mut y = format!("trust_domain: {trust_domain}\nservices:\n");
        for s in 0..self.services {
            let timeout = if s == HOT { hot_timeout_ms } else { 2000 };
            y.push_str(&format!(
                "  {}: {{protocol: http, ports: [{{port: 80, target_port: 8080}}], timeout: {timeout}ms, \
                 retries: {{on: [5xx, reset], max_retries: 2, per_try_timeout: 500ms}}}}\n",
                Self::service_name(s)
            ));
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proxy_has_its_own_address_and_calls_a_handful_of_other_services() {
        let l = Layout::new(2000, 1000).unwrap();
        let mut ips: Vec<Ipv4Addr> = (0..=l.extra()).map(Layout::ip).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 2001);
        assert!(ips.iter().all(|ip| ip.octets()[0] == 127 && *ip != Ipv4Addr::LOCALHOST && ip.octets()[3] != 0));
        for i in 0..=l.extra() {
            let subs = l.subscriptions(i);
            assert!((2..=3).contains(&subs.len()), "{i}: {subs:?}");
            assert!(!subs.contains(&l.service_of(i)), "{i} calls itself");
        }
        assert_eq!(l.instances_of(HOT).count(), 2);
        assert_eq!(l.instances_of(999).count(), 2);
        // Half the mesh calls the hot service; the other half must never hear of its changes.
        let hot = l.subscribers_of(HOT).count();
        assert!((990..=1010).contains(&hot), "{hot}");
        assert_eq!(l.service_of(l.extra()), HOT);
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(Layout::new(10, 2).is_err());
        assert!(Layout::new(5, 10).is_err());
        assert!(Layout::new(MAX_PROXIES + 1, 10).is_err());
    }

    #[test]
    fn the_mesh_file_names_every_service_and_fits_the_controllers_limit() {
        let l = Layout::new(2 * MAX_SERVICES, MAX_SERVICES).unwrap();
        let y = l.mesh_yaml("weft.local", 1234);
        assert!(y.len() < 1024 * 1024, "{} bytes", y.len());
        assert_eq!(y.matches("protocol: http").count(), MAX_SERVICES);
        assert!(y.contains("svc-00000: {protocol: http, ports: [{port: 80, target_port: 8080}], timeout: 1234ms"));
    }
}
