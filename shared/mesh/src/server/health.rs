//! `grpc.health.v1.Health` whose watch streams end on shutdown, after delivering NOT_SERVING,
//! so a watching client neither misses the readiness change nor holds up draining.

use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

use crate::Shutdown;

/// Longest a watch stream stays open after shutdown while waiting to deliver NOT_SERVING.
const WATCH_LINGER: Duration = Duration::from_secs(1);

/// The health service of one server.
pub struct DrainingHealth {
    inner: HealthService,
    shutdown: Shutdown,
}

impl DrainingHealth {
    /// A health server reporting what `reporter` is told.
    pub fn server(reporter: HealthReporter, shutdown: &Shutdown) -> HealthServer<Self> {
        HealthServer::new(Self {
            inner: HealthService::from_health_reporter(reporter),
            shutdown: shutdown.clone(),
        })
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut updates = self.inner.watch(request).await?.into_inner();
        let shutdown = self.shutdown.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let linger = async {
                shutdown.wait().await;
                tokio::time::sleep(WATCH_LINGER).await;
            };
            tokio::pin!(linger);
            loop {
                tokio::select! {
                    update = updates.next() => {
                        let Some(update) = update else { break };
                        let last = shutdown.is_triggered()
                            && matches!(&update, Ok(r) if r.status == ServingStatus::NotServing as i32);
                        if tx.send(update).await.is_err() || last {
                            break;
                        }
                    }
                    () = &mut linger => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
