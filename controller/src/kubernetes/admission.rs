//! Who may do what, decided from the pod the API server says stands behind a request (no I/O):
//! a certificate only for the service account of the pod bound to the token, recorded in the
//! certificate (the pod's name and an id from its UID); a renewal only while that very pod
//! exists; a registration only for that pod, from one of its IPs.

use std::net::IpAddr;

use weft_certs::provenance::Provenance;
use weft_certs::SpiffeId;
use weft_proto::v1 as pb;

use super::objects::PodRecord;
use super::tokens::Reviewed;

/// Why a pod-bound request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The pod is not known (yet): the index may lag a pod created a moment ago. Worth retrying.
    #[error("pod {0} is not known to the API server (yet)")]
    UnknownPod(String),
    /// The request does not match the pod: never worth retrying.
    #[error("{0}")]
    Mismatch(String),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownPod(_) => "unknown-pod",
            Refusal::Mismatch(_) => "not-this-pod",
        }
    }
}

/// The id a pod-bound certificate records (as its provenance's token id): the pod's UID, so that
/// a pod recreated under the same name (a StatefulSet's) is another pod. 16 hex digits.
pub fn pod_id(uid: &str) -> String {
    let hex: String = uid.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_lowercase()).collect();
    if hex.len() >= 16 {
        return hex[..16].to_string();
    }
    // Not a UUID (test objects): a hash of it instead.
    let h = uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{h:016x}")
}

/// The pod, if it still runs. `draining_ok`: a pod being deleted still serves until it stops, so
/// its proxy may reconnect; it gets no new certificate.
fn live<'a>(
    pod: Option<&'a PodRecord>,
    namespace: &str,
    name: &str,
    draining_ok: bool,
) -> Result<&'a PodRecord, Refusal> {
    let pod = pod.ok_or_else(|| Refusal::UnknownPod(format!("{namespace}/{name}")))?;
    if pod.finished || (pod.deleting && !draining_ok) {
        return Err(Refusal::Mismatch(format!("pod {namespace}/{name} has finished or is being deleted")));
    }
    Ok(pod)
}

/// A first certificate: the token's account must be the one asked for, and its pod must exist
/// with the token's UID. Returns what the certificate records.
pub fn certificate(reviewed: &Reviewed, asked: &SpiffeId, pod: Option<&PodRecord>) -> Result<Provenance, Refusal> {
    if asked.namespace() != reviewed.namespace || asked.service_account() != reviewed.service_account {
        return Err(Refusal::Mismatch(format!(
            "the token is for the service account {}/{}, not {asked}",
            reviewed.namespace, reviewed.service_account
        )));
    }
    let pod = live(pod, &reviewed.namespace, &reviewed.pod_name, false)?;
    if pod.uid != reviewed.pod_uid {
        return Err(Refusal::Mismatch(format!(
            "pod {}/{} is not the pod the token was issued to (it was deleted and recreated)",
            reviewed.namespace, reviewed.pod_name
        )));
    }
    if pod.service_account != reviewed.service_account {
        return Err(Refusal::Mismatch(format!(
            "pod {}/{} runs as {}, not {}",
            reviewed.namespace, reviewed.pod_name, pod.service_account, reviewed.service_account
        )));
    }
    Ok(Provenance { token_id: pod_id(&pod.uid), instance: Some(pod.name.clone()) })
}

/// A renewal: the certificate must record a pod, and that pod must still exist (same UID, same
/// account). A certificate outlives its pod by at most its remaining lifetime.
pub fn renewal(identity: &SpiffeId, provenance: Option<&Provenance>, pod: Option<&PodRecord>) -> Result<(), Refusal> {
    let Some(Provenance { token_id, instance: Some(name) }) = provenance else {
        return Err(Refusal::Mismatch(format!(
            "the certificate of {identity} is not bound to a pod (not issued for a service-account token)"
        )));
    };
    let pod = live(pod, identity.namespace(), name, false)?;
    if pod_id(&pod.uid) != *token_id || pod.service_account != identity.service_account() {
        return Err(Refusal::Mismatch(format!(
            "pod {}/{name} is not the pod this certificate was issued to",
            identity.namespace()
        )));
    }
    Ok(())
}

/// A registration: the workload is the pod it names (its instance), runs as the certificate's
/// account, and the stream comes from one of the pod's IPs.
pub fn registration(
    identity: &SpiffeId,
    w: &pb::Workload,
    source: IpAddr,
    pod: Option<&PodRecord>,
) -> Result<(), Refusal> {
    let pod = live(pod, &w.namespace, &w.instance, true)?;
    if pod.service_account != identity.service_account() || pod.namespace != identity.namespace() {
        return Err(Refusal::Mismatch(format!(
            "pod {}/{} runs as {}/{}, not as {identity}",
            pod.namespace, pod.name, pod.namespace, pod.service_account
        )));
    }
    let source = source.to_canonical();
    if !pod.ips.contains(&source) {
        let ips: Vec<String> = pod.ips.iter().map(IpAddr::to_string).collect();
        return Err(Refusal::Mismatch(format!(
            "this stream comes from {source}, which is not an IP of pod {}/{} ({})",
            pod.namespace,
            pod.name,
            if ips.is_empty() { "none yet".to_string() } else { ips.join(", ") }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::objects::fixtures::pod;
    use super::*;

    fn reviewed(sa: &str, pod: &str, uid: &str) -> Reviewed {
        Reviewed { namespace: "shop".into(), service_account: sa.into(), pod_name: pod.into(), pod_uid: uid.into() }
    }

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::new("weft.local", "shop", sa).unwrap()
    }

    #[test]
    fn a_certificate_is_for_the_tokens_account_and_its_live_pod_only() {
        let bar = pod("shop", "bar-1", "bar", &["10.1.0.11"], "v1", true);
        let p = certificate(&reviewed("bar", "bar-1", &bar.uid), &id("bar"), Some(&bar)).unwrap();
        assert_eq!(p.instance.as_deref(), Some("bar-1"));
        assert_eq!(p.token_id, pod_id(&bar.uid));
        assert!(weft_certs::provenance::Provenance::from_ou(&p.to_ou()).is_some(), "it fits a certificate");
        // Another account than the token's.
        let e = certificate(&reviewed("bar", "bar-1", &bar.uid), &id("payments"), Some(&bar)).unwrap_err();
        assert!(matches!(e, Refusal::Mismatch(_)), "{e}");
        // The pod was deleted and recreated under the same name: the token was for the old one.
        let e = certificate(&reviewed("bar", "bar-1", "another-uid"), &id("bar"), Some(&bar)).unwrap_err();
        assert!(e.to_string().contains("recreated"), "{e}");
        // Not known yet (worth a retry), or finished (not).
        assert!(matches!(
            certificate(&reviewed("bar", "bar-1", &bar.uid), &id("bar"), None),
            Err(Refusal::UnknownPod(_))
        ));
        let done = PodRecord { finished: true, ..bar };
        assert!(matches!(
            certificate(&reviewed("bar", "bar-1", &done.uid), &id("bar"), Some(&done)),
            Err(Refusal::Mismatch(_))
        ));
    }

    #[test]
    fn renewals_stop_once_the_pod_is_gone_or_replaced() {
        let bar = pod("shop", "bar-1", "bar", &["10.1.0.11"], "v1", true);
        let prov = Provenance { token_id: pod_id(&bar.uid), instance: Some("bar-1".into()) };
        renewal(&id("bar"), Some(&prov), Some(&bar)).unwrap();
        assert!(matches!(renewal(&id("bar"), Some(&prov), None), Err(Refusal::UnknownPod(_))));
        let replaced = PodRecord { uid: "ffffffff-0000-0000-0000-000000000000".into(), ..bar.clone() };
        assert!(matches!(renewal(&id("bar"), Some(&prov), Some(&replaced)), Err(Refusal::Mismatch(_))));
        let unbound = Provenance { token_id: "0123456789abcdef".into(), instance: None };
        assert!(renewal(&id("bar"), Some(&unbound), Some(&bar)).is_err(), "a join token's certificate");
        assert!(renewal(&id("bar"), None, Some(&bar)).is_err());
    }

    #[test]
    fn a_registration_is_for_its_own_pod_from_that_pods_ip() {
        let bar = pod("shop", "bar-1", "bar", &["10.1.0.11", "fd00::11"], "v1", true);
        let w = pb::Workload {
            service: "bar".into(),
            namespace: "shop".into(),
            instance: "bar-1".into(),
            ..Default::default()
        };
        registration(&id("bar"), &w, "10.1.0.11".parse().unwrap(), Some(&bar)).unwrap();
        registration(&id("bar"), &w, "fd00::11".parse().unwrap(), Some(&bar)).unwrap();
        registration(&id("bar"), &w, "::ffff:10.1.0.11".parse().unwrap(), Some(&bar)).unwrap();
        // From another pod's IP.
        let e = registration(&id("bar"), &w, "10.1.0.12".parse().unwrap(), Some(&bar)).unwrap_err();
        assert!(e.to_string().contains("not an IP of pod shop/bar-1"), "{e}");
        // A pod of another account.
        let foo = pod("shop", "foo-1", "foo", &["10.1.0.11"], "", true);
        assert!(registration(&id("bar"), &w, "10.1.0.11".parse().unwrap(), Some(&foo)).is_err());
        assert!(matches!(
            registration(&id("bar"), &w, "10.1.0.11".parse().unwrap(), None),
            Err(Refusal::UnknownPod(_))
        ));
    }

    #[test]
    fn pod_ids_are_the_uids_first_hex_digits() {
        assert_eq!(pod_id("8B5F2E6A-1C3D-4E5F-9A0B-1C2D3E4F5A6B"), "8b5f2e6a1c3d4e5f");
        assert_eq!(pod_id("x").len(), 16);
        assert!(weft_certs::token::is_id(&pod_id("0123abcd-bar-1-uid")));
    }
}
