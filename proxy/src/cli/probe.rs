//! `weft-proxy probe URL`: a healthcheck for images that have no curl (GET, exit 0 on 2xx).

use std::time::Duration;

use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// An http:// URL, e.g. http://127.0.0.1:4191/ready.
    pub url: String,
    /// Give up after this long.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
}

/// Performs one GET; Ok(status) or an error message.
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs are supported"));
    }
    let host =
        uri.host().ok_or_else(|| format!("{url}: no host"))?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let path = uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
    let work = async move {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, authority)
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("{url}: timed out after {timeout:?}"))?
}

pub fn main(args: ProbeArgs) -> std::process::ExitCode {
    let timeout = match crate::config::parse_duration(&args.timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("weft-proxy probe: --timeout: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-proxy probe: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(get(&args.url, timeout)) {
        Ok((status, _)) if (200..300).contains(&status) => std::process::ExitCode::SUCCESS,
        Ok((status, body)) => {
            eprintln!("weft-proxy probe: {} answered {status}: {}", args.url, body.trim());
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("weft-proxy probe: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
