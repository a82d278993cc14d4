//! CSR signing: whatever a CSR asks for, the certificate the CA issues names exactly the
//! identity the caller was granted (one URI SAN), for the CSR's own key, with the provenance the
//! CA recorded — or the CSR is refused.

use std::sync::OnceLock;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, PublicKeyData, SanType, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::CertificateDer;

use crate::ca::CertificateAuthority;
use crate::der::cert_fields;
use crate::provenance::{valid_instance, Provenance};
use crate::spiffe::SpiffeId;
use crate::x509;

/// Identities a caller may have been granted: an ordinary one, one in the reserved namespace,
/// one of another trust domain (the last two must always be refused).
const GRANTED: [&str; 3] = [
    "spiffe://weft.local/ns/default/sa/web",
    "spiffe://weft.local/ns/weft-system/sa/weft-controller",
    "spiffe://other.td/ns/default/sa/web",
];

struct Fixture {
    ca: CertificateAuthority,
    key: KeyPair,
}

/// A CA and a workload key, made once per process (the CA's folder is removed at once: the CA
/// is held in memory).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("weft-fuzz-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = CertificateAuthority::init(&dir, "weft.local").expect("a CA");
        let _ = std::fs::remove_dir_all(&dir);
        Fixture { ca, key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("a key") }
    })
}

/// Input: a mode byte. Mode even: the rest is a CSR in DER, as a proxy sends it. Mode odd: text
/// lines, each a SAN the CSR asks for (`uri:`, `dns:` or `ip:` and a value), a line `instance:X`
/// sets the provenance's instance. Bits 1-2 of the mode pick the granted identity.
pub fn check(data: &[u8]) {
    let [mode, rest @ ..] = data else { return };
    let f = fixture();
    let granted: SpiffeId = GRANTED[usize::from((mode >> 1) & 3) % GRANTED.len()].parse().expect("an ID");
    let mut provenance = Provenance { token_id: "0123456789abcdef".into(), instance: None };
    let (csr, asked) = if mode.is_multiple_of(2) {
        (rest.to_vec(), None)
    } else {
        let mut sans = Vec::new();
        for line in String::from_utf8_lossy(rest).lines() {
            let san = match line.split_once(':') {
                Some(("uri", v)) => v.to_string().try_into().ok().map(SanType::URI),
                Some(("dns", v)) => v.to_string().try_into().ok().map(SanType::DnsName),
                Some(("ip", v)) => v.parse().ok().map(SanType::IpAddress),
                Some(("instance", v)) if valid_instance(v) => {
                    provenance.instance = Some(v.to_string());
                    None
                }
                _ => None,
            };
            sans.extend(san);
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans.clone();
        let Ok(csr) = params.serialize_request(&f.key) else { return };
        (csr.der().to_vec(), Some(sans))
    };
    let issued = f.ca.sign_csr(&csr, &granted, Duration::from_secs(3600), Some(&provenance));
    if let Some(sans) = &asked {
        let exact = matches!(sans.as_slice(), [SanType::URI(u)] if u.as_str() == granted.to_string());
        let allowed = f.ca.check_workload_identity(&granted).is_ok();
        assert_eq!(issued.is_ok(), exact && allowed, "asked {sans:?} as {granted}: {:?}", issued.as_ref().err());
    }
    let Ok(chain) = issued else { return };
    assert!(f.ca.check_workload_identity(&granted).is_ok(), "issued {granted}, which the CA must refuse");
    let leaf: &CertificateDer<'_> = &chain.chain[0];
    assert_eq!(x509::spiffe_id(leaf).as_ref(), Ok(&granted), "the certificate names another identity");
    let fields = cert_fields(leaf).expect("the CA's own certificate parses");
    assert_eq!(fields.uri_sans, [granted.to_string()], "the certificate carries other SANs");
    assert_eq!(Provenance::of_cert(leaf), Some(provenance), "the provenance recorded is not the CA's");
    let csr_key =
        rcgen::CertificateSigningRequestParams::from_der(&csr.into()).expect("a CSR the CA signed").public_key;
    assert_eq!(fields.public_key, csr_key.der_bytes(), "the certificate is for another key");
    if asked.is_some() {
        assert_eq!(fields.public_key, f.key.public_key_raw());
    }
}
