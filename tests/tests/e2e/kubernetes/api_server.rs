//! The test API server itself, through the real kube client and watcher: lists (paged), watches
//! with bookmarks, `410 Gone` then a re-list, EndpointSlices that follow pods, and TokenReviews
//! that refuse a wrong audience, an expired token, a bad signature and a deleted pod. What the
//! controller tests rely on is checked here first.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;
use weft_tests::apps::rt;
use weft_tests::harness::TestDir;
use weft_tests::kube_api::{self, TestApiServer};

use super::support::weft;

fn server(name: &str) -> (TestDir, TestApiServer) {
    let dir = TestDir::new(name);
    let ca = dir.path().join("ca");
    assert_eq!(weft(&["ca", "init", "--dir", &ca.display().to_string()], None).code, 0);
    let api = TestApiServer::start(&ca, dir.path());
    (dir, api)
}

async fn client(api: &TestApiServer) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

#[test]
fn test_api_server_lists_watches_bookmarks_and_expires_as_the_watcher_expects() {
    let (_dir, api) = server("kube-api");
    for i in 0..5 {
        api.apply(kube_api::pod("shop", &format!("p{i}"), "bar", &format!("10.1.0.{i}"), &[("app", "bar")], true));
    }
    api.set_bookmark_interval(Duration::from_millis(200));
    rt().block_on(async {
        let c = client(&api).await;
        let pods: kube::Api<Pod> = kube::Api::all(c.clone());
        // Paged lists.
        let page = pods.list(&ListParams::default().limit(2)).await.unwrap();
        assert_eq!(page.items.len(), 2);
        let next = page.metadata.continue_.clone().expect("a continue token");
        let rest = pods.list(&ListParams::default().limit(10).continue_token(&next)).await.unwrap();
        assert_eq!(rest.items.len(), 3);
        assert_eq!(rest.metadata.resource_version, page.metadata.resource_version);

        // A raw watch from the list's resourceVersion: the next change, then bookmarks.
        let rv = page.metadata.resource_version.clone().unwrap();
        let mut w = pods.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
        api.set_pod_ready("shop", "p0", true);
        match w.next().await.unwrap().unwrap() {
            WatchEvent::Modified(p) => assert_eq!(p.metadata.name.as_deref(), Some("p0")),
            other => panic!("{other:?}"),
        }
        let bookmark = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                if let WatchEvent::Bookmark(b) = w.next().await.unwrap().unwrap() {
                    return b.metadata.resource_version;
                }
            }
        })
        .await
        .expect("a bookmark");
        assert_eq!(bookmark, api.resource_version().to_string());
        // The history is forgotten: the open watch ends with 410, and watching from the old
        // resourceVersion is 410 too.
        api.expire_watches();
        match w.next().await.unwrap().unwrap() {
            WatchEvent::Error(e) => assert_eq!(e.code, 410),
            other => panic!("{other:?}"),
        }
        let mut again = pods.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
        assert!(matches!(again.next().await.unwrap().unwrap(), WatchEvent::Error(e) if e.code == 410));

        // The runtime watcher: lists, watches, and lists again after 410 Gone.
        let mut events = watcher(kube::Api::<Pod>::all(c.clone()), watcher::Config::default()).boxed();
        let mut listed = 0;
        loop {
            match events.next().await.unwrap().unwrap() {
                watcher::Event::InitApply(_) => listed += 1,
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
        assert_eq!(listed, 5);
        // A change through the open watch, then the expiry ends that watch.
        api.set_pod_ready("shop", "p1", true);
        assert!(matches!(events.next().await.unwrap().unwrap(), watcher::Event::Apply(p) if p.metadata.name.as_deref() == Some("p1")));
        let lists = api.requests("list pods");
        api.expire_watches();
        api.delete("Pod", "shop", "p4");
        let relisted = tokio::time::timeout(Duration::from_secs(10), async {
            let mut n = 0;
            loop {
                match events.next().await.unwrap() {
                    Ok(watcher::Event::InitApply(_)) => n += 1,
                    Ok(watcher::Event::InitDone) => return n,
                    Ok(watcher::Event::Init) => n = 0,
                    _ => {}
                }
            }
        })
        .await
        .expect("a re-list after 410 Gone");
        assert_eq!(relisted, 4, "the deleted pod is not listed");
        assert!(api.requests("list pods") > lists);

        // EndpointSlices follow the Service's selector and the pods' readiness.
        api.apply(kube_api::service("shop", "bar", "10.96.0.10", &[(80, 8080)]));
        let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(c.clone(), "shop");
        let slice = slices.get("bar-v4").await.unwrap();
        let ready: Vec<bool> =
            slice.endpoints.unwrap_or_default().iter().map(|e| e.conditions.as_ref().unwrap().ready.unwrap()).collect();
        assert_eq!(ready, [true, true, false, false], "p0 and p1 are ready, the others not");
        assert_eq!(slice.ports.unwrap()[0].port, Some(8080));
    });
}

#[test]
fn test_api_server_token_reviews_check_signature_expiry_audience_and_pod() {
    let (_dir, api) = server("kube-api-tokens");
    api.apply(kube_api::pod("shop", "bar-1", "bar", "10.1.0.1", &[("app", "bar")], true));
    let review = |token: String| {
        rt().block_on(async {
            let reviews: kube::Api<TokenReview> = kube::Api::all(client(&api).await);
            let r: TokenReview = serde_json::from_value(json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "metadata": {}, "spec": {"token": token, "audiences": ["weft.io/identity"]}
            }))
            .unwrap();
            reviews.create(&PostParams::default(), &r).await.unwrap().status.unwrap()
        })
    };
    let ok = review(api.token("shop", "bar-1", "weft.io/identity", 600));
    assert_eq!(ok.authenticated, Some(true));
    let user = ok.user.unwrap();
    assert_eq!(user.username.as_deref(), Some("system:serviceaccount:shop:bar"));
    assert_eq!(user.extra.unwrap()["authentication.kubernetes.io/pod-name"], ["bar-1"]);
    for (what, token, expect) in [
        ("wrong audience", api.token("shop", "bar-1", "vault", 600), "audiences"),
        ("expired", api.token("shop", "bar-1", "weft.io/identity", -1), "expired"),
        ("bad signature", api.forged_token("shop", "bar-1", "weft.io/identity"), "signature"),
        ("garbage", "not.a.jwt".to_string(), "invalid bearer token"),
    ] {
        let s = review(token);
        assert_eq!(s.authenticated, Some(false), "{what}");
        assert!(s.error.as_deref().unwrap_or_default().contains(expect), "{what}: {:?}", s.error);
    }
    let token = api.token("shop", "bar-1", "weft.io/identity", 600);
    api.delete("Pod", "shop", "bar-1");
    let s = review(token);
    assert!(s.authenticated == Some(false) && s.error.unwrap().contains("not found"));
}
