//! The index and its view, driven by object events as the watchers deliver them: adds, updates,
//! deletes, re-lists, a pod changing IP, a service account renamed — and what the snapshot then
//! hands proxies.

use serde_json::json;
use weft_proto::v1 as pb;

use super::index::{ClusterIndex, Event};
use super::objects::fixtures::{pod, service, slice};
use super::objects::PodRecord;
use super::view::ClusterView;
use crate::mesh::MeshConfig;
use crate::snapshot::Snapshot;

const TD: &str = "weft.local";

fn synced() -> ClusterIndex {
    let mut idx = ClusterIndex::default();
    idx.service(Event::Init);
    idx.service(Event::InitDone);
    idx.slice(Event::Init);
    idx.slice(Event::InitDone);
    idx.pod(Event::Init);
    idx.pod(Event::InitDone);
    idx
}

fn http_port() -> serde_json::Value {
    json!([{"name": "http", "port": 80, "targetPort": 8080}])
}

/// shop/bar: two meshed pods (v1, v2) behind a Service at 10.96.0.10:80 → 8080.
fn bar() -> ClusterIndex {
    let mut idx = synced();
    idx.service(Event::Apply(service("shop", "bar", "10.96.0.10", http_port())));
    idx.pod(Event::Apply(pod("shop", "bar-1", "bar", &["10.1.0.11"], "v1", true)));
    idx.pod(Event::Apply(pod("shop", "bar-2", "bar", &["10.1.0.12"], "v2", true)));
    idx.slice(Event::Apply(slice(
        "shop",
        "bar",
        "a",
        &[("10.1.0.11", "bar-1", true), ("10.1.0.12", "bar-2", true)],
        &[("http", 8080)],
    )));
    idx
}

fn addresses(view: &ClusterView, key: &str) -> Vec<String> {
    view.endpoints.get(key).map(|l| l.iter().map(|e| e.address.clone()).collect()).unwrap_or_default()
}

#[test]
fn meshed_pods_are_mtls_endpoints_at_their_proxy_with_their_account_and_version() {
    let view = ClusterView::build(&bar(), TD);
    let svc = &view.services["shop/bar"];
    assert_eq!(svc.vip, Some("10.96.0.10".parse().unwrap()));
    assert_eq!(svc.ports, vec![pb::PortMapping { port: 80, target_port: 8080 }]);
    let eps = &view.endpoints["shop/bar"];
    assert_eq!(addresses(&view, "shop/bar"), ["10.1.0.11:4143", "10.1.0.12:4143"]);
    assert_eq!(eps[0].identity, "spiffe://weft.local/ns/shop/sa/bar");
    assert_eq!((eps[0].version.as_str(), eps[1].version.as_str()), ("v1", "v2"));
    assert_eq!((eps[0].instance.as_str(), eps[0].app_ports.as_slice()), ("bar-1", &[8080u32][..]));
    // The directory: the VIP (with and without port), then each pod's IP.
    for (addr, svc) in [("10.96.0.10", "shop/bar"), ("10.96.0.10:80", "shop/bar"), ("10.1.0.11", "shop/bar")] {
        assert_eq!(view.directory.get(addr).map(String::as_str), Some(svc), "{addr}");
    }
    assert!(view.workload_services.contains("shop/bar"));
}

#[test]
fn adds_updates_and_deletes_move_the_endpoints() {
    let mut idx = bar();
    // Add: a third pod becomes ready.
    idx.pod(Event::Apply(pod("shop", "bar-3", "bar", &["10.1.0.13"], "v1", true)));
    let three = slice(
        "shop",
        "bar",
        "a",
        &[("10.1.0.11", "bar-1", true), ("10.1.0.12", "bar-2", true), ("10.1.0.13", "bar-3", true)],
        &[("http", 8080)],
    );
    idx.slice(Event::Apply(three));
    assert_eq!(addresses(&ClusterView::build(&idx, TD), "shop/bar").len(), 3);
    // Update: bar-1 is no longer ready (terminating, or failing its probe).
    let not_ready = slice(
        "shop",
        "bar",
        "a",
        &[("10.1.0.11", "bar-1", false), ("10.1.0.12", "bar-2", true), ("10.1.0.13", "bar-3", true)],
        &[("http", 8080)],
    );
    assert!(idx.slice(Event::Apply(not_ready.clone())));
    assert_eq!(addresses(&ClusterView::build(&idx, TD), "shop/bar"), ["10.1.0.12:4143", "10.1.0.13:4143"]);
    // Delete: the slice goes (the Service loses every endpoint), then the Service.
    idx.slice(Event::Delete((not_ready.namespace.clone(), not_ready.name.clone())));
    assert!(addresses(&ClusterView::build(&idx, TD), "shop/bar").is_empty());
    idx.service(Event::Delete(("shop".into(), "bar".into())));
    let view = ClusterView::build(&idx, TD);
    assert!(!view.services.contains_key("shop/bar") && !view.directory.contains_key("10.96.0.10"));
    // The pods' own service stays: their proxies still need its policy.
    assert!(view.workload_services.contains("shop/bar"));
}

#[test]
fn a_relist_after_gone_gives_the_same_view_as_the_events_it_replaces() {
    let mut by_events = bar();
    let mut relisted = synced();
    relisted.pod(Event::Apply(pod("shop", "stale", "bar", &["10.1.0.99"], "v1", true)));
    // The watch expired (410 Gone): the watcher lists everything again.
    relisted.service(Event::Init);
    relisted.service(Event::InitApply(service("shop", "bar", "10.96.0.10", http_port())));
    relisted.service(Event::InitDone);
    relisted.pod(Event::Init);
    for p in [
        pod("shop", "bar-1", "bar", &["10.1.0.11"], "v1", true),
        pod("shop", "bar-2", "bar", &["10.1.0.12"], "v2", true),
    ] {
        relisted.pod(Event::InitApply(p));
    }
    relisted.pod(Event::InitDone);
    relisted.slice(Event::Init);
    relisted.slice(Event::InitApply(slice(
        "shop",
        "bar",
        "a",
        &[("10.1.0.11", "bar-1", true), ("10.1.0.12", "bar-2", true)],
        &[("http", 8080)],
    )));
    relisted.slice(Event::InitDone);
    assert_eq!(ClusterView::build(&relisted, TD), ClusterView::build(&by_events, TD), "the stale pod is gone");
    // And a relist that repeats what is known changes nothing.
    by_events.pod(Event::Init);
    by_events.pod(Event::InitApply(pod("shop", "bar-1", "bar", &["10.1.0.11"], "v1", true)));
    by_events.pod(Event::InitApply(pod("shop", "bar-2", "bar", &["10.1.0.12"], "v2", true)));
    assert!(!by_events.pod(Event::InitDone));
}

#[test]
fn a_pod_changing_ip_moves_its_endpoint_and_directory_entry() {
    let mut idx = bar();
    idx.pod(Event::Apply(pod("shop", "bar-1", "bar", &["10.1.0.21"], "v1", true)));
    idx.slice(Event::Apply(slice(
        "shop",
        "bar",
        "a",
        &[("10.1.0.21", "bar-1", true), ("10.1.0.12", "bar-2", true)],
        &[("http", 8080)],
    )));
    let view = ClusterView::build(&idx, TD);
    assert_eq!(addresses(&view, "shop/bar"), ["10.1.0.12:4143", "10.1.0.21:4143"]);
    assert!(view.directory.contains_key("10.1.0.21") && !view.directory.contains_key("10.1.0.11"));
    assert_eq!(view.pod("shop", "bar-1").unwrap().ips, vec!["10.1.0.21".parse::<std::net::IpAddr>().unwrap()]);
}

#[test]
fn a_service_account_renamed_changes_the_identity_callers_expect() {
    let mut idx = bar();
    // The Deployment moved bar-2 to the account bar-v2 (its pod replaced with the same name).
    idx.pod(Event::Apply(pod("shop", "bar-2", "bar-v2", &["10.1.0.12"], "v2", true)));
    let view = ClusterView::build(&idx, TD);
    let eps = &view.endpoints["shop/bar"];
    assert_eq!(eps[1].identity, "spiffe://weft.local/ns/shop/sa/bar-v2");
    assert_eq!(eps[0].identity, "spiffe://weft.local/ns/shop/sa/bar");
    assert!(view.workload_services.contains("shop/bar-v2") && view.workload_services.contains("shop/bar"));
    // Once bar-1 is gone too, nobody runs as bar any more.
    idx.pod(Event::Delete(("shop".into(), "bar-1".into())));
    let view = ClusterView::build(&idx, TD);
    assert!(!view.workload_services.contains("shop/bar"));
    assert_eq!(addresses(&view, "shop/bar"), ["10.1.0.12:4143"], "an endpoint without its pod waits for it");
}

#[test]
fn pods_without_a_proxy_are_plaintext_endpoints_unless_the_service_is_strict() {
    let mut idx = bar();
    idx.pod(Event::Apply(pod("shop", "legacy", "legacy", &["10.1.0.30"], "v1", false)));
    idx.slice(Event::Apply(slice("shop", "bar", "b", &[("10.1.0.30", "legacy", true)], &[("http", 8080)])));
    let view = ClusterView::build(&idx, TD);
    let plain: Vec<&pb::Endpoint> = view.endpoints["shop/bar"].iter().filter(|e| e.identity.is_empty()).collect();
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].address, "10.1.0.30:8080", "dialled as it is, on the target port");
    assert!(!view.directory.contains_key("10.1.0.30"), "a pod outside the mesh is not a mesh address");
    assert!(!view.workload_services.contains("shop/legacy"));

    let snapshot_endpoints = |mesh: &str| {
        let mesh = MeshConfig::parse(mesh).unwrap();
        let snap = Snapshot::build_with(1, &mesh, std::iter::empty(), Some(&view));
        match &snap.resources(weft_proto::types::ENDPOINTS).unwrap()["shop/bar"].body {
            Some(pb::resource::Body::Endpoints(e)) => e.endpoints.iter().map(|e| e.address.clone()).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(snapshot_endpoints("trust_domain: weft.local\n").len(), 3);
    let strict = snapshot_endpoints("trust_domain: weft.local\nservices:\n  shop/bar: {mtls: strict}\n");
    assert_eq!(strict, ["10.1.0.11:4143", "10.1.0.12:4143"], "strict: the caller gets no plaintext endpoint");
}

#[test]
fn the_snapshot_takes_policy_from_the_file_and_addresses_from_the_api() {
    let view = ClusterView::build(&bar(), TD);
    let mesh = MeshConfig::parse(
        "trust_domain: weft.local\nservices:\n  shop/bar:\n    vip: 10.0.0.1\n    timeout: 2s\n    split: [{version: v2, weight: 100}]\n",
    )
    .unwrap();
    let snap = Snapshot::build_with(1, &mesh, std::iter::empty(), Some(&view));
    let policy = match &snap.resources(weft_proto::types::SERVICE).unwrap()["shop/bar"].body {
        Some(pb::resource::Body::Service(s)) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(policy.vip, "10.96.0.10", "the ClusterIP, not the file's vip");
    assert_eq!(policy.default_route.unwrap().timeout_ms, 2000);
    assert_eq!(policy.split.len(), 1);
    let dir = snap.directory();
    assert_eq!(dir.get("10.96.0.10:80").map(String::as_str), Some("shop/bar"));
    assert_eq!(dir.get("10.1.0.12").map(String::as_str), Some("shop/bar"));
}

#[test]
fn two_replicas_with_the_same_index_publish_the_same_resources() {
    // Nothing per-replica goes into the snapshot in Kubernetes mode: the content hashes (the
    // resource versions a reconnecting proxy reports) agree, so a failover resends nothing.
    let mesh = MeshConfig::parse("trust_domain: weft.local\n").unwrap();
    let (a, b) = (ClusterView::build(&bar(), TD), ClusterView::build(&bar(), TD));
    let one = Snapshot::build_with(1, &mesh, std::iter::empty(), Some(&a));
    let two = Snapshot::build_with(9, &mesh, std::iter::empty(), Some(&b));
    for t in weft_proto::types::ALL {
        let versions = |s: &Snapshot| {
            s.resources(t).unwrap().iter().map(|(k, r)| (k.clone(), r.version.clone())).collect::<Vec<_>>()
        };
        assert_eq!(versions(&one), versions(&two), "{t}");
    }
}

#[test]
fn named_target_ports_resolve_through_the_slices_and_system_namespaces_stay_out() {
    let mut idx = synced();
    idx.service(Event::Apply(service(
        "shop",
        "web",
        "10.96.0.20",
        json!([{"name": "web", "port": 80, "targetPort": "http"}]),
    )));
    idx.pod(Event::Apply(pod("shop", "web-1", "web", &["10.1.0.40", "fd00::40"], "", true)));
    idx.slice(Event::Apply(slice("shop", "web", "a", &[("10.1.0.40", "web-1", true)], &[("web", 8081)])));
    idx.slice(Event::Apply(slice("shop", "web", "b", &[("fd00::40", "web-1", true)], &[("web", 8081)])));
    idx.service(Event::Apply(service(
        "kube-system",
        "kube-dns",
        "10.96.0.53",
        json!([{"name": "dns-tcp", "port": 53}]),
    )));
    let view = ClusterView::build(&idx, TD);
    assert_eq!(view.services["shop/web"].ports, vec![pb::PortMapping { port: 80, target_port: 8081 }]);
    let eps = &view.endpoints["shop/web"];
    assert_eq!(eps.len(), 1, "both families of a pod are one endpoint");
    assert_eq!(
        (eps[0].address.as_str(), eps[0].other_ips.as_slice()),
        ("10.1.0.40:4143", &["fd00::40".to_string()][..])
    );
    assert!(view.directory.contains_key("fd00::40"));
    assert!(!view.services.contains_key("kube-system/kube-dns"));
}

#[test]
fn finished_pods_are_neither_endpoints_nor_workloads() {
    let mut idx = bar();
    let done = PodRecord { finished: true, ..pod("shop", "bar-2", "bar", &["10.1.0.12"], "v2", true) };
    idx.pod(Event::Apply(done));
    let view = ClusterView::build(&idx, TD);
    assert_eq!(addresses(&view, "shop/bar"), ["10.1.0.11:4143"]);
}
