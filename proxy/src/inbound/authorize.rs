//! The one caller check every inbound path makes (HTTP, opaque TCP, plaintext redirected in
//! transparent mode). The rule, from the service's own policy:
//! - no policy held yet: nobody (the proxy cannot know what is allowed; a caller may retry);
//! - absent `allow`: any mesh identity, and plaintext callers only under `mtls: permissive`;
//! - an `allow` list: only those identities, never plaintext;
//! - `allow: []`: nobody.
//!
//! After the first policy, a controller outage or a NACK keeps the last good one (static
//! stability), so the check never fails open.

use crate::state::policy::Policy;

/// Why a caller was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No policy for the service is held yet.
    NotReady,
    /// A plaintext caller, and the service is `mtls: strict`.
    PlaintextRefused,
    /// The caller (an identity, or plaintext) is not in the service's `allow` list.
    Unauthorized,
}

impl From<Refusal> for crate::respond::ProxyError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotReady => Self::NotReady,
            Refusal::PlaintextRefused => Self::PlaintextRefused,
            Refusal::Unauthorized => Self::Unauthorized,
        }
    }
}

/// Checks a caller (`identity`: its verified SPIFFE ID; None for plaintext) against `policy`.
pub fn authorize(policy: Option<&Policy>, identity: Option<&str>) -> Result<(), Refusal> {
    let policy = policy.ok_or(Refusal::NotReady)?;
    match (identity, &policy.allow) {
        (Some(_), None) => Ok(()),
        (Some(id), Some(allowed)) if allowed.iter().any(|a| a == id) => Ok(()),
        (Some(_), Some(_)) => Err(Refusal::Unauthorized),
        (None, _) if policy.mtls_strict => Err(Refusal::PlaintextRefused),
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Refusal::Unauthorized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::v1 as pb;

    fn policy(allow: Option<&[&str]>, strict: bool) -> Policy {
        Policy::compile(&pb::ServicePolicy {
            name: "bar".into(),
            namespace: "default".into(),
            mtls: if strict { pb::MtlsMode::Strict as i32 } else { pb::MtlsMode::Permissive as i32 },
            allow: allow.map(|a| pb::AllowList { identities: a.iter().map(|s| s.to_string()).collect() }),
            ..Default::default()
        })
        .unwrap()
    }

    const FOO: &str = "spiffe://weft.local/ns/default/sa/foo";
    const EVIL: &str = "spiffe://weft.local/ns/evil/sa/foo";

    #[test]
    fn no_policy_admits_nobody() {
        assert_eq!(authorize(None, Some(FOO)), Err(Refusal::NotReady));
        assert_eq!(authorize(None, None), Err(Refusal::NotReady));
    }

    #[test]
    fn absent_allow_admits_identities_and_plaintext_only_when_permissive() {
        let p = policy(None, false);
        assert_eq!(authorize(Some(&p), Some(EVIL)), Ok(()));
        assert_eq!(authorize(Some(&p), None), Ok(()));
        let strict = policy(None, true);
        assert_eq!(authorize(Some(&strict), Some(FOO)), Ok(()));
        assert_eq!(authorize(Some(&strict), None), Err(Refusal::PlaintextRefused));
    }

    #[test]
    fn a_list_admits_exactly_its_identities_and_never_plaintext() {
        let p = policy(Some(&[FOO]), false);
        assert_eq!(authorize(Some(&p), Some(FOO)), Ok(()));
        assert_eq!(authorize(Some(&p), Some(EVIL)), Err(Refusal::Unauthorized), "same name, other namespace");
        assert_eq!(authorize(Some(&p), None), Err(Refusal::Unauthorized));
        let nobody = policy(Some(&[]), false);
        assert_eq!(authorize(Some(&nobody), Some(FOO)), Err(Refusal::Unauthorized));
        assert_eq!(authorize(Some(&nobody), None), Err(Refusal::Unauthorized));
    }
}
