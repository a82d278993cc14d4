//! The injector: a pure function from a pod template (a Pod, or the `template` of a workload),
//! what is known of its namespace and the install's settings to the injected template — and back
//! (`uninject`). It edits the template in place of the fields it owns and leaves every other
//! field, and the order of keys, as it found them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use serde_norway::{Mapping, Value};

use crate::decision::{decide, Decision, NamespaceInfo, OptIn, PodFacts};
use crate::names;
use crate::probes;
use crate::settings::{InjectSettings, PodSettings};
use crate::sidecar;

/// Everything the injector knows besides the template.
#[derive(Clone, Copy, Debug)]
pub struct InjectContext<'a> {
    pub settings: &'a InjectSettings,
    /// The trust anchor (PEM) the proxy verifies the controller and peers with.
    pub trust_anchor: &'a str,
    /// The pod's namespace, when known (the object's, or the admission request's).
    pub namespace: Option<&'a str>,
    pub namespace_info: NamespaceInfo<'a>,
    pub opt_in: OptIn,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Injected(Value),
    AlreadyInjected,
    /// Asked for but not possible (host network, a port clash, …): worth a warning.
    Skipped(String),
    /// Not asked for, or refused by an annotation.
    NotRequested(String),
    /// Something in the template or its annotations is wrong; it is left alone.
    Invalid(Vec<String>),
}

/// An outcome with the warnings worth telling the user (probes kept, ignored annotations, …).
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    pub warnings: Vec<String>,
}

fn key(k: &str) -> Value {
    Value::String(k.to_string())
}

fn mapping<'a>(m: &'a Mapping, k: &str) -> Option<&'a Mapping> {
    m.get(key(k)).and_then(Value::as_mapping)
}

/// A map of strings (annotations, labels); an entry that is not a string is a problem.
fn string_map(m: Option<&Mapping>, what: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in m.into_iter().flatten() {
        match (k.as_str(), v.as_str()) {
            (Some(k), Some(v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => return Err(format!("metadata.{what}: every key and value must be a string ({k:?}: {v:?})")),
        }
    }
    Ok(out)
}

/// The names of a list of containers, for the already-injected check.
fn container_names(spec: &PodSpec) -> impl Iterator<Item = &str> {
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).map(|c| c.name.as_str())
}

fn is_ours(c: &Value) -> bool {
    let name = c.get("name").and_then(Value::as_str);
    name == Some(names::PROXY_CONTAINER) || name == Some(names::INIT_CONTAINER)
}

/// Injects one pod template.
pub fn inject(template: &Value, ctx: &InjectContext<'_>) -> Report {
    let mut warnings = Vec::new();
    let outcome = match inject_inner(template, ctx, &mut warnings) {
        Ok(o) => o,
        Err(problems) => Outcome::Invalid(problems),
    };
    Report { outcome, warnings }
}

fn inject_inner(template: &Value, ctx: &InjectContext<'_>, warnings: &mut Vec<String>) -> Result<Outcome, Vec<String>> {
    let root = template.as_mapping().ok_or_else(|| vec!["the pod template is not a mapping".to_string()])?;
    let metadata = mapping(root, "metadata");
    let annotations =
        string_map(metadata.and_then(|m| mapping(m, "annotations")), "annotations").map_err(|e| vec![e])?;
    let labels = string_map(metadata.and_then(|m| mapping(m, "labels")), "labels").map_err(|e| vec![e])?;
    let spec_value = root.get(key("spec")).cloned().ok_or_else(|| vec!["the pod template has no spec".to_string()])?;
    let spec: PodSpec = serde_norway::from_value(spec_value).map_err(|e| vec![format!("spec: {e}")])?;

    let already_injected = annotations.get(names::INJECT_STATUS).is_some_and(|v| v == names::INJECTED)
        || container_names(&spec).any(|n| n == names::PROXY_CONTAINER || n == names::INIT_CONTAINER);
    let facts = PodFacts {
        namespace: ctx.namespace,
        annotations: &annotations,
        host_network: spec.host_network == Some(true),
        already_injected,
    };
    match decide(facts, ctx.namespace_info, ctx.opt_in) {
        Decision::Inject => {}
        Decision::AlreadyInjected => return Ok(Outcome::AlreadyInjected),
        Decision::Skip(reason) => return Ok(Outcome::Skipped(reason)),
        Decision::NotRequested(reason) => return Ok(Outcome::NotRequested(reason)),
    }
    let ns_annotations = match ctx.namespace_info {
        NamespaceInfo::Known(a) => Some(a),
        _ => None,
    };
    let (settings, mut setting_warnings) = ctx.settings.for_pod(ns_annotations, &annotations);
    warnings.append(&mut setting_warnings);
    let settings = settings?;

    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        for p in c.ports.iter().flatten() {
            if names::PROXY_PORTS.contains(&p.container_port) {
                return Ok(Outcome::Skipped(format!(
                    "container {} uses port {}, which the proxy needs (4140, 4143, 4191)",
                    c.name, p.container_port
                )));
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if v.name == names::IDENTITY_VOLUME || v.name == names::INIT_RUN_VOLUME {
            return Ok(Outcome::Skipped(format!("the pod already has a volume named {}", v.name)));
        }
    }
    Ok(Outcome::Injected(build(root, &spec, &labels, &settings, ctx.trust_anchor, warnings)))
}

/// Writes the injected template: annotations, containers (probes rewritten), volumes.
fn build(
    root: &Mapping,
    spec: &PodSpec,
    labels: &BTreeMap<String, String>,
    s: &PodSettings,
    trust_anchor: &str,
    warnings: &mut Vec<String>,
) -> Value {
    let mut out = root.clone();
    let mut spec_map = mapping(root, "spec").cloned().unwrap_or_default();
    let seq = |m: &Mapping, k: &str| m.get(key(k)).and_then(Value::as_sequence).cloned().unwrap_or_default();
    let mut containers = seq(&spec_map, "containers");
    let mut app_inits = seq(&spec_map, "initContainers");

    // Probes of app containers and of the app's own native sidecars.
    let mut rewritten = probes::Rewritten::default();
    let skip_inbound = &s.base.skip_inbound_ports;
    for c in containers.iter_mut().filter_map(Value::as_mapping_mut) {
        probes::rewrite(c, skip_inbound, &mut rewritten);
    }
    for c in app_inits.iter_mut().filter_map(Value::as_mapping_mut) {
        if c.get(key("restartPolicy")).and_then(Value::as_str) == Some("Always") {
            probes::rewrite(c, skip_inbound, &mut rewritten);
        }
    }
    warnings.append(&mut rewritten.warnings);

    let job_like = matches!(spec.restart_policy.as_deref(), Some("Never") | Some("OnFailure"));
    if !s.base.native_sidecar {
        classic_warnings(spec, s, job_like, &mut containers, warnings);
    }
    if let Some(g) = s.base.shutdown_grace_period.as_deref().and_then(|g| weft_proto::duration::parse_duration(g).ok())
    {
        let pod_grace = spec.termination_grace_period_seconds.unwrap_or(30);
        if g.as_secs_f64() > pod_grace as f64 {
            warnings.push(format!(
                "shutdown-grace-period {}s is longer than the pod's terminationGracePeriodSeconds ({pod_grace}s): the kubelet kills the proxy first",
                g.as_secs()
            ));
        }
    }

    let to_value =
        |c: &k8s_openapi::api::core::v1::Container| name_first(serde_norway::to_value(c).unwrap_or(Value::Null));
    let inputs = sidecar::ProxyInputs {
        app_probes: &rewritten.entries,
        version: labels.get(names::VERSION_LABEL).map(String::as_str),
    };
    let proxy = to_value(&sidecar::proxy_container(s, &inputs));
    let mut inits = vec![to_value(&sidecar::init_container(s))];
    if s.base.native_sidecar {
        inits.push(proxy);
        inits.extend(app_inits);
    } else {
        inits.extend(app_inits);
        containers.insert(0, proxy);
    }
    spec_map.insert(key("initContainers"), Value::Sequence(inits));
    spec_map.insert(key("containers"), Value::Sequence(containers));
    let mut volumes = seq(&spec_map, "volumes");
    volumes.extend(sidecar::volumes(s).iter().map(|v| name_first(serde_norway::to_value(v).unwrap_or(Value::Null))));
    spec_map.insert(key("volumes"), Value::Sequence(volumes));

    let mut metadata = mapping(root, "metadata").cloned().unwrap_or_default();
    let mut annotations = mapping(&metadata, "annotations").cloned().unwrap_or_default();
    annotations.insert(key(names::INJECT_STATUS), key(names::INJECTED));
    annotations.insert(key(names::TRUST_ANCHOR), key(trust_anchor));
    if !rewritten.originals.is_empty() {
        let json = serde_json::Value::Object(rewritten.originals).to_string();
        annotations.insert(key(names::ORIGINAL_PROBES), Value::String(json));
    }
    metadata.insert(key("annotations"), Value::Mapping(annotations));
    if root.contains_key(key("metadata")) {
        out.insert(key("metadata"), Value::Mapping(metadata));
    } else {
        // A new metadata goes first, where a reader looks for it.
        let mut with = Mapping::new();
        with.insert(key("metadata"), Value::Mapping(metadata));
        with.extend(out);
        out = with;
    }
    out.insert(key("spec"), Value::Mapping(spec_map));
    Value::Mapping(out)
}

/// Puts `name` first, where a reader of a container or volume looks for it.
fn name_first(v: Value) -> Value {
    let Value::Mapping(m) = v else { return v };
    let mut out = Mapping::new();
    if let Some(name) = m.get(key("name")) {
        out.insert(key("name"), name.clone());
    }
    out.extend(m);
    Value::Mapping(out)
}

/// With a classic sidecar, the app's init containers run before the proxy, and a Job's pod only
/// finishes when the proxy is told to exit: wrap commands when the app image has `weft-proxy`.
fn classic_warnings(
    spec: &PodSpec,
    s: &PodSettings,
    job_like: bool,
    containers: &mut [Value],
    warnings: &mut Vec<String>,
) {
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        warnings.push(
            "classic sidecar: the app's init containers run before the proxy, so their TCP connections fail; \
             use a native sidecar or skip-outbound-ports"
                .into(),
        );
    }
    if !job_like {
        return;
    }
    let Some(bin) = &s.await_binary else {
        warnings.push(format!(
            "classic sidecar in a pod that runs to completion: the proxy keeps it running; set {}await-binary \
             (weft-proxy in the app image) or have the app POST to http://127.0.0.1:4191/shutdown",
            names::CONFIG_PREFIX
        ));
        return;
    };
    for c in containers.iter_mut().filter_map(Value::as_mapping_mut) {
        let name = c.get(key("name")).and_then(Value::as_str).unwrap_or("?").to_string();
        match c.get(key("command")).and_then(Value::as_sequence).cloned() {
            Some(cmd) if !cmd.is_empty() => {
                let mut wrapped: Vec<Value> =
                    [bin.as_str(), "await", "--shutdown", "--"].iter().map(|s| key(s)).collect();
                wrapped.extend(cmd);
                c.insert(key("command"), Value::Sequence(wrapped));
            }
            _ => warnings.push(format!(
                "container {name} has no command to wrap in weft-proxy await --shutdown (its image's entrypoint is unknown here)"
            )),
        }
    }
}

/// Removes what [`inject`] added; `Ok(None)` when the template has no sidecar.
pub fn uninject(template: &Value) -> Result<Option<Value>, String> {
    let root = template.as_mapping().ok_or("the pod template is not a mapping")?;
    let mut out = root.clone();
    let mut metadata = mapping(root, "metadata").cloned().unwrap_or_default();
    let mut annotations = mapping(&metadata, "annotations").cloned().unwrap_or_default();
    let mut spec = mapping(root, "spec").cloned().ok_or("the pod template has no spec")?;
    let seq = |m: &Mapping, k: &str| m.get(key(k)).and_then(Value::as_sequence).cloned();
    let inits = seq(&spec, "initContainers").unwrap_or_default();
    let containers = seq(&spec, "containers").unwrap_or_default();
    let marked = annotations.get(key(names::INJECT_STATUS)).and_then(Value::as_str) == Some(names::INJECTED);
    let classic = containers.iter().any(is_ours);
    if !marked && !inits.iter().any(is_ours) && !classic {
        return Ok(None);
    }

    let mut containers: Vec<Value> = containers.into_iter().filter(|c| !is_ours(c)).collect();
    let await_binary = annotations.get(key("config.weft.io/await-binary")).and_then(Value::as_str).map(String::from);
    if let (true, Some(bin)) = (classic, await_binary) {
        for c in containers.iter_mut().filter_map(Value::as_mapping_mut) {
            let Some(cmd) = c.get(key("command")).and_then(Value::as_sequence).cloned() else { continue };
            let prefix: Vec<Value> = [bin.as_str(), "await", "--shutdown", "--"].iter().map(|s| key(s)).collect();
            if cmd.len() > prefix.len() && cmd[..prefix.len()] == prefix[..] {
                c.insert(key("command"), Value::Sequence(cmd[prefix.len()..].to_vec()));
            }
        }
    }
    let mut inits: Vec<Value> = inits.into_iter().filter(|c| !is_ours(c)).collect();
    if let Some(original) = annotations.get(key(names::ORIGINAL_PROBES)).and_then(Value::as_str) {
        let json: serde_json::Value =
            serde_json::from_str(original).map_err(|e| format!("{}: {e}", names::ORIGINAL_PROBES))?;
        probes::restore(&mut containers, &json)?;
        probes::restore(&mut inits, &json)?;
    }
    let set_or_remove = |m: &mut Mapping, k: &str, list: Vec<Value>| {
        if list.is_empty() {
            m.remove(key(k));
        } else {
            m.insert(key(k), Value::Sequence(list));
        }
    };
    set_or_remove(&mut spec, "initContainers", inits);
    spec.insert(key("containers"), Value::Sequence(containers));
    let volumes: Vec<Value> = seq(&spec, "volumes")
        .unwrap_or_default()
        .into_iter()
        .filter(|v| {
            let n = v.get("name").and_then(Value::as_str);
            n != Some(names::IDENTITY_VOLUME) && n != Some(names::INIT_RUN_VOLUME)
        })
        .collect();
    set_or_remove(&mut spec, "volumes", volumes);
    for a in [names::INJECT_STATUS, names::TRUST_ANCHOR, names::ORIGINAL_PROBES] {
        annotations.remove(key(a));
    }
    if annotations.is_empty() {
        metadata.remove(key("annotations"));
    } else {
        metadata.insert(key("annotations"), Value::Mapping(annotations));
    }
    if metadata.is_empty() {
        out.remove(key("metadata"));
    } else {
        out.insert(key("metadata"), Value::Mapping(metadata));
    }
    out.insert(key("spec"), Value::Mapping(spec));
    Ok(Some(Value::Mapping(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn ctx(settings: &InjectSettings) -> InjectContext<'_> {
        InjectContext {
            settings,
            trust_anchor: ANCHOR,
            namespace: Some("shop"),
            namespace_info: NamespaceInfo::Unknown,
            opt_in: OptIn::Command,
        }
    }

    fn pod(yaml: &str) -> Value {
        serde_norway::from_str(yaml).unwrap()
    }

    fn names(v: &Value, list: &str) -> Vec<String> {
        v["spec"][list].as_sequence().into_iter().flatten().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    }

    const APP: &str = "metadata: {labels: {app: a}}\nspec:\n  initContainers: [{name: migrate, image: m}]\n  \
                       containers: [{name: app, image: a, readinessProbe: {tcpSocket: {port: 80}}}]\n";

    #[test]
    fn native_order_is_init_proxy_then_the_apps_init_containers() {
        let s = InjectSettings::default();
        let Outcome::Injected(out) = inject(&pod(APP), &ctx(&s)).outcome else { panic!("not injected") };
        assert_eq!(names(&out, "initContainers"), ["weft-init", "weft-proxy", "migrate"]);
        assert_eq!(names(&out, "containers"), ["app"]);
        assert_eq!(out["spec"]["initContainers"][1]["restartPolicy"], Value::from("Always"));
        assert_eq!(out["metadata"]["annotations"][names::TRUST_ANCHOR], Value::from(ANCHOR));
        assert_eq!(uninject(&out).unwrap(), Some(pod(APP)));
        // Injecting the result again changes nothing.
        assert_eq!(inject(&out, &ctx(&s)).outcome, Outcome::AlreadyInjected);
    }

    #[test]
    fn classic_puts_the_proxy_first_among_the_containers() {
        let s = InjectSettings { native_sidecar: false, ..Default::default() };
        let r = inject(&pod(APP), &ctx(&s));
        let Outcome::Injected(out) = r.outcome else { panic!("not injected") };
        assert_eq!(names(&out, "initContainers"), ["weft-init", "migrate"]);
        assert_eq!(names(&out, "containers"), ["weft-proxy", "app"]);
        assert!(out["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"].is_mapping());
        assert!(r.warnings.iter().any(|w| w.contains("init containers run before the proxy")), "{:?}", r.warnings);
        assert_eq!(uninject(&out).unwrap(), Some(pod(APP)));
    }

    #[test]
    fn a_pod_without_a_sidecar_is_not_uninjected() {
        assert_eq!(uninject(&pod(APP)).unwrap(), None);
    }

    #[test]
    fn a_template_without_metadata_gets_it_first() {
        let s = InjectSettings::default();
        let Outcome::Injected(out) = inject(&pod("spec: {containers: [{name: a, image: a}]}"), &ctx(&s)).outcome else {
            panic!("not injected")
        };
        let first = out.as_mapping().unwrap().keys().next().unwrap().clone();
        assert_eq!(first, Value::from("metadata"));
    }
}
