//! The query service: candles in keyset pages, latest prices, signals, indicators and live
//! market-data streams.

use std::pin::Pin;

use tickmesh_mesh::{ConfigHandle, Service, status::not_yet};
use tickmesh_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use tickmesh_proto::v1::{
    GetCandlesRequest, GetCandlesResponse, GetIndicatorsRequest, GetIndicatorsResponse,
    GetLatestPricesRequest, GetLatestPricesResponse, GetSignalsRequest, GetSignalsResponse,
    StreamMarketDataRequest, StreamMarketDataResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const SCOPE: &str = "tracked as issue 8, query and live streams";

/// `tickmesh.v1.QueryService`.
#[derive(Debug, Clone)]
pub struct QueryApi {
    _config: ConfigHandle,
}

type MarketDataStream =
    Pin<Box<dyn Stream<Item = Result<StreamMarketDataResponse, Status>> + Send>>;

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_candles(
        &self,
        _request: Request<GetCandlesRequest>,
    ) -> Result<Response<GetCandlesResponse>, Status> {
        Err(not_yet("GetCandles", SCOPE))
    }

    async fn get_latest_prices(
        &self,
        _request: Request<GetLatestPricesRequest>,
    ) -> Result<Response<GetLatestPricesResponse>, Status> {
        Err(not_yet("GetLatestPrices", SCOPE))
    }

    async fn get_signals(
        &self,
        _request: Request<GetSignalsRequest>,
    ) -> Result<Response<GetSignalsResponse>, Status> {
        Err(not_yet("GetSignals", SCOPE))
    }

    async fn get_indicators(
        &self,
        _request: Request<GetIndicatorsRequest>,
    ) -> Result<Response<GetIndicatorsResponse>, Status> {
        Err(not_yet("GetIndicators", SCOPE))
    }

    type StreamMarketDataStream = MarketDataStream;

    async fn stream_market_data(
        &self,
        _request: Request<StreamMarketDataRequest>,
    ) -> Result<Response<Self::StreamMarketDataStream>, Status> {
        Err(not_yet("StreamMarketData", SCOPE))
    }
}

/// The query service, ready for [`tickmesh_mesh::serve`].
pub fn service(config: &ConfigHandle) -> Service {
    let limit = config.current().message_limit();
    let server = QueryServiceServer::new(QueryApi {
        _config: config.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    Service::new(tickmesh_proto::service_names::QUERY, server)
}
