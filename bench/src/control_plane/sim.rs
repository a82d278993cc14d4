//! One simulated proxy: its certificate from the real controller (join token and CSR, as
//! `weft-proxy` gets it), its own loopback source address, and a discovery stream over TLS with
//! the proxy's protocol — registration, subscriptions, what it holds reported on reconnect, every
//! response applied and ACKed or NACKed by nonce, a draining notice when it leaves, and the proxy's
//! reconnect backoff (10 ms doubling to 15 s, jittered) when the controller goes away.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper_util::rt::TokioIo;
use prost::Message;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use weft_certs::tls::{self, IdentityStore, TrustBundle};
use weft_certs::SpiffeId;
use weft_proto::types;
use weft_proto::v1 as pb;

use super::layout::Layout;
use super::probe::{self, CurrentProbe, SessionFacts};
use super::view::View;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A stream that stayed up this long resets the backoff (as the proxy does).
const STABLE: Duration = Duration::from_secs(30);

/// What every simulated proxy shares.
pub struct Shared {
    pub layout: Layout,
    pub controller: SocketAddr,
    pub trust_domain: String,
    pub bundle: TrustBundle,
    pub probe: CurrentProbe,
    /// Times a proxy that once held every endpoint of the services it calls held fewer after a
    /// response (must stay 0, restarts included).
    pub lost_endpoints: AtomicU64,
    /// Streams up now.
    pub connected: AtomicUsize,
    /// NACKs sent (must stay 0: the controller's resources all parse).
    pub nacks: AtomicU64,
    /// Register as transparent proxies (they then receive the address directory).
    pub transparent: bool,
}

/// What the benchmark tells a running proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    /// Announce draining (the controller withdraws the endpoint at once), keep the stream open.
    Leave,
}

/// A TLS connection to the controller from proxy `i`'s own address, as a gRPC channel; with
/// `identity`, the workload certificate is presented.
async fn channel(shared: &Shared, i: usize, identity: Option<Arc<IdentityStore>>) -> anyhow::Result<Channel> {
    let config = Arc::new(tls::client_config(identity, shared.bundle.clone(), &shared.trust_domain, &[tls::ALPN_H2]));
    let expected = SpiffeId::controller(&shared.trust_domain)?;
    let (controller, source) = (shared.controller, SocketAddr::new(Layout::ip(i).into(), 0));
    let connector = tower::service_fn(move |_: http::Uri| {
        let (config, expected) = (config.clone(), expected.clone());
        async move {
            let socket = TcpSocket::new_v4()?;
            socket.bind(source)?;
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(controller))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
            let _ = tcp.set_nodelay(true);
            let tls = TlsConnector::from(config).connect(tls::server_name_for(controller.ip()), tcp).await?;
            match tls::peer_identity(tls.get_ref().1.peer_certificates()) {
                Some(id) if id == expected => Ok(TokioIo::new(tls)),
                other => Err(std::io::Error::other(format!("the controller presented {other:?}, expected {expected}"))),
            }
        }
    });
    Ok(Endpoint::from_shared(format!("http://{controller}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await?)
}

/// Proxy `i`'s first certificate: a fresh key, a CSR, the join token of its service.
pub async fn certify(shared: &Shared, i: usize, token: &str) -> anyhow::Result<Arc<IdentityStore>> {
    let service = Layout::service_name(shared.layout.service_of(i));
    let id = SpiffeId::new(&shared.trust_domain, "default", &service)?;
    let (key, csr) = weft_certs::ca::workload_csr(&id)?;
    let mut client = pb::identity_client::IdentityClient::new(channel(shared, i, None).await?);
    let resp = client
        .certify(pb::CertifyRequest {
            identity: id.to_string(),
            token: token.to_string(),
            csr_der: csr,
            identity_token: String::new(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let chain: Vec<CertificateDer<'static>> = resp.cert_chain_der.into_iter().map(CertificateDer::from).collect();
    let store = IdentityStore::new();
    store.install(chain, PrivateKeyDer::Pkcs8(key)).map_err(anyhow::Error::msg).context("installing")?;
    Ok(store)
}

fn workload(i: usize, layout: &Layout, transparent: bool) -> pb::Workload {
    pb::Workload {
        service: Layout::service_name(layout.service_of(i)),
        namespace: "default".into(),
        version: "v1".into(),
        instance: Layout::instance(i),
        inbound_address: Layout::inbound(i).to_string(),
        app_ports: vec![8080],
        transparent,
        proxy_version: format!("weft-bench-sim/{}", env!("CARGO_PKG_VERSION")),
        proxy_ports: vec![4143, 4191],
        attest_address: false,
    }
}

/// The reconnect backoff of `weft-proxy`: doubling from 10 ms to 15 s, half fixed, half jittered.
struct Backoff(u32);

impl Backoff {
    fn next_wait(&mut self) -> Duration {
        let cap = Duration::from_millis(10).saturating_mul(1u32 << self.0.min(20)).min(Duration::from_secs(15));
        self.0 = self.0.saturating_add(1);
        cap / 2 + cap.mul_f64(rand::random::<f64>() / 2.0)
    }
}

/// Runs proxy `i` until its task is aborted.
pub async fn run(i: usize, shared: Arc<Shared>, identity: Arc<IdentityStore>, mut command: watch::Receiver<Command>) {
    let mut view = View::default();
    let mut ever_complete = false;
    let mut backoff = Backoff(0);
    loop {
        let started = Instant::now();
        let result = session(i, &shared, &identity, &mut view, &mut command, &mut ever_complete).await;
        if let Err(e) = result {
            tracing::debug!(proxy = i, "discovery stream ended: {e:#}");
        }
        if *command.borrow() == Command::Leave {
            // A leaving proxy does not come back.
            std::future::pending::<()>().await;
        }
        if started.elapsed() >= STABLE {
            backoff = Backoff(0);
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// Decrements the connected count however the session ends.
struct Connected<'a>(&'a AtomicUsize);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn session(
    i: usize,
    shared: &Shared,
    identity: &Arc<IdentityStore>,
    view: &mut View,
    command: &mut watch::Receiver<Command>,
    ever_complete: &mut bool,
) -> anyhow::Result<()> {
    let layout = &shared.layout;
    let channel = channel(shared, i, Some(identity.clone())).await?;
    let (tx, rx) = mpsc::channel::<pb::DiscoveryRequest>(64);
    let expiry = identity.current().map(|c| c.not_after_unix * 1000).unwrap_or(0);
    tx.send(pb::DiscoveryRequest {
        workload: Some(workload(i, layout, shared.transparent)),
        initial_versions: view.initial_versions(),
        subscribe: layout.subscriptions(i).into_iter().map(Layout::service_key).collect(),
        cert_expires_at_unix_ms: expiry,
        ..Default::default()
    })
    .await?;
    let mut client = pb::discovery_client::DiscoveryClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let mut stream = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let _connected = Connected(&shared.connected);
    let mut facts = SessionFacts { started: Instant::now(), all_types_answered: false };
    let mut answered = BTreeSet::new();
    command.mark_unchanged();
    let mut leaving = *command.borrow() == Command::Leave;
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(resp) = msg? else { return Ok(()) };
                let current = shared.probe.get();
                if let Some(p) = &current {
                    p.received(i, resp.encoded_len());
                }
                let reply = view.apply(&resp);
                if reply.error_detail.is_some() {
                    shared.nacks.fetch_add(1, Ordering::Relaxed);
                }
                answered.insert(resp.type_url.clone());
                facts.all_types_answered = types::ALL.iter().all(|t| answered.contains(*t));
                if i < layout.proxies {
                    if !*ever_complete {
                        *ever_complete = probe::complete(i, layout, view);
                    } else if resp.type_url == types::ENDPOINTS && !probe::holds_all_endpoints(i, layout, view) {
                        shared.lost_endpoints.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(p) = &current {
                    p.observe(i, layout, view, &facts);
                }
                tx.send(reply).await?;
            }
            changed = command.changed(), if !leaving => {
                if changed.is_err() {
                    return Ok(());
                }
                if *command.borrow_and_update() == Command::Leave {
                    leaving = true;
                    tx.send(pb::DiscoveryRequest { draining: true, ..Default::default() }).await?;
                }
            }
        }
    }
}
