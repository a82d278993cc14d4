//! Kubernetes mode (`--kubernetes`): services and endpoints from the API server's Services,
//! EndpointSlices and Pods instead of registrations, identities from service-account tokens
//! checked with a TokenReview instead of join tokens, and registrations bound to the pod they
//! name. Every replica watches the API for itself and keeps no state another replica lacks, so a
//! proxy may be served by any of them; nothing has to happen once, so no Lease is taken.

pub mod admission;
pub mod events;
pub mod index;
pub mod objects;
pub mod policy_watch;
pub mod tokens;
pub mod view;
pub mod watch;

#[cfg(test)]
mod view_tests;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;
use tonic::Status;
use weft_certs::provenance::Provenance;
use weft_certs::SpiffeId;
use weft_proto::v1 as pb;

use self::admission::Refusal;
use self::objects::PodRecord;
use self::tokens::ReviewError;
use self::view::ClusterView;
use crate::state::MeshState;

/// How long a discovery stream that arrives before the first sync waits for it.
const SYNC_WAIT: Duration = Duration::from_secs(10);
/// The longest wait for a pod read the index could not answer.
const POD_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the API server is.
#[derive(Clone, Debug, Default)]
pub struct KubernetesConfig {
    /// A kubeconfig file; None: the in-cluster service account (or `$KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
}

/// A client for the API server the configuration names.
pub async fn client(cfg: &KubernetesConfig) -> anyhow::Result<kube::Client> {
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!("--kubernetes: no in-cluster service account or $KUBECONFIG ({e}); give --kubeconfig")
        })?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// A refused request: the metric reason and the status for the proxy.
pub type Refused = (&'static str, Status);

/// The controller's handle on the cluster.
pub struct Cluster {
    client: kube::Client,
    views: tokio::sync::watch::Receiver<Option<Arc<ClusterView>>>,
}

impl Cluster {
    /// Starts the watchers and the publisher that feeds `state`.
    pub fn start(
        client: kube::Client,
        state: &Arc<MeshState>,
        tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    ) -> Arc<Self> {
        let shared = Arc::new(watch::Shared {
            index: Mutex::new(index::ClusterIndex::default()),
            changed: Notify::new(),
            metrics: watch::WatchMetrics::new(&state.metrics.registry),
        });
        let (tx, views) = tokio::sync::watch::channel(None);
        watch::spawn_watchers(&client, &shared, tasks);
        policy_watch::spawn_policy_watchers(&client, &shared, tasks);
        tasks.spawn({
            let (client, state) = (client.clone(), state.clone());
            async move {
                policy_watch::watch_mesh_configmap(client, state).await;
                Err(anyhow::anyhow!("the ConfigMap watcher ended"))
            }
        });
        tasks.spawn({
            let (client, state) = (client.clone(), state.clone());
            async move {
                events::report_findings(client, state).await;
                Err(anyhow::anyhow!("the Event reporter ended"))
            }
        });
        let state = state.clone();
        tasks.spawn(async move {
            watch::publish(shared, state, tx).await;
            Err(anyhow::anyhow!("the Kubernetes publisher ended"))
        });
        Arc::new(Self { client, views })
    }

    fn view(&self) -> Option<Arc<ClusterView>> {
        self.views.borrow().clone()
    }

    /// Resolves once every kind has been listed.
    pub async fn synced(&self) {
        let mut views = self.views.clone();
        let _ = views.wait_for(Option::is_some).await;
    }

    /// The pod from the index, else (a pod created a moment ago) from the API server.
    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodRecord>, Status> {
        if let Some(p) = self.view().and_then(|v| v.pod(namespace, name).cloned()) {
            return Ok(Some(p));
        }
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), namespace);
        match tokio::time::timeout(POD_READ_TIMEOUT, api.get_opt(name)).await {
            Ok(Ok(pod)) => Ok(pod.as_ref().and_then(PodRecord::from_api)),
            Ok(Err(e)) => Err(Status::unavailable(format!("reading pod {namespace}/{name}: {e}"))),
            Err(_) => Err(Status::unavailable(format!("reading pod {namespace}/{name} timed out"))),
        }
    }

    /// A first certificate for a service-account token: the API server vouches for the token and
    /// names its pod, which must exist. Returns what the certificate records.
    pub async fn certify(&self, token: &str, asked: &SpiffeId) -> Result<Provenance, Refused> {
        let reviewed = tokens::review(&self.client, token).await.map_err(|e| match e {
            ReviewError::Refused(m) => ("token", Status::unauthenticated(m)),
            ReviewError::Unavailable(m) => ("api", Status::unavailable(m)),
        })?;
        let pod = self.pod(&reviewed.namespace, &reviewed.pod_name).await.map_err(|s| ("api", s))?;
        admission::certificate(&reviewed, asked, pod.as_ref()).map_err(|r| ("pod", permanent(r)))
    }

    /// A renewal: the pod the certificate was issued for still exists.
    pub async fn renewal(&self, identity: &SpiffeId, provenance: Option<&Provenance>) -> Result<(), Refused> {
        let pod = match provenance.and_then(|p| p.instance.as_deref()) {
            Some(name) => self.pod(identity.namespace(), name).await.map_err(|s| ("api", s))?,
            None => None,
        };
        admission::renewal(identity, provenance, pod.as_ref()).map_err(|r| ("pod", permanent(r)))
    }

    /// A registration: for the workload's own pod, from its IP. Before the first sync the stream
    /// waits a little; a pod the index does not hold yet is worth a retry (`unavailable`).
    pub async fn registration(&self, identity: &SpiffeId, w: &pb::Workload, source: IpAddr) -> Result<(), Refused> {
        if tokio::time::timeout(SYNC_WAIT, self.synced()).await.is_err() {
            return Err(("not-synced", Status::unavailable("this controller has not listed the cluster yet")));
        }
        let view = self.view().expect("synced");
        admission::registration(identity, w, source, view.pod(&w.namespace, &w.instance)).map_err(|r| match r {
            Refusal::UnknownPod(_) => ("unknown-pod", Status::unavailable(r.to_string())),
            Refusal::Mismatch(_) => ("not-this-pod", Status::permission_denied(r.to_string())),
        })
    }
}

/// After the API server was asked, an unknown pod is gone for good.
fn permanent(r: Refusal) -> Status {
    match r {
        Refusal::UnknownPod(pod) => Status::permission_denied(format!("pod {pod} does not exist")),
        Refusal::Mismatch(m) => Status::permission_denied(m),
    }
}
