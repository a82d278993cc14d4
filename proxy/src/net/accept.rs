//! The one accept loop every proxy listener runs: each connection gets its own task, is tracked
//! for the drain and counted in `weft_tcp_connections_open`, and has Nagle off.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::context::ProxyContext;

/// Accepts until `stop` resolves (never, for listeners that serve through the drain), handing each
/// connection to `handle` in a task of its own.
pub(crate) async fn accept_loop<H, Fut>(
    ctx: Arc<ProxyContext>,
    listener: TcpListener,
    direction: &'static str,
    stop: impl Future<Output = ()>,
    handle: H,
) where
    H: Fn(Arc<ProxyContext>, TcpStream, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, most likely: back off rather than spin.
                    tracing::warn!("{direction} accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut stop => {
                tracing::info!("{direction} listener closed for shutdown");
                return;
            }
        };
        let ctx = ctx.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            let _open = ctx.drain.track();
            let _gauge = OpenGauge::new(&ctx, direction);
            let _ = stream.set_nodelay(true);
            handle(ctx.clone(), stream, remote).await;
        });
    }
}

/// One open connection in `weft_tcp_connections_open`, for as long as it lives.
pub(crate) struct OpenGauge(weft_telemetry::Gauge);

impl OpenGauge {
    pub(crate) fn new(ctx: &ProxyContext, direction: &'static str) -> Self {
        let gauge = ctx.metrics.tcp_open.with(&[direction]);
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
        crate::net::memory::connection_closed();
    }
}
