//! The floor: a bare TLS 1.3 byte relay pair (no HTTP, no policy, no pooling). The client side
//! accepts plain TCP and opens one mutual-TLS connection per accepted connection to the server
//! side, which checks the caller's SPIFFE identity and relays to the backend. What any proxy with
//! mTLS must at least cost, measured in the same run as the real proxies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_certs::tls::{self, IdentityStore, SpiffeClientVerifier, TrustBundle};
use weft_certs::SpiffeId;

/// The ALPN both sides agree on (nothing else speaks it).
pub const ALPN: &[u8] = b"weft.bench.floor/1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    /// Plain TCP in, mTLS out.
    Client,
    /// mTLS in, plain TCP out.
    Server,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    #[arg(long, value_enum)]
    pub side: Side,
    #[arg(long)]
    pub listen: SocketAddr,
    #[arg(long)]
    pub connect: SocketAddr,
    /// This side's certificate chain (PEM).
    #[arg(long)]
    pub cert: PathBuf,
    /// This side's private key (PKCS#8 PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// The trust anchor (PEM).
    #[arg(long)]
    pub ca: PathBuf,
    #[arg(long, default_value = "weft.local")]
    pub trust_domain: String,
    /// The SPIFFE ID the peer must present.
    #[arg(long)]
    pub peer_id: String,
}

/// `weft bench relay`: one worker thread, like every proxy in the benchmark.
pub fn main(args: RelayArgs) -> anyhow::Result<()> {
    tls::install_provider();
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| p.display().to_string());
    let chain = weft_certs::pem::certs(&read(&args.cert)?).map_err(anyhow::Error::msg)?;
    let key = weft_certs::pem::private_key(&read(&args.key)?).map_err(anyhow::Error::msg)?;
    let bundle = TrustBundle::from_pem(&read(&args.ca)?).map_err(anyhow::Error::msg)?;
    let store = IdentityStore::new();
    store.install(chain, key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let peer: SpiffeId = args.peer_id.parse().map_err(|e| anyhow::anyhow!("--peer-id: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        eprintln!("floor relay ({:?}) on {} → {}", args.side, args.listen, args.connect);
        match args.side {
            Side::Client => {
                let cfg = tls::client_config(Some(store), bundle, &args.trust_domain, &[ALPN]);
                client_side(listener, TlsConnector::from(Arc::new(cfg)), args.connect, peer).await
            }
            Side::Server => {
                let verifier = SpiffeClientVerifier::new(bundle, &args.trust_domain, true);
                let cfg = tls::server_config(store, verifier, &[ALPN]);
                server_side(listener, TlsAcceptor::from(Arc::new(cfg)), args.connect, peer).await
            }
        }
    })
}

async fn client_side(
    listener: TcpListener,
    tls: TlsConnector,
    upstream: SocketAddr,
    peer: SpiffeId,
) -> anyhow::Result<()> {
    let peer = Arc::new(peer);
    loop {
        let (mut inbound, _) = listener.accept().await?;
        let _ = inbound.set_nodelay(true);
        let (tls, peer) = (tls.clone(), peer.clone());
        tokio::spawn(async move {
            let result = async {
                let tcp = dial(upstream).await?;
                let mut out = tls.connect(tls::server_name_for(upstream.ip()), tcp).await?;
                let seen = tls::peer_identity(out.get_ref().1.peer_certificates());
                if seen.as_ref() != Some(&*peer) {
                    bail!("the server presented {seen:?}, not {peer}");
                }
                tokio::io::copy_bidirectional(&mut inbound, &mut out).await?;
                Ok(())
            };
            if let Err(e) = result.await {
                eprintln!("floor relay: {e:#}");
            }
        });
    }
}

async fn server_side(listener: TcpListener, tls: TlsAcceptor, app: SocketAddr, peer: SpiffeId) -> anyhow::Result<()> {
    let peer = Arc::new(peer);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (tls, peer) = (tls.clone(), peer.clone());
        tokio::spawn(async move {
            let result = async {
                let mut inbound = tls.accept(tcp).await?;
                let seen = tls::peer_identity(inbound.get_ref().1.peer_certificates());
                if seen.as_ref() != Some(&*peer) {
                    bail!("the client presented {seen:?}, not {peer}");
                }
                let mut out = dial(app).await?;
                tokio::io::copy_bidirectional(&mut inbound, &mut out).await?;
                Ok(())
            };
            if let Err(e) = result.await {
                eprintln!("floor relay: {e:#}");
            }
        });
    }
}

async fn dial(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {addr}: timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}
