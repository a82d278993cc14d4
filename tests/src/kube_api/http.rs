//! The test API server's HTTPS side: authentication by bearer token, routing to namespace reads,
//! lists, watches (newline-delimited JSON events on one long response), pod reads and
//! TokenReviews.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::store::{Change, Kind};
use super::{NamespaceAnswer, Shared, TOKEN};

type Body = BoxBody<Bytes, Infallible>;

pub async fn serve(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>, shared: Arc<Mutex<Shared>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(req, &shared).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn reply(status: u16, body: Value) -> http::Response<Body> {
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "reason": reason,
           "message": message, "code": code})
}

fn status(code: u16, reason: &str, message: &str) -> http::Response<Body> {
    reply(code, status_object(code, reason, message))
}

fn count(shared: &Mutex<Shared>, what: String) {
    *lock(shared).requests.entry(what).or_default() += 1;
}

fn percent_decoded(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a path names: a kind, optionally in one namespace, optionally one object.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
}

/// The kind, namespace and name a path names, when its group and version are served (a CRD
/// removed with [`super::TestApiServer::remove_kind`] is not: 404, as for an uninstalled CRD).
fn route(path: &str, removed: &HashSet<Kind>) -> Option<Target> {
    let (group, version, rest) = match path.strip_prefix("/api/v1/") {
        Some(rest) => ("", "v1", rest),
        None => {
            let rest = path.strip_prefix("/apis/")?;
            let mut it = rest.splitn(3, '/');
            (it.next()?, it.next()?, it.next()?)
        }
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let target = |plural: &str, namespace: Option<&str>, name: Option<&str>| {
        Some(Target {
            kind: Kind::from_plural(plural)?,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
        })
    };
    match parts.as_slice() {
        [plural] => target(plural, None, None),
        // One cluster-scoped object (a Namespace, a MutatingWebhookConfiguration).
        [plural, name] => target(plural, None, Some(name)).filter(|t| !t.kind.namespaced()),
        ["namespaces", ns, plural] => target(plural, Some(ns), None),
        ["namespaces", ns, plural, name] => target(plural, Some(ns), Some(name)),
        _ => None,
    }
    .filter(|t| t.kind.group() == group && t.kind.versions().contains(&version) && !removed.contains(&t.kind))
}

async fn answer(req: http::Request<hyper::body::Incoming>, shared: &Arc<Mutex<Shared>>) -> http::Response<Body> {
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return status(401, "Unauthorized", "no or wrong bearer token");
    }
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decoded(v)))
        .collect();
    if req.method() == http::Method::POST && path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        count(shared, "create tokenreviews".into());
        return token_review(req, shared).await;
    }
    let removed = lock(shared).removed.clone();
    if req.method() == http::Method::POST {
        if let Some(Target { kind: Kind::Event, namespace: Some(ns), name: None }) = route(&path, &removed) {
            count(shared, "create events".into());
            return create_event(req, shared, &ns).await;
        }
    }
    if req.method() != http::Method::GET {
        return status(405, "MethodNotAllowed", "the test API server serves GET, and POST of tokenreviews and events");
    }
    let Some(target) = route(&path, &removed) else {
        return status(404, "NotFound", &format!("the test API server does not serve {path}"));
    };
    if query.contains_key("labelSelector") || query.contains_key("fieldSelector") {
        return status(400, "BadRequest", "the test API server does not filter by selectors");
    }
    match target.name {
        Some(name) => get(shared, &path, target.kind, target.namespace.as_deref().unwrap_or_default(), &name).await,
        None if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) => {
            count(shared, format!("watch {}", target.kind.plural()));
            watch(shared.clone(), target.kind, target.namespace, &query)
        }
        None => {
            count(shared, format!("list {}", target.kind.plural()));
            list(shared, target.kind, target.namespace.as_deref(), &query)
        }
    }
}

async fn get(shared: &Mutex<Shared>, path: &str, kind: Kind, ns: &str, name: &str) -> http::Response<Body> {
    count(shared, path.to_string());
    // The webhook's namespace reads answer as the test set them up.
    let scripted = (kind == Kind::Namespace).then(|| lock(shared).namespaces.get(name).cloned()).flatten();
    let annotations = match scripted {
        Some(NamespaceAnswer::Fail) => return status(500, "InternalError", "etcd is having a bad day"),
        Some(NamespaceAnswer::Annotations(a)) => Some(a),
        Some(NamespaceAnswer::Slow(delay, a)) => {
            tokio::time::sleep(delay).await;
            Some(a)
        }
        None => None,
    };
    if let Some(annotations) = annotations {
        let annotations: serde_json::Map<String, Value> =
            annotations.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        return reply(
            200,
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "annotations": annotations, "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}
            }),
        );
    }
    match lock(shared).store.get(kind, ns, name) {
        Some(obj) => reply(200, obj.clone()),
        None => status(404, "NotFound", &format!("{} \"{name}\" not found", kind.plural())),
    }
}

/// A list, paged when `limit` asks (`continue` is `RV:OFFSET`; a later page reads the current
/// objects, which is looser than the API server's snapshot, and enough here).
fn list(shared: &Mutex<Shared>, kind: Kind, ns: Option<&str>, query: &HashMap<String, String>) -> http::Response<Body> {
    let s = lock(shared);
    let items = s.store.list(kind, ns);
    let (rv, offset) = match query.get("continue").and_then(|c| c.split_once(':')) {
        Some((rv, off)) => (rv.parse().unwrap_or(0), off.parse().unwrap_or(0)),
        None => (s.store.resource_version(), 0usize),
    };
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let page: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if offset + page.len() < items.len() {
        metadata["continue"] = format!("{rv}:{}", offset + page.len()).into();
    }
    reply(
        200,
        json!({"apiVersion": kind.api_version(), "kind": format!("{}List", kind.name()), "metadata": metadata, "items": page}),
    )
}

fn line(v: Value) -> Bytes {
    Bytes::from(format!("{v}\n"))
}

fn event(c: &Change) -> Bytes {
    line(json!({"type": c.kind_of_change, "object": c.object}))
}

fn gone(rv: u64) -> Bytes {
    line(json!({"type": "ERROR", "object": status_object(410, "Expired", &format!("too old resource version: {rv}"))}))
}

/// A watch: the changes after `resourceVersion` (all objects as `ADDED` when it is 0 or absent),
/// then live ones; bookmarks when asked; `410 Gone` as an ERROR event when the log no longer
/// reaches back that far, or when the watches are expired.
fn watch(
    shared: Arc<Mutex<Shared>>,
    kind: Kind,
    ns: Option<String>,
    query: &HashMap<String, String>,
) -> http::Response<Body> {
    let from: u64 = query.get("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = Duration::from_secs(query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let (mut live, backlog, mut expiry, every, mut last) = {
            let s = lock(&shared);
            let backlog = if from == 0 {
                Some(
                    s.store
                        .list(kind, ns.as_deref())
                        .into_iter()
                        .map(|o| line(json!({"type": "ADDED", "object": o})))
                        .collect::<Vec<_>>(),
                )
            } else {
                s.store.since(kind, from).map(|cs| {
                    cs.iter().filter(|c| ns.as_deref().is_none_or(|n| n == c.namespace())).map(|c| event(c)).collect()
                })
            };
            let mut expiry = s.expiry.subscribe();
            expiry.borrow_and_update();
            // Taken under the same lock as the backlog: live changes are exactly the later ones.
            (s.store.live.subscribe(), backlog, expiry, s.bookmark_every, s.store.resource_version().max(from))
        };
        let Some(backlog) = backlog else {
            let _ = tx.send(gone(from)).await;
            return;
        };
        for b in backlog {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let relevant = |c: &Change| c.kind == kind && ns.as_deref().is_none_or(|n| n == c.namespace());
        let ends = tokio::time::sleep(timeout);
        tokio::pin!(ends);
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                change = live.recv() => match change {
                    Ok(c) if relevant(&c) && c.rv > last => {
                        last = c.rv;
                        if tx.send(event(&c)).await.is_err() { return }
                    }
                    Ok(_) => {}
                    // Fell behind: as the API server does, end the watch; the client re-lists.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => { let _ = tx.send(gone(last)).await; return }
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    // Every change up to the current resourceVersion is already queued for us:
                    // send those first, then the bookmark.
                    let now = lock(&shared).store.resource_version();
                    while let Ok(c) = live.try_recv() {
                        if relevant(&c) && c.rv > last {
                            last = c.rv;
                            if tx.send(event(&c)).await.is_err() { return }
                        }
                    }
                    last = last.max(now);
                    let mark = json!({"type": "BOOKMARK", "object": {"kind": kind.name(), "apiVersion": kind.api_version(),
                                      "metadata": {"resourceVersion": last.to_string()}}});
                    if tx.send(line(mark)).await.is_err() { return }
                }
                _ = expiry.changed() => { let _ = tx.send(gone(last)).await; return }
                _ = &mut ends => return,
                _ = tx.closed() => return,
            }
        }
    });
    let body =
        StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut r = http::Response::new(BodyExt::boxed(body));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// A created Event is kept (`409 AlreadyExists` for a name already taken, as the API server does).
async fn create_event(
    req: http::Request<hyper::body::Incoming>,
    shared: &Mutex<Shared>,
    ns: &str,
) -> http::Response<Body> {
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return status(413, "RequestEntityTooLarge", "an Event of at most 64 KiB"),
    };
    let Ok(mut event) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "not JSON");
    };
    let Some(name) = event["metadata"]["name"].as_str().map(str::to_string) else {
        return status(422, "Invalid", "metadata.name is required");
    };
    if event["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) {
        return status(400, "BadRequest", "the namespace of the Event does not match the path");
    }
    if event["involvedObject"]["namespace"].as_str().is_some_and(|n| n != ns) {
        return status(422, "Invalid", "involvedObject.namespace does not match the Event's namespace");
    }
    let mut s = lock(shared);
    if s.store.get(Kind::Event, ns, &name).is_some() {
        return status(409, "AlreadyExists", &format!("events \"{name}\" already exists"));
    }
    event["metadata"]["namespace"] = ns.into();
    reply(201, s.store.put(Kind::Event, event))
}

async fn token_review(req: http::Request<hyper::body::Incoming>, shared: &Mutex<Shared>) -> http::Response<Body> {
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return status(413, "RequestEntityTooLarge", "a TokenReview of at most 64 KiB"),
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "not JSON");
    };
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let audiences: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let s = lock(shared);
    let verdict = super::tokens::review(&s.signer, token, &audiences, super::unix_now(), |ns, name| {
        s.store.get(Kind::Pod, ns, name).cloned()
    });
    reply(
        201,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {"creationTimestamp": null},
               "spec": review["spec"], "status": verdict}),
    )
}
