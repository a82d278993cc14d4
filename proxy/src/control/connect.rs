//! Dialing the controller: TLS 1.3 verified by the controller's SPIFFE ID (not its host name, so
//! an IP, a compose service name or a Kubernetes DNS name all work), as a tonic channel.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use weft_certs::tls;
use weft_certs::SpiffeId;

use crate::context::ProxyContext;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the controller and this host's address on it (the default advertise address).
pub struct ControllerChannel {
    pub channel: Channel,
    pub local_addr: SocketAddr,
}

/// Connects; with `present_cert`, the workload certificate is offered (discovery, renewals),
/// without it the connection is server-authenticated only (first certificate, with a token).
pub async fn connect(ctx: &ProxyContext, present_cert: bool) -> anyhow::Result<ControllerChannel> {
    connect_to(ctx, present_cert, None).await
}

/// The controller's addresses (its host name may have several: IPv4 and IPv6).
pub async fn controller_addrs(ctx: &ProxyContext) -> std::io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((ctx.cfg.controller_host.as_str(), ctx.cfg.controller_port)).await?.collect())
}

/// Connects to one of the controller's addresses (`only`), or the first that answers.
pub async fn connect_to(
    ctx: &ProxyContext,
    present_cert: bool,
    only: Option<SocketAddr>,
) -> anyhow::Result<ControllerChannel> {
    let host = ctx.cfg.controller_host.clone();
    let port = ctx.cfg.controller_port;
    let expected = SpiffeId::controller(&ctx.trust_domain)?;
    let identity = present_cert.then(|| ctx.identity.clone());
    let config = Arc::new(tls::client_config(identity, ctx.bundle.clone(), &ctx.trust_domain, &[tls::ALPN_H2]));
    let local = Arc::new(Mutex::new(None));
    let connector = {
        let local = local.clone();
        tower::service_fn(move |_: http::Uri| {
            let (host, config, expected, local) = (host.clone(), config.clone(), expected.clone(), local.clone());
            async move {
                let mut last_err: Option<std::io::Error> = None;
                let mut stream = None;
                let addrs: Vec<SocketAddr> = match only {
                    Some(a) => vec![a],
                    None => tokio::net::lookup_host((host.as_str(), port)).await?.collect(),
                };
                for addr in addrs {
                    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                        Ok(Ok(s)) => {
                            stream = Some((s, addr));
                            break;
                        }
                        Ok(Err(e)) => last_err = Some(e),
                        Err(_) => {
                            last_err =
                                Some(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{addr}: timed out")))
                        }
                    }
                }
                let (tcp, addr) = stream.ok_or_else(|| {
                    last_err.unwrap_or_else(|| std::io::Error::other(format!("{host} resolved to nothing")))
                })?;
                let _ = tcp.set_nodelay(true);
                *local.lock().unwrap_or_else(|e| e.into_inner()) = tcp.local_addr().ok();
                let tls = TlsConnector::from(config).connect(tls::server_name_for(addr.ip()), tcp).await?;
                match tls::peer_identity(tls.get_ref().1.peer_certificates()) {
                    Some(id) if id == expected => Ok(TokioIo::new(tls)),
                    other => Err(std::io::Error::other(format!(
                        "the controller at {addr} presented {}, expected {expected}",
                        other.map(|i| i.to_string()).unwrap_or_else(|| "no identity".into())
                    ))),
                }
            }
        })
    };
    // An IPv6 literal needs its brackets in a URI.
    let authority = match ctx.cfg.controller_host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]:{port}"),
        Err(_) => format!("{}:{port}", ctx.cfg.controller_host),
    };
    let channel = Endpoint::from_shared(format!("http://{authority}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await?;
    let local_addr = local
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ok_or_else(|| anyhow::anyhow!("no local address on the controller connection"))?;
    Ok(ControllerChannel { channel, local_addr })
}
