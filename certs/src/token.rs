//! Join tokens: a short signed statement "the bearer may claim identity X until T", signed with the
//! CA key (ECDSA P-256), presented to obtain a proxy's first certificate. A token is a bearer
//! secret: it has an id (carried into every certificate obtained with it, so that revoking the id
//! also stops renewals), may be bound to one instance name, and is multi-use until it expires.
//!
//! Format: `weft1.<base64url(JSON claims)>.<base64url(ASN.1 ECDSA signature)>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::spiffe::SpiffeId;

const PREFIX: &str = "weft1";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed join token")]
    Malformed,
    #[error("join token signature is not from this CA")]
    BadSignature,
    #[error("join token expired")]
    Expired,
    #[error("join token {id} was revoked")]
    Revoked { id: String },
    #[error("join token is for {granted}, not {asked}")]
    WrongIdentity { granted: String, asked: String },
    #[error("could not sign join token")]
    Signing,
}

/// What a token grants.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenClaims {
    /// The full SPIFFE ID the bearer may claim.
    pub id: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// The token's id (for revocation); every certificate obtained with the token carries it.
    pub jti: String,
    /// When set, only a proxy with this `--instance` may register with the certificates it yields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// A token id: 16 hex digits, random.
pub fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    SystemRandom::new().fill(&mut b).expect("system RNG");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `s` has the shape of a token id (so that a revocation list holds nothing else).
pub fn is_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub fn sign(claims: &TokenClaims, key: &EcdsaKeyPair) -> Result<String, TokenError> {
    let payload = B64.encode(serde_json::to_vec(claims).map_err(|_| TokenError::Signing)?);
    let signed = format!("{PREFIX}.{payload}");
    let sig = key.sign(&SystemRandom::new(), signed.as_bytes()).map_err(|_| TokenError::Signing)?;
    Ok(format!("{signed}.{}", B64.encode(sig.as_ref())))
}

/// Checks the signature against the CA public key (uncompressed SEC1 point) and the expiry against
/// `now_unix`, and returns the claims with the identity they grant.
pub fn verify(token: &str, ca_public_key: &[u8], now_unix: u64) -> Result<(TokenClaims, SpiffeId), TokenError> {
    let token = token.trim();
    let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (prefix, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
    if prefix != PREFIX {
        return Err(TokenError::Malformed);
    }
    let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, ca_public_key)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: TokenClaims = serde_json::from_slice(&B64.decode(payload).map_err(|_| TokenError::Malformed)?)
        .map_err(|_| TokenError::Malformed)?;
    if !is_id(&claims.jti) || claims.instance.as_deref().is_some_and(|i| !crate::provenance::valid_instance(i)) {
        return Err(TokenError::Malformed);
    }
    if claims.exp <= now_unix {
        return Err(TokenError::Expired);
    }
    let id = claims.id.parse().map_err(|_| TokenError::Malformed)?;
    Ok((claims, id))
}
