//! Reading what Weft needs out of X.509 certificates: the SPIFFE ID, the expiry, the public key.

use rustls_pki_types::CertificateDer;
use thiserror::Error;

use crate::der::{cert_fields, CertFields};
use crate::spiffe::SpiffeId;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CertInfoError {
    #[error("certificate does not parse")]
    Parse,
    #[error("certificate carries {0} SPIFFE URI SANs; exactly one is required")]
    SpiffeCount(usize),
    #[error("certificate's SPIFFE ID is invalid: {0}")]
    BadSpiffe(String),
}

fn fields(cert: &CertificateDer<'_>) -> Result<CertFields, CertInfoError> {
    cert_fields(cert.as_ref()).ok_or(CertInfoError::Parse)
}

/// The single `spiffe://` URI SAN of a certificate.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Result<SpiffeId, CertInfoError> {
    let f = fields(cert)?;
    let uris: Vec<&String> = f.uri_sans.iter().filter(|u| u.starts_with("spiffe://")).collect();
    match uris.as_slice() {
        [one] => one.parse().map_err(|e: crate::SpiffeError| CertInfoError::BadSpiffe(e.to_string())),
        other => Err(CertInfoError::SpiffeCount(other.len())),
    }
}

/// `notAfter` in Unix seconds.
pub fn not_after_unix(cert: &CertificateDer<'_>) -> Result<i64, CertInfoError> {
    Ok(fields(cert)?.not_after_unix)
}

/// `notBefore` in Unix seconds.
pub fn not_before_unix(cert: &CertificateDer<'_>) -> Result<i64, CertInfoError> {
    Ok(fields(cert)?.not_before_unix)
}

/// The raw subject public key (for EC keys: the SEC1 point).
pub fn public_key(cert: &CertificateDer<'_>) -> Result<Vec<u8>, CertInfoError> {
    Ok(fields(cert)?.public_key)
}

/// The trust domain a CA certificate names (`spiffe://TD` URI SAN), if any.
pub fn trust_domain(cert: &CertificateDer<'_>) -> Option<String> {
    fields(cert)
        .ok()?
        .uri_sans
        .into_iter()
        .filter_map(|u| u.strip_prefix("spiffe://").map(str::to_string))
        .find(|td| !td.contains('/'))
}
