//! The query service on the wire. `GetCandles` and `GetIndicators`, the reads charting front ends
//! and notebooks repeat most, answer with bytes put together from what is kept ready (a held
//! bar's encoded entry, a cached indicator answer) through an [`EncodedCodec`]; every other
//! method is the generated server's. Both go through tonic's `Grpc` with the same message
//! limits and compression, so a client cannot tell the two apart.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tickmesh_proto::codec::{Encoded, EncodedCodec};
use tickmesh_proto::v1::query_service_server::QueryServiceServer;
use tickmesh_proto::v1::{
    GetCandlesRequest, GetCandlesResponse, GetIndicatorsRequest, GetIndicatorsResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::QueryApi;

const GET_CANDLES: &str = "/tickmesh.v1.QueryService/GetCandles";
const GET_INDICATORS: &str = "/tickmesh.v1.QueryService/GetIndicators";

type BoxFuture<T, E> = std::pin::Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// `QueryService`: two methods answered from encoded bytes, the rest by `generated`.
#[derive(Clone)]
pub struct QueryRoutes {
    api: Arc<QueryApi>,
    generated: QueryServiceServer<QueryApi>,
    limit: usize,
}

impl QueryRoutes {
    /// `api` on the wire, with messages of at most `limit` bytes each way.
    pub fn new(api: QueryApi, limit: usize) -> Self {
        let api = Arc::new(api);
        let generated = QueryServiceServer::from_arc(api.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
            // Responses are compressed when the client asks for it.
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd);
        Self {
            api,
            generated,
            limit,
        }
    }

    /// The `Grpc` of an encoded method: the limits and compression of the generated one.
    fn grpc<T, U>(&self) -> Grpc<EncodedCodec<T, U>>
    where
        T: Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        Grpc::new(EncodedCodec::default())
            .max_decoding_message_size(self.limit)
            .max_encoding_message_size(self.limit)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
    }
}

impl NamedService for QueryRoutes {
    const NAME: &'static str = tickmesh_proto::service_names::QUERY;
}

struct Candles(Arc<QueryApi>);

impl UnaryService<GetCandlesRequest> for Candles {
    type Response = Encoded<GetCandlesResponse>;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<GetCandlesRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            api.candles_reply(request.into_inner())
                .await
                .map(Response::new)
        })
    }
}

struct Indicators(Arc<QueryApi>);

impl UnaryService<GetIndicatorsRequest> for Indicators {
    type Response = Encoded<GetIndicatorsResponse>;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<GetIndicatorsRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.indicators_reply(request).await.map(Response::new) })
    }
}

impl<B> tower_service::Service<http::Request<B>> for QueryRoutes
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match request.uri().path() {
            GET_CANDLES => {
                let (mut grpc, method) = (self.grpc(), Candles(self.api.clone()));
                Box::pin(async move { Ok(grpc.unary(method, request).await) })
            }
            GET_INDICATORS => {
                let (mut grpc, method) = (self.grpc(), Indicators(self.api.clone()));
                Box::pin(async move { Ok(grpc.unary(method, request).await) })
            }
            _ => self.generated.call(request),
        }
    }
}
