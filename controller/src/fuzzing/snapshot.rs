//! Snapshot building from registrations: a sequence of registrations, readiness, reconnects,
//! address proofs and departures, each checked as the discovery stream checks it, never lets one
//! workload remove or shadow another's entry — its directory addresses and its endpoints — nor
//! the mesh file's VIPs.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use tokio::time::{Duration, Instant};
use weft_certs::SpiffeId;
use weft_proto::{types, v1 as pb};

use crate::discovery::check_registration;
use crate::mesh::MeshConfig;
use crate::registry::{Registration, Registry};
use crate::snapshot::Snapshot;

const ACCOUNTS: [&str; 3] = ["a", "b", "c"];
const INSTANCES: [&str; 2] = ["i0", "i1"];
/// Pod IPs; the last is also the mesh file's VIP, which no workload may take over.
const IPS: [&str; 4] = ["10.0.0.1", "10.0.0.2", "fd00::1", "10.96.0.1"];
const PORTS: [u32; 4] = [4143, 8080, 9090, 70000];

const MESH: &str =
    "trust_domain: weft.local\nservices:\n  m:\n    vip: 10.96.0.1\n    ports: [{port: 80, target_port: 8080}]\n";

fn mesh() -> &'static MeshConfig {
    static M: OnceLock<MeshConfig> = OnceLock::new();
    M.get_or_init(|| MeshConfig::parse(MESH).expect("the fixture's mesh file"))
}

/// What one service's workloads hold in a snapshot: directory entries and endpoints.
#[derive(Debug, PartialEq, Default)]
struct Held {
    addresses: Vec<String>,
    endpoints: Vec<pb::Endpoint>,
}

fn held(snap: &Snapshot) -> BTreeMap<String, Held> {
    let mut out: BTreeMap<String, Held> = BTreeMap::new();
    for (address, service) in snap.directory() {
        out.entry(service).or_default().addresses.push(address);
    }
    for (name, r) in snap.resources(types::ENDPOINTS).into_iter().flatten() {
        if let Some(pb::resource::Body::Endpoints(set)) = &r.body {
            out.entry(name.clone()).or_default().endpoints = set.endpoints.clone();
        }
    }
    out
}

/// Input: operations of three bytes each. Byte 0: the operation (register, ready, leave, prove
/// another IP) and who (account, instance). Byte 1: the IP and the inbound port. Byte 2: app
/// ports (a bitmask over [`PORTS`]), transparent, and whether the stream's source IP differs.
pub fn check(data: &[u8]) {
    let mut registry = Registry::default();
    let mut sessions: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    let mut next_session = 0u64;
    let now = Instant::now();
    let mut before = held(&Snapshot::build(0, mesh(), registry.iter()));
    let vip_entries = before.get("default/m").map(|h| h.addresses.clone()).unwrap_or_default();
    assert_eq!(vip_entries, ["10.96.0.1", "10.96.0.1:80"]);
    for (version, op) in data.chunks_exact(3).enumerate() {
        let (who, a, b) = (op[0], op[1], op[2]);
        let (acct, inst) = (usize::from(who >> 2) % ACCOUNTS.len(), usize::from(who >> 4) % INSTANCES.len());
        let identity = SpiffeId::new("weft.local", "default", ACCOUNTS[acct]).expect("an ID");
        let ip: IpAddr = IPS[usize::from(a) % IPS.len()].parse().expect("an IP");
        match who & 3 {
            0 => {
                next_session += 1;
                let port = PORTS[usize::from(a >> 2) % 3] as u16;
                let workload = pb::Workload {
                    service: ACCOUNTS[acct].into(),
                    namespace: "default".into(),
                    instance: INSTANCES[inst].into(),
                    inbound_address: SocketAddr::new(ip, port).to_string(),
                    app_ports: PORTS.iter().enumerate().filter(|(i, _)| (b >> i) & 1 != 0).map(|(_, p)| *p).collect(),
                    transparent: b & 16 != 0,
                    ..Default::default()
                };
                let source =
                    if b & 32 != 0 { IPS[(usize::from(a) + 1) % IPS.len()] } else { IPS[usize::from(a) % IPS.len()] };
                let source = SocketAddr::new(source.parse().expect("an IP"), 40000);
                let Ok((service, inbound)) = check_registration(&identity, &workload, "weft.local", source) else {
                    continue;
                };
                let reg = Registration { identity: identity.clone(), service, workload, inbound };
                if registry.connect(reg, next_session, 2, b & 64 != 0).is_ok() {
                    sessions.insert((acct, inst), next_session);
                }
            }
            1 => {
                if let Some(s) = sessions.get(&(acct, inst)) {
                    registry.set_ready(&identity, INSTANCES[inst], *s);
                }
            }
            2 => {
                if let Some(s) = sessions.remove(&(acct, inst)) {
                    registry.disconnect(&identity, INSTANCES[inst], s, now);
                    registry.expire(Duration::ZERO, now);
                }
            }
            _ => {
                registry.add_ip(&identity, INSTANCES[inst], ip);
            }
        }
        let after = held(&Snapshot::build(version as u64 + 1, mesh(), registry.iter()));
        let mine = format!("default/{}", ACCOUNTS[acct]);
        for (service, was) in &before {
            if *service == mine {
                continue;
            }
            // Another's entries all stay; it may gain one that a departed workload held first.
            let now_held = after.get(service).unwrap_or_else(|| panic!("{mine}'s operation {op:?} removed {service}"));
            assert_eq!(now_held.endpoints, was.endpoints, "{mine}'s operation {op:?} changed {service}'s endpoints");
            for a in &was.addresses {
                assert!(now_held.addresses.contains(a), "{mine}'s operation {op:?} took {a} from {service}");
            }
        }
        assert_eq!(after["default/m"].addresses, vip_entries, "the mesh file's VIP was taken over");
        before = after;
    }
}
