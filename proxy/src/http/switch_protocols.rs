//! HTTP/1.1 upgrades (WebSocket and the like), both directions: the request travels on its own
//! HTTP/1.1 connection (mTLS between proxies), and after `101 Switching Protocols` the two
//! upgraded connections are spliced together.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::{incoming, Body};
use crate::respond::ProxyError;

/// Sends an upgrade request over `upstream` (a fresh connection) and, on 101, joins both sides
/// until both are done or nothing moved either way for `idle` (zero: never). `untrusted_response`:
/// the answer comes from outside the proxies (an app, a static endpoint), so any `x-weft-*` header
/// in it goes.
pub async fn forward<T>(
    mut req: Request<Incoming>,
    upstream: T,
    idle: Duration,
    untrusted_response: bool,
    adjust: impl FnOnce(&mut http::request::Parts),
) -> Result<Response<Body>, ProxyError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let on_client = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    adjust(&mut parts);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(upstream))
        .await
        .map_err(|e| ProxyError::ConnectFailed(format!("HTTP/1.1 handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upgrade connection ended: {e}");
        }
    });
    let mut resp = sender
        .send_request(Request::from_parts(parts, incoming(body)))
        .await
        .map_err(|e| ProxyError::Reset(e.to_string()))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let on_server = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(on_client, on_server) {
                Ok((client, server)) => {
                    let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(server));
                    match crate::net::relay::splice(&mut a, &mut b, idle).await {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => tracing::debug!("upgraded connection ended: {e}"),
                        None => tracing::debug!(?idle, "upgraded connection idle; closed"),
                    }
                }
                Err(e) => tracing::debug!("upgrade failed: {e}"),
            }
        });
    }
    let (mut parts, body) = resp.into_parts();
    if untrusted_response {
        crate::http::headers::strip_weft(&mut parts.headers, &[]);
    }
    Ok(Response::from_parts(parts, incoming(body)))
}
