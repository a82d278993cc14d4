//! Whether a pod gets a sidecar: decided from the pod, its namespace and who asks, before anything
//! is changed, so every skip has a reason to report.

use std::collections::BTreeMap;

use crate::names;

/// Who asks, which decides what "no annotation" means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptIn {
    /// `weft inject`: running it is the opt-in; only `disabled` keeps a pod out.
    Command,
    /// The webhook: a pod is injected when it or its namespace says `enabled` (the pod wins).
    Annotation,
}

/// What is known about the pod's namespace.
#[derive(Clone, Copy, Debug)]
pub enum NamespaceInfo<'a> {
    /// Not asked (the command line) or not in the object.
    Unknown,
    /// Read from the API: its annotations.
    Known(&'a BTreeMap<String, String>),
    /// The read failed; the reason goes into the skip message.
    Unreadable(&'a str),
}

/// The facts about one pod that the decision needs.
#[derive(Clone, Copy, Debug)]
pub struct PodFacts<'a> {
    pub namespace: Option<&'a str>,
    pub annotations: &'a BTreeMap<String, String>,
    pub host_network: bool,
    pub already_injected: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Inject,
    /// Injection was asked for (or may have been) but cannot be done: the reason is reported
    /// (stderr, or a warning from the webhook).
    Skip(String),
    /// Nobody asked for a sidecar (or the pod or its namespace refused one). The command line
    /// says so; the webhook stays quiet, since it sees every pod of every namespace.
    NotRequested(String),
    /// Already has the sidecar: left alone, so injecting twice changes nothing.
    AlreadyInjected,
}

pub fn decide(pod: PodFacts<'_>, namespace: NamespaceInfo<'_>, opt_in: OptIn) -> Decision {
    if pod.already_injected {
        return Decision::AlreadyInjected;
    }
    if let Some(ns) = pod.namespace {
        if ns == names::KUBE_SYSTEM || ns == names::MESH_NAMESPACE {
            return Decision::NotRequested(format!("pods in namespace {ns} are never injected"));
        }
    }
    let pod_says = pod.annotations.get(names::INJECT).map(String::as_str);
    match pod_says {
        Some("disabled") => return Decision::NotRequested(format!("the pod is annotated {}: disabled", names::INJECT)),
        Some("enabled") | None => {}
        Some(other) => {
            return Decision::Skip(format!("{}: {other:?} is neither enabled nor disabled", names::INJECT));
        }
    }
    if pod_says.is_none() && opt_in == OptIn::Annotation {
        let ns_name = pod.namespace.unwrap_or("?");
        match namespace {
            NamespaceInfo::Known(a) => match a.get(names::INJECT).map(String::as_str) {
                Some("enabled") => {}
                Some(v) => {
                    return Decision::NotRequested(format!("namespace {ns_name} is annotated {}: {v}", names::INJECT));
                }
                None => {
                    return Decision::NotRequested(format!(
                        "neither the pod nor namespace {ns_name} is annotated {}: enabled",
                        names::INJECT
                    ))
                }
            },
            NamespaceInfo::Unreadable(why) => {
                return Decision::Skip(format!(
                    "namespace {ns_name}'s annotations could not be read ({why}); only pods annotated {}: enabled are injected meanwhile",
                    names::INJECT
                ))
            }
            NamespaceInfo::Unknown => {
                return Decision::NotRequested(format!("the pod is not annotated {}: enabled", names::INJECT))
            }
        }
    }
    if pod.host_network {
        return Decision::Skip(
            "the pod uses the host's network (hostNetwork: true): iptables would redirect the node's traffic".into(),
        );
    }
    Decision::Inject
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn facts<'a>(ns: Option<&'a str>, a: &'a BTreeMap<String, String>) -> PodFacts<'a> {
        PodFacts { namespace: ns, annotations: a, host_network: false, already_injected: false }
    }

    #[test]
    fn the_command_injects_unless_disabled() {
        let none = ann(&[]);
        assert_eq!(decide(facts(None, &none), NamespaceInfo::Unknown, OptIn::Command), Decision::Inject);
        let off = ann(&[("weft.io/inject", "disabled")]);
        assert!(matches!(decide(facts(None, &off), NamespaceInfo::Unknown, OptIn::Command), Decision::NotRequested(_)));
    }

    #[test]
    fn the_webhook_needs_an_enabled_pod_or_namespace_and_the_pod_wins() {
        let (none, on, off) = (ann(&[]), ann(&[("weft.io/inject", "enabled")]), ann(&[("weft.io/inject", "disabled")]));
        let d = |pod: &BTreeMap<String, String>, ns: &BTreeMap<String, String>| {
            decide(facts(Some("shop"), pod), NamespaceInfo::Known(ns), OptIn::Annotation)
        };
        assert_eq!(d(&none, &on), Decision::Inject);
        assert_eq!(d(&on, &none), Decision::Inject);
        assert_eq!(d(&on, &off), Decision::Inject);
        assert!(matches!(d(&off, &on), Decision::NotRequested(_)));
        assert!(matches!(d(&none, &none), Decision::NotRequested(_)));
        let unreadable = decide(facts(Some("shop"), &none), NamespaceInfo::Unreadable("timeout"), OptIn::Annotation);
        assert!(matches!(unreadable, Decision::Skip(ref r) if r.contains("timeout")));
        assert_eq!(
            decide(facts(Some("shop"), &on), NamespaceInfo::Unreadable("timeout"), OptIn::Annotation),
            Decision::Inject
        );
    }

    #[test]
    fn system_namespaces_host_network_and_injected_pods_are_left_alone() {
        let on = ann(&[("weft.io/inject", "enabled")]);
        for ns in ["kube-system", "weft-system"] {
            let d = decide(facts(Some(ns), &on), NamespaceInfo::Unknown, OptIn::Command);
            assert!(matches!(d, Decision::NotRequested(_)));
        }
        let host = PodFacts { host_network: true, ..facts(None, &on) };
        assert!(
            matches!(decide(host, NamespaceInfo::Unknown, OptIn::Command), Decision::Skip(r) if r.contains("hostNetwork"))
        );
        let done = PodFacts { already_injected: true, ..facts(None, &on) };
        assert_eq!(decide(done, NamespaceInfo::Unknown, OptIn::Command), Decision::AlreadyInjected);
    }
}
