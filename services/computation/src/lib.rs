//! The computation service: indicators, signals and portfolio optimisation.

use tickmesh_mesh::{ConfigHandle, Service, status::not_yet};
use tickmesh_proto::v1::computation_service_server::{
    ComputationService, ComputationServiceServer,
};
use tickmesh_proto::v1::{
    BatchSignalsRequest, BatchSignalsResponse, ComputeIndicatorsRequest, ComputeIndicatorsResponse,
    GenerateSignalsRequest, GenerateSignalsResponse, OptimizePortfolioRequest,
    OptimizePortfolioResponse,
};
use tonic::{Request, Response, Status};

const SCOPE: &str = "tracked as issue 5, computation";

/// `tickmesh.v1.ComputationService`.
#[derive(Debug, Clone)]
pub struct ComputationApi {
    _config: ConfigHandle,
}

#[tonic::async_trait]
impl ComputationService for ComputationApi {
    async fn compute_indicators(
        &self,
        _request: Request<ComputeIndicatorsRequest>,
    ) -> Result<Response<ComputeIndicatorsResponse>, Status> {
        Err(not_yet("ComputeIndicators", SCOPE))
    }

    async fn generate_signals(
        &self,
        _request: Request<GenerateSignalsRequest>,
    ) -> Result<Response<GenerateSignalsResponse>, Status> {
        Err(not_yet("GenerateSignals", SCOPE))
    }

    async fn batch_signals(
        &self,
        _request: Request<BatchSignalsRequest>,
    ) -> Result<Response<BatchSignalsResponse>, Status> {
        Err(not_yet("BatchSignals", SCOPE))
    }

    async fn optimize_portfolio(
        &self,
        _request: Request<OptimizePortfolioRequest>,
    ) -> Result<Response<OptimizePortfolioResponse>, Status> {
        Err(not_yet("OptimizePortfolio", SCOPE))
    }
}

/// The computation service, ready for [`tickmesh_mesh::serve`].
pub fn service(config: &ConfigHandle) -> Service {
    let limit = config.current().message_limit();
    let server = ComputationServiceServer::new(ComputationApi {
        _config: config.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    Service::new(tickmesh_proto::service_names::COMPUTATION, server)
}
