//! The watchers: one `kube` watcher per kind (Services, EndpointSlices, Pods, all namespaces),
//! which lists, then watches from the list's resourceVersion with bookmarks, re-lists after
//! `410 Gone`, and backs off (0.8 s doubling to 30 s, jittered) after errors. Each event goes into
//! the index; a publisher turns the index into a new view at most every [`PUBLISH_EVERY`] and
//! hands it to the mesh state, once every kind has been listed.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};
use weft_telemetry::CounterVec;

use super::index::{ClusterIndex, Event};
use super::objects::{Key, PodRecord, ServiceRecord, SliceRecord};
use super::view::ClusterView;
use crate::state::MeshState;

/// Changes within this window are published together (a burst of pod updates is one push).
pub const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// The watchers' counters.
#[derive(Clone)]
pub struct WatchMetrics {
    /// Lists made (the first, and each re-list after `410 Gone` or a broken watch).
    pub lists: CounterVec,
    pub errors: CounterVec,
    pub events: CounterVec,
}

impl WatchMetrics {
    pub fn new(registry: &Arc<weft_telemetry::Registry>) -> Self {
        Self {
            lists: registry.counter(
                "weft_kubernetes_lists_total",
                "Lists of a kind from the API server (the first, and re-lists after 410 Gone).",
                &["kind"],
            ),
            errors: registry.counter(
                "weft_kubernetes_watch_errors_total",
                "Errors from a watch (each followed by a backoff and a resumed watch or a re-list).",
                &["kind"],
            ),
            events: registry.counter(
                "weft_kubernetes_watch_events_total",
                "Objects added, changed or deleted.",
                &["kind"],
            ),
        }
    }
}

/// Shared between the watchers and the publisher.
pub struct Shared {
    pub index: Mutex<ClusterIndex>,
    pub changed: Notify,
    pub metrics: WatchMetrics,
}

impl Shared {
    fn index(&self) -> std::sync::MutexGuard<'_, ClusterIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key_of<K: Resource>(k: &K) -> Option<Key> {
    Some((k.meta().namespace.clone()?, k.meta().name.clone()?))
}

/// Watches one kind for the life of the controller.
async fn watch_kind<K, R>(
    client: kube::Client,
    kind: &'static str,
    shared: Arc<Shared>,
    convert: fn(&K) -> Option<R>,
    apply: fn(&mut ClusterIndex, Event<R>) -> bool,
) where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let api: kube::Api<K> = kube::Api::all(client);
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(watcher::Event::Init) => {
                shared.metrics.lists.with(&[kind]).inc();
                Some(Event::Init)
            }
            Ok(watcher::Event::InitApply(k)) => convert(&k).map(Event::InitApply),
            Ok(watcher::Event::InitDone) => {
                tracing::debug!(kind, "listed");
                Some(Event::InitDone)
            }
            Ok(watcher::Event::Apply(k)) => {
                shared.metrics.events.with(&[kind]).inc();
                // An object the mesh cannot use (an ExternalName Service) is, for it, gone.
                match convert(&k) {
                    Some(r) => Some(Event::Apply(r)),
                    None => key_of(&k).map(Event::Delete),
                }
            }
            Ok(watcher::Event::Delete(k)) => {
                shared.metrics.events.with(&[kind]).inc();
                key_of(&k).map(Event::Delete)
            }
            Err(e) => {
                shared.metrics.errors.with(&[kind]).inc();
                weft_telemetry::log_limit::warn("kubernetes-watch", || {
                    format!("watching {kind}: {e} (the watch resumes after a backoff; a 410 Gone re-lists)")
                });
                None
            }
        };
        if let Some(event) = event {
            if apply(&mut shared.index(), event) {
                shared.changed.notify_one();
            }
        }
    }
}

/// Starts the three watchers.
pub fn spawn_watchers(
    client: &kube::Client,
    shared: &Arc<Shared>,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) {
    let ended = |kind: &str| Err(anyhow::anyhow!("the {kind} watcher ended"));
    let (c, s) = (client.clone(), shared.clone());
    tasks.spawn(async move {
        watch_kind::<Service, _>(c, "services", s, ServiceRecord::from_api, ClusterIndex::service).await;
        ended("services")
    });
    let (c, s) = (client.clone(), shared.clone());
    tasks.spawn(async move {
        watch_kind::<EndpointSlice, _>(c, "endpointslices", s, SliceRecord::from_api, ClusterIndex::slice).await;
        ended("endpointslices")
    });
    let (c, s) = (client.clone(), shared.clone());
    tasks.spawn(async move {
        watch_kind::<Pod, _>(c, "pods", s, PodRecord::from_api, ClusterIndex::pod).await;
        ended("pods")
    });
}

/// Turns index changes into views, for the mesh state (snapshots) and for admission checks.
pub async fn publish(shared: Arc<Shared>, state: Arc<MeshState>, views: watch::Sender<Option<Arc<ClusterView>>>) {
    let trust_domain = state.trust_domain();
    loop {
        shared.changed.notified().await;
        let view = {
            let idx = shared.index();
            idx.synced().then(|| ClusterView::build(&idx, &trust_domain))
        };
        if let Some(view) = view {
            let view = Arc::new(view);
            if views.borrow().as_deref() != Some(&*view) {
                if views.borrow().is_none() {
                    tracing::info!(
                        services = view.services.len(),
                        workloads = view.workload_services.len(),
                        "synced with the Kubernetes API"
                    );
                }
                state.set_cluster(view.clone());
                views.send_replace(Some(view));
            }
        }
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
}
