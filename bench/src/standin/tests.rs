//! The stand-in answered through the generated gRPC clients, as linkerd2-proxy calls it.

use std::sync::Arc;

use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::GetDestination;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use linkerd2_proxy_api::identity::CertifyRequest;
use linkerd2_proxy_api::inbound::inbound_server_policies_client::InboundServerPoliciesClient;
use linkerd2_proxy_api::inbound::PortSpec;
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use linkerd2_proxy_api::outbound::{proxy_protocol, traffic_spec, TrafficSpec};

use super::*;
use crate::pki::BenchPki;

const SERVER: &str = "server.bench.serviceaccount.identity.linkerd.cluster.local";

#[tokio::test]
async fn standin_certifies_allows_inbound_and_meshes_the_server() {
    let dir = std::env::temp_dir().join(format!("weft-bench-standin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pki = BenchPki::create(&dir).unwrap();
    let ident = pki.linkerd_identity(SERVER).unwrap();
    let signer = crate::pki::DnsSigner::load(&pki.ca_dir).unwrap();
    let directory = Directory::parse(&[format!("198.18.0.11:8080={SERVER}")], 4143).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, signer, Arc::new(directory)));

    let mut id = IdentityClient::connect(url.clone()).await.unwrap();
    let resp = id
        .certify(CertifyRequest {
            identity: SERVER.into(),
            token: b"t".to_vec(),
            certificate_signing_request: std::fs::read(ident.dir.join("csr.der")).unwrap(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.leaf_certificate.is_empty());
    assert!(resp.valid_until.unwrap().seconds > crate::report::unix_now() as i64);
    let refused = id
        .certify(CertifyRequest {
            identity: SERVER.into(),
            token: vec![],
            certificate_signing_request: std::fs::read(ident.dir.join("csr.der")).unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let mut inbound = InboundServerPoliciesClient::connect(url.clone()).await.unwrap();
    let mut watch = inbound
        .watch_port(PortSpec { workload: "{\"ns\":\"bench\",\"pod\":\"b\"}".into(), port: 8080 })
        .await
        .unwrap()
        .into_inner();
    let server = watch.message().await.unwrap().unwrap();
    assert_eq!(server.labels["name"], "all-unauthenticated");
    assert_eq!(server.authorizations[0].networks.len(), 2);

    let mut outbound = OutboundPoliciesClient::connect(url.clone()).await.unwrap();
    let spec = |addr: &str| TrafficSpec {
        source_workload: "a".into(),
        target: Some(traffic_spec::Target::Addr(addr.parse::<std::net::SocketAddr>().unwrap().into())),
    };
    let policy = outbound.watch(spec("198.18.0.11:8080")).await.unwrap().into_inner().message().await.unwrap().unwrap();
    let Some(proxy_protocol::Kind::Detect(detect)) = policy.protocol.unwrap().kind else { panic!("detect") };
    assert!(detect.timeout.is_some() && detect.opaque.is_some() && detect.http2.is_some());
    let route = &detect.http1.unwrap().routes[0];
    assert_eq!(route.rules[0].retry.as_ref().unwrap().max_retries, crate::topology::policy::POLICY.max_retries);
    let unknown = outbound.watch(spec("198.18.0.99:80")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut dst = DestinationClient::connect(url).await.unwrap();
    let e = dst.get_profile(GetDestination { path: "x".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let _ = std::fs::remove_dir_all(&dir);
}
