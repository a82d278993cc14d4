//! The discovery stream: one bidirectional stream per proxy. Each response carries the changed
//! resources of one type (delta semantics) and a nonce; the proxy ACKs or NACKs each nonce. A
//! session sends every type once at the start (readiness needs one ACK of each), then only what
//! changed among what this proxy subscribes to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_certs::{ServiceKey, SpiffeId};
use weft_proto::types;
use weft_proto::v1 as pb;

use crate::connections::PeerInfo;
use crate::kubernetes::Cluster;
use crate::registry::Registration;
use crate::snapshot::{is_directory_shard, Snapshot, DIRECTORY_SHARDS};
use crate::state::MeshState;

/// How long a new stream may take to send its first (registration) message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The services one proxy may subscribe to: a mesh's worth, while a proxy that asks for more
/// (buggy or hostile) cannot grow its session's state without bound.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

/// Responses a session remembers while the proxy has not answered them; an answer to an older
/// one is stale. A proxy answers each at once, so this only bounds one that never does.
pub const MAX_PENDING_RESPONSES: usize = 64;

/// Resources a reconnecting proxy may say it holds: what it may subscribe to, per type, its own
/// policy and the directory's shards.
const MAX_HELD_AT_CONNECT: usize = 2 * MAX_SUBSCRIPTIONS + 1 + DIRECTORY_SHARDS as usize;

/// What of a proxy's NACK is kept (state API, logs): a NACK may carry megabytes.
const MAX_NACK_MESSAGE_CHARS: usize = 512;
const MAX_NACK_NAMES: usize = 16;
/// A version string as ACKed (the controller's are decimal numbers).
const MAX_VERSION_CHARS: usize = 64;

/// At most `max` characters of `s`.
fn bounded(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Whether an endpoints or directory resource has no entries.
fn is_empty(r: &pb::Resource) -> bool {
    match &r.body {
        Some(pb::resource::Body::Endpoints(e)) => e.endpoints.is_empty(),
        Some(pb::resource::Body::Directory(d)) => d.entries.is_empty(),
        _ => false,
    }
}

/// The version a proxy holds after a merge of `version`: never equal to a real one.
fn merge_version(version: &str) -> String {
    format!("merged-{version}")
}

/// What a request from the proxy meant.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// `own_policy`: the proxy now holds a good policy for its own service.
    Ack {
        type_url: String,
        version: String,
        own_policy: bool,
    },
    Nack {
        type_url: String,
        message: String,
        rejected: Vec<String>,
        own_policy: bool,
    },
    /// The subscription changed: new resources may need sending.
    Subscribed,
    /// A nonce we did not send or no longer wait for (superseded); ignored.
    Stale,
    /// A report of the proxy's certificate expiry.
    CertExpiry(i64),
    /// The proxy is shutting down.
    Draining,
    /// The request breaks a limit: the stream ends with this status code and message; the reason
    /// is the refusal metric's label.
    Refused(&'static str, tonic::Code, String),
}

/// The per-stream protocol state, kept free of I/O so that it can be tested directly.
pub struct SessionState {
    session: u64,
    transparent: bool,
    /// `NS/NAME`.
    own_service: String,
    /// Services this proxy talks to (its `--upstream`s and what transparent mode discovered).
    subscriptions: BTreeSet<String>,
    /// What the proxy holds (or was sent), per type: name -> version.
    sent: HashMap<&'static str, BTreeMap<String, String>>,
    /// Names the proxy already held when it connected (it had a previous controller).
    held_at_connect: HashMap<&'static str, BTreeSet<String>>,
    unsent_types: BTreeSet<&'static str>,
    /// Responses awaiting an ACK or NACK, by nonce number: (type, whether it carried the own
    /// policy). The newest [`MAX_PENDING_RESPONSES`] only.
    pending: BTreeMap<u64, (&'static str, bool)>,
    nonces: u64,
}

impl SessionState {
    /// `own_service`: the workload's service, `NS/NAME`.
    pub fn new(
        session: u64,
        workload: &pb::Workload,
        own_service: &str,
        initial: &BTreeMap<String, pb::ResourceVersions>,
    ) -> Self {
        let mut sent = HashMap::new();
        let mut held_at_connect = HashMap::new();
        for t in types::ALL {
            let versions = initial.get(t).map(|v| v.versions.clone()).unwrap_or_default();
            held_at_connect.insert(t, versions.keys().cloned().collect());
            sent.insert(t, versions);
        }
        Self {
            session,
            transparent: workload.transparent,
            own_service: own_service.to_string(),
            subscriptions: BTreeSet::new(),
            sent,
            held_at_connect,
            unsent_types: types::ALL.into_iter().collect(),
            pending: BTreeMap::new(),
            nonces: 0,
        }
    }

    fn wants(&self, type_url: &str, name: &str) -> bool {
        match type_url {
            types::SERVICE => name == self.own_service || self.subscriptions.contains(name),
            types::ENDPOINTS => self.subscriptions.contains(name),
            types::DIRECTORY => self.transparent && is_directory_shard(name),
            _ => false,
        }
    }

    /// The names of a type this proxy wants, in name order. A diff looks up only these: walking
    /// every resource of the mesh instead made each snapshot cost O(services) per session, so a
    /// connect storm cost O(proxies² × services) (see `weft bench control-plane`). A transparent
    /// proxy wants every shard of the directory `current` has (at most [`DIRECTORY_SHARDS`]).
    fn wanted<'a>(&'a self, type_url: &str, current: &'a BTreeMap<String, Arc<pb::Resource>>) -> BTreeSet<&'a str> {
        match type_url {
            types::SERVICE => {
                self.subscriptions.iter().map(String::as_str).chain([self.own_service.as_str()]).collect()
            }
            types::ENDPOINTS => self.subscriptions.iter().map(String::as_str).collect(),
            types::DIRECTORY if self.transparent => {
                current.keys().map(String::as_str).filter(|n| is_directory_shard(n)).collect()
            }
            _ => BTreeSet::new(),
        }
    }

    /// The responses that bring the proxy up to `snap`. While the restart hold-down is in force,
    /// resources the proxy held before are not removed, and registry-derived ones (endpoints,
    /// directory) are only added to (a `merge` response): the proxies they describe may not have
    /// reconnected yet, while new ones are announced at once. The authoritative sets follow when
    /// the hold-down ends.
    pub fn diff(&mut self, snap: &Snapshot, holddown: bool) -> Vec<pb::DiscoveryResponse> {
        let mut out = Vec::new();
        for t in types::ALL {
            let empty = BTreeMap::new();
            let current = snap.resources(t).unwrap_or(&empty);
            let held = &self.held_at_connect[t];
            let frozen = |name: &str| holddown && held.contains(name);
            let sent = &self.sent[t];
            // Held resources are merged into (a response of their own); everything else is
            // authoritative at once, even during the hold-down.
            let (mut full, mut merges) = (Vec::new(), Vec::new());
            for (name, r) in self.wanted(t, current).into_iter().filter_map(|n| current.get_key_value(n)) {
                if sent.get(name) == Some(&r.version) {
                    continue;
                }
                if frozen(name) && t != types::SERVICE {
                    // A merge adds entries: an empty set adds nothing, and one merged already
                    // needs no repeat.
                    if !is_empty(r) && sent.get(name) != Some(&merge_version(&r.version)) {
                        merges.push((**r).clone());
                    }
                } else {
                    full.push((**r).clone());
                }
            }
            let removed: Vec<String> = sent
                .keys()
                .filter(|name| !(frozen(name) || current.contains_key(*name) && self.wants(t, name)))
                .cloned()
                .collect();
            let first = self.unsent_types.remove(t);
            let sent = self.sent.get_mut(t).expect("every type has a map");
            for r in &full {
                sent.insert(r.name.clone(), r.version.clone());
            }
            for r in &merges {
                // What a merge leaves at the proxy is not that version: the full set is due later.
                sent.insert(r.name.clone(), merge_version(&r.version));
            }
            for name in &removed {
                sent.remove(name);
            }
            if !merges.is_empty() {
                out.push(self.response(t, snap.version, merges, Vec::new(), true));
            }
            // Every type once at the start, even with nothing in it: readiness needs its ACK.
            if !full.is_empty() || !removed.is_empty() || first && out.last().is_none_or(|r| r.type_url != t) {
                out.push(self.response(t, snap.version, full, removed, false));
            }
        }
        out
    }

    /// One response, remembered until the proxy answers it (the newest
    /// [`MAX_PENDING_RESPONSES`] only).
    fn response(
        &mut self,
        t: &'static str,
        version: u64,
        resources: Vec<pb::Resource>,
        removed: Vec<String>,
        merge: bool,
    ) -> pb::DiscoveryResponse {
        self.nonces += 1;
        let carries_own = t == types::SERVICE && resources.iter().any(|r| r.name == self.own_service);
        self.pending.insert(self.nonces, (t, carries_own));
        if self.pending.len() > MAX_PENDING_RESPONSES {
            self.pending.pop_first();
        }
        pb::DiscoveryResponse {
            type_url: t.to_string(),
            version_info: version.to_string(),
            nonce: format!("{}-{}", self.session, self.nonces),
            resources,
            removed,
            merge,
        }
    }

    /// Responses sent and not yet answered that an answer would still match.
    pub fn pending_responses(&self) -> usize {
        self.pending.len()
    }

    /// The nonce number of one of this session's nonces (`SESSION-N`).
    fn nonce_number(&self, nonce: &str) -> Option<u64> {
        let (session, n) = nonce.split_once('-')?;
        (session.parse() == Ok(self.session)).then(|| n.parse().ok())?
    }

    /// Applies one request from the proxy.
    pub fn on_request(&mut self, req: &pb::DiscoveryRequest) -> Outcome {
        // Every name is a service key, and the whole request fits the cap, or none of it applies.
        let mut new = BTreeSet::new();
        for name in &req.subscribe {
            let valid = name.split_once('/').is_some_and(|(ns, n)| ServiceKey::new(ns, n).is_ok());
            if !valid {
                let shown: String = name.chars().take(64).collect();
                return Outcome::Refused(
                    "invalid-subscription",
                    tonic::Code::InvalidArgument,
                    format!("{shown:?} is not a service (NS/NAME)"),
                );
            }
            if !self.subscriptions.contains(name) {
                new.insert(name);
            }
        }
        if self.subscriptions.len() + new.len() > MAX_SUBSCRIPTIONS {
            return Outcome::Refused(
                "too-many-subscriptions",
                tonic::Code::ResourceExhausted,
                format!("a proxy may subscribe to {MAX_SUBSCRIPTIONS} services at most"),
            );
        }
        let mut subscribed = false;
        for name in &req.subscribe {
            subscribed |= self.subscriptions.insert(name.clone());
        }
        for name in &req.unsubscribe {
            subscribed |= self.subscriptions.remove(name);
        }
        if !req.response_nonce.is_empty() {
            let pending = self.nonce_number(&req.response_nonce).and_then(|n| self.pending.remove(&n));
            let Some((t, carries_own)) = pending else {
                return Outcome::Stale;
            };
            // The proxy holds its own policy if it held one when it connected, or this response
            // brought one and it was not the resource rejected.
            let held_own = t == types::SERVICE && self.held_at_connect[types::SERVICE].contains(&self.own_service);
            return match &req.error_detail {
                Some(e) => Outcome::Nack {
                    type_url: t.to_string(),
                    message: bounded(&e.message, MAX_NACK_MESSAGE_CHARS),
                    rejected: e
                        .rejected
                        .iter()
                        .take(MAX_NACK_NAMES)
                        .map(|n| bounded(n, MAX_NACK_MESSAGE_CHARS))
                        .collect(),
                    own_policy: held_own || (carries_own && !e.rejected.contains(&self.own_service)),
                },
                None => Outcome::Ack {
                    type_url: t.to_string(),
                    version: bounded(&req.version_info, MAX_VERSION_CHARS),
                    own_policy: held_own || carries_own,
                },
            };
        }
        if req.draining {
            return Outcome::Draining;
        }
        if subscribed {
            return Outcome::Subscribed;
        }
        if req.cert_expires_at_unix_ms != 0 {
            return Outcome::CertExpiry(req.cert_expires_at_unix_ms);
        }
        Outcome::Stale
    }
}

pub struct DiscoveryService {
    pub state: Arc<MeshState>,
    /// Kubernetes mode: registrations are bound to the pod they name.
    pub kubernetes: Option<Arc<Cluster>>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::DiscoveryResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::discovery_server::Discovery for DiscoveryService {
    type StreamStream = ResponseStream;

    async fn stream(
        &self,
        request: Request<Streaming<pb::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let Some(PeerInfo { addr, identity: Some(identity), provenance }) = peer else {
            return Err(Status::unauthenticated("the discovery stream requires the proxy's workload certificate"));
        };
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return Err(Status::cancelled("stream closed before registering")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Status::deadline_exceeded("no registration message")),
        };
        let workload = first
            .workload
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first message must carry the workload"))?;
        let state = self.state.clone();
        let refuse = |reason: &'static str, status: Status| {
            state.metrics.registrations_refused.with(&[reason]).inc();
            weft_telemetry::log_limit::warn("registration-refused", || {
                format!("registration from {addr} ({identity}) refused: {}", status.message())
            });
            status
        };
        if let Some(token) = provenance.as_ref().map(|p| p.token_id.as_str()).filter(|t| state.is_revoked(t)) {
            return Err(refuse("revoked", Status::permission_denied(format!("join token {token} was revoked"))));
        }
        if workload.attest_address {
            return attest(&state, &identity, &workload, addr).map_err(|s| refuse("attest", s));
        }
        let (service, inbound_addr) =
            check_registration(&identity, &workload, &state.trust_domain(), addr).map_err(|s| refuse("invalid", s))?;
        let bound = provenance.as_ref().and_then(|p| p.instance.clone());
        if let Some(i) = bound.as_deref().filter(|i| *i != workload.instance) {
            return Err(refuse(
                "instance-bound",
                Status::permission_denied(format!(
                    "this certificate is bound to instance {i:?} (its join token's, or its pod), not {:?}",
                    workload.instance
                )),
            ));
        }
        if let Some(k) = &self.kubernetes {
            k.registration(&identity, &workload, addr.ip()).await.map_err(|(reason, s)| refuse(reason, s))?;
        }
        // A pod-bound certificate (Kubernetes mode) is one pod already: a newer stream of it takes
        // over, as for unbound tokens; a token bound to an instance admits one live stream.
        let exclusive = bound.is_some() && self.kubernetes.is_none();

        let held: usize = first.initial_versions.values().map(|v| v.versions.len()).sum();
        if held > MAX_HELD_AT_CONNECT {
            return Err(refuse(
                "too-many-subscriptions",
                Status::resource_exhausted(format!("{held} resources said to be held: {MAX_HELD_AT_CONNECT} at most")),
            ));
        }
        let session = state.new_session();
        let mut ss = SessionState::new(session, &workload, &service, &first.initial_versions);
        if let Outcome::Refused(reason, code, message) = ss.on_request(&first) {
            return Err(refuse(reason, Status::new(code, message)));
        }
        let reg = Registration {
            identity: identity.clone(),
            service: service.clone(),
            workload: workload.clone(),
            inbound: inbound_addr,
        };
        let token_id = provenance.map(|p| p.token_id);
        let (closed, admitted) = state
            .connect(session, reg, addr.to_string(), first.cert_expires_at_unix_ms, token_id, exclusive)
            .map_err(|e| {
                weft_telemetry::log_limit::warn("registration-refused", || {
                    format!("registration from {addr} ({identity}) refused: {e}")
                });
                Status::resource_exhausted(e.to_string())
            })?;
        if !admitted.dropped_ports.is_empty() {
            tracing::warn!(
                %identity, instance = %workload.instance, ports = ?admitted.dropped_ports,
                "app ports left out of the registration: another identity holds them on this IP"
            );
        }
        tracing::info!(
            %service, instance = %workload.instance, address = %inbound_addr, %identity, peer = %addr, "proxy connected"
        );
        // Boxed: tokio allocates a channel's slots 32 at a time whatever its bound, and a
        // response inline is ~130 bytes: 4 KiB per connected proxy, for nothing in flight.
        let (tx, rx) = mpsc::channel::<Result<Box<pb::DiscoveryResponse>, Status>>(16);
        tokio::spawn(async move {
            run_session(&state, session, &mut ss, inbound, tx, closed).await;
            state.disconnect(session);
            tracing::info!(%service, instance = %workload.instance, "proxy disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(|r| r.map(|b| *b)))))
    }
}

/// A stream that only proves the registered workload also owns its source IP (the other family of
/// a dual-stack pod): recorded, and the stream ends at once.
fn attest(
    state: &MeshState,
    identity: &SpiffeId,
    w: &pb::Workload,
    addr: SocketAddr,
) -> Result<Response<ResponseStream>, Status> {
    let claimed = SpiffeId::new(&state.trust_domain(), &w.namespace, &w.service)
        .map_err(|e| Status::invalid_argument(format!("invalid workload: {e}")))?;
    if &claimed != identity {
        return Err(Status::permission_denied(format!(
            "attestation for {claimed} refused: the certificate is for {identity}"
        )));
    }
    let ip = addr.ip().to_canonical();
    if state.attest_ip(identity, &w.instance, ip) {
        tracing::info!(%identity, instance = %w.instance, %ip, "workload proved a further address");
    }
    let (_tx, rx) = mpsc::channel(1);
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// The registration must be for exactly the identity in the client certificate, from the address
/// it registers, with app ports that are ports and not the proxy's own. Returns the service key and
/// the inbound address.
pub(crate) fn check_registration(
    identity: &SpiffeId,
    w: &pb::Workload,
    trust_domain: &str,
    source: SocketAddr,
) -> Result<(String, SocketAddr), Status> {
    let claimed = SpiffeId::new(trust_domain, &w.namespace, &w.service)
        .map_err(|e| Status::invalid_argument(format!("invalid workload: {e}")))?;
    if &claimed != identity {
        return Err(Status::permission_denied(format!(
            "registration for {claimed} refused: the client certificate is for {identity}"
        )));
    }
    let key = ServiceKey::new(&w.namespace, &w.service).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if !weft_certs::provenance::valid_instance(&w.instance) {
        return Err(Status::invalid_argument(format!("instance name {:?} is empty or invalid", w.instance)));
    }
    let addr: SocketAddr = w
        .inbound_address
        .parse()
        .map_err(|_| Status::invalid_argument(format!("inbound address {:?} is not IP:port", w.inbound_address)))?;
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(Status::invalid_argument(format!("inbound address {addr} cannot be dialled")));
    }
    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
    if addr.ip() != source.ip().to_canonical() {
        return Err(Status::permission_denied(format!(
            "a workload registers the address it connects from: this stream comes from {}, not {} \
             (leave --advertise-addr unset, or set it to this host's address towards the controller)",
            source.ip().to_canonical(),
            addr.ip()
        )));
    }
    for p in &w.app_ports {
        if *p == 0 || *p > 65535 {
            return Err(Status::invalid_argument(format!("app port {p} is not a port")));
        }
        if *p == u32::from(addr.port()) || w.proxy_ports.contains(p) {
            return Err(Status::invalid_argument(format!("app port {p} is one of the proxy's own ports")));
        }
    }
    Ok((key.to_string(), addr))
}

async fn run_session(
    state: &MeshState,
    session: u64,
    ss: &mut SessionState,
    mut inbound: Streaming<pb::DiscoveryRequest>,
    tx: mpsc::Sender<Result<Box<pb::DiscoveryResponse>, Status>>,
    mut closed: tokio::sync::watch::Receiver<Option<String>>,
) {
    let mut snaps = state.snapshots();
    let holddown_end = state.started + state.settings.restart_holddown;
    let holddown_timer = tokio::time::sleep_until(holddown_end);
    tokio::pin!(holddown_timer);
    let mut holddown_over = !state.holddown_active(Instant::now());

    let push = |ss: &mut SessionState, snap: &Snapshot, holddown: bool| {
        let responses = ss.diff(snap, holddown);
        for r in &responses {
            state.metrics.pushes.with(&[short_type(&r.type_url)]).inc();
        }
        responses
    };

    let snap = snaps.borrow_and_update().clone();
    for r in push(ss, &snap, !holddown_over) {
        if tx.send(Ok(Box::new(r))).await.is_err() {
            return;
        }
    }
    loop {
        let responses = tokio::select! {
            msg = inbound.message() => {
                let req = match msg {
                    Ok(Some(req)) => {
                        tracing::debug!(
                            session, type_url = %req.type_url, nonce = %req.response_nonce, subscribe = ?req.subscribe,
                            "discovery request"
                        );
                        req
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(session, "discovery stream ended: {e}");
                        return;
                    }
                };
                match ss.on_request(&req) {
                    Outcome::Ack { type_url, version, own_policy } => {
                        state.update_session(session, |s| {
                            s.nacked.remove(&type_url);
                            s.acked.insert(type_url, version);
                        });
                        if own_policy {
                            state.set_ready(session);
                        }
                        continue;
                    }
                    Outcome::Nack { type_url, message, rejected, own_policy } => {
                        if own_policy {
                            state.set_ready(session);
                        }
                        tracing::warn!(session, %type_url, ?rejected, "proxy rejected resources: {message}");
                        state.metrics.nacks.with(&[short_type(&type_url)]).inc();
                        state.update_session(session, |s| {
                            s.nacked.insert(type_url, format!("{message} (rejected: {})", rejected.join(", ")));
                        });
                        continue;
                    }
                    Outcome::Draining => {
                        tracing::info!(session, "proxy draining: its endpoint is withdrawn");
                        state.withdraw(session);
                        continue;
                    }
                    Outcome::CertExpiry(ms) => {
                        state.update_session(session, |s| s.cert_expires_at_unix_ms = ms);
                        continue;
                    }
                    Outcome::Stale => continue,
                    Outcome::Refused(reason, code, message) => {
                        state.metrics.registrations_refused.with(&[reason]).inc();
                        weft_telemetry::log_limit::warn("discovery-refused", || {
                            format!("session {session}: discovery stream refused: {message}")
                        });
                        let _ = tx.send(Err(Status::new(code, message))).await;
                        return;
                    }
                    Outcome::Subscribed => {
                        tracing::debug!(session, subscribe = ?req.subscribe, "subscription changed");
                        let snap = snaps.borrow().clone();
                        push(ss, &snap, !holddown_over)
                    }
                }
            }
            changed = snaps.changed() => {
                if changed.is_err() {
                    return;
                }
                let snap = snaps.borrow_and_update().clone();
                push(ss, &snap, !holddown_over)
            }
            reason = async { closed.wait_for(Option::is_some).await.map(|r| r.clone()).ok().flatten() } => {
                let _ = tx.send(Err(Status::permission_denied(reason.unwrap_or_default()))).await;
                return;
            }
            _ = &mut holddown_timer, if !holddown_over => {
                holddown_over = true;
                let snap = snaps.borrow().clone();
                push(ss, &snap, false)
            }
        };
        for r in responses {
            if tx.send(Ok(Box::new(r))).await.is_err() {
                return;
            }
        }
    }
}

fn short_type(type_url: &str) -> &'static str {
    match type_url {
        types::SERVICE => "service",
        types::ENDPOINTS => "endpoints",
        types::DIRECTORY => "directory",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::MeshConfig;
    use crate::registry::Registry;

    fn workload(service: &str, instance: &str, addr: &str) -> pb::Workload {
        pb::Workload {
            service: service.into(),
            namespace: "default".into(),
            instance: instance.into(),
            inbound_address: addr.into(),
            app_ports: vec![8080],
            ..Default::default()
        }
    }

    fn snapshot(version: u64, mesh: &str, workloads: &[pb::Workload]) -> Snapshot {
        let mesh = MeshConfig::parse(mesh).unwrap();
        let mut reg = Registry::default();
        for (i, w) in workloads.iter().enumerate() {
            let identity = SpiffeId::new("weft.local", &w.namespace, &w.service).unwrap();
            let r = Registration {
                identity: identity.clone(),
                service: format!("{}/{}", w.namespace, w.service),
                workload: w.clone(),
                inbound: w.inbound_address.parse().unwrap(),
            };
            reg.connect(r, i as u64, 100, false).unwrap();
            reg.set_ready(&identity, &w.instance, i as u64);
        }
        Snapshot::build(version, &mesh, reg.iter())
    }

    fn session(id: u64, w: &pb::Workload, initial: &BTreeMap<String, pb::ResourceVersions>) -> SessionState {
        SessionState::new(id, w, &format!("{}/{}", w.namespace, w.service), initial)
    }

    fn subscribe(name: &str) -> pb::DiscoveryRequest {
        pb::DiscoveryRequest { subscribe: vec![format!("default/{name}")], ..Default::default() }
    }

    const MESH: &str = "trust_domain: weft.local\nservices:\n  bar: {timeout: 1s}\n  baz: {}\n";

    fn ack(r: &pb::DiscoveryResponse) -> pb::DiscoveryRequest {
        pb::DiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            version_info: r.version_info.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn every_type_is_sent_once_at_start_even_when_empty() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let mut ss = session(1, &foo, &BTreeMap::new());
        let out = ss.diff(&snapshot(1, MESH, std::slice::from_ref(&foo)), false);
        let types: Vec<_> = out.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, types::ALL.to_vec());
        // Only its own service's policy; no endpoints or directory until it subscribes.
        assert_eq!(out[1].resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["default/foo"]);
        assert!(out[0].resources.is_empty());
        assert!(out[2].resources.is_empty());
        // Nothing changed: nothing more to send.
        assert!(ss.diff(&snapshot(2, MESH, &[foo]), false).is_empty());
    }

    #[test]
    fn subscribing_sends_only_what_the_proxy_uses_and_then_only_changes() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let bar1 = workload("bar", "bar-1", "127.0.0.1:4144");
        let bar2 = workload("bar", "bar-2", "127.0.0.1:4145");
        let mut ss = session(1, &foo, &BTreeMap::new());
        ss.diff(&snapshot(1, MESH, &[foo.clone(), bar1.clone()]), false);
        let sub = subscribe("bar");
        assert_eq!(ss.on_request(&sub), Outcome::Subscribed);
        let out = ss.diff(&snapshot(1, MESH, &[foo.clone(), bar1.clone()]), false);
        assert_eq!(out.len(), 2, "bar's endpoints and policy");
        // baz changes: foo does not use it, so nothing is sent.
        let changed_baz = MESH.replace("baz: {}", "baz: {timeout: 3s}");
        assert!(ss.diff(&snapshot(2, &changed_baz, &[foo.clone(), bar1.clone()]), false).is_empty());
        // A second bar instance: only the endpoints move.
        let out = ss.diff(&snapshot(3, &changed_baz, &[foo, bar1, bar2]), false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].type_url, types::ENDPOINTS);
        match &out[0].resources[0].body {
            Some(pb::resource::Body::Endpoints(e)) => assert_eq!(e.endpoints.len(), 2),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn acks_and_nacks_are_matched_by_nonce() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let mut ss = session(1, &foo, &BTreeMap::new());
        let out = ss.diff(&snapshot(7, MESH, &[foo]), false);
        assert_eq!(
            ss.on_request(&ack(&out[0])),
            Outcome::Ack { type_url: out[0].type_url.clone(), version: "7".into(), own_policy: false }
        );
        // The same nonce twice is stale.
        assert_eq!(ss.on_request(&ack(&out[0])), Outcome::Stale);
        let mut nack = ack(&out[1]);
        nack.error_detail = Some(pb::ErrorDetail { message: "bad".into(), rejected: vec!["default/foo".into()] });
        assert_eq!(
            ss.on_request(&nack),
            Outcome::Nack {
                type_url: out[1].type_url.clone(),
                message: "bad".into(),
                rejected: vec!["default/foo".into()],
                own_policy: false,
            }
        );
        let unknown = pb::DiscoveryRequest { response_nonce: "nope".into(), ..Default::default() };
        assert_eq!(ss.on_request(&unknown), Outcome::Stale);
    }

    #[test]
    fn what_a_proxy_reports_is_kept_bounded() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let mut ss = session(1, &foo, &BTreeMap::new());
        let out = ss.diff(&snapshot(1, MESH, std::slice::from_ref(&foo)), false);
        let mut nack = ack(&out[1]);
        nack.error_detail =
            Some(pb::ErrorDetail { message: "é".repeat(1 << 20), rejected: vec!["x".repeat(4096); 1000] });
        match ss.on_request(&nack) {
            Outcome::Nack { message, rejected, .. } => {
                assert_eq!(message.chars().count(), MAX_NACK_MESSAGE_CHARS);
                assert_eq!(rejected.len(), MAX_NACK_NAMES);
                assert!(rejected.iter().all(|n| n.len() == MAX_NACK_MESSAGE_CHARS));
            }
            other => panic!("{other:?}"),
        }
        let mut long_ack = ack(&out[0]);
        long_ack.version_info = "9".repeat(1 << 20);
        match ss.on_request(&long_ack) {
            Outcome::Ack { version, .. } => assert_eq!(version.len(), MAX_VERSION_CHARS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_nacked_resource_is_not_resent_until_it_changes() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let mut ss = session(1, &foo, &BTreeMap::new());
        let out = ss.diff(&snapshot(1, MESH, std::slice::from_ref(&foo)), false);
        let mut nack = ack(&out[1]);
        nack.error_detail = Some(pb::ErrorDetail { message: "bad".into(), rejected: vec!["default/foo".into()] });
        ss.on_request(&nack);
        assert!(ss.diff(&snapshot(2, MESH, std::slice::from_ref(&foo)), false).is_empty());
        let changed = format!("{MESH}  foo: {{timeout: 9s}}\n");
        let out = ss.diff(&snapshot(3, &changed, &[foo]), false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].resources[0].name, "default/foo");
    }

    #[test]
    fn reconnect_with_held_versions_sends_only_differences() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let bar1 = workload("bar", "bar-1", "127.0.0.1:4144");
        let snap = snapshot(1, MESH, &[foo.clone(), bar1.clone()]);
        // What a first session delivered...
        let mut first = session(1, &foo, &BTreeMap::new());
        first.on_request(&subscribe("bar"));
        first.diff(&snap, false);
        let initial: BTreeMap<String, pb::ResourceVersions> =
            first.sent.iter().map(|(t, v)| (t.to_string(), pb::ResourceVersions { versions: v.clone() })).collect();
        // ...is reported by the proxy on reconnect: each type is still answered once (for
        // readiness), but with nothing in it.
        let mut second = session(2, &foo, &initial);
        second.on_request(&subscribe("bar"));
        let out = second.diff(&snap, false);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|r| r.resources.is_empty() && r.removed.is_empty()), "{out:?}");
    }

    /// foo's session with a restarted controller, subscribed to bar, having held bar (with
    /// `bar1` its one instance) and its own policy before the restart.
    fn reconnected_holding_bar(foo: &pb::Workload, bar1: &pb::Workload) -> SessionState {
        let mut first = session(1, foo, &BTreeMap::new());
        first.on_request(&subscribe("bar"));
        first.diff(&snapshot(1, MESH, &[foo.clone(), bar1.clone()]), false);
        let initial: BTreeMap<String, pb::ResourceVersions> =
            first.sent.iter().map(|(t, v)| (t.to_string(), pb::ResourceVersions { versions: v.clone() })).collect();
        let mut ss = session(2, foo, &initial);
        ss.on_request(&subscribe("bar"));
        ss
    }

    #[test]
    fn holddown_keeps_endpoints_the_proxy_held_until_it_ends() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let bar1 = workload("bar", "bar-1", "127.0.0.1:4144");
        // A restarted controller has not heard from bar yet.
        let after_restart = snapshot(1, MESH, std::slice::from_ref(&foo));
        let mut ss = reconnected_holding_bar(&foo, &bar1);
        let out = ss.diff(&after_restart, true);
        assert!(out.iter().all(|r| r.removed.is_empty()), "held endpoints stay: {out:?}");
        assert!(out.iter().all(|r| r.resources.is_empty() || r.merge), "only merges during hold-down: {out:?}");
        // bar reconnects during the hold-down: the content is the same again, nothing to send.
        let back = snapshot(2, MESH, &[foo.clone(), bar1]);
        assert!(ss.diff(&back, true).is_empty());
        // Hold-down over, bar never came back: now the endpoints go.
        let out = ss.diff(&after_restart, false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].type_url, types::ENDPOINTS);
    }

    #[test]
    fn during_the_holddown_a_new_endpoint_is_added_at_once_and_the_held_ones_stay() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let bar1 = workload("bar", "bar-1", "127.0.0.1:4144");
        let bar2 = workload("bar", "bar-2", "127.0.0.2:4144");
        // After a restart, a new bar instance registers before bar-1 reconnects.
        let mut ss = reconnected_holding_bar(&foo, &bar1);
        let out = ss.diff(&snapshot(2, MESH, &[foo.clone(), bar2.clone()]), true);
        let eps = out.iter().find(|r| r.type_url == types::ENDPOINTS).expect("the new endpoint is sent at once");
        assert!(eps.merge && eps.removed.is_empty());
        match &eps.resources[0].body {
            Some(pb::resource::Body::Endpoints(e)) => assert_eq!(e.endpoints[0].instance, "bar-2"),
            other => panic!("{other:?}"),
        }
        // When the hold-down ends, the authoritative set replaces the merged one.
        let out = ss.diff(&snapshot(3, MESH, &[foo, bar2]), false);
        assert_eq!(out.len(), 1);
        assert!(!out[0].merge);
    }

    #[test]
    fn during_the_holddown_a_service_the_proxy_did_not_hold_is_replaced_not_merged() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let bar1 = workload("bar", "bar-1", "127.0.0.1:4144");
        let bar2 = workload("bar", "bar-2", "127.0.0.2:4144");
        let baz = |i: u8| workload("baz", &format!("baz-{i}"), &format!("127.0.1.{i}:4144"));
        // After a restart the proxy also calls baz, which it never held; bar is held.
        let mut ss = reconnected_holding_bar(&foo, &bar1);
        ss.on_request(&subscribe("baz"));
        ss.diff(&snapshot(2, MESH, &[foo.clone(), baz(1), baz(2)]), true);
        // In one change, a new bar instance (merged into the held set) and a baz instance leaving:
        // baz's set is authoritative, in a response of its own, so the departure is not held back.
        let out = ss.diff(&snapshot(3, MESH, &[foo.clone(), bar2, baz(1)]), true);
        let eps: Vec<_> = out.iter().filter(|r| r.type_url == types::ENDPOINTS).collect();
        assert_eq!(eps.len(), 2, "{out:?}");
        let names = |r: &pb::DiscoveryResponse| r.resources.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
        assert!(eps[0].merge && names(eps[0]) == ["default/bar"]);
        assert!(!eps[1].merge && names(eps[1]) == ["default/baz"]);
    }

    #[test]
    fn registration_must_match_the_certificate_and_the_source_address() {
        let id: SpiffeId = "spiffe://weft.local/ns/default/sa/foo".parse().unwrap();
        let src: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let (key, addr) = check_registration(&id, &workload("foo", "i", "127.0.0.1:4143"), "weft.local", src).unwrap();
        assert_eq!((key.as_str(), addr), ("default/foo", "127.0.0.1:4143".parse().unwrap()));
        let err = check_registration(&id, &workload("bar", "i", "127.0.0.1:4143"), "weft.local", src).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(check_registration(&id, &workload("foo", "i", "0.0.0.0:4143"), "weft.local", src).is_err());
        assert!(check_registration(&id, &workload("foo", "", "127.0.0.1:4143"), "weft.local", src).is_err());
        // Another host's address: refused.
        let err = check_registration(&id, &workload("foo", "i", "127.0.0.2:4143"), "weft.local", src).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        // An IPv4-mapped source is the same host.
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:50000".parse().unwrap();
        assert!(check_registration(&id, &workload("foo", "i", "127.0.0.1:4143"), "weft.local", mapped).is_ok());
        // App ports: ports, and not the proxy's own.
        let mut w = workload("foo", "i", "127.0.0.1:4143");
        w.app_ports = vec![70000];
        assert!(check_registration(&id, &w, "weft.local", src).is_err());
        w.app_ports = vec![4143];
        assert!(check_registration(&id, &w, "weft.local", src).is_err());
        w.app_ports = vec![4191];
        w.proxy_ports = vec![4191];
        assert!(check_registration(&id, &w, "weft.local", src).is_err());
    }

    #[test]
    fn the_own_policy_is_held_once_its_response_is_acked() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let mut ss = session(1, &foo, &BTreeMap::new());
        let out = ss.diff(&snapshot(1, MESH, std::slice::from_ref(&foo)), false);
        let service = out.iter().find(|r| r.type_url == types::SERVICE).unwrap();
        let endpoints = out.iter().find(|r| r.type_url == types::ENDPOINTS).unwrap();
        assert!(matches!(ss.on_request(&ack(endpoints)), Outcome::Ack { own_policy: false, .. }));
        assert!(matches!(ss.on_request(&ack(service)), Outcome::Ack { own_policy: true, .. }));
        // A NACK that rejects only another service still leaves the own policy held.
        let mut ss = session(2, &foo, &BTreeMap::new());
        ss.on_request(&subscribe("bar"));
        let out = ss.diff(&snapshot(1, MESH, std::slice::from_ref(&foo)), false);
        let service = out.iter().find(|r| r.type_url == types::SERVICE).unwrap();
        let mut nack = ack(service);
        nack.error_detail = Some(pb::ErrorDetail { message: "bad".into(), rejected: vec!["default/bar".into()] });
        assert!(matches!(ss.on_request(&nack), Outcome::Nack { own_policy: true, .. }));
    }

    #[test]
    fn a_workload_is_announced_only_once_ready() {
        let mesh = MeshConfig::parse(MESH).unwrap();
        let mut reg = Registry::default();
        let id = SpiffeId::new("weft.local", "default", "bar").unwrap();
        let w = workload("bar", "bar-1", "127.0.0.1:4144");
        let r = Registration {
            identity: id.clone(),
            service: "default/bar".into(),
            workload: w,
            inbound: "127.0.0.1:4144".parse().unwrap(),
        };
        reg.connect(r, 1, 100, false).unwrap();
        let endpoints = |reg: &Registry| match &Snapshot::build(1, &mesh, reg.iter())
            .resources(types::ENDPOINTS)
            .unwrap()["default/bar"]
            .body
        {
            Some(pb::resource::Body::Endpoints(e)) => e.endpoints.len(),
            _ => panic!(),
        };
        assert_eq!(endpoints(&reg), 0);
        reg.set_ready(&id, "bar-1", 1);
        assert_eq!(endpoints(&reg), 1);
    }

    #[test]
    fn services_of_the_same_name_in_two_namespaces_never_mix() {
        let mesh = MeshConfig::parse("trust_domain: weft.local\nservices:\n  bar: {}\n  evil/bar: {}\n").unwrap();
        let mut reg = Registry::default();
        for (ns, addr) in [("default", "127.0.0.1:4144"), ("evil", "127.0.0.2:4144")] {
            let id = SpiffeId::new("weft.local", ns, "bar").unwrap();
            let mut w = workload("bar", "b", addr);
            w.namespace = ns.into();
            let r = Registration {
                identity: id.clone(),
                service: format!("{ns}/bar"),
                workload: w,
                inbound: addr.parse().unwrap(),
            };
            reg.connect(r, 1, 100, false).unwrap();
            reg.set_ready(&id, "b", 1);
        }
        let snap = Snapshot::build(1, &mesh, reg.iter());
        for (key, addr) in [("default/bar", "127.0.0.1:4144"), ("evil/bar", "127.0.0.2:4144")] {
            match &snap.resources(types::ENDPOINTS).unwrap()[key].body {
                Some(pb::resource::Body::Endpoints(e)) => {
                    assert_eq!(e.endpoints.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(), [addr]);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_directory_keeps_the_first_owner_of_an_address() {
        let mesh = MeshConfig::parse(MESH).unwrap();
        let mut reg = Registry::default();
        let mut add = |sa: &str, addr: &str, transparent: bool, ports: &[u32], session: u64| {
            let id = SpiffeId::new("weft.local", "default", sa).unwrap();
            let mut w = workload(sa, sa, addr);
            w.transparent = transparent;
            w.app_ports = ports.to_vec();
            let r = Registration {
                identity: id.clone(),
                service: format!("default/{sa}"),
                workload: w,
                inbound: addr.parse().unwrap(),
            };
            let admitted = reg.connect(r, session, 100, false);
            reg.set_ready(&id, sa, session);
            admitted
        };
        // An explicit workload on a shared host holds its app port...
        add("foo", "10.0.0.2:4160", false, &[9090], 1).unwrap();
        // ...and the transparent pod that registers later owns every other port of its IP.
        add("bar", "10.0.0.2:4143", true, &[], 2).unwrap();
        // A third workload from the same IP (a process beside the app with its own proxy) can take
        // nothing: the pod's ports are bar's.
        assert!(add("evil", "10.0.0.2:4150", false, &[8080], 3).is_err());
        let snap = Snapshot::build(1, &mesh, reg.iter());
        let dir = snap.directory();
        let get = |a: &str| dir.get(a).cloned();
        assert_eq!(get("10.0.0.2").as_deref(), Some("default/bar"));
        assert_eq!(get("10.0.0.2:9090").as_deref(), Some("default/foo"));
        assert_eq!(get("10.0.0.2:8080"), None);
    }

    #[test]
    fn subscriptions_must_name_services_and_stay_under_the_cap() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let mut ss = session(1, &foo, &BTreeMap::new());
        for bad in ["bar", "", "default/", "a/b/c", "default/bär"] {
            let req = pb::DiscoveryRequest { subscribe: vec![bad.into()], ..Default::default() };
            assert!(matches!(ss.on_request(&req), Outcome::Refused("invalid-subscription", _, _)), "{bad:?}");
        }
        let names = |from: usize, n: usize| (from..from + n).map(|i| format!("default/s{i}")).collect::<Vec<_>>();
        let req = pb::DiscoveryRequest { subscribe: names(0, MAX_SUBSCRIPTIONS - 1), ..Default::default() };
        assert_eq!(ss.on_request(&req), Outcome::Subscribed);
        // Names it holds already do not count; two new ones would pass the cap, so neither applies.
        let req = pb::DiscoveryRequest { subscribe: names(MAX_SUBSCRIPTIONS - 2, 3), ..Default::default() };
        assert!(matches!(ss.on_request(&req), Outcome::Refused("too-many-subscriptions", _, _)));
        assert_eq!(ss.subscriptions.len(), MAX_SUBSCRIPTIONS - 1);
        let req = pb::DiscoveryRequest { subscribe: names(MAX_SUBSCRIPTIONS - 2, 2), ..Default::default() };
        assert_eq!(ss.on_request(&req), Outcome::Subscribed);
    }

    #[test]
    fn a_proxy_that_never_answers_costs_a_bounded_memory_of_pending_responses() {
        let foo = workload("foo", "foo-1", "127.0.0.1:4143");
        let mut ss = session(1, &foo, &BTreeMap::new());
        let first = ss.diff(&snapshot(1, MESH, std::slice::from_ref(&foo)), false);
        let mut last = Vec::new();
        for v in 2..200 {
            let mesh = MESH.replace("timeout: 1s", &format!("timeout: {v}s"));
            ss.on_request(&subscribe("bar"));
            last = ss.diff(&snapshot(v, &mesh, std::slice::from_ref(&foo)), false);
            assert!(ss.pending_responses() <= MAX_PENDING_RESPONSES);
        }
        // The oldest is forgotten (its answer is stale); the newest is still matched.
        assert_eq!(ss.on_request(&ack(&first[0])), Outcome::Stale);
        assert!(matches!(ss.on_request(&ack(&last[0])), Outcome::Ack { .. }));
        // Another session's nonce or a malformed one never matches.
        for nonce in ["2-1", "1-", "-1", "1-x", "1-99999999999999999999999"] {
            let req = pb::DiscoveryRequest { response_nonce: nonce.into(), ..Default::default() };
            assert_eq!(ss.on_request(&req), Outcome::Stale, "{nonce}");
        }
    }
}
