//! What the security tests attack with: raw bytes on a listener, and mesh identities minted from a
//! test's own CA — what a compromised workload, or a custom client holding a leaked certificate,
//! would hold.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::client::TlsStream;
use weft_certs::{CertificateAuthority, IdentityStore, SpiffeId, TrustBundle};

/// Sends `bytes` and reads until the peer closes (or 10 s): the raw answer.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A certificate for `spiffe://weft.local/ns/NS/sa/SA` signed by the CA in `ca_dir`.
pub fn identity(ca_dir: &Path, namespace: &str, sa: &str) -> Arc<IdentityStore> {
    let ca = CertificateAuthority::load(ca_dir).expect("test CA");
    let id = SpiffeId::new(ca.trust_domain(), namespace, sa).unwrap();
    let issued = ca.issue_direct(&id, Duration::from_secs(3600)).unwrap();
    let store = IdentityStore::new();
    store.install(issued.chain, issued.key.into()).unwrap();
    store
}

/// The trust bundle of the CA in `ca_dir`.
pub fn bundle(ca_dir: &Path) -> TrustBundle {
    TrustBundle::new(vec![CertificateAuthority::load(ca_dir).unwrap().cert_der().clone()]).unwrap()
}

/// A TLS 1.3 connection to a proxy's inbound port (or the controller) with `ALPN`, presenting
/// `who` (or no certificate).
pub async fn mtls(
    addr: SocketAddr,
    ca_dir: &Path,
    who: Option<Arc<IdentityStore>>,
    alpn: &[u8],
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let cfg = weft_certs::tls::client_config(who, bundle(ca_dir), "weft.local", &[alpn]);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(weft_certs::tls::server_name_for(addr.ip()), tcp).await
}

/// Reads until the peer closes or `limit` passes; returns what came and whether it closed.
pub async fn read_until_closed<T: tokio::io::AsyncRead + Unpin>(io: &mut T, limit: Duration) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut b = [0u8; 4096];
        match tokio::time::timeout_at(deadline, io.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&b[..n]),
            Err(_) => return (out, false),
        }
    }
}
