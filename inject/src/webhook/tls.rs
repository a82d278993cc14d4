//! The webhook's serving certificate: issued at start by the mesh's CA for the webhook Service's
//! DNS names (the API server checks them against the configuration's `caBundle`, which is the CA
//! certificate), and re-issued at half-life without a restart.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How long a serving certificate lasts; it is replaced at half of it.
pub const SERVING_CERT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("the CA in {0}: {1}")]
    Ca(String, String),
    #[error("issuing the webhook certificate: {0}")]
    Issue(String),
}

/// The CA's certificate and key, as `weft ca init` wrote them.
pub struct CaFiles {
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl CaFiles {
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let read = |f: &str| {
            let p = dir.join(f);
            std::fs::read_to_string(&p).map_err(|e| TlsError::Read(p.display().to_string(), e))
        };
        let (cert_pem, key_pem) = (read("ca.crt")?, read("ca.key")?);
        let ca_err = |e: String| TlsError::Ca(dir.display().to_string(), e);
        let cert_der = weft_certs::pem::certs(cert_pem.as_bytes())
            .map_err(ca_err)?
            .into_iter()
            .next()
            .ok_or_else(|| ca_err("ca.crt holds no certificate".into()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| ca_err(e.to_string()))?;
        Ok(Self { cert_der, key })
    }

    /// A leaf for `names` (DNS names, or IP addresses for tests on loopback) and its key.
    pub fn issue(&self, names: &[String], ttl: Duration) -> Result<Arc<CertifiedKey>, TlsError> {
        let err = |e: rcgen::Error| TlsError::Issue(e.to_string());
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(err),
            })
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(300)).into();
        params.not_after = (now + ttl).into();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(err)?;
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = weft_certs::tls::provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| TlsError::Issue(e.to_string()))?;
        Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)))
    }
}

/// The current serving certificate, swapped when re-issued.
#[derive(Debug)]
pub struct ServingCert(RwLock<Arc<CertifiedKey>>);

impl ServingCert {
    pub fn new(first: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self(RwLock::new(first)))
    }
    pub fn replace(&self, next: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = next;
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// TLS 1.3 (ring), HTTP/2 or HTTP/1.1, no client certificate (the API server does not send one).
pub fn server_config(cert: Arc<ServingCert>) -> Arc<ServerConfig> {
    let mut cfg = ServerConfig::builder_with_provider(weft_certs::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_no_client_auth()
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}
