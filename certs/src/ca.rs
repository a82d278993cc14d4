//! The mesh's certificate authority: created by `weft ca init`, used by the controller to sign
//! workload certificates from CSRs and by `weft ca token` to sign join tokens.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use thiserror::Error;

use crate::provenance::Provenance;
use crate::spiffe::{validate_trust_domain, SpiffeId};
use crate::token::{self, TokenClaims, TokenError};
use crate::x509;

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
/// The CA certificate's explicit subject: distinct from every leaf (leaves have none), because some
/// TLS stacks (Envoy's) reject a leaf whose issuer and subject read the same.
pub const CA_COMMON_NAME: &str = "weft root CA";
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaves start a little in the past so that a peer whose clock is slightly behind accepts them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} already exists; refusing to overwrite an existing CA")]
    Exists(PathBuf),
    #[error("invalid CA files: {0}")]
    Invalid(String),
    #[error("{0} is readable by other users (mode {1:o}): the CA key must be private. Fix it with `chmod 600 {0}`")]
    KeyExposed(PathBuf, u32),
    #[error(transparent)]
    Spiffe(#[from] crate::SpiffeError),
    #[error("identity {id} is in trust domain {got}, but this CA's trust domain is {want}")]
    WrongTrustDomain { id: String, got: String, want: String },
    #[error("identities in namespace weft-system are reserved for the control plane: {0}")]
    Reserved(String),
    #[error("invalid CSR: {0}")]
    BadCsr(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("signing failed: {0}")]
    Sign(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io { path: path.to_path_buf(), source }
}

/// A certificate chain (leaf first) with the private key it was issued for.
pub struct IssuedCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
    pub not_after_unix: i64,
}

pub struct CertificateAuthority {
    trust_domain: String,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
    token_key: EcdsaKeyPair,
    public_key: Vec<u8>,
}

impl CertificateAuthority {
    /// Creates a new root CA in `dir` (`ca.crt`, `ca.key` with mode 0600). Refuses to overwrite.
    pub fn init(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        validate_trust_domain(trust_domain)?;
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(CaError::Exists(p.clone()));
            }
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Sign(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "weft");
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        params.distinguished_name = dn;
        // The trust domain is recorded in the CA itself (as SPIFFE does), so the CA decides it.
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}").try_into().map_err(|_| CaError::Invalid("trust domain".into()))?,
        )];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_VALIDITY).into();
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(|e| CaError::Sign(e.to_string()))?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        Self::load(dir)
    }

    /// Loads `ca.crt` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let cert_pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        {
            use std::os::unix::fs::PermissionsExt;
            // Group read is allowed: a Kubernetes Secret mounted for a non-root controller is
            // root-owned and readable by the pod's fsGroup (0440). Anything for other users is not.
            let mode = fs::metadata(&key_path).map_err(io_err(&key_path))?.permissions().mode() & 0o777;
            if mode & 0o027 != 0 {
                return Err(CaError::KeyExposed(key_path, mode));
            }
        }
        let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let cert_der = crate::pem::certs(cert_pem.as_bytes())
            .map_err(CaError::Invalid)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Invalid(format!("{} holds no certificate", cert_path.display())))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Invalid(format!("{}: {e}", key_path.display())))?;
        let token_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.serialized_der(), &SystemRandom::new())
                .map_err(|_| CaError::Invalid(format!("{}: not an ECDSA P-256 key", key_path.display())))?;
        let public_key = x509::public_key(&cert_der).map_err(|e| CaError::Invalid(e.to_string()))?;
        if public_key != key.public_key_raw() {
            return Err(CaError::Invalid("ca.key does not match ca.crt".into()));
        }
        let trust_domain = ca_trust_domain(&cert_der)?;
        Ok(Self { trust_domain, cert_der, cert_pem, key, token_key, public_key })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Checks that `id` may be issued by this CA to a workload.
    pub fn check_workload_identity(&self, id: &SpiffeId) -> Result<(), CaError> {
        if id.trust_domain() != self.trust_domain {
            return Err(CaError::WrongTrustDomain {
                id: id.to_string(),
                got: id.trust_domain().to_string(),
                want: self.trust_domain.clone(),
            });
        }
        if id.is_system() {
            return Err(CaError::Reserved(id.to_string()));
        }
        Ok(())
    }

    /// A join token that lets its bearer claim exactly `id` (and no other) until `ttl` from now;
    /// with `instance`, only for a proxy of that instance name. Returns the token and its claims.
    pub fn join_token(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        instance: Option<&str>,
    ) -> Result<(String, TokenClaims), CaError> {
        self.check_workload_identity(id)?;
        if let Some(i) = instance.filter(|i| !crate::provenance::valid_instance(i)) {
            return Err(CaError::Invalid(format!("instance name {i:?}: use letters, digits, '.', '-', '_' and ':'")));
        }
        let iat = unix_now();
        let claims = TokenClaims {
            id: id.to_string(),
            iat,
            exp: iat + ttl.as_secs().max(1),
            jti: token::new_id(),
            instance: instance.map(str::to_string),
        };
        Ok((token::sign(&claims, &self.token_key)?, claims))
    }

    /// The claims of a token this CA signed, expired or not (to revoke it by its file).
    pub fn token_claims(&self, token: &str) -> Result<TokenClaims, CaError> {
        Ok(token::verify(token, &self.public_key, 0)?.0)
    }

    /// Verifies a join token and that it grants `asked`; returns its claims.
    pub fn verify_join_token(&self, token: &str, asked: &SpiffeId) -> Result<TokenClaims, CaError> {
        let (claims, granted) = token::verify(token, &self.public_key, unix_now())?;
        if &granted != asked {
            return Err(TokenError::WrongIdentity { granted: granted.to_string(), asked: asked.to_string() }.into());
        }
        self.check_workload_identity(asked)?;
        Ok(claims)
    }

    /// Signs a workload CSR that asks for exactly `id` (one URI SAN, nothing else). The certificate
    /// is built from our own template: only the CSR's public key is taken from it; `provenance`
    /// (the join token behind it) is recorded in its subject.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        id: &SpiffeId,
        ttl: Duration,
        provenance: Option<&Provenance>,
    ) -> Result<IssuedCertChain, CaError> {
        self.check_workload_identity(id)?;
        let csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let want = id.to_string();
        let sans: Vec<String> = csr.params.subject_alt_names.iter().map(|s| format!("{s:?}")).collect();
        match csr.params.subject_alt_names.as_slice() {
            [SanType::URI(uri)] if uri.as_str() == want => {}
            _ => {
                return Err(CaError::BadCsr(format!(
                    "the CSR must name exactly {want} as its only SAN, found {sans:?}"
                )))
            }
        }
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::BadCsr("the CSR key must be ECDSA P-256".into()));
        }
        let cert = leaf_params(id, ttl, provenance)?
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let der = cert.der().clone();
        let not_after_unix = x509::not_after_unix(&der).map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(IssuedCertChain { chain: vec![der], not_after_unix })
    }

    /// Issues a certificate and a fresh key for the controller itself (`weft-system/weft-controller`).
    pub fn issue_controller(&self, ttl: Duration) -> Result<IssuedCert, CaError> {
        let id = SpiffeId::controller(&self.trust_domain)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Sign(e.to_string()))?;
        let cert =
            leaf_params(&id, ttl, None)?.signed_by(&key, &self.issuer()?).map_err(|e| CaError::Sign(e.to_string()))?;
        let der = cert.der().clone();
        let not_after_unix = x509::not_after_unix(&der).map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(IssuedCert { chain: vec![der], key: PrivatePkcs8KeyDer::from(key.serialize_der()), not_after_unix })
    }

    /// Issues a certificate and key for any identity of this trust domain, including reserved ones.
    /// For tools and tests that hold the CA key themselves (the benchmark, the test harness).
    pub fn issue_direct(&self, id: &SpiffeId, ttl: Duration) -> Result<IssuedCert, CaError> {
        if id.trust_domain() != self.trust_domain {
            return Err(CaError::WrongTrustDomain {
                id: id.to_string(),
                got: id.trust_domain().to_string(),
                want: self.trust_domain.clone(),
            });
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Sign(e.to_string()))?;
        let cert =
            leaf_params(id, ttl, None)?.signed_by(&key, &self.issuer()?).map_err(|e| CaError::Sign(e.to_string()))?;
        let der = cert.der().clone();
        let not_after_unix = x509::not_after_unix(&der).map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(IssuedCert { chain: vec![der], key: PrivatePkcs8KeyDer::from(key.serialize_der()), not_after_unix })
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, CaError> {
        Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(|e| CaError::Invalid(e.to_string()))
    }
}

/// A signed chain for a key that stays with its owner (the proxy).
pub struct IssuedCertChain {
    pub chain: Vec<CertificateDer<'static>>,
    pub not_after_unix: i64,
}

fn leaf_params(id: &SpiffeId, ttl: Duration, provenance: Option<&Provenance>) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    // The identity is the SPIFFE URI SAN alone; the subject only records where the certificate
    // came from (empty for the controller's own, and then rcgen marks the SAN critical, as RFC 5280
    // asks).
    let mut dn = DistinguishedName::new();
    if let Some(p) = provenance {
        dn.push(DnType::OrganizationalUnitName, p.to_ou());
    }
    params.distinguished_name = dn;
    params.subject_alt_names =
        vec![SanType::URI(id.to_string().try_into().map_err(|_| CaError::Sign("identity is not IA5".into()))?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyAgreement];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + ttl).into();
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// Makes a workload key (ECDSA P-256) and a CSR whose only SAN is `id`.
pub fn workload_csr(id: &SpiffeId) -> Result<(PrivatePkcs8KeyDer<'static>, Vec<u8>), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Sign(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names =
        vec![SanType::URI(id.to_string().try_into().map_err(|_| CaError::Sign("identity is not IA5".into()))?)];
    let csr = params.serialize_request(&key).map_err(|e| CaError::Sign(e.to_string()))?;
    Ok((PrivatePkcs8KeyDer::from(key.serialize_der()), csr.der().to_vec()))
}

fn ca_trust_domain(cert: &CertificateDer<'_>) -> Result<String, CaError> {
    let td = x509::trust_domain(cert)
        .ok_or_else(|| CaError::Invalid("ca.crt names no trust domain (spiffe://TD URI SAN)".into()))?;
    validate_trust_domain(&td)?;
    Ok(td)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).expect("system RNG");
    bytes[0] &= 0x7f; // keep the serial positive
    bytes[0] |= 0x01; // and of fixed length
    SerialNumber::from_slice(&bytes)
}

/// Writes a secret (a join token, a key) readable by its owner only, replacing any file there.
pub fn write_secret(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // An existing file keeps its mode through open(): make it private too.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(data)
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-ca-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn ca(name: &str) -> CertificateAuthority {
        CertificateAuthority::init(&temp_dir(name), "weft.local").unwrap()
    }

    #[test]
    fn init_refuses_to_overwrite_and_load_round_trips() {
        let dir = temp_dir("overwrite");
        let ca = CertificateAuthority::init(&dir, "weft.local").unwrap();
        assert!(matches!(CertificateAuthority::init(&dir, "weft.local"), Err(CaError::Exists(_))));
        let loaded = CertificateAuthority::load(&dir).unwrap();
        assert_eq!(loaded.trust_domain(), "weft.local");
        assert_eq!(loaded.cert_der(), ca.cert_der());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join(CA_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A key others can read is refused, with the fix in the message.
        fs::set_permissions(dir.join(CA_KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let err = CertificateAuthority::load(&dir).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn ca_has_explicit_subject_distinct_from_leaves() {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let ca = ca("subject");
        let (_, parsed) = X509Certificate::from_der(ca.cert_der()).unwrap();
        assert!(parsed.subject().to_string().contains(CA_COMMON_NAME));
        let leaf = ca.issue_controller(Duration::from_secs(60)).unwrap();
        let (_, leaf) = X509Certificate::from_der(&leaf.chain[0]).unwrap();
        assert_ne!(leaf.subject().to_string(), leaf.issuer().to_string());
    }

    #[test]
    fn token_grants_exactly_its_identity() {
        let ca = ca("token");
        let foo = SpiffeId::new("weft.local", "default", "foo").unwrap();
        let bar = SpiffeId::new("weft.local", "default", "bar").unwrap();
        let (token, claims) = ca.join_token(&foo, Duration::from_secs(60), None).unwrap();
        assert_eq!(ca.verify_join_token(&token, &foo).unwrap(), claims);
        assert!(token::is_id(&claims.jti));
        assert!(matches!(ca.verify_join_token(&token, &bar), Err(CaError::Token(TokenError::WrongIdentity { .. }))));
    }

    #[test]
    fn token_from_another_ca_or_tampered_is_refused() {
        let (a, b) = (ca("token-a"), ca("token-b"));
        let foo = SpiffeId::new("weft.local", "default", "foo").unwrap();
        let (token, _) = b.join_token(&foo, Duration::from_secs(60), None).unwrap();
        assert!(matches!(a.verify_join_token(&token, &foo), Err(CaError::Token(TokenError::BadSignature))));
        let (mine, _) = a.join_token(&foo, Duration::from_secs(60), None).unwrap();
        let (head, sig) = mine.rsplit_once('.').unwrap();
        let (_, payload) = head.split_once('.').unwrap();
        let forged = format!("weft1.{payload}x.{sig}");
        assert!(a.verify_join_token(&forged, &foo).is_err());
        assert!(a.verify_join_token("garbage", &foo).is_err());
    }

    #[test]
    fn expired_token_is_refused() {
        let ca = ca("expired");
        let foo = SpiffeId::new("weft.local", "default", "foo").unwrap();
        let claims =
            TokenClaims { id: foo.to_string(), iat: 1, exp: unix_now() - 1, jti: token::new_id(), instance: None };
        let token = token::sign(&claims, &ca.token_key).unwrap();
        assert!(matches!(ca.verify_join_token(&token, &foo), Err(CaError::Token(TokenError::Expired))));
    }

    #[test]
    fn system_namespace_and_foreign_trust_domain_are_refused() {
        let ca = ca("reserved");
        let ctl = SpiffeId::controller("weft.local").unwrap();
        assert!(matches!(ca.join_token(&ctl, Duration::from_secs(60), None), Err(CaError::Reserved(_))));
        let other = SpiffeId::new("other.td", "default", "foo").unwrap();
        assert!(matches!(ca.join_token(&other, Duration::from_secs(60), None), Err(CaError::WrongTrustDomain { .. })));
        let (_, csr) = workload_csr(&ctl).unwrap();
        assert!(matches!(ca.sign_csr(&csr, &ctl, Duration::from_secs(60), None), Err(CaError::Reserved(_))));
    }

    #[test]
    fn csr_must_ask_for_exactly_the_identity() {
        let ca = ca("csr");
        let foo = SpiffeId::new("weft.local", "default", "foo").unwrap();
        let bar = SpiffeId::new("weft.local", "default", "bar").unwrap();
        let (_, csr) = workload_csr(&foo).unwrap();
        let prov = Provenance { token_id: token::new_id(), instance: Some("foo-1".into()) };
        let issued = ca.sign_csr(&csr, &foo, Duration::from_secs(3600), Some(&prov)).unwrap();
        assert_eq!(x509::spiffe_id(&issued.chain[0]).unwrap(), foo);
        assert_eq!(Provenance::of_cert(&issued.chain[0]), Some(prov));
        assert!(matches!(ca.sign_csr(&csr, &bar, Duration::from_secs(3600), None), Err(CaError::BadCsr(_))));
        assert!(matches!(ca.sign_csr(b"not a csr", &foo, Duration::from_secs(3600), None), Err(CaError::BadCsr(_))));
        let expiry = issued.not_after_unix - unix_now() as i64;
        assert!((3500..=3700).contains(&expiry), "expiry {expiry}");
    }
}
