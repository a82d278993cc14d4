//! The gRPC echo service, served on the same port as HTTP.

use std::sync::Arc;

use weft_proto::demo;

use crate::behaviour::Shared;

#[derive(Clone)]
pub struct Echo(pub Arc<Shared>);

#[tonic::async_trait]
impl demo::echo_server::Echo for Echo {
    async fn unary(
        &self,
        req: tonic::Request<demo::EchoRequest>,
    ) -> Result<tonic::Response<demo::EchoReply>, tonic::Status> {
        let client_id = req.metadata().get("x-weft-client-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let deadline_ms = req
            .metadata()
            .get("x-weft-deadline-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1);
        let b = self.0.behaviour();
        let r = req.into_inner();
        let delay = b.latency + std::time::Duration::from_millis(r.delay_ms);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let fail = b.fail_percent > 0 && crate::behaviour::percent_draw() < b.fail_percent;
        self.0.count(fail);
        if fail {
            return Err(tonic::Status::unavailable("injected failure"));
        }
        Ok(tonic::Response::new(demo::EchoReply {
            message: r.message,
            index: 0,
            served_by: format!("{} {}", self.0.name, self.0.version),
            client_id,
            deadline_ms,
        }))
    }

    type ServerStreamStream =
        std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<demo::EchoReply, tonic::Status>> + Send>>;

    async fn server_stream(
        &self,
        req: tonic::Request<demo::EchoRequest>,
    ) -> Result<tonic::Response<Self::ServerStreamStream>, tonic::Status> {
        let r = req.into_inner();
        let by = format!("{} {}", self.0.name, self.0.version);
        let items: Vec<_> = (0..r.count.min(10_000))
            .map(|i| {
                Ok(demo::EchoReply {
                    message: format!("{} #{i}", r.message),
                    index: i,
                    served_by: by.clone(),
                    client_id: String::new(),
                    deadline_ms: -1,
                })
            })
            .collect();
        Ok(tonic::Response::new(Box::pin(futures_util::stream::iter(items))))
    }
}
