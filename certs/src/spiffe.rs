//! SPIFFE IDs: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The namespace reserved for the control plane; no workload may claim an identity in it.
pub const SYSTEM_NAMESPACE: &str = "weft-system";
/// The controller's service account.
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "weft-controller";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpiffeError {
    #[error("not a SPIFFE ID (expected spiffe://TD/ns/NS/sa/SA): {0:?}")]
    Malformed(String),
    #[error("invalid trust domain {0:?}: use lowercase letters, digits, '.', '-' and '_', with at least one letter or digit")]
    BadTrustDomain(String),
    #[error("invalid {what} {value:?}: use letters, digits, '.', '-' and '_'")]
    BadSegment { what: &'static str, value: String },
}

/// A workload identity in the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, SpiffeError> {
        validate_trust_domain(trust_domain)?;
        validate_segment("namespace", namespace)?;
        validate_segment("service account", service_account)?;
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    /// The controller's identity in `trust_domain`.
    pub fn controller(trust_domain: &str) -> Result<Self, SpiffeError> {
        Self::new(trust_domain, SYSTEM_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// Whether this identity lives in the control plane's reserved namespace.
    pub fn is_system(&self) -> bool {
        self.namespace == SYSTEM_NAMESPACE
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || SpiffeError::Malformed(s.to_string());
        let rest = s.strip_prefix("spiffe://").ok_or_else(malformed)?;
        let mut parts = rest.split('/');
        let (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        Self::new(td, ns, sa)
    }
}

pub fn validate_trust_domain(td: &str) -> Result<(), SpiffeError> {
    // At least one letter or digit: "." and ".." are path segments, not names (found by fuzzing).
    let ok = td.len() <= 255
        && td.bytes().any(|b| b.is_ascii_alphanumeric())
        && td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(SpiffeError::BadTrustDomain(td.to_string()))
    }
}

pub fn validate_segment(what: &'static str, value: &str) -> Result<(), SpiffeError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value != "."
        && value != ".."
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(SpiffeError::BadSegment { what, value: value.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id: SpiffeId = "spiffe://weft.local/ns/default/sa/foo".parse().unwrap();
        assert_eq!(id.trust_domain(), "weft.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "foo");
        assert_eq!(id.to_string(), "spiffe://weft.local/ns/default/sa/foo");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "spiffe://",
            "http://weft.local/ns/default/sa/foo",
            "spiffe://weft.local/ns/default/sa",
            "spiffe://weft.local/ns/default/sa/foo/extra",
            "spiffe://weft.local/namespace/default/sa/foo",
            "spiffe://Weft.Local/ns/default/sa/foo",
            "spiffe://weft.local/ns/de fault/sa/foo",
            "spiffe://weft.local/ns/../sa/foo",
            "spiffe://./ns/default/sa/foo",
            "spiffe://../ns/default/sa/foo",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn controller_identity_is_system() {
        let id = SpiffeId::controller("weft.local").unwrap();
        assert!(id.is_system());
        assert_eq!(id.to_string(), "spiffe://weft.local/ns/weft-system/sa/weft-controller");
    }
}
