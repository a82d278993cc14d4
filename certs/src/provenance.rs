//! Where a workload certificate came from: the join token that obtained the first certificate of
//! its line (renewals carry it over) and, for a token bound to one instance, that instance. It is
//! recorded in the leaf's subject as one organizational unit, `weft-token=ID[;instance=NAME]`, so
//! that a controller can refuse renewals and registrations of a revoked token without any state of
//! its own (several controllers may share one CA folder).

use rustls_pki_types::CertificateDer;

const TOKEN_PREFIX: &str = "weft-token=";
const INSTANCE_PREFIX: &str = ";instance=";

/// A certificate's provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    pub token_id: String,
    /// Set for tokens bound to one instance.
    pub instance: Option<String>,
}

impl Provenance {
    /// The subject OU that records it.
    pub fn to_ou(&self) -> String {
        match &self.instance {
            Some(i) => format!("{TOKEN_PREFIX}{}{INSTANCE_PREFIX}{i}", self.token_id),
            None => format!("{TOKEN_PREFIX}{}", self.token_id),
        }
    }

    pub fn from_ou(ou: &str) -> Option<Self> {
        let rest = ou.strip_prefix(TOKEN_PREFIX)?;
        let (id, instance) = match rest.split_once(INSTANCE_PREFIX) {
            Some((id, i)) if valid_instance(i) => (id, Some(i.to_string())),
            Some(_) => return None,
            None => (rest, None),
        };
        crate::token::is_id(id).then(|| Self { token_id: id.to_string(), instance })
    }

    /// The provenance a leaf certificate records, if any.
    pub fn of_cert(cert: &CertificateDer<'_>) -> Option<Self> {
        crate::der::cert_fields(cert.as_ref())?.subject_ou.as_deref().and_then(Self::from_ou)
    }
}

/// Instance names: what `--instance` accepts (host names, pod names, `host-pid`).
pub fn valid_instance(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_ou() {
        for p in [
            Provenance { token_id: "0123456789abcdef".into(), instance: None },
            Provenance { token_id: "0123456789abcdef".into(), instance: Some("bar-0".into()) },
        ] {
            assert_eq!(Provenance::from_ou(&p.to_ou()), Some(p));
        }
        for bad in ["", "weft-token=", "weft-token=xyz", "weft-token=0123456789abcdef;instance=a b", "other"] {
            assert_eq!(Provenance::from_ou(bad), None, "{bad:?}");
        }
    }
}
