//! rustls configurations for the mesh: TLS 1.3 only, ring as the one crypto provider, certificates
//! swapped in place on rotation, and peers verified by SPIFFE ID and trust domain rather than by
//! host name (the stock webpki verifier rejects certificates that name a peer only by URI).

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::spiffe::SpiffeId;
use crate::x509;

/// ALPN for HTTP/2 between proxies.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for HTTP/1.1 (upgrades such as WebSocket travel this way between proxies).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN for opaque TCP tunnelled between proxies.
pub const ALPN_TCP: &[u8] = b"weft.tcp/1";

/// The process's one crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Installs ring as the process-wide default provider. Call once at start; harmless twice.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The trust anchors: a list, so a CA can be rolled. Replaceable at run time (the controller hands
/// out the current bundle with every certificate).
#[derive(Clone)]
pub struct TrustBundle {
    inner: Arc<ArcSwap<BundleState>>,
}

struct BundleState {
    ders: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    client_optional: Arc<dyn ClientCertVerifier>,
    client_required: Arc<dyn ClientCertVerifier>,
}

impl TrustBundle {
    pub fn new(ders: Vec<CertificateDer<'static>>) -> Result<Self, String> {
        Ok(Self { inner: Arc::new(ArcSwap::from_pointee(BundleState::build(ders)?)) })
    }

    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        Self::new(crate::pem::certs(pem)?)
    }

    /// Replaces the anchors; an invalid bundle leaves the current one in place.
    pub fn replace(&self, ders: Vec<CertificateDer<'static>>) -> Result<(), String> {
        if self.inner.load().ders == ders {
            return Ok(());
        }
        self.inner.store(Arc::new(BundleState::build(ders)?));
        Ok(())
    }

    pub fn ders(&self) -> Vec<CertificateDer<'static>> {
        self.inner.load().ders.clone()
    }

    fn roots(&self) -> Arc<RootCertStore> {
        self.inner.load().roots.clone()
    }
}

impl BundleState {
    fn build(ders: Vec<CertificateDer<'static>>) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for d in &ders {
            roots.add(d.clone()).map_err(|e| format!("bad trust anchor: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the trust bundle is empty".into());
        }
        let roots = Arc::new(roots);
        let client_required = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| e.to_string())?;
        let client_optional = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { ders, roots, client_optional, client_required })
    }
}

/// The current certificate and key of this process, swapped atomically on rotation; serves both as
/// the server certificate and as the client certificate.
#[derive(Default)]
pub struct IdentityStore {
    current: ArcSwapOption<Identity>,
}

/// One issued identity.
pub struct Identity {
    pub id: SpiffeId,
    pub certified: Arc<CertifiedKey>,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// When this process installed it (Unix seconds): rotation is timed from here, since
    /// `notBefore` is backdated for clock skew.
    pub installed_unix: i64,
}

impl fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cur = self.current.load();
        f.debug_struct("IdentityStore").field("id", &cur.as_ref().map(|i| i.id.to_string())).finish()
    }
}

impl IdentityStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Installs a chain and its key. Checks that the key matches and that the leaf names one SPIFFE ID.
    pub fn install(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<Identity>, String> {
        let leaf = chain.first().ok_or("empty certificate chain")?;
        let id = x509::spiffe_id(leaf).map_err(|e| e.to_string())?;
        let not_after_unix = x509::not_after_unix(leaf).map_err(|e| e.to_string())?;
        let not_before_unix = x509::not_before_unix(leaf).map_err(|e| e.to_string())?;
        let signer = provider().key_provider.load_private_key(key).map_err(|e| e.to_string())?;
        let certified = CertifiedKey::new(chain, signer);
        certified.keys_match().map_err(|e| format!("key does not match certificate: {e}"))?;
        let installed_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let identity =
            Arc::new(Identity { id, certified: Arc::new(certified), not_before_unix, not_after_unix, installed_unix });
        self.current.store(Some(identity.clone()));
        Ok(identity)
    }

    pub fn current(&self) -> Option<Arc<Identity>> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for IdentityStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|i| i.certified.clone())
    }
}

impl ResolvesClientCert for IdentityStore {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|i| i.certified.clone())
    }
    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

/// Client side: accepts a server whose chain reaches the bundle and whose SPIFFE ID is in the trust
/// domain. Which exact ID is expected is checked after the handshake with [`peer_identity`], since
/// it differs per connection while a `ClientConfig` is shared.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    bundle: TrustBundle,
    trust_domain: String,
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustBundle({} anchors)", self.inner.load().ders.len())
    }
}

impl SpiffeServerVerifier {
    pub fn new(bundle: TrustBundle, trust_domain: &str) -> Arc<Self> {
        Arc::new(Self { bundle, trust_domain: trust_domain.to_string() })
    }
}

fn check_trust_domain(leaf: &CertificateDer<'_>, trust_domain: &str) -> Result<SpiffeId, Error> {
    let id = x509::spiffe_id(leaf)
        .map_err(|e| Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e)))))?;
    if id.trust_domain() != trust_domain {
        return Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
    }
    Ok(id)
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.bundle.roots(),
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        check_trust_domain(end_entity, &self.trust_domain)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Server side: verifies client chains against the current bundle, and the trust domain.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    bundle: TrustBundle,
    trust_domain: String,
    mandatory: bool,
}

impl SpiffeClientVerifier {
    /// `mandatory = false` lets clients without a certificate in (the controller's identity service
    /// for first certificates; plaintext-capable listeners decide for themselves afterwards).
    pub fn new(bundle: TrustBundle, trust_domain: &str, mandatory: bool) -> Arc<Self> {
        Arc::new(Self { bundle, trust_domain: trust_domain.to_string(), mandatory })
    }

    fn delegate(&self) -> Arc<dyn ClientCertVerifier> {
        let state = self.bundle.inner.load();
        if self.mandatory {
            state.client_required.clone()
        } else {
            state.client_optional.clone()
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a mesh has one trust domain, and hints only make handshakes bigger.
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.delegate().verify_client_cert(end_entity, intermediates, now)?;
        check_trust_domain(end_entity, &self.trust_domain)?;
        Ok(ClientCertVerified::assertion())
    }
    // Signatures are checked exactly as the stock verifier does.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.delegate().verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.delegate().verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.delegate().supported_verify_schemes()
    }
}

/// A TLS 1.3 server config presenting `identity` and verifying clients with `verifier`.
pub fn server_config(
    identity: Arc<IdentityStore>,
    verifier: Arc<SpiffeClientVerifier>,
    alpn: &[&[u8]],
) -> ServerConfig {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

/// A TLS 1.3 client config verifying servers by trust domain, presenting `identity` if it holds one.
pub fn client_config(
    identity: Option<Arc<IdentityStore>>,
    bundle: TrustBundle,
    trust_domain: &str,
    alpn: &[&[u8]],
) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(SpiffeServerVerifier::new(bundle, trust_domain));
    let mut cfg = match identity {
        Some(id) => builder.with_client_cert_resolver(id),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

/// The SPIFFE ID of a verified peer (its leaf certificate), if it presented one.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    certs.and_then(|c| c.first()).and_then(|leaf| x509::spiffe_id(leaf).ok())
}

/// A server name for connections where the name is irrelevant (identity is checked by SPIFFE ID):
/// an IP address sends no SNI.
pub fn server_name_for(addr: std::net::IpAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    fn ca(name: &str, td: &str) -> CertificateAuthority {
        let dir = std::env::temp_dir().join(format!("weft-tls-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        CertificateAuthority::init(&dir, td).unwrap()
    }

    fn store(ca: &CertificateAuthority, sa: &str) -> Arc<IdentityStore> {
        let id = SpiffeId::new(ca.trust_domain(), "default", sa).unwrap();
        let issued = ca.issue_direct(&id, Duration::from_secs(3600)).unwrap();
        let s = IdentityStore::new();
        s.install(issued.chain, issued.key.into()).unwrap();
        s
    }

    /// Runs one handshake; returns the identity each side saw of the other.
    async fn handshake(
        server: ServerConfig,
        client: ClientConfig,
    ) -> Result<(Option<SpiffeId>, Option<SpiffeId>), String> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let connector = TlsConnector::from(Arc::new(client));
        let srv = tokio::spawn(async move {
            let mut s = acceptor.accept(a).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            s.write_all(&buf).await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(peer_identity(s.get_ref().1.peer_certificates()))
        });
        let name = server_name_for("127.0.0.1".parse().unwrap());
        let cli = async {
            let mut c = connector.connect(name, b).await.map_err(|e| e.to_string())?;
            c.write_all(b"ping").await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(peer_identity(c.get_ref().1.peer_certificates()))
        };
        let c = cli.await;
        let s = srv.await.unwrap();
        Ok((s?, c?))
    }

    #[tokio::test]
    async fn mutual_tls_sees_spiffe_ids_both_ways() {
        let ca = ca("mutual", "weft.local");
        let bundle = TrustBundle::new(vec![ca.cert_der().clone()]).unwrap();
        let server =
            server_config(store(&ca, "bar"), SpiffeClientVerifier::new(bundle.clone(), "weft.local", true), &[ALPN_H2]);
        let client = client_config(Some(store(&ca, "foo")), bundle, "weft.local", &[ALPN_H2]);
        let (seen_by_server, seen_by_client) = handshake(server, client).await.unwrap();
        assert_eq!(seen_by_server.unwrap().to_string(), "spiffe://weft.local/ns/default/sa/foo");
        assert_eq!(seen_by_client.unwrap().to_string(), "spiffe://weft.local/ns/default/sa/bar");
    }

    #[tokio::test]
    async fn client_without_certificate_is_refused_when_mandatory() {
        let ca = ca("nocert", "weft.local");
        let bundle = TrustBundle::new(vec![ca.cert_der().clone()]).unwrap();
        let server =
            server_config(store(&ca, "bar"), SpiffeClientVerifier::new(bundle.clone(), "weft.local", true), &[]);
        let client = client_config(None, bundle.clone(), "weft.local", &[]);
        assert!(handshake(server, client).await.is_err());
        // Optional client auth lets it in, with no identity.
        let server =
            server_config(store(&ca, "bar"), SpiffeClientVerifier::new(bundle.clone(), "weft.local", false), &[]);
        let client = client_config(None, bundle, "weft.local", &[]);
        let (seen, _) = handshake(server, client).await.unwrap();
        assert!(seen.is_none());
    }

    #[tokio::test]
    async fn certificates_from_another_ca_are_refused_both_ways() {
        let good = ca("good", "weft.local");
        let evil = ca("evil", "weft.local");
        let bundle = TrustBundle::new(vec![good.cert_der().clone()]).unwrap();
        let evil_bundle = TrustBundle::new(vec![evil.cert_der().clone()]).unwrap();
        // A client with a certificate from another CA.
        let server =
            server_config(store(&good, "bar"), SpiffeClientVerifier::new(bundle.clone(), "weft.local", true), &[]);
        let client = client_config(Some(store(&evil, "foo")), evil_bundle.clone(), "weft.local", &[]);
        assert!(handshake(server, client).await.is_err());
        // A server with a certificate from another CA.
        let server =
            server_config(store(&evil, "bar"), SpiffeClientVerifier::new(evil_bundle, "weft.local", true), &[]);
        let client = client_config(Some(store(&good, "foo")), bundle, "weft.local", &[]);
        assert!(handshake(server, client).await.is_err());
    }

    #[tokio::test]
    async fn foreign_trust_domain_is_refused() {
        let ca = ca("td", "other.td");
        let bundle = TrustBundle::new(vec![ca.cert_der().clone()]).unwrap();
        let server = server_config(store(&ca, "bar"), SpiffeClientVerifier::new(bundle.clone(), "other.td", true), &[]);
        let client = client_config(Some(store(&ca, "foo")), bundle, "weft.local", &[]);
        assert!(handshake(server, client).await.is_err());
    }

    #[tokio::test]
    async fn bundle_with_two_anchors_accepts_both() {
        let (a, b) = (ca("roll-a", "weft.local"), ca("roll-b", "weft.local"));
        let bundle = TrustBundle::new(vec![a.cert_der().clone(), b.cert_der().clone()]).unwrap();
        let server =
            server_config(store(&a, "bar"), SpiffeClientVerifier::new(bundle.clone(), "weft.local", true), &[]);
        let client = client_config(Some(store(&b, "foo")), bundle, "weft.local", &[]);
        handshake(server, client).await.unwrap();
    }
}
