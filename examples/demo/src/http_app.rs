//! The HTTP side of the demo service, and the router that sends gRPC to the echo service.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tower::Service;

use crate::behaviour::{percent_draw, Shared};
use crate::grpc::Echo;
use crate::Args;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Headers copied onto downstream calls: the deadline (as gRPC libraries carry it) and tracing.
const PROPAGATED: &[&str] =
    &["x-weft-deadline-at", "x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"];

pub async fn serve(args: Args, state: Arc<Shared>) -> Result<(), String> {
    if let Some(control) = args.control {
        let listener = tokio::net::TcpListener::bind(control).await.map_err(|e| format!("binding {control}: {e}"))?;
        tokio::spawn(serve_control(listener, state.clone()));
    }
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.map_err(|e| format!("binding {}: {e}", args.listen))?;
    eprintln!("weft-demo {} {} listening on {} (calls: {:?})", state.name, state.version, args.listen, state.calls);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let echo = weft_proto::demo::echo_server::EchoServer::new(Echo(state.clone()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => continue,
        };
        let (state, client, echo) = (state.clone(), client.clone(), echo.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (state, client, mut echo) = (state.clone(), client.clone(), echo.clone());
                async move {
                    let grpc = req
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                    if grpc {
                        let resp = echo.call(req).await.unwrap_or_else(|never| match never {});
                        return Ok::<_, Infallible>(
                            resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()),
                        );
                    }
                    Ok(handle(req, &state, &client).await)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The control port: `/control` and `/healthz` only.
async fn serve_control(listener: tokio::net::TcpListener, state: Arc<Shared>) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (state, client) = (state.clone(), client.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (state, client) = (state.clone(), client.clone());
                async move {
                    if matches!(req.uri().path(), "/control" | "/healthz") {
                        Ok::<_, Infallible>(handle(req, &state, &client).await)
                    } else {
                        Ok(json_response(
                            StatusCode::NOT_FOUND,
                            json!({"error": "the control port serves /control and /healthz"}),
                        ))
                    }
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string() + "\n")).map_err(|never| match never {}).boxed_unsync())
        .expect("static response")
}

async fn handle(req: Request<Incoming>, state: &Shared, client: &Client<HttpConnector, Full<Bytes>>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/healthz") => return json_response(StatusCode::OK, json!({"ok": true})),
        ("GET", "/control") => {
            let b = state.behaviour();
            return json_response(
                StatusCode::OK,
                json!({"fail_percent": b.fail_percent, "latency_ms": b.latency.as_millis() as u64,
                       "served": state.served.load(Ordering::Relaxed), "failed": state.failed.load(Ordering::Relaxed)}),
            );
        }
        ("PUT", "/control") | ("POST", "/control") => {
            let query = req.uri().query().unwrap_or("").to_string();
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let spec = if body.is_empty() { query } else { String::from_utf8_lossy(&body).into_owned() };
            return match state.update(&spec) {
                Ok(b) => json_response(
                    StatusCode::OK,
                    json!({"fail_percent": b.fail_percent, "latency_ms": b.latency.as_millis() as u64}),
                ),
                Err(e) => json_response(StatusCode::BAD_REQUEST, json!({"error": e})),
            };
        }
        _ => {}
    }
    let b = state.behaviour();
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (client_id, deadline_ms) = (header("x-weft-client-id"), header("x-weft-deadline-ms"));
    let mut downstream = Vec::new();
    let mut downstream_ok = true;
    for url in &state.calls {
        let mut b = Request::get(url.as_str());
        for h in PROPAGATED {
            if let Some(v) = req.headers().get(*h) {
                b = b.header(*h, v.clone());
            }
        }
        let result = match b.body(Full::new(Bytes::new())) {
            Ok(r) => client.request(r).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let proxy_error =
                    resp.headers().get("x-weft-proxy-error").and_then(|v| v.to_str().ok()).map(str::to_string);
                let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                downstream_ok &= (200..300).contains(&status);
                let body = serde_json::from_slice::<serde_json::Value>(&body)
                    .unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
                downstream.push(json!({"url": url, "status": status, "proxy_error": proxy_error, "body": body}));
            }
            Err(e) => {
                downstream_ok = false;
                downstream.push(json!({"url": url, "error": e}));
            }
        }
    }
    let fail = b.fail_percent > 0 && percent_draw() < b.fail_percent;
    let status = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else if !downstream_ok {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    };
    state.count(status != StatusCode::OK);
    json_response(
        status,
        json!({
            "service": state.name, "version": state.version, "instance": state.instance,
            "client_id": client_id, "deadline_ms": deadline_ms, "path": path,
            "injected_failure": fail, "downstream": downstream,
        }),
    )
}
