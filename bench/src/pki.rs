//! The benchmark's certificates, all from one Weft CA: SPIFFE certificates for the floor relays
//! and for Envoy, join tokens for Weft's proxies, and for linkerd2-proxy a key and CSR per proxy
//! plus the signer its stand-in control plane uses (linkerd2-proxy identities are DNS-like names,
//! so those leaves carry a DNS SAN, signed by the same CA).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateSigningRequestDer;
use weft_certs::{CertificateAuthority, SpiffeId};

pub const TRUST_DOMAIN: &str = "weft.local";
const LEAF_TTL: Duration = Duration::from_secs(24 * 3600);

/// The CA and the directory everything is written to.
pub struct BenchPki {
    pub ca: CertificateAuthority,
    pub ca_dir: PathBuf,
    dir: PathBuf,
}

/// A certificate chain and key written as PEM files.
#[derive(Debug, Clone)]
pub struct PemIdentity {
    pub id: SpiffeId,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl BenchPki {
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let ca_dir = dir.join("ca");
        let ca = CertificateAuthority::init(&ca_dir, TRUST_DOMAIN).context("creating the benchmark CA")?;
        Ok(Self { ca, ca_dir, dir: dir.to_path_buf() })
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir.join(weft_certs::ca::CA_CERT_FILE)
    }

    /// A SPIFFE certificate and key for `spiffe://weft.local/ns/default/sa/{name}`.
    pub fn spiffe_identity(&self, name: &str) -> anyhow::Result<PemIdentity> {
        let id = SpiffeId::new(TRUST_DOMAIN, "default", name)?;
        let issued = self.ca.issue_direct(&id, LEAF_TTL)?;
        let cert = self.dir.join(format!("{name}.crt"));
        let key = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert, weft_certs::pem::encode_certs(&issued.chain))?;
        std::fs::write(&key, weft_certs::pem::encode_pkcs8(issued.key.secret_pkcs8_der()))?;
        Ok(PemIdentity { id, cert, key })
    }

    /// A join token file for a Weft proxy of service `name`.
    pub fn join_token(&self, name: &str) -> anyhow::Result<PathBuf> {
        let id = SpiffeId::new(TRUST_DOMAIN, "default", name)?;
        let (token, _) = self.ca.join_token(&id, Duration::from_secs(24 * 3600), None)?;
        let path = self.dir.join(format!("{name}.token"));
        weft_certs::ca::write_secret(&path, token.as_bytes())?;
        Ok(path)
    }

    /// linkerd2-proxy's identity directory for `name`: `key.p8` (PKCS#8 DER, ECDSA P-256, made
    /// here since no wrapper does it outside Kubernetes), `csr.der`, and a token file.
    pub fn linkerd_identity(&self, name: &str) -> anyhow::Result<LinkerdIdentity> {
        let dir = self.dir.join(format!("l5d-{name}"));
        std::fs::create_dir_all(&dir)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(name.try_into()?)];
        let csr = params.serialize_request(&key)?;
        std::fs::write(dir.join("key.p8"), key.serialize_der())?;
        std::fs::write(dir.join("csr.der"), csr.der())?;
        let token = dir.join("token");
        std::fs::write(&token, format!("weft-bench-standin-{name}\n"))?;
        Ok(LinkerdIdentity { name: name.to_string(), dir, token })
    }
}

#[derive(Debug, Clone)]
pub struct LinkerdIdentity {
    pub name: String,
    pub dir: PathBuf,
    pub token: PathBuf,
}

/// Signs linkerd2-proxy CSRs with the Weft CA's key: a leaf with a DNS SAN equal to the proxy's
/// local name, serverAuth+clientAuth, not a CA — what linkerd2-proxy checks before it serves.
pub struct DnsSigner {
    ca_der: rustls_pki_types::CertificateDer<'static>,
    key: KeyPair,
    pub ca_pem: String,
}

impl DnsSigner {
    pub fn load(ca_dir: &Path) -> anyhow::Result<Self> {
        let ca_pem = std::fs::read_to_string(ca_dir.join(weft_certs::ca::CA_CERT_FILE))?;
        let key_pem = std::fs::read_to_string(ca_dir.join(weft_certs::ca::CA_KEY_FILE))?;
        let ca_der = weft_certs::pem::certs(ca_pem.as_bytes())
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .next()
            .context("no CA certificate")?;
        let key = KeyPair::from_pem(&key_pem)?;
        Ok(Self { ca_der, key, ca_pem })
    }

    /// Signs `csr_der` for `name`; returns the leaf (DER) and its expiry.
    pub fn sign(&self, csr_der: &[u8], name: &str) -> anyhow::Result<(Vec<u8>, SystemTime)> {
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der.to_vec()))
            .context("parsing the CSR")?;
        let asked: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .filter_map(|s| match s {
                SanType::DnsName(n) => Some(n.as_str().to_string()),
                _ => None,
            })
            .collect();
        if !asked.iter().any(|n| n == name) {
            bail!("the CSR names {asked:?}, not {name}");
        }
        let now = SystemTime::now();
        let not_after = now + LEAF_TTL;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(name.try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - Duration::from_secs(300)).into();
        params.not_after = not_after.into();
        let issuer = Issuer::from_ca_cert_der(&self.ca_der, &self.key)?;
        let cert = params.signed_by(&csr.public_key, &issuer)?;
        Ok((cert.der().to_vec(), not_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-bench-pki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn linkerd_csr_is_signed_with_its_dns_name_and_chains_to_the_ca() {
        let dir = temp("l5d");
        let pki = BenchPki::create(&dir).unwrap();
        let name = "client.bench.serviceaccount.identity.linkerd.cluster.local";
        let id = pki.linkerd_identity(name).unwrap();
        let csr = std::fs::read(id.dir.join("csr.der")).unwrap();
        let signer = DnsSigner::load(&pki.ca_dir).unwrap();
        let (leaf, not_after) = signer.sign(&csr, name).unwrap();
        assert!(not_after > SystemTime::now());
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(&leaf).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(san.value.general_names.iter().any(|g| matches!(g, GeneralName::DNSName(n) if *n == name)));
        let (_, ca) = X509Certificate::from_der(pki.ca.cert_der()).unwrap();
        assert_eq!(cert.issuer(), ca.subject());
        assert_ne!(cert.subject(), ca.subject(), "a leaf must not read like its issuer");
        // The signature chains to the CA (the check linkerd2-proxy's verifier makes first).
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.cert_der().clone()).unwrap();
        let leaf_der = rustls_pki_types::CertificateDer::from(leaf.clone());
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &rustls::server::ParsedCertificate::try_from(&leaf_der).unwrap(),
            &roots,
            &[],
            rustls_pki_types::UnixTime::now(),
            weft_certs::tls::provider().signature_verification_algorithms.all,
        )
        .unwrap();
        // A CSR for another name is refused.
        assert!(signer.sign(&csr, "server.bench.serviceaccount.identity.linkerd.cluster.local").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn spiffe_identities_are_written_as_pem() {
        let dir = temp("spiffe");
        let pki = BenchPki::create(&dir).unwrap();
        let id = pki.spiffe_identity("floor-client").unwrap();
        assert_eq!(id.id.to_string(), "spiffe://weft.local/ns/default/sa/floor-client");
        let chain = weft_certs::pem::certs(&std::fs::read(&id.cert).unwrap()).unwrap();
        assert_eq!(weft_certs::x509::spiffe_id(&chain[0]).unwrap(), id.id);
        weft_certs::pem::private_key(&std::fs::read(&id.key).unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
