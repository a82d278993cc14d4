//! The discovery stream's state machine driven by a hostile or confused proxy: arbitrary
//! sequences of subscriptions, ACKs, NACKs, stale and forged nonces, snapshots that change under
//! it and the restart hold-down ending. A model proxy applies every response as the real one does
//! (delta semantics, merges while held down), and the check holds that the controller sends only
//! what the proxy subscribes to, that the proxy ends up holding exactly that once the hold-down is
//! over, that readiness is granted only for an own policy actually sent (or held), and that what
//! a session keeps per proxy stays bounded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use weft_proto::{types, v1 as pb};

use crate::discovery::{Outcome, SessionState, MAX_PENDING_RESPONSES, MAX_SUBSCRIPTIONS};
use crate::snapshot::{directory_shard_name, Snapshot};

const OWN: &str = "default/me";
/// Services a snapshot may hold besides the proxy's own (always there: it registered).
const OTHERS: [&str; 4] = ["default/a", "default/b", "ns2/c", "default/zz"];
/// What a proxy may try to subscribe to: real services, its own, names that are no service key.
const ASKED: [&str; 8] = ["default/a", "default/b", "ns2/c", "default/zz", OWN, "mesh", "", "a/b/c"];

/// What the model proxy holds of one resource: its version, or a merge into it of that version.
#[derive(Clone, Debug, PartialEq)]
enum Held {
    Version(String),
    Merged(String),
}

/// The model proxy: what it holds per type, and the responses it has not answered yet.
#[derive(Default)]
struct Proxy {
    held: HashMap<&'static str, BTreeMap<String, Held>>,
    unanswered: Vec<pb::DiscoveryResponse>,
    /// Unanswered responses the session may have let go: it keeps the newest
    /// [`MAX_PENDING_RESPONSES`] a proxy has not answered.
    forgotten: BTreeSet<String>,
    /// Every SERVICE response nonce that carried the proxy's own policy.
    carried_own: BTreeSet<String>,
    holds_own_at_connect: bool,
}

fn type_of(url: &str) -> &'static str {
    types::ALL.into_iter().find(|t| *t == url).unwrap_or_else(|| panic!("a response of unknown type {url}"))
}

impl Proxy {
    fn apply(&mut self, r: &pb::DiscoveryResponse) {
        let held = self.held.entry(type_of(&r.type_url)).or_default();
        for res in &r.resources {
            let v = if r.merge { Held::Merged(res.version.clone()) } else { Held::Version(res.version.clone()) };
            held.insert(res.name.clone(), v);
        }
        for name in &r.removed {
            held.remove(name);
        }
        if r.type_url == types::SERVICE && r.resources.iter().any(|x| x.name == OWN) {
            self.carried_own.insert(r.nonce.clone());
        }
        self.unanswered.push(r.clone());
        let mut live = self.unanswered.iter().filter(|u| !self.forgotten.contains(&u.nonce));
        if live.clone().count() > MAX_PENDING_RESPONSES {
            let oldest = live.next().expect("more than none").nonce.clone();
            self.forgotten.insert(oldest);
        }
    }
}

/// One snapshot over [`OTHERS`]: bit i of `present` keeps service i, bit i of `variant` picks
/// its content; bit 4 of `variant` empties the endpoint sets.
fn snapshot(version: u64, present: u8, variant: u8) -> Snapshot {
    let mut snap = Snapshot::empty();
    snap.version = version;
    let empty = variant & 16 != 0;
    let mut shards: BTreeMap<u64, Vec<pb::DirectoryEntry>> = BTreeMap::new();
    for (i, name) in [OWN].into_iter().chain(OTHERS).enumerate() {
        if i > 0 && present >> (i - 1) & 1 == 0 {
            continue;
        }
        let v = variant >> i & 1;
        let (ns, svc) = name.split_once('/').expect("NS/NAME");
        let policy = pb::ServicePolicy { name: svc.into(), namespace: ns.into(), ..Default::default() };
        let endpoints = pb::EndpointSet {
            endpoints: (0..if empty { 0 } else { 1 + v })
                .map(|k| pb::Endpoint { address: format!("10.0.{i}.{k}:4143"), ..Default::default() })
                .collect(),
        };
        let mut put = |t: &'static str, version: String, body| {
            let r = pb::Resource { name: name.into(), version, body: Some(body) };
            snap.by_type.get_mut(t).expect("every type").insert(name.into(), Arc::new(r));
        };
        put(types::SERVICE, format!("s{v}"), pb::resource::Body::Service(policy));
        put(types::ENDPOINTS, format!("e{}", endpoints.endpoints.len()), pb::resource::Body::Endpoints(endpoints));
        // Two directory shards, so that one can change or go while the other stays.
        let shard = i as u64 % 2;
        shards
            .entry(shard)
            .or_default()
            .push(pb::DirectoryEntry { address: format!("10.96.0.{i}"), service: name.into() });
    }
    for (shard, entries) in shards {
        let name = directory_shard_name(shard);
        let version = format!("d{}", entries.iter().map(|e| e.address.as_str()).collect::<Vec<_>>().join(","));
        let r = pb::Resource {
            name: name.clone(),
            version,
            body: Some(pb::resource::Body::Directory(pb::Directory { entries })),
        };
        snap.by_type.get_mut(types::DIRECTORY).expect("every type").insert(name, Arc::new(r));
    }
    snap
}

/// The names of a type the proxy should hold: a transparent one, every directory shard there is.
fn wanted(t: &str, subscribed: &BTreeSet<String>, transparent: bool, snap: &Snapshot) -> BTreeSet<String> {
    match t {
        types::SERVICE => subscribed.iter().cloned().chain([OWN.to_string()]).collect(),
        types::ENDPOINTS => subscribed.clone(),
        types::DIRECTORY if transparent => snap.resources(t).into_iter().flat_map(|m| m.keys().cloned()).collect(),
        _ => BTreeSet::new(),
    }
}

/// Input: byte 0 sets transparent mode (bit 0), the hold-down (bit 1) and which resources the
/// proxy claims it held at connect (bits 2–7); then operations of two bytes: the operation, an
/// argument.
pub fn check(data: &[u8]) {
    let Some((&setup, ops)) = data.split_first() else { return };
    let transparent = setup & 1 != 0;
    let mut holddown = setup & 2 != 0;
    let mut initial: BTreeMap<String, pb::ResourceVersions> = BTreeMap::new();
    let mut proxy = Proxy::default();
    for (bit, (t, name)) in [
        (types::SERVICE, OWN),
        (types::SERVICE, OTHERS[0]),
        (types::ENDPOINTS, OTHERS[0]),
        (types::ENDPOINTS, OTHERS[2]),
        (types::DIRECTORY, "mesh-01"),
        (types::ENDPOINTS, "default/gone"),
    ]
    .into_iter()
    .enumerate()
    {
        if setup >> (bit + 2) & 1 != 0 {
            initial.entry(t.to_string()).or_default().versions.insert(name.into(), "old".into());
            proxy.held.entry(t).or_default().insert(name.into(), Held::Version("old".into()));
        }
    }
    proxy.holds_own_at_connect = setup & 4 != 0;
    let held_at_connect = proxy.held.clone();
    let workload = pb::Workload { transparent, ..Default::default() };
    let mut ss = SessionState::new(7, &workload, OWN, &initial);
    let mut subscribed: BTreeSet<String> = BTreeSet::new();
    let mut version = 1;
    let mut snap = snapshot(version, 0, 0);
    let mut first = true;
    let mut nonces_seen = BTreeSet::new();
    let mut flooded = false;

    for op in ops.chunks_exact(2) {
        if flooded {
            break;
        }
        let (kind, arg) = (op[0], op[1]);
        let mut push = false;
        match kind % 8 {
            0 => {
                version += 1;
                snap = snapshot(version, arg & 15, arg >> 4 | (kind & 0x10));
                push = true;
            }
            1 | 2 => {
                let name = ASKED[usize::from(arg) % ASKED.len()];
                let mut req = pb::DiscoveryRequest::default();
                if kind % 8 == 1 {
                    req.subscribe.push(name.into());
                } else {
                    req.unsubscribe.push(name.into());
                }
                match ss.on_request(&req) {
                    Outcome::Refused(..) => {
                        assert!(kind % 8 == 1 && !OTHERS.contains(&name) && name != OWN, "refused {name:?}");
                        return;
                    }
                    Outcome::Subscribed => {
                        let changed =
                            if kind % 8 == 1 { subscribed.insert(name.into()) } else { subscribed.remove(name) };
                        assert!(changed, "{name:?} reported a change it did not make");
                        push = true;
                    }
                    Outcome::Stale => {
                        let unchanged =
                            if kind % 8 == 1 { subscribed.contains(name) } else { !subscribed.contains(name) };
                        assert!(unchanged, "a change to {name:?} went unreported");
                    }
                    other => panic!("a subscription answered {other:?}"),
                }
            }
            3 | 4 if !proxy.unanswered.is_empty() => {
                // Answer one response, usually the oldest (in order, as a proxy does).
                let i = if arg & 0x80 != 0 { usize::from(arg) % proxy.unanswered.len() } else { 0 };
                let r = proxy.unanswered.remove(i);
                let rejected: Vec<String> =
                    r.resources.iter().filter(|x| arg & 1 != 0 || x.name == OWN).map(|x| x.name.clone()).collect();
                let nack = kind % 8 == 4;
                let req = pb::DiscoveryRequest {
                    type_url: r.type_url.clone(),
                    response_nonce: r.nonce.clone(),
                    version_info: r.version_info.clone(),
                    error_detail: nack.then(|| pb::ErrorDetail { message: "no".into(), rejected: rejected.clone() }),
                    ..Default::default()
                };
                let carried = proxy.carried_own.contains(&r.nonce);
                let forgotten = proxy.forgotten.contains(&r.nonce);
                match ss.on_request(&req) {
                    Outcome::Ack { type_url, version, own_policy } => {
                        assert!(!nack && !forgotten, "{} answered as an ACK", r.nonce);
                        assert_eq!((type_url, version), (r.type_url.clone(), r.version_info.clone()));
                        let expected = r.type_url == types::SERVICE && (carried || proxy.holds_own_at_connect);
                        assert_eq!(own_policy, expected, "readiness from the ACK of {}", r.nonce);
                    }
                    Outcome::Nack { type_url, rejected: got, own_policy, .. } => {
                        assert!(nack && !forgotten, "{} answered as a NACK", r.nonce);
                        assert_eq!((type_url, got), (r.type_url.clone(), rejected.clone()));
                        let expected = r.type_url == types::SERVICE
                            && (proxy.holds_own_at_connect || carried && !rejected.iter().any(|n| n == OWN));
                        assert_eq!(own_policy, expected, "readiness from the NACK of {}", r.nonce);
                    }
                    Outcome::Stale => assert!(forgotten, "the answer to {} was taken as stale", r.nonce),
                    other => panic!("an answer to {} was taken as {other:?}", r.nonce),
                }
            }
            5 => {
                // A forged or replayed nonce, or a message with nothing in it.
                let nonce = match arg % 4 {
                    0 => String::new(),
                    1 => format!("7-{}", u64::from(arg) * 1000),
                    2 => format!("8-{}", arg >> 2),
                    _ => nonces_seen.iter().next().cloned().unwrap_or_default(),
                };
                let req = pb::DiscoveryRequest { response_nonce: nonce.clone(), ..Default::default() };
                let outcome = ss.on_request(&req);
                let still_open = proxy.unanswered.iter().any(|r| r.nonce == nonce) && !proxy.forgotten.contains(&nonce);
                assert_eq!(outcome == Outcome::Stale, !still_open, "nonce {nonce:?} answered {outcome:?}");
                if still_open {
                    proxy.unanswered.retain(|r| r.nonce != nonce);
                }
            }
            6 => {
                // Many subscriptions at once: past the cap the stream is refused, the state never
                // grows. The last operation (what follows would cost the cap's size per step).
                // Past the cap only from the top arguments: thousands of names cost milliseconds.
                let n = if arg >= 250 { usize::from(arg) * 40 } else { usize::from(arg % 16) };
                let names: Vec<String> = (0..n).map(|k| format!("flood/s{k}")).collect();
                let req = pb::DiscoveryRequest { subscribe: names.clone(), ..Default::default() };
                let outcome = ss.on_request(&req);
                subscribed.extend(names);
                assert_eq!(
                    matches!(outcome, Outcome::Refused(..)),
                    subscribed.len() > MAX_SUBSCRIPTIONS,
                    "{outcome:?}"
                );
                if subscribed.len() > MAX_SUBSCRIPTIONS {
                    return;
                }
                flooded = true;
                push = true;
            }
            7 => {
                holddown = false;
                push = true;
            }
            _ => {}
        }
        if !(push || first) {
            continue;
        }
        let responses = ss.diff(&snap, holddown);
        if first {
            let mut sent: Vec<&str> = responses.iter().map(|r| r.type_url.as_str()).collect();
            sent.dedup();
            assert_eq!(sent, types::ALL.to_vec(), "every type is sent at the start");
            first = false;
        }
        for r in &responses {
            assert!(nonces_seen.insert(r.nonce.clone()), "nonce {} sent twice", r.nonce);
            let t = type_of(&r.type_url);
            let want = wanted(t, &subscribed, transparent, &snap);
            for res in &r.resources {
                assert!(want.contains(&res.name), "sent {} {} the proxy did not ask for", t, res.name);
                let current = &snap.resources(t).expect("every type")[&res.name];
                assert_eq!(**current, *res, "sent a resource that is not the snapshot's");
            }
            // Only what the proxy held from before the restart is merged into; the rest is
            // authoritative at once.
            for res in r.resources.iter().filter(|_| r.merge) {
                let held = held_at_connect.get(t).is_some_and(|h| h.contains_key(&res.name));
                assert!(holddown && held, "{t} {} merged (hold-down {holddown}, held {held})", res.name);
            }
            proxy.apply(r);
        }
        // Bounded, whatever the proxy does: the unanswered responses it may still answer.
        assert!(ss.pending_responses() <= MAX_PENDING_RESPONSES);
        for t in types::ALL {
            let want = wanted(t, &subscribed, transparent, &snap);
            let current = snap.resources(t).expect("every type");
            let held = proxy.held.get(t).cloned().unwrap_or_default();
            let at_connect = held_at_connect.get(t).cloned().unwrap_or_default();
            for (name, v) in &held {
                let is_current = current.get(name).is_some_and(|r| match v {
                    Held::Version(v) => *v == r.version,
                    Held::Merged(_) => false,
                });
                if !holddown {
                    assert!(is_current && want.contains(name), "the proxy still holds {t} {name} {v:?}");
                }
            }
            for name in want.iter().filter(|n| current.contains_key(*n)) {
                let r = &current[name];
                let merged_in = held.get(name) == Some(&Held::Merged(r.version.clone()));
                let complete = held.get(name) == Some(&Held::Version(r.version.clone()));
                // While held down, a resource the proxy held may get a merge (or nothing if empty).
                let frozen = holddown && at_connect.contains_key(name) && t != types::SERVICE;
                let empty = r.version == "e0";
                assert!(complete || frozen && (merged_in || empty), "the proxy lacks {t} {name} {}", r.version);
            }
            if holddown {
                for name in at_connect.keys() {
                    assert!(held.contains_key(name), "{t} {name} removed during the hold-down");
                }
            }
        }
    }
}
