//! Watchers for the policy the API holds: SMI `TrafficSplit`s, `TrafficTarget`s and
//! `HTTPRouteGroup`s, and GAMMA `HTTPRoute`s (custom
//! resources, read as dynamic objects at the newest version the API server serves; a `404` on
//! every version means the CRD is not installed — the kind then counts as listed and empty, and
//! is looked for again every [`CRD_RECHECK`]), and the `weft-system/weft-mesh` ConfigMap, whose
//! `mesh.yaml` replaces the mesh file: a valid edit is put in force, an invalid one is logged,
//! counted in `weft_config_rejected_total`, reported as a Warning Event on the ConfigMap and
//! leaves the last good config in force.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::Value;

use super::index::{ClusterIndex, Event};
use super::watch::Shared;
use crate::policy::{
    http_route, traffic_split, traffic_target, HttpRouteGroupRecord, HttpRouteRecord, TrafficSplitRecord,
    TrafficTargetRecord,
};
use crate::state::MeshState;

/// How often a kind whose CRD is not installed is looked for again.
pub const CRD_RECHECK: Duration = Duration::from_secs(30);
/// The ConfigMap that holds the mesh file in Kubernetes mode, and its key.
pub const MESH_CONFIGMAP: &str = weft_inject::install::MESH_CONFIGMAP;
pub const MESH_KEY: &str = "mesh.yaml";

/// A custom kind the controller reads where it is installed.
struct CustomKind<R> {
    kind: &'static str,
    group: &'static str,
    versions: &'static [&'static str],
    plural: &'static str,
    convert: fn(&Value) -> Option<R>,
    apply: fn(&mut ClusterIndex, Event<R>) -> bool,
}

/// The first version of the kind the API server serves; None when none is (a 404 on each).
async fn served(client: &kube::Client, k: &CustomKind<impl Sized>) -> Result<Option<ApiResource>, kube::Error> {
    for v in k.versions {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(k.group, v, k.kind), k.plural);
        let api: kube::Api<DynamicObject> = kube::Api::all_with(client.clone(), &ar);
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Some(ar)),
            Err(kube::Error::Api(s)) if s.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn not_installed(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.is_not_found())
}

async fn watch_custom<R: PartialEq>(client: kube::Client, shared: Arc<Shared>, k: CustomKind<R>) {
    let mut backoff = Duration::from_millis(800);
    loop {
        let ar = match served(&client, &k).await {
            Ok(Some(ar)) => ar,
            Ok(None) => {
                tracing::info!(kind = k.kind, group = k.group, "not installed (404): none are applied");
                // Listed, and empty: whatever was there before is gone with the CRD.
                let changed = {
                    let mut idx = shared.index.lock().unwrap_or_else(|e| e.into_inner());
                    (k.apply)(&mut idx, Event::Init);
                    (k.apply)(&mut idx, Event::InitDone)
                };
                if changed {
                    shared.changed.notify_one();
                }
                tokio::time::sleep(CRD_RECHECK).await;
                continue;
            }
            Err(e) => {
                shared.metrics.errors.with(&[k.plural]).inc();
                weft_telemetry::log_limit::warn("kubernetes-crd", || format!("looking for {}: {e}", k.plural));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(800);
        tracing::info!(kind = k.kind, version = %ar.version, "watching");
        let api: kube::Api<DynamicObject> = kube::Api::all_with(client.clone(), &ar);
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            let record = |o: &DynamicObject| serde_json::to_value(o).ok().and_then(|v| (k.convert)(&v));
            let key = |o: &DynamicObject| Some((o.metadata.namespace.clone()?, o.metadata.name.clone()?));
            let event = match item {
                Ok(watcher::Event::Init) => {
                    shared.metrics.lists.with(&[k.plural]).inc();
                    Some(Event::Init)
                }
                Ok(watcher::Event::InitApply(o)) => record(&o).map(Event::InitApply),
                Ok(watcher::Event::InitDone) => Some(Event::InitDone),
                Ok(watcher::Event::Apply(o)) => {
                    shared.metrics.events.with(&[k.plural]).inc();
                    record(&o).map(Event::Apply)
                }
                Ok(watcher::Event::Delete(o)) => {
                    shared.metrics.events.with(&[k.plural]).inc();
                    key(&o).map(Event::Delete)
                }
                Err(e) if not_installed(&e) => break,
                Err(e) => {
                    shared.metrics.errors.with(&[k.plural]).inc();
                    weft_telemetry::log_limit::warn("kubernetes-watch", || {
                        format!("watching {}: {e} (the watch resumes after a backoff)", k.plural)
                    });
                    None
                }
            };
            if let Some(event) = event {
                let changed = (k.apply)(&mut shared.index.lock().unwrap_or_else(|e| e.into_inner()), event);
                if changed {
                    shared.changed.notify_one();
                }
            }
        }
        // The CRD went away (or the stream ended): look for it again.
    }
}

/// Starts the TrafficSplit, TrafficTarget, HTTPRouteGroup and HTTPRoute watchers.
pub fn spawn_policy_watchers(
    client: &kube::Client,
    shared: &Arc<Shared>,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) {
    fn spawn<R: PartialEq + Send + 'static>(
        tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
        client: &kube::Client,
        shared: &Arc<Shared>,
        k: CustomKind<R>,
    ) {
        let (c, s) = (client.clone(), shared.clone());
        tasks.spawn(async move {
            watch_custom(c, s, k).await;
            Ok(())
        });
    }
    spawn(
        tasks,
        client,
        shared,
        CustomKind {
            kind: "TrafficSplit",
            group: traffic_split::GROUP,
            versions: &traffic_split::VERSIONS,
            plural: traffic_split::PLURAL,
            convert: TrafficSplitRecord::from_json,
            apply: ClusterIndex::split,
        },
    );
    spawn(
        tasks,
        client,
        shared,
        CustomKind {
            kind: "HTTPRoute",
            group: http_route::GROUP,
            versions: &http_route::VERSIONS,
            plural: http_route::PLURAL,
            convert: HttpRouteRecord::from_json,
            apply: ClusterIndex::http_route,
        },
    );
    spawn(
        tasks,
        client,
        shared,
        CustomKind {
            kind: "TrafficTarget",
            group: traffic_target::GROUP,
            versions: &traffic_target::VERSIONS,
            plural: traffic_target::PLURAL,
            convert: TrafficTargetRecord::from_json,
            apply: ClusterIndex::traffic_target,
        },
    );
    spawn(
        tasks,
        client,
        shared,
        CustomKind {
            kind: "HTTPRouteGroup",
            group: traffic_target::ROUTE_GROUP_GROUP,
            versions: &traffic_target::ROUTE_GROUP_VERSIONS,
            plural: traffic_target::ROUTE_GROUP_PLURAL,
            convert: HttpRouteGroupRecord::from_json,
            apply: ClusterIndex::route_group,
        },
    );
}

/// Watches the `weft-mesh` ConfigMap in the controller's namespace for the life of the
/// controller. Its absence (or a missing key) keeps what is in force: the file it started from.
pub async fn watch_mesh_configmap(client: kube::Client, state: Arc<MeshState>) {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), weft_inject::names::MESH_NAMESPACE);
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut last: Option<String> = None;
    while let Some(item) = stream.next().await {
        let cm = match item {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => cm,
            Ok(watcher::Event::Delete(cm)) if cm.metadata.name.as_deref() == Some(MESH_CONFIGMAP) => {
                tracing::warn!("ConfigMap {MESH_CONFIGMAP} deleted; the last good mesh config stays in force");
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                weft_telemetry::log_limit::warn("kubernetes-watch", || format!("watching configmaps: {e}"));
                continue;
            }
        };
        if cm.metadata.name.as_deref() != Some(MESH_CONFIGMAP) {
            continue;
        }
        let Some(text) = cm.data.as_ref().and_then(|d| d.get(MESH_KEY)).cloned() else {
            tracing::warn!("ConfigMap {MESH_CONFIGMAP} has no {MESH_KEY}; the last good mesh config stays in force");
            continue;
        };
        // A resync or a re-list hands the same text again: that is no edit.
        if last.as_deref() == Some(text.as_str()) {
            continue;
        }
        last = Some(text.clone());
        let td = state.trust_domain();
        let parsed = tokio::task::spawn_blocking(move || crate::watch::parse_for(&text, &td))
            .await
            .unwrap_or_else(|e| Err(vec![format!("parsing failed: {e}")]));
        match parsed {
            Ok(mesh) => {
                tracing::info!("mesh config reloaded from ConfigMap {MESH_CONFIGMAP}");
                state.metrics.config_reloads.with(&[]).inc();
                state.set_mesh(mesh);
            }
            Err(problems) => {
                tracing::error!(
                    "ConfigMap {MESH_CONFIGMAP} rejected; the last good mesh config stays in force. Problems:\n  {}",
                    problems.join("\n  ")
                );
                state.reject_config(problems.clone());
                super::events::config_rejected(&client, &problems).await;
            }
        }
    }
}
