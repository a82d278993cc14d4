//! A minimal HTTP/1.1 GET for talking to admin endpoints.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

pub async fn get(url: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let uri: http::Uri = url.parse()?;
    anyhow::ensure!(uri.scheme_str() == Some("http"), "{url}: only http:// URLs are supported");
    let host = uri.host().unwrap_or("127.0.0.1").trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let path = uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
    let work = async move {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::get(path).header(http::header::HOST, authority).body(Empty::<bytes::Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| anyhow::anyhow!("{url}: timed out"))?
}
