//! `weft check --kubeconfig`: the install as the API server holds it — the custom resources the
//! controller reads (SMI's, which `weft install` ships, and the Gateway API's HTTPRoute, which the
//! cluster may have), the webhook (its configuration, a CA bundle, and ready endpoints behind its
//! Service, so that the API server can reach it) and the controller's replicas. What was read is
//! gathered in [`observe`]; the verdicts come from it without I/O in [`evaluate`].

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use weft_inject::install::{CONTROLLER, TRUST_ANCHOR_CONFIGMAP, WEBHOOK_CONFIGURATION};
use weft_inject::names::MESH_NAMESPACE;

use crate::check::{Line, Verdict};

/// A custom kind the controller reads, and what goes unused without it.
pub struct CustomKind {
    pub kind: &'static str,
    pub group: &'static str,
    /// Newest first, as the controller looks for them.
    pub versions: &'static [&'static str],
    pub plural: &'static str,
    pub unused: &'static str,
    pub hint: &'static str,
}

const SMI_HINT: &str = "weft install ships it (unless --smi-crds false): weft install | kubectl apply -f -";

/// The same kinds and versions the controller watches.
pub const KINDS: [CustomKind; 4] = [
    CustomKind {
        kind: "TrafficSplit",
        group: "split.smi-spec.io",
        versions: &["v1alpha4", "v1alpha3", "v1alpha2"],
        plural: "trafficsplits",
        unused: "TrafficSplits (weighted backends, Flagger canaries) are not read",
        hint: SMI_HINT,
    },
    CustomKind {
        kind: "TrafficTarget",
        group: "access.smi-spec.io",
        versions: &["v1alpha3", "v1alpha2"],
        plural: "traffictargets",
        unused: "TrafficTargets are not read: who may call comes from the mesh file's allow lists only",
        hint: SMI_HINT,
    },
    CustomKind {
        kind: "HTTPRouteGroup",
        group: "specs.smi-spec.io",
        versions: &["v1alpha4", "v1alpha3", "v1alpha2"],
        plural: "httproutegroups",
        unused: "HTTPRouteGroups are not read: every TrafficTarget rule naming one grants nothing",
        hint: SMI_HINT,
    },
    CustomKind {
        kind: "HTTPRoute",
        group: "gateway.networking.k8s.io",
        versions: &["v1"],
        plural: "httproutes",
        unused: "GAMMA HTTPRoutes (weights, matches, timeouts per Service) are not read",
        hint: "the Gateway API CRDs belong to the cluster (Weft does not ship them): install its standard channel",
    },
];

/// What the webhook's side of the install looks like.
#[derive(Clone, Debug, PartialEq)]
pub enum WebhookSeen {
    NoConfiguration,
    NoCaBundle,
    /// The CA bundle holds none of the install's trust anchors: the API server would refuse the
    /// webhook's serving certificate, which the mesh's CA issues.
    CaBundleMismatch,
    /// The configuration calls a URL, not a Service: reachability is not checked.
    Url(String),
    NoService(String),
    /// The Service and how many ready endpoints it has.
    Service {
        name: String,
        ready: usize,
    },
}

/// What `weft check` read from the API server.
#[derive(Debug)]
pub struct ClusterObserved {
    /// Per [`KINDS`] entry: the version served, None when the CRD is absent, or why it could not
    /// be told.
    pub kinds: Vec<Result<Option<String>, String>>,
    pub webhook: Result<WebhookSeen, String>,
    /// The controller Deployment's `(wanted, ready)` replicas; None when it does not exist.
    pub replicas: Result<Option<(i32, i32)>, String>,
}

fn line(verdict: Verdict, check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Line {
    Line { verdict, check, detail: detail.into(), hint: hint.into() }
}

const API_HINT: &str = "check the kubeconfig's user may read it (weft install's RBAC is the controller's, not yours)";

/// The cluster's checks, from what was read.
pub fn evaluate(o: &ClusterObserved) -> Vec<Line> {
    use Verdict::{Fail, Ok as Pass, Warn};
    let mut out = Vec::new();
    for (k, seen) in KINDS.iter().zip(&o.kinds) {
        let check = match k.kind {
            "TrafficSplit" => "CRD TrafficSplit",
            "TrafficTarget" => "CRD TrafficTarget",
            "HTTPRouteGroup" => "CRD HTTPRouteGroup",
            _ => "CRD HTTPRoute",
        };
        out.push(match seen {
            Ok(Some(v)) => line(Pass, check, format!("{}/{v} served", k.group), ""),
            Ok(None) => line(Warn, check, format!("{} is not installed: {}", k.group, k.unused), k.hint),
            Err(e) => line(Fail, check, e.clone(), API_HINT),
        });
    }
    let hook = "webhook reachable";
    out.push(match &o.webhook {
        Ok(WebhookSeen::Service { name, ready }) if *ready > 0 => {
            line(Pass, hook, format!("{WEBHOOK_CONFIGURATION} calls Service {name}: {ready} ready endpoints"), "")
        }
        Ok(WebhookSeen::Service { name, .. }) => line(
            Fail,
            hook,
            format!("Service {name} has no ready endpoint: new pods are not injected (or not created, with failurePolicy Fail)"),
            "the controller's pods are not ready: kubectl -n weft-system get pods, and their logs",
        ),
        Ok(WebhookSeen::Url(url)) => {
            line(Warn, hook, format!("{WEBHOOK_CONFIGURATION} calls {url}: not checked from here"), "")
        }
        Ok(WebhookSeen::NoService(name)) => line(
            Fail,
            hook,
            format!("the Service {name} that {WEBHOOK_CONFIGURATION} calls does not exist"),
            "apply weft install's output again",
        ),
        Ok(WebhookSeen::CaBundleMismatch) => line(
            Fail,
            hook,
            format!("{WEBHOOK_CONFIGURATION}'s caBundle is not the mesh's CA (ConfigMap weft-trust-anchor): the API server refuses the webhook's certificate"),
            "apply the output of weft install --ca-dir with the CA in use (a CA rotated without it leaves this)",
        ),
        Ok(WebhookSeen::NoCaBundle) => line(
            Fail,
            hook,
            format!("{WEBHOOK_CONFIGURATION} has no caBundle: the API server cannot trust the webhook"),
            "apply weft install's output again (it fills the caBundle from the CA)",
        ),
        Ok(WebhookSeen::NoConfiguration) => line(
            Fail,
            hook,
            format!("MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION} does not exist: pods are not injected"),
            "weft install | kubectl apply -f -",
        ),
        Err(e) => line(Fail, hook, e.clone(), API_HINT),
    });
    let replicas = "controller replicas";
    out.push(match o.replicas {
        Ok(Some((want, ready))) if ready >= want && want > 0 => {
            line(Pass, replicas, format!("{ready} of {want} ready"), "")
        }
        Ok(Some((want, 0))) => line(
            Fail,
            replicas,
            format!("0 of {want} ready"),
            "kubectl -n weft-system describe deployment weft-controller, and the pods' logs",
        ),
        Ok(Some((want, ready))) => line(
            Warn,
            replicas,
            format!("{ready} of {want} ready"),
            "a replica is ready once it has listed the cluster: see the unready one's log",
        ),
        Ok(None) => line(
            Fail,
            replicas,
            format!("Deployment {MESH_NAMESPACE}/{CONTROLLER} does not exist"),
            "weft install | kubectl apply -f -",
        ),
        Err(ref e) => line(Fail, replicas, e.clone(), API_HINT),
    });
    out
}

fn err(e: kube::Error) -> String {
    format!("{e}")
}

/// The first version of `k` the API server serves; None when every version answers 404.
async fn served(client: &kube::Client, k: &CustomKind) -> Result<Option<String>, String> {
    for v in k.versions {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(k.group, v, k.kind), k.plural);
        let api: kube::Api<DynamicObject> = kube::Api::all_with(client.clone(), &ar);
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Some(v.to_string())),
            Err(kube::Error::Api(s)) if s.is_not_found() => continue,
            Err(e) => return Err(format!("listing {}: {}", k.plural, err(e))),
        }
    }
    Ok(None)
}

/// `anchors`: the install's trust anchors (PEM), when they could be read.
async fn webhook(client: &kube::Client, anchors: Option<&[u8]>) -> Result<WebhookSeen, String> {
    let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client.clone());
    let Some(cfg) = api.get_opt(WEBHOOK_CONFIGURATION).await.map_err(err)? else {
        return Ok(WebhookSeen::NoConfiguration);
    };
    let Some(hook) = cfg.webhooks.unwrap_or_default().into_iter().next() else {
        return Ok(WebhookSeen::NoConfiguration);
    };
    let cc = hook.client_config;
    let Some(bundle) = cc.ca_bundle.as_ref().filter(|b| !b.0.is_empty()) else {
        return Ok(WebhookSeen::NoCaBundle);
    };
    if let Some(anchors) = anchors {
        let anchors = weft_certs::pem::certs(anchors).unwrap_or_default();
        let bundle = weft_certs::pem::certs(&bundle.0).unwrap_or_default();
        if !bundle.iter().any(|c| anchors.contains(c)) {
            return Ok(WebhookSeen::CaBundleMismatch);
        }
    }
    let Some(svc) = cc.service else {
        return Ok(WebhookSeen::Url(cc.url.unwrap_or_default()));
    };
    let name = format!("{}/{}", svc.namespace, svc.name);
    let services: kube::Api<Service> = kube::Api::namespaced(client.clone(), &svc.namespace);
    if services.get_opt(&svc.name).await.map_err(err)?.is_none() {
        return Ok(WebhookSeen::NoService(name));
    }
    // The Service's EndpointSlices (filtered here: the namespace holds a handful).
    let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(client.clone(), &svc.namespace);
    let list = slices.list(&ListParams::default()).await.map_err(err)?;
    let ready = list
        .items
        .iter()
        .filter(|s| s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) == Some(&svc.name))
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .count();
    Ok(WebhookSeen::Service { name, ready })
}

async fn replicas(client: &kube::Client) -> Result<Option<(i32, i32)>, String> {
    let api: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), MESH_NAMESPACE);
    Ok(api.get_opt(CONTROLLER).await.map_err(err)?.map(|d| {
        let want = d.spec.replicas.unwrap_or(1);
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        (want, ready)
    }))
}

/// Reads what [`evaluate`] judges (`anchors`: the install's trust anchors, PEM, if read).
pub async fn observe(client: &kube::Client, anchors: Option<&[u8]>) -> ClusterObserved {
    let mut kinds = Vec::new();
    for k in &KINDS {
        kinds.push(served(client, k).await);
    }
    ClusterObserved { kinds, webhook: webhook(client, anchors).await, replicas: replicas(client).await }
}

/// The trust anchor the install distributes (ConfigMap `weft-trust-anchor`, key `ca.crt`).
pub async fn trust_anchor(client: &kube::Client) -> Result<Vec<u8>, String> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), MESH_NAMESPACE);
    let cm = api
        .get_opt(TRUST_ANCHOR_CONFIGMAP)
        .await
        .map_err(err)?
        .ok_or_else(|| format!("ConfigMap {MESH_NAMESPACE}/{TRUST_ANCHOR_CONFIGMAP} does not exist"))?;
    cm.data
        .and_then(|d| d.get("ca.crt").cloned())
        .map(String::into_bytes)
        .ok_or_else(|| format!("ConfigMap {MESH_NAMESPACE}/{TRUST_ANCHOR_CONFIGMAP} has no ca.crt"))
}

/// A client for the kubeconfig: one file, or several separated by `:` (merged as kubectl does).
pub async fn client(files: &str) -> Result<kube::Client, String> {
    let mut merged: Option<kube::config::Kubeconfig> = None;
    for path in files.split(':').filter(|p| !p.is_empty()) {
        let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("kubeconfig {path}: {e}"))?;
        merged = Some(match merged {
            Some(m) => m.merge(kc).map_err(|e| format!("kubeconfig {path}: {e}"))?,
            None => kc,
        });
    }
    let kc = merged.ok_or_else(|| "no kubeconfig file named".to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| format!("kubeconfig {files}: {e}"))?;
    kube::Client::try_from(config).map_err(|e| format!("kubeconfig {files}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> ClusterObserved {
        ClusterObserved {
            kinds: vec![
                Ok(Some("v1alpha4".into())),
                Ok(Some("v1alpha3".into())),
                Ok(Some("v1alpha4".into())),
                Ok(Some("v1".into())),
            ],
            webhook: Ok(WebhookSeen::Service { name: "weft-system/weft-controller".into(), ready: 2 }),
            replicas: Ok(Some((2, 2))),
        }
    }

    fn verdict(lines: &[Line], check: &str) -> Verdict {
        lines.iter().find(|l| l.check == check).unwrap_or_else(|| panic!("no {check}")).verdict
    }

    #[test]
    fn the_smi_kinds_looked_for_are_the_versions_weft_install_ships() {
        let crds = weft_inject::install::crds::smi_crds();
        for k in KINDS.iter().filter(|k| k.group.ends_with("smi-spec.io")) {
            let crd = crds.iter().find(|c| c["spec"]["group"] == k.group).expect(k.group);
            assert_eq!(crd["spec"]["names"]["plural"], k.plural);
            let mut shipped: Vec<&str> =
                crd["spec"]["versions"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
            let mut looked_for = k.versions.to_vec();
            shipped.sort();
            looked_for.sort();
            assert_eq!(shipped, looked_for, "{}", k.kind);
        }
    }

    #[test]
    fn a_healthy_install_passes_every_check() {
        let lines = evaluate(&healthy());
        assert_eq!(lines.len(), 6);
        assert!(lines.iter().all(|l| l.verdict == Verdict::Ok), "{lines:?}");
    }

    #[test]
    fn an_absent_crd_warns_and_says_what_goes_unused() {
        let mut o = healthy();
        o.kinds[1] = Ok(None);
        o.kinds[3] = Ok(None);
        let lines = evaluate(&o);
        let tt = lines.iter().find(|l| l.check == "CRD TrafficTarget").unwrap();
        assert_eq!(tt.verdict, Verdict::Warn);
        assert!(tt.detail.contains("allow lists only") && tt.hint.contains("weft install"), "{tt:?}");
        let route = lines.iter().find(|l| l.check == "CRD HTTPRoute").unwrap();
        assert!(route.hint.contains("does not ship"), "{route:?}");
        o.kinds[0] = Err("listing trafficsplits: forbidden".into());
        assert_eq!(verdict(&evaluate(&o), "CRD TrafficSplit"), Verdict::Fail);
    }

    #[test]
    fn the_webhook_and_the_replicas_fail_or_warn_with_hints() {
        let cases = [
            (WebhookSeen::Service { name: "weft-system/weft-controller".into(), ready: 0 }, Verdict::Fail),
            (WebhookSeen::NoConfiguration, Verdict::Fail),
            (WebhookSeen::NoCaBundle, Verdict::Fail),
            (WebhookSeen::CaBundleMismatch, Verdict::Fail),
            (WebhookSeen::NoService("weft-system/weft-controller".into()), Verdict::Fail),
            (WebhookSeen::Url("https://hook.example".into()), Verdict::Warn),
        ];
        for (seen, want) in cases {
            let o = ClusterObserved { webhook: Ok(seen.clone()), ..healthy() };
            let lines = evaluate(&o);
            assert_eq!(verdict(&lines, "webhook reachable"), want, "{seen:?}");
            let l = lines.iter().find(|l| l.check == "webhook reachable").unwrap();
            assert!(want == Verdict::Warn || !l.hint.is_empty(), "{l:?}");
        }
        for (replicas, want) in [
            (Some((2, 1)), Verdict::Warn),
            (Some((2, 0)), Verdict::Fail),
            (None, Verdict::Fail),
            (Some((0, 0)), Verdict::Fail),
        ] {
            let o = ClusterObserved { replicas: Ok(replicas), ..healthy() };
            assert_eq!(verdict(&evaluate(&o), "controller replicas"), want, "{replicas:?}");
        }
    }
}
