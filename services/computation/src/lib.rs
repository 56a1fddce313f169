//! The computation service: indicators equal to TA-Lib's over stored history, trading signals
//! (on demand, and incrementally from the bus as candles close), and portfolio optimisation.
//! CPU-bound work runs on a named rayon pool ([`pool::ComputePool`]) bridged to tokio.

pub mod convert;
pub mod history;
pub mod pool;
pub mod portfolio;
pub mod signal_stats;
pub mod signals;

use std::sync::Arc;

use tickmesh_mesh::client::MeshChannel;
use tickmesh_mesh::{ConfigHandle, Metrics, Service};
use tickmesh_proto::v1::caching_service_client::CachingServiceClient;
use tickmesh_proto::v1::computation_service_server::{
    ComputationService, ComputationServiceServer,
};
use tickmesh_proto::v1::{
    BatchSignalsRequest, BatchSignalsResponse, ComputeIndicatorsRequest, ComputeIndicatorsResponse,
    GenerateSignalsRequest, GenerateSignalsResponse, GetSignalStatsRequest, GetSignalStatsResponse,
    IndicatorOutput, IndicatorSeries, Interval, OptimizePortfolioRequest,
    OptimizePortfolioResponse, SymbolError,
};
use tickmesh_store::{Store, resample};
use tonic::{Request, Response, Status};

use crate::history::History;
use crate::pool::ComputePool;
use crate::signals::SignalBook;

/// Most symbols in one call.
pub const MAX_SYMBOLS: usize = 1_000;
/// Bars read before a limited answer so that exponentially smoothed indicators have converged.
pub const SMOOTHING_BARS: usize = 500;
/// Most indicators in one call.
pub const MAX_INDICATORS: usize = 64;

/// `tickmesh.v1.ComputationService`.
#[derive(Debug, Clone)]
pub struct ComputationApi {
    config: ConfigHandle,
    store: Arc<Store>,
    pool: ComputePool,
    book: Arc<SignalBook>,
    caching: Option<CachingServiceClient<MeshChannel>>,
    /// `authorization` metadata for the calls computation makes on its own behalf.
    own_key: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    relay: Option<tickmesh_bus::Relay>,
}

impl ComputationApi {
    /// The service over `store`, computing on `pool`; signal outcomes are counted in `metrics`.
    pub fn new(
        config: &ConfigHandle,
        store: Arc<Store>,
        pool: ComputePool,
        metrics: &Metrics,
    ) -> Self {
        Self {
            config: config.clone(),
            store,
            pool,
            book: Arc::new(SignalBook::new(metrics)),
            caching: None,
            own_key: None,
            relay: None,
        }
    }

    /// Wakes `relay` after signals were stored, so their events (queued in the store's outbox
    /// in the same transaction) go out at once rather than at the relay's next poll.
    pub fn with_relay(mut self, relay: tickmesh_bus::Relay) -> Self {
        self.relay = Some(relay);
        self
    }

    /// Writes new signals through to the caching service behind `caching` (its `Set`,
    /// namespace `signals`, key `<symbol>/<interval number>`), next to the store. Through its
    /// gRPC API like any other peer, so one process or one per pod behave the same. These
    /// calls have no caller whose key could be passed on: they carry `own_key`
    /// (`auth.peer_key_name`), if any.
    pub fn with_caching(mut self, caching: MeshChannel, own_key: Option<String>) -> Self {
        self.own_key = own_key
            .and_then(|key| format!("Bearer {key}").parse().ok())
            .map(|mut value: tonic::metadata::MetadataValue<_>| {
                // Never printed by Debug (the api derives it) or logged.
                value.set_sensitive(true);
                value
            });
        let limit = self.config.current().message_limit();
        self.caching = Some(
            CachingServiceClient::new(caching)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        );
        self
    }

    /// The pool the service computes on.
    pub fn pool(&self) -> &ComputePool {
        &self.pool
    }
}

/// One indicator over one symbol's history, as a proto series.
fn series(
    symbol: &str,
    interval: i32,
    spec: &tickmesh_indicators::Spec,
    history: &History,
) -> Result<IndicatorSeries, tickmesh_indicators::Error> {
    let computed = tickmesh_indicators::compute(spec, &history.columns())?;
    Ok(IndicatorSeries {
        symbol: symbol.to_owned(),
        interval,
        spec: Some(convert::spec_to_proto(spec)),
        time_us: history.time_us.clone(),
        outputs: computed
            .outputs
            .into_iter()
            .map(|(name, values)| IndicatorOutput {
                name: name.to_owned(),
                values,
            })
            .collect(),
        lookback: computed.lookback as u32,
        ..IndicatorSeries::default()
    })
}

/// The last `limit` points of a series (all of them for 0), its lookback counted again.
fn last(mut series: IndicatorSeries, limit: usize) -> IndicatorSeries {
    let len = series.time_us.len();
    if limit == 0 || limit >= len {
        return series;
    }
    let cut = len - limit;
    series.time_us.drain(..cut);
    for output in &mut series.outputs {
        output.values.drain(..cut);
    }
    series.lookback = series
        .outputs
        .iter()
        .map(|o| o.values.iter().take_while(|v| v.is_nan()).count())
        .max()
        .unwrap_or(0) as u32;
    series
}

#[tonic::async_trait]
impl ComputationService for ComputationApi {
    async fn compute_indicators(
        &self,
        request: Request<ComputeIndicatorsRequest>,
    ) -> Result<Response<ComputeIndicatorsResponse>, Status> {
        let request = request.into_inner();
        convert::symbols(&request.symbols, MAX_SYMBOLS)?;
        // Resampled bars (`bar`), else a stored interval.
        let plan = if request.bar.is_empty() {
            for (field, value) in [
                ("time_zone", &request.time_zone),
                ("session", &request.session),
            ] {
                if !value.is_empty() {
                    return Err(convert::bad_field(field, "applies with `bar` only"));
                }
            }
            None
        } else {
            if request.interval != Interval::Unspecified as i32 {
                return Err(convert::bad_field(
                    "interval",
                    "leave unset when `bar` is given",
                ));
            }
            let config = self.config.current();
            let sessions = config
                .config
                .adaptive_ttl
                .as_ref()
                .map(|a| a.sessions.clone())
                .unwrap_or_default();
            Some(
                resample::request_plan(
                    &request.bar,
                    &request.time_zone,
                    &request.session,
                    &sessions,
                )
                .map_err(|(field, why)| convert::bad_field(field, why))?,
            )
        };
        let interval = match plan {
            Some(_) => Interval::Unspecified,
            None => convert::interval(request.interval, "interval")?,
        };
        if request.indicators.is_empty() || request.indicators.len() > MAX_INDICATORS {
            return Err(convert::bad_field(
                "indicators",
                format!("1 to {MAX_INDICATORS} indicators per call"),
            ));
        }
        let specs = request
            .indicators
            .iter()
            .enumerate()
            .map(|(i, spec)| convert::spec(spec, &format!("indicators[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;

        // `limit` is the length of the answer. The bars before it that the indicators need are
        // read too: their lookback, plus enough for exponential smoothing (EMA, RSI, ATR, ADX)
        // to forget its seed (the weight of a seed 500 bars back is below 1e-15 for the
        // default periods), so the answer does not depend on where the read started.
        let warm_up = specs.iter().map(|s| s.lookback()).max().unwrap_or(0) + SMOOTHING_BARS;
        let bars = match request.limit as usize {
            0 => 0,
            limit => limit + warm_up,
        };
        let mut histories = Vec::with_capacity(request.symbols.len());
        for symbol in &request.symbols {
            let history = match &plan {
                None => {
                    history::load(
                        &self.store,
                        symbol,
                        interval as i32,
                        request.start_time_us,
                        request.end_time_us,
                        bars,
                    )
                    .await?
                }
                Some(plan) => {
                    history::load_resampled(
                        &self.store,
                        plan,
                        (symbol, &request.bar),
                        request.start_time_us,
                        request.end_time_us,
                        bars,
                    )
                    .await?
                }
            };
            histories.push((symbol.clone(), history));
        }

        // Every (symbol, indicator) pair on the pool, in parallel; the caller going away stops
        // the remaining pairs.
        let jobs: Vec<(usize, usize)> = (0..histories.len())
            .flat_map(|s| (0..specs.len()).map(move |i| (s, i)))
            .collect();
        let histories = Arc::new(histories);
        let shared = histories.clone();
        let specs = Arc::new(specs);
        let started = std::time::Instant::now();
        let results = self
            .pool
            .run(move |cancelled| {
                use rayon::prelude::*;
                jobs.par_iter()
                    .map(|&(s, i)| {
                        if cancelled.is_set() {
                            return None;
                        }
                        let (symbol, history) = &shared[s];
                        Some(series(symbol, interval as i32, &specs[i], history))
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        self.book
            .stats
            .indicator_batch
            .observe(started.elapsed().as_secs_f64());
        let results = results?;

        let mut response = ComputeIndicatorsResponse::default();
        let per_symbol = results.len() / histories.len().max(1);
        for (s, chunk) in results.chunks(per_symbol.max(1)).enumerate() {
            let (symbol, history) = &histories[s];
            if history.is_empty() {
                response.errors.push(SymbolError {
                    symbol: symbol.clone(),
                    reason: if plan.is_some() {
                        format!("no candles stored for {symbol} in the range")
                    } else {
                        format!("no {interval:?} candles stored for {symbol} in the range")
                    },
                });
                continue;
            }
            let mut failed = None;
            let mut computed = Vec::with_capacity(chunk.len());
            for result in chunk {
                match result {
                    Some(Ok(series)) => computed.push(series.clone()),
                    Some(Err(e)) => {
                        failed.get_or_insert_with(|| convert::symbol_reason(e));
                    }
                    None => return Err(Status::cancelled("the caller went away")),
                }
            }
            match failed {
                Some(reason) => response.errors.push(SymbolError {
                    symbol: symbol.clone(),
                    reason,
                }),
                None => response.series.extend(computed.into_iter().map(|s| {
                    let mut s = last(s, request.limit as usize);
                    s.bar.clone_from(&request.bar);
                    s.time_zone.clone_from(&request.time_zone);
                    s.session.clone_from(&request.session);
                    s
                })),
            }
        }
        Ok(Response::new(response))
    }

    async fn generate_signals(
        &self,
        request: Request<GenerateSignalsRequest>,
    ) -> Result<Response<GenerateSignalsResponse>, Status> {
        let request = request.into_inner();
        convert::symbols(std::slice::from_ref(&request.symbol), 1)?;
        let interval = convert::interval(request.interval, "interval")?;
        let params = convert::params(request.params.as_ref(), &request.strategies)?;
        let signal = signals::on_demand(self, &request.symbol, interval, &params).await?;
        Ok(Response::new(GenerateSignalsResponse {
            signal: Some(signal),
        }))
    }

    async fn batch_signals(
        &self,
        request: Request<BatchSignalsRequest>,
    ) -> Result<Response<BatchSignalsResponse>, Status> {
        let request = request.into_inner();
        convert::symbols(&request.symbols, MAX_SYMBOLS)?;
        let interval = convert::interval(request.interval, "interval")?;
        let params = convert::params(request.params.as_ref(), &request.strategies)?;
        let response = signals::batch(self, &request.symbols, interval, &params).await?;
        Ok(Response::new(response))
    }

    async fn optimize_portfolio(
        &self,
        request: Request<OptimizePortfolioRequest>,
    ) -> Result<Response<OptimizePortfolioResponse>, Status> {
        portfolio::optimize(self, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_signal_stats(
        &self,
        request: Request<GetSignalStatsRequest>,
    ) -> Result<Response<GetSignalStatsResponse>, Status> {
        let interval = match request.into_inner().interval {
            0 => Interval::Unspecified,
            code => convert::interval(code, "interval")?,
        };
        Ok(Response::new(self.book.stats.to_proto(interval)))
    }
}

/// The computation service, ready for [`tickmesh_mesh::serve`].
pub fn service(api: ComputationApi) -> Service {
    let limit = api.config.current().message_limit();
    let server = ComputationServiceServer::new(api)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    Service::new(tickmesh_proto::service_names::COMPUTATION, server)
}
