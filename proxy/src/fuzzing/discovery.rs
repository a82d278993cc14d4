//! Applying discovery responses in the proxy: arbitrary responses (arbitrary policies, endpoint
//! sets and directories) never panic, a rejected resource keeps its last good version, and the
//! resulting view answers every query a request makes of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use prost::Message;
use tokio::time::Instant;
use weft_proto::types;
use weft_proto::v1 as pb;

use crate::state::Snapshot;

const TYPES: [&str; 4] = [types::SERVICE, types::ENDPOINTS, types::DIRECTORY, "type.weft.dev/unknown"];

/// Splits the input into responses: a byte choosing the type, a length byte, then that many
/// bytes of protobuf (`DiscoveryResponse`; its own `type_url` is replaced, since random bytes
/// would never spell one).
pub fn responses(data: &[u8]) -> Vec<pb::DiscoveryResponse> {
    let mut out = Vec::new();
    let mut rest = data;
    while let [t, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        if let Ok(mut r) = pb::DiscoveryResponse::decode(&tail[..n]) {
            r.type_url = TYPES[usize::from(*t) % TYPES.len()].to_string();
            out.push(r);
        }
        rest = &tail[n..];
    }
    out
}

/// The inverse of [`responses`], to write seed inputs.
pub fn encode(resps: &[pb::DiscoveryResponse]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in resps {
        let body = r.encode_to_vec();
        assert!(body.len() < 256, "a seed response must stay under 256 bytes");
        out.push(TYPES.iter().position(|t| *t == r.type_url).unwrap_or(3) as u8);
        out.push(body.len() as u8);
        out.extend(body);
    }
    out
}

pub fn check(data: &[u8]) {
    let mut view = Snapshot::default();
    let now = Instant::now();
    for resp in responses(data) {
        let (next, rejected) = view.apply(&resp);
        // Names that appear once, and are not also removed, can be checked one by one.
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &resp.resources {
            *seen.entry(r.name.as_str()).or_default() += 1;
        }
        let single = |n: &str| seen.get(n) == Some(&1) && !resp.removed.iter().any(|r| r == n);
        for (name, _) in &rejected {
            if !single(name) {
                continue;
            }
            let (old, new) = (view.services.get(name), next.services.get(name));
            match resp.type_url.as_str() {
                types::SERVICE => assert!(
                    same(old.and_then(|s| s.policy.as_ref()), new.and_then(|s| s.policy.as_ref())),
                    "a rejected policy for {name} replaced the held one"
                ),
                types::ENDPOINTS => assert!(
                    old.map(|s| s.endpoints.as_ptr()) == new.map(|s| s.endpoints.as_ptr()),
                    "rejected endpoints for {name} replaced the held ones"
                ),
                _ => {}
            }
            assert_eq!(
                view.held.get(&resp.type_url).and_then(|h| h.get(name)),
                next.held.get(&resp.type_url).and_then(|h| h.get(name)),
                "a rejected resource changed what the proxy reports it holds"
            );
        }
        if rejected.is_empty() {
            assert_eq!(next.accepted.get(&resp.type_url), Some(&resp.version_info));
        }
        query(&next, now);
        view = next;
    }
}

fn same<T>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Asks the view what requests ask of it.
fn query(view: &Snapshot, now: Instant) {
    let req = http::Request::builder().method("POST").uri("/api/v1/x?y").header("x-user", "a").body(()).unwrap();
    let (parts, ()) = req.into_parts();
    for svc in view.services.values() {
        let picked = svc.choose(now, None);
        assert_eq!(picked.is_some(), !svc.endpoints.is_empty(), "{}: no pick among endpoints", svc.key);
        if let Some(e) = picked {
            assert!(svc.choose(now, Some(e.addr)).is_some(), "a retry finds no endpoint");
            assert!(svc.endpoint_at(e.addr.ip()).is_some());
        }
        let _ = svc.ejected(now);
        let _ = (svc.breaker_config(), svc.protocol());
        if let Some(p) = &svc.policy {
            let _ = p.route(&parts);
            if let Some(port) = p.first_target_port() {
                assert_ne!(port, 0);
                let _ = p.target_port_for(port);
            }
        }
    }
    for key in view.directory.keys() {
        if let Ok(addr) = key.parse::<SocketAddr>() {
            assert!(view.lookup_address(addr).is_some(), "{addr} is in the directory but not found");
        }
    }
}
