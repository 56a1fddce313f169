//! The caching service: the multi-tier cache (L1 in-process, L2 Redis) as a gRPC service.

use std::pin::Pin;

use tickmesh_mesh::{ConfigHandle, Service, status::not_yet};
use tickmesh_proto::v1::caching_service_server::{CachingService, CachingServiceServer};
use tickmesh_proto::v1::{
    DeleteRequest, DeleteResponse, GetRequest, GetResponse, GetStatsRequest, GetStatsResponse,
    InvalidateRequest, InvalidateResponse, SetRequest, SetResponse, WarmRequest, WarmResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const SCOPE: &str = "tracked as issue 6, caching";

/// `tickmesh.v1.CachingService`.
#[derive(Debug, Clone)]
pub struct CachingApi {
    _config: ConfigHandle,
}

type WarmStream = Pin<Box<dyn Stream<Item = Result<WarmResponse, Status>> + Send>>;

#[tonic::async_trait]
impl CachingService for CachingApi {
    async fn get(&self, _request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        Err(not_yet("Get", SCOPE))
    }

    async fn set(&self, _request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        Err(not_yet("Set", SCOPE))
    }

    async fn delete(
        &self,
        _request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        Err(not_yet("Delete", SCOPE))
    }

    async fn invalidate(
        &self,
        _request: Request<InvalidateRequest>,
    ) -> Result<Response<InvalidateResponse>, Status> {
        Err(not_yet("Invalidate", SCOPE))
    }

    type WarmStream = WarmStream;

    async fn warm(
        &self,
        _request: Request<WarmRequest>,
    ) -> Result<Response<Self::WarmStream>, Status> {
        Err(not_yet("Warm", SCOPE))
    }

    async fn get_stats(
        &self,
        _request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        Err(not_yet("GetStats", SCOPE))
    }
}

/// The caching service, ready for [`tickmesh_mesh::serve`].
pub fn service(config: &ConfigHandle) -> Service {
    let limit = config.current().message_limit();
    let server = CachingServiceServer::new(CachingApi {
        _config: config.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    Service::new(tickmesh_proto::service_names::CACHING, server)
}
