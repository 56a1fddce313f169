//! The ingestion service: takes ticks and candles in, stores them durably and idempotently,
//! rolls ticks up into candles and publishes market events.

use std::pin::Pin;

use tickmesh_mesh::{ConfigHandle, Service, status::not_yet};
use tickmesh_proto::v1::ingestion_service_server::{IngestionService, IngestionServiceServer};
use tickmesh_proto::v1::{
    IngestCandlesRequest, IngestCandlesResponse, IngestTickBatchRequest, IngestTickBatchResponse,
    IngestTicksRequest, IngestTicksResponse, ReplaySourceRequest, ReplaySourceResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

const SCOPE: &str = "tracked as issue 4, ingestion and storage";

/// `tickmesh.v1.IngestionService`.
#[derive(Debug, Clone)]
pub struct IngestionApi {
    _config: ConfigHandle,
}

type ReplayStream = Pin<Box<dyn Stream<Item = Result<ReplaySourceResponse, Status>> + Send>>;

#[tonic::async_trait]
impl IngestionService for IngestionApi {
    async fn ingest_ticks(
        &self,
        _request: Request<Streaming<IngestTicksRequest>>,
    ) -> Result<Response<IngestTicksResponse>, Status> {
        Err(not_yet("IngestTicks", SCOPE))
    }

    async fn ingest_tick_batch(
        &self,
        _request: Request<IngestTickBatchRequest>,
    ) -> Result<Response<IngestTickBatchResponse>, Status> {
        Err(not_yet("IngestTickBatch", SCOPE))
    }

    async fn ingest_candles(
        &self,
        _request: Request<IngestCandlesRequest>,
    ) -> Result<Response<IngestCandlesResponse>, Status> {
        Err(not_yet("IngestCandles", SCOPE))
    }

    type ReplaySourceStream = ReplayStream;

    async fn replay_source(
        &self,
        _request: Request<ReplaySourceRequest>,
    ) -> Result<Response<Self::ReplaySourceStream>, Status> {
        Err(not_yet("ReplaySource", SCOPE))
    }
}

/// The ingestion service, ready for [`tickmesh_mesh::serve`].
pub fn service(config: &ConfigHandle) -> Service {
    let limit = config.current().message_limit();
    let server = IngestionServiceServer::new(IngestionApi {
        _config: config.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    Service::new(tickmesh_proto::service_names::INGESTION, server)
}
