//! Replays every input kept in `fuzz/corpus/<target>` through the target's check, as an
//! ordinary test: a crash the fuzzer once found stays fixed.

use std::path::PathBuf;

use weft_certs::fuzzing::corpus::replay;

#[test]
fn detect_corpus() {
    replay("detect", super::detect::check);
}

#[test]
fn preamble_corpus() {
    replay("preamble", super::detect::check_preamble);
}

#[test]
fn inbound_headers_corpus() {
    replay("inbound_headers", super::headers::check);
}

#[test]
fn deadline_corpus() {
    replay("deadline", super::deadline::check);
}

#[test]
fn discovery_corpus() {
    replay("discovery", super::discovery::check);
}

/// Writes the discovery target's seed inputs (real responses, encoded as the target reads them).
/// Run by hand: `cargo test -p weft-proxy --release fuzzing::replay::write_discovery_seeds -- --ignored`.
#[test]
#[ignore = "writes seed inputs into fuzz/corpus/discovery"]
fn write_discovery_seeds() {
    use weft_proto::{types, v1 as pb};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/discovery");
    std::fs::create_dir_all(&dir).unwrap();
    let resource = |name: &str, body| pb::Resource { name: name.into(), version: "v1".into(), body: Some(body) };
    let response = |type_url: &str, resources, removed: &[&str], merge| pb::DiscoveryResponse {
        type_url: type_url.into(),
        version_info: "1".into(),
        nonce: "n".into(),
        resources,
        removed: removed.iter().map(|s| s.to_string()).collect(),
        merge,
    };
    let endpoint = |addr: &str, version: &str| pb::Endpoint {
        address: addr.into(),
        identity: "spiffe://weft.local/ns/default/sa/web".into(),
        version: version.into(),
        instance: "i".into(),
        app_ports: vec![8080, 70000],
        protocol: 0,
        other_ips: vec!["fd00::1".into()],
    };
    let eps = |list: Vec<pb::Endpoint>| pb::resource::Body::Endpoints(pb::EndpointSet { endpoints: list });
    let policy = pb::ServicePolicy {
        name: "web".into(),
        namespace: "default".into(),
        vip: "10.96.0.1".into(),
        ports: vec![pb::PortMapping { port: 80, target_port: 8080 }],
        split: vec![
            pb::SplitWeight { version: "v1".into(), weight: 90 },
            pb::SplitWeight { version: "v2".into(), weight: 10 },
        ],
        routes: vec![pb::Route {
            r#match: Some(pb::RouteMatch { path_prefix: "/api".into(), method: "POST".into(), ..Default::default() }),
            policy: Some(pb::RoutePolicy { timeout_ms: 100, ..Default::default() }),
        }],
        ..Default::default()
    };
    let bad_policy = pb::ServicePolicy { vip: "not-an-ip".into(), ..policy.clone() };
    let dir_body = pb::resource::Body::Directory(pb::Directory {
        entries: vec![pb::DirectoryEntry { address: "10.96.0.1:80".into(), service: "default/web".into() }],
    });
    let seeds: Vec<(&str, Vec<pb::DiscoveryResponse>)> = vec![
        (
            "service",
            vec![response(
                types::SERVICE,
                vec![resource("default/web", pb::resource::Body::Service(policy.clone()))],
                &[],
                false,
            )],
        ),
        (
            "endpoints-split",
            vec![
                response(
                    types::SERVICE,
                    vec![resource("default/web", pb::resource::Body::Service(policy.clone()))],
                    &[],
                    false,
                ),
                response(
                    types::ENDPOINTS,
                    vec![resource(
                        "default/web",
                        eps(vec![endpoint("10.0.0.1:4143", "v1"), endpoint("10.0.0.2:4143", "v2")]),
                    )],
                    &[],
                    false,
                ),
            ],
        ),
        (
            "rejected-keeps-last",
            vec![
                response(
                    types::SERVICE,
                    vec![resource("default/web", pb::resource::Body::Service(policy.clone()))],
                    &[],
                    false,
                ),
                response(
                    types::SERVICE,
                    vec![resource("default/web", pb::resource::Body::Service(bad_policy))],
                    &[],
                    false,
                ),
            ],
        ),
        (
            "bad-endpoints",
            vec![response(
                types::ENDPOINTS,
                vec![resource("default/web", eps(vec![endpoint("0.0.0.0:1", "v1")]))],
                &[],
                false,
            )],
        ),
        (
            "merge",
            vec![
                response(
                    types::ENDPOINTS,
                    vec![resource("default/web", eps(vec![endpoint("10.0.0.1:4143", "v1")]))],
                    &[],
                    false,
                ),
                response(
                    types::ENDPOINTS,
                    vec![resource("default/web", eps(vec![endpoint("10.0.0.3:4143", "v1")]))],
                    &[],
                    true,
                ),
            ],
        ),
        (
            "removed",
            vec![
                response(
                    types::ENDPOINTS,
                    vec![resource("default/web", eps(vec![endpoint("10.0.0.1:4143", "v1")]))],
                    &[],
                    false,
                ),
                response(types::ENDPOINTS, vec![], &["default/web"], false),
            ],
        ),
        ("directory", vec![response(types::DIRECTORY, vec![resource("mesh-00", dir_body)], &[], false)]),
        ("wrong-body", vec![response(types::DIRECTORY, vec![resource("mesh-00", eps(vec![]))], &[], false)]),
    ];
    for (name, resps) in seeds {
        std::fs::write(dir.join(name), super::discovery::encode(&resps)).unwrap();
    }
}
