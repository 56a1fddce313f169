//! The query service: candles in keyset pages, latest prices, signals, indicators and live
//! market-data streams.

use std::pin::Pin;

use tickmesh_mesh::connect::MeshChannel;
use tickmesh_mesh::{ConfigHandle, Service, status::not_yet};
use tickmesh_proto::v1::computation_service_client::ComputationServiceClient;
use tickmesh_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use tickmesh_proto::v1::{
    ComputeIndicatorsRequest, GetCandlesRequest, GetCandlesResponse, GetIndicatorsRequest,
    GetIndicatorsResponse, GetLatestPricesRequest, GetLatestPricesResponse, GetSignalsRequest,
    GetSignalsResponse, StreamMarketDataRequest, StreamMarketDataResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const SCOPE: &str = "tracked as issue 8, query and live streams";

/// `tickmesh.v1.QueryService`.
#[derive(Clone)]
pub struct QueryApi {
    _config: ConfigHandle,
    computation: Option<ComputationServiceClient<MeshChannel>>,
}

impl std::fmt::Debug for QueryApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryApi")
            .field("computation", &self.computation.is_some())
            .finish()
    }
}

/// Metadata a call to a peer carries over from the caller's call: its credentials, so that the
/// peer applies the caller's own scopes.
const FORWARDED: [&str; 2] = ["authorization", "x-api-key"];

/// A request to a peer on behalf of `incoming`'s caller.
fn on_behalf_of<T, U>(incoming: &Request<T>, message: U) -> Request<U> {
    let mut outgoing = Request::new(message);
    for name in FORWARDED {
        if let Some(value) = incoming.metadata().get(name) {
            outgoing.metadata_mut().insert(name, value.clone());
        }
    }
    outgoing
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
        request: Request<GetIndicatorsRequest>,
    ) -> Result<Response<GetIndicatorsResponse>, Status> {
        // Computed by the computation service through its gRPC API (the client stack: trace
        // context, retries, breaker, balancing). Caching of the series comes with the cache.
        let Some(mut computation) = self.computation.clone() else {
            return Err(Status::unavailable(
                "no computation service is configured for this query service \
                 (--computation-addr or TICKMESH_COMPUTATION_ADDR)",
            ));
        };
        let message = request.get_ref().clone();
        let compute = ComputeIndicatorsRequest {
            symbols: vec![message.symbol.clone()],
            interval: message.interval,
            indicators: message.indicators,
            start_time_us: message.start_time_us,
            end_time_us: message.end_time_us,
            limit: message.limit,
        };
        let computed = computation
            .compute_indicators(on_behalf_of(&request, compute))
            .await?
            .into_inner();
        if let Some(error) = computed.errors.first() {
            return Err(Status::failed_precondition(format!(
                "{}: {}",
                error.symbol, error.reason
            )));
        }
        Ok(Response::new(GetIndicatorsResponse {
            series: computed.series,
            cache_hit: false,
        }))
    }

    type StreamMarketDataStream = MarketDataStream;

    async fn stream_market_data(
        &self,
        _request: Request<StreamMarketDataRequest>,
    ) -> Result<Response<Self::StreamMarketDataStream>, Status> {
        Err(not_yet("StreamMarketData", SCOPE))
    }
}

/// The query service, ready for [`tickmesh_mesh::serve`]; `computation` is the client stack to
/// the computation service, if one is reachable.
pub fn service(config: &ConfigHandle, computation: Option<MeshChannel>) -> Service {
    let limit = config.current().message_limit();
    let server = QueryServiceServer::new(QueryApi {
        _config: config.clone(),
        computation: computation.map(|channel| {
            ComputationServiceClient::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit)
        }),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    Service::new(tickmesh_proto::service_names::QUERY, server)
}
