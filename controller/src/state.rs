//! The controller's mesh state: the mesh file in force, the registry of workloads, the sessions of
//! connected proxies, and the published discovery snapshot that sessions diff against.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::{watch, Notify};
use tokio::time::{Duration, Instant};
use weft_certs::revocation::RevocationList;
use weft_certs::{CertificateAuthority, SpiffeId};
use weft_proto::v1 as pb;

use crate::kubernetes::view::ClusterView;
use crate::mesh::MeshConfig;
use crate::metrics::ControllerMetrics;
use crate::registry::{Admitted, Refused, Registration, Registry};
use crate::snapshot::Snapshot;

/// What the admin API shows of one connected proxy.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub workload: pb::Workload,
    pub identity: SpiffeId,
    pub peer: String,
    pub connected_since: SystemTime,
    pub acked: BTreeMap<String, String>,
    pub nacked: BTreeMap<String, String>,
    pub cert_expires_at_unix_ms: i64,
    /// The join token behind the session's certificate.
    pub token_id: Option<String>,
    /// Tells the session to end, with the reason (its token was revoked).
    pub close: Arc<watch::Sender<Option<String>>>,
}

pub struct Settings {
    pub cert_ttl: Duration,
    /// How long a workload stays after its stream ends.
    pub endpoint_grace: Duration,
    /// After the controller starts, how long proxies keep the endpoints they held before it.
    pub restart_holddown: Duration,
    /// Registered instances per identity, at most.
    pub max_instances: usize,
}

/// After a publish, changes wait a while and then go out together: a connect storm of N proxies is
/// then a few dozen rebuilds, not 2N (each O(N + M)). Each publish also wakes every session for a
/// diff (a few microseconds each), so the wait grows with the sessions: at 2,000 proxies 70 ms,
/// which keeps publishing under a fifth of a core through a storm. A lone change is not delayed.
fn coalesce_window(sessions: usize) -> Duration {
    (Duration::from_millis(20) + Duration::from_micros(25) * sessions as u32).min(Duration::from_millis(250))
}

/// How long the mesh must stay unchanged after a wave of publishes before the memory the wave
/// freed is handed back (see [`MeshState::trim_loop`]).
const TRIM_AFTER_QUIET: Duration = Duration::from_secs(1);

/// Waits until `snaps` has not changed for `quiet`; false when the sender is gone.
async fn quiet_after<T>(snaps: &mut watch::Receiver<T>, quiet: Duration) -> bool {
    loop {
        match tokio::time::timeout(quiet, snaps.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return false,
            Err(_) => return true,
        }
    }
}

pub struct MeshState {
    inner: Mutex<Inner>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    /// Something a snapshot derives from changed: `publish_loop` rebuilds.
    changed: Notify,
    pub started: Instant,
    pub settings: Settings,
    pub metrics: ControllerMetrics,
    pub ca: Arc<CertificateAuthority>,
    revoked: RwLock<RevocationList>,
    next_session: AtomicU64,
}

struct Inner {
    mesh: Arc<MeshConfig>,
    config_version: u64,
    registry: Registry,
    sessions: BTreeMap<u64, SessionInfo>,
    /// Kubernetes mode, once synced: services and endpoints from the API (registrations then
    /// only authorise streams).
    cluster: Option<Arc<ClusterView>>,
    rejected_total: u64,
    rejected: Option<Vec<String>>,
}

impl MeshState {
    pub fn new(
        mesh: MeshConfig,
        ca: Arc<CertificateAuthority>,
        settings: Settings,
        metrics: ControllerMetrics,
    ) -> Arc<Self> {
        let (snapshots, _) = watch::channel(Arc::new(Snapshot::empty()));
        let state = Arc::new(Self {
            inner: Mutex::new(Inner {
                mesh: Arc::new(mesh),
                config_version: 1,
                registry: Registry::default(),
                sessions: BTreeMap::new(),
                cluster: None,
                rejected_total: 0,
                rejected: None,
            }),
            snapshots,
            changed: Notify::new(),
            started: Instant::now(),
            settings,
            metrics,
            ca,
            revoked: RwLock::new(RevocationList::default()),
            next_session: AtomicU64::new(1),
        });
        state.metrics.config_version.with(&[]).set(1);
        state.publish();
        state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot input changed: the publish loop rebuilds (the caller holds the state lock;
    /// the rebuild does not).
    fn republish(&self, _inner: &mut Inner) {
        self.changed.notify_one();
    }

    /// Rebuilds the snapshot from the inputs in force and publishes it. The inputs are copied
    /// under the state lock, the build runs outside it (ACKs and registrations never wait for a
    /// build), and every resource whose content did not change keeps its `Arc` and version.
    fn publish(&self) {
        let (mesh, workloads, cluster) = {
            let inner = self.lock();
            (inner.mesh.clone(), inner.registry.iter().cloned().collect::<Vec<_>>(), inner.cluster.clone())
        };
        let previous = self.snapshots.borrow().clone();
        let snap =
            Snapshot::build_reusing(previous.version + 1, &mesh, workloads.iter(), cluster.as_deref(), Some(&previous));
        // Each policy finding is logged once, when it first appears (and counted in the state).
        for f in snap.findings.iter().filter(|f| !previous.findings.contains(f)) {
            tracing::warn!(service = %f.service, source = %f.source, kind = ?f.kind, "policy: {}", f.message);
        }
        self.snapshots.send_replace(Arc::new(snap));
    }

    /// Publishes a new snapshot after each change, at most one per `coalesce_window`; runs for
    /// the life of the controller.
    pub async fn publish_loop(self: Arc<Self>) {
        loop {
            self.changed.notified().await;
            self.publish();
            let sessions = self.lock().sessions.len();
            tokio::time::sleep(coalesce_window(sessions)).await;
        }
    }

    /// Once the publishes of a change (or a connect storm: every registration is one) have
    /// settled, hands the memory they freed back to the system. Every publish makes each session
    /// diff, clone and encode its share; glibc keeps what that freed spread over its per-thread
    /// arenas, where the next wave's growth lands on top of it. Runs for the life of the
    /// controller; a trim takes a few milliseconds on a blocking thread.
    pub async fn trim_loop(self: Arc<Self>) {
        let mut snaps = self.snapshots();
        while snaps.changed().await.is_ok() {
            if !quiet_after(&mut snaps, TRIM_AFTER_QUIET).await {
                return;
            }
            let _ = tokio::task::spawn_blocking(weft_telemetry::memory::trim).await;
        }
    }

    pub fn trust_domain(&self) -> String {
        self.ca.trust_domain().to_string()
    }

    pub fn mesh(&self) -> Arc<MeshConfig> {
        self.lock().mesh.clone()
    }

    /// Puts a new (validated) mesh file in force.
    pub fn set_mesh(&self, mesh: MeshConfig) {
        let mut inner = self.lock();
        inner.rejected = None;
        if *inner.mesh == mesh {
            return;
        }
        inner.mesh = Arc::new(mesh);
        inner.config_version += 1;
        self.metrics.config_version.with(&[]).set(inner.config_version as i64);
        self.republish(&mut inner);
    }

    /// An edit of the mesh config (file or ConfigMap) was refused: counted, logged by the caller,
    /// and shown in the state until a good one arrives.
    pub fn reject_config(&self, problems: Vec<String>) {
        self.metrics.config_rejected.with(&[]).inc();
        let mut inner = self.lock();
        inner.rejected_total += 1;
        inner.rejected = Some(problems);
    }

    /// Puts a new view of the Kubernetes cluster in force.
    pub fn set_cluster(&self, view: Arc<ClusterView>) {
        let mut inner = self.lock();
        inner.cluster = Some(view);
        self.republish(&mut inner);
    }

    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    pub fn holddown_active(&self, now: Instant) -> bool {
        now < self.started + self.settings.restart_holddown
    }

    /// A new session id.
    pub fn new_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a proxy's workload for `session` (checked by the discovery stream: identity,
    /// namespace and source address agree). `exclusive`: its token binds it to this instance.
    /// Returns the session's close signal and what the registry changed.
    pub fn connect(
        &self,
        session: u64,
        reg: Registration,
        peer: String,
        cert_expiry: i64,
        token_id: Option<String>,
        exclusive: bool,
    ) -> Result<(watch::Receiver<Option<String>>, Admitted), Refused> {
        let mut inner = self.lock();
        let (workload, identity) = (reg.workload.clone(), reg.identity.clone());
        let admitted = match inner.registry.connect(reg, session, self.settings.max_instances, exclusive) {
            Ok(a) => a,
            Err(e) => {
                self.metrics.registrations_refused.with(&[e.reason()]).inc();
                return Err(e);
            }
        };
        if !admitted.dropped_ports.is_empty() {
            self.metrics.app_ports_refused.with(&[]).add(admitted.dropped_ports.len() as u64);
        }
        let (close, closed) = watch::channel(None);
        inner.sessions.insert(
            session,
            SessionInfo {
                workload,
                identity,
                peer,
                connected_since: SystemTime::now(),
                acked: BTreeMap::new(),
                nacked: BTreeMap::new(),
                cert_expires_at_unix_ms: cert_expiry,
                token_id,
                close: Arc::new(close),
            },
        );
        self.metrics.proxies_connected.with(&[]).set(inner.sessions.len() as i64);
        if admitted.changed {
            self.republish(&mut inner);
        }
        Ok((closed, admitted))
    }

    /// The session's proxy holds its own policy: announce its endpoint.
    pub fn set_ready(&self, session: u64) {
        let mut inner = self.lock();
        let Some(info) = inner.sessions.get(&session).cloned() else { return };
        if inner.registry.set_ready(&info.identity, &info.workload.instance, session) {
            self.republish(&mut inner);
        }
    }

    /// Records a further IP a registered workload proved (its other address family).
    pub fn attest_ip(&self, identity: &SpiffeId, instance: &str, ip: IpAddr) -> bool {
        let mut inner = self.lock();
        let added = inner.registry.add_ip(identity, instance, ip);
        if added {
            self.republish(&mut inner);
        }
        added
    }

    /// Whether a join-token id is revoked.
    pub fn is_revoked(&self, token_id: &str) -> bool {
        self.revoked.read().unwrap_or_else(|e| e.into_inner()).contains(token_id)
    }

    /// Puts a new revocation list in force: sessions of revoked tokens are closed.
    pub fn set_revocations(&self, list: RevocationList) {
        let inner = self.lock();
        for (id, s) in &inner.sessions {
            if let Some(t) = s.token_id.as_deref().filter(|t| list.contains(t)) {
                tracing::warn!(session = id, identity = %s.identity, token = t, "closing the stream of a revoked token");
                s.close.send_replace(Some(format!("join token {t} was revoked")));
            }
        }
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = list;
    }

    pub fn disconnect(&self, session: u64) {
        let mut inner = self.lock();
        if let Some(info) = inner.sessions.remove(&session) {
            inner.registry.disconnect(&info.identity, &info.workload.instance, session, Instant::now());
        }
        self.metrics.proxies_connected.with(&[]).set(inner.sessions.len() as i64);
    }

    /// Removes the workload of a draining proxy at once (its stream stays open while it drains).
    pub fn withdraw(&self, session: u64) {
        let mut inner = self.lock();
        let Some(info) = inner.sessions.get(&session).cloned() else { return };
        if inner.registry.remove(&info.identity, &info.workload.instance, session) {
            self.republish(&mut inner);
        }
    }

    pub fn update_session(&self, session: u64, f: impl FnOnce(&mut SessionInfo)) {
        if let Some(info) = self.lock().sessions.get_mut(&session) {
            f(info);
        }
    }

    /// Removes workloads whose grace period has passed; runs for the life of the controller.
    pub async fn expire_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let mut inner = self.lock();
            if inner.registry.expire(self.settings.endpoint_grace, Instant::now()) {
                self.republish(&mut inner);
            }
        }
    }

    /// The state as JSON, for `/api/v1/state` and `weft status`.
    pub fn state_json(&self) -> serde_json::Value {
        let inner = self.lock();
        let snap = self.snapshots.borrow().clone();
        let now = Instant::now();
        let holddown_left = (self.started + self.settings.restart_holddown).saturating_duration_since(now);
        let services: Vec<_> = snap
            .resources(weft_proto::types::SERVICE)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter_map(|(key, r)| match &r.body {
                Some(pb::resource::Body::Service(s)) => Some((key, s)),
                _ => None,
            })
            .map(|(key, s)| {
                let endpoints: Vec<_> = snap
                    .resources(weft_proto::types::ENDPOINTS)
                    .and_then(|m| m.get(key))
                    .and_then(|r| match &r.body {
                        Some(pb::resource::Body::Endpoints(e)) => Some(e.endpoints.clone()),
                        _ => None,
                    })
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| {
                        let connected = inner.registry.iter().any(|w| {
                            w.workload.instance == e.instance
                                && w.identity.to_string() == e.identity
                                && w.disconnected_at.is_none()
                        });
                        json!({
                            "address": e.address,
                            "identity": e.identity,
                            "version": e.version,
                            "instance": e.instance,
                            "app_ports": e.app_ports,
                            "static": e.identity.is_empty(),
                            "connected": connected || e.identity.is_empty(),
                        })
                    })
                    .collect();
                json!({
                    "name": s.name,
                    "namespace": s.namespace,
                    "protocol": pb::Protocol::try_from(s.protocol).map(|p| p.as_str_name()).unwrap_or("?"),
                    "vip": s.vip,
                    "mtls": if s.mtls == pb::MtlsMode::Strict as i32 { "strict" } else { "permissive" },
                    "declared": inner.mesh.services.contains_key(key),
                    "endpoints": endpoints,
                })
            })
            .collect();
        let proxies: Vec<_> = inner
            .sessions
            .iter()
            .map(|(id, s)| {
                json!({
                    "session": id,
                    "service": s.workload.service,
                    "namespace": s.workload.namespace,
                    "version": s.workload.version,
                    "instance": s.workload.instance,
                    "identity": s.identity.to_string(),
                    "address": s.workload.inbound_address,
                    "token_id": s.token_id,
                    "transparent": s.workload.transparent,
                    "peer": s.peer,
                    "proxy_version": s.workload.proxy_version,
                    "connected_since_unix_ms": unix_ms(s.connected_since),
                    "cert_expires_at_unix_ms": s.cert_expires_at_unix_ms,
                    "acked": s.acked,
                    "nacked": s.nacked,
                })
            })
            .collect();
        json!({
            "trust_domain": self.ca.trust_domain(),
            "config_version": inner.config_version,
            "snapshot_version": snap.version,
            "restart_holddown_remaining_ms": holddown_left.as_millis() as u64,
            "services": services,
            "proxies": proxies,
            "policy_findings": snap.findings,
            "config": {
                "rejected_total": inner.rejected_total,
                // The problems of the latest edit when it was rejected (the last good config is in force).
                "rejected": inner.rejected,
            },
        })
    }
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Arc<MeshState> {
        let dir = std::env::temp_dir().join(format!("weft-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = CertificateAuthority::init(&dir, "weft.local").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mesh = MeshConfig::parse("trust_domain: weft.local\nservices: {}\n").unwrap();
        let settings = Settings {
            cert_ttl: Duration::from_secs(3600),
            endpoint_grace: Duration::from_secs(10),
            restart_holddown: Duration::ZERO,
            max_instances: 10,
        };
        MeshState::new(mesh, Arc::new(ca), settings, ControllerMetrics::new())
    }

    fn registration(i: u32) -> Registration {
        let name = format!("svc{i}");
        let workload = pb::Workload {
            service: name.clone(),
            namespace: "default".into(),
            instance: "a".into(),
            inbound_address: format!("127.0.1.{}:4143", i + 1),
            ..Default::default()
        };
        Registration {
            identity: SpiffeId::new("weft.local", "default", &name).unwrap(),
            service: format!("default/{name}"),
            inbound: workload.inbound_address.parse().unwrap(),
            workload,
        }
    }

    /// A trim waits for the publishes to stop, however long they go on.
    #[tokio::test(start_paused = true)]
    async fn the_trim_waits_for_a_quiet_mesh() {
        let (tx, mut rx) = watch::channel(0u64);
        let waiting = tokio::spawn(async move { quiet_after(&mut rx, Duration::from_secs(1)).await });
        for version in 1..=5 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            tx.send_replace(version);
            assert!(!waiting.is_finished(), "a change within the quiet time restarts it");
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(waiting.await.unwrap(), "quiet for a second: trim");
        let (tx, mut rx) = watch::channel(0u64);
        drop(tx);
        assert!(!quiet_after(&mut rx, Duration::from_secs(1)).await, "no sender: the loop ends");
    }

    /// A connect storm is a handful of rebuilds, each with everything that arrived meanwhile;
    /// a lone change after a quiet spell goes out at once.
    #[tokio::test(start_paused = true)]
    async fn changes_that_arrive_together_are_published_together() {
        let state = state();
        tokio::spawn(state.clone().publish_loop());
        let mut snaps = state.snapshots();
        let services = |s: &Snapshot| s.resources(weft_proto::types::SERVICE).map_or(0, |m| m.len());
        let first = snaps.borrow_and_update().version;

        for i in 0..50 {
            state.connect(u64::from(i), registration(i), "peer".into(), 0, None, false).unwrap();
        }
        snaps.changed().await.unwrap();
        let snap = snaps.borrow_and_update().clone();
        assert_eq!((snap.version, services(&snap)), (first + 1, 50), "one publish for the burst");

        // Within the coalescing window: held back, then published with everything since.
        for i in 50..60 {
            state.connect(u64::from(i), registration(i), "peer".into(), 0, None, false).unwrap();
        }
        tokio::time::sleep(coalesce_window(50) / 2).await;
        assert!(!snaps.has_changed().unwrap());
        snaps.changed().await.unwrap();
        let snap = snaps.borrow_and_update().clone();
        assert_eq!((snap.version, services(&snap)), (first + 2, 60));

        // A change after a quiet spell is published without waiting.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let quiet = Instant::now();
        state.connect(60, registration(60), "peer".into(), 0, None, false).unwrap();
        snaps.changed().await.unwrap();
        assert_eq!(Instant::now(), quiet, "no timer between a lone change and its publish");
        assert_eq!(services(&snaps.borrow_and_update()), 61);
    }

    #[test]
    fn the_coalescing_window_grows_with_the_sessions_and_is_capped() {
        assert_eq!(coalesce_window(0), Duration::from_millis(20));
        assert_eq!(coalesce_window(2000), Duration::from_millis(70));
        assert_eq!(coalesce_window(1_000_000), Duration::from_millis(250));
    }
}
