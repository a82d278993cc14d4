//! Kubernetes, part 1 (issue #11): sidecar injection through both doors — `weft inject` and the
//! controller's admission webhook — against golden files, schema validation of everything we
//! render, the webhook over HTTPS with a test API server, injected pods run in Docker the way a
//! kubelet would, and a real-cluster test when `WEFT_TEST_KUBECONFIG` names one.
//!
//! Part 2 (issue #12), against the test API server (`api_*`): the server itself through the real
//! kube client, identities from service-account tokens, and two controller replicas with one
//! killed under load.
//!
//! Part 3 (issue #13): policy from the API — TrafficSplits, HTTPRoutes, the `weft-mesh`
//! ConfigMap (`api_policy`), SMI access control (`api_access`) — and `weft check` (`check`).

mod api_access;
mod api_identity;
mod api_lab;
mod api_policy;
mod api_replicas;
mod api_server;
mod check;
mod cluster;
mod crds;
mod golden;
mod install;
mod pods;
mod schema;
mod support;
mod webhook;
