//! The query service: candles in keyset pages, latest prices, signals, indicators (computed by
//! the computation service through its gRPC API) and live market-data streams.

pub mod candles;
mod export;
pub mod indicators;
pub mod latest;
pub mod live;
pub mod paging;
mod wire;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tickmesh_mesh::client::MeshChannel;
use tickmesh_mesh::{ConfigHandle, Service, Shutdown};
use tickmesh_proto::codec::Encoded;
use tickmesh_proto::v1::cache_value::Kind;
use tickmesh_proto::v1::caching_service_client::CachingServiceClient;
use tickmesh_proto::v1::computation_service_client::ComputationServiceClient;
use tickmesh_proto::v1::query_service_server::QueryService;
use tickmesh_proto::v1::{
    CacheValue, ComputeIndicatorsRequest, EventKind, GetCandlesRequest, GetCandlesResponse,
    GetIndicatorsRequest, GetIndicatorsResponse, GetLatestPricesRequest, GetLatestPricesResponse,
    GetRequest, GetSignalsRequest, GetSignalsResponse, IndicatorSeriesList, Interval, LatestPrice,
    SetRequest, Signal, SignalAction, SortOrder, Strategy, StreamMarketDataRequest,
    StreamMarketDataResponse,
};
use tickmesh_store::{CandleQuery, SignalKey, SignalQuery, Store, resample};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::latest::LatestPrices;
use crate::live::Live;

/// Rows per page when the request says 0.
pub const DEFAULT_PAGE: u32 = 500;
/// Most rows per page.
pub const MAX_PAGE: u32 = 5_000;
/// Most symbols per `GetLatestPrices` or stream.
pub const MAX_SYMBOLS: usize = 1_000;
/// `server.stream_send_timeout` when the configuration has none.
pub const DEFAULT_STREAM_SEND_TIMEOUT: Duration = Duration::from_secs(5);

pub use tickmesh_mesh::status::bad_field;

fn store_error(e: tickmesh_store::StoreError) -> Status {
    Status::unavailable(format!("store: {e}"))
}

/// The store query of one page of stored candles (`GetCandles` and `ExportCandles`): open times in
/// `[start_us, end_us)` (0: unbounded), after the open time the page token carries (checked
/// against `fingerprint`), and one row more than `limit`, which tells whether another page follows.
fn stored_page_query(
    symbol: &str,
    interval: Interval,
    (start_us, end_us): (i64, i64),
    (page_token, fingerprint): (&str, u64),
    descending: bool,
    limit: i64,
) -> Result<CandleQuery, Status> {
    let after_us = if page_token.is_empty() {
        None
    } else {
        let fields = paging::decode(page_token, fingerprint, 1)?;
        Some(
            fields[0]
                .parse::<i64>()
                .map_err(|_| bad_field("page_token", "not a page token of this query"))?,
        )
    };
    Ok(CandleQuery {
        symbol: symbol.to_owned(),
        interval_code: interval as i16,
        start_us: (start_us != 0).then_some(start_us),
        end_us: (end_us != 0).then_some(end_us),
        after_us,
        descending,
        limit: limit + 1,
    })
}

fn page_size(requested: u32) -> Result<i64, Status> {
    match requested {
        0 => Ok(i64::from(DEFAULT_PAGE)),
        n if n > MAX_PAGE => Err(bad_field("page_size", format!("at most {MAX_PAGE}"))),
        n => Ok(i64::from(n)),
    }
}

fn symbol(value: &str, field: &str) -> Result<(), Status> {
    tickmesh_proto::Symbol::check(value).map_err(|e| bad_field(field, e.to_string()))
}

fn interval(value: i32) -> Result<Interval, Status> {
    match Interval::try_from(value) {
        Ok(Interval::Unspecified) | Err(_) => Err(bad_field(
            "interval",
            format!("{value} is not a candle interval (INTERVAL_1S .. INTERVAL_1D)"),
        )),
        Ok(interval) => Ok(interval),
    }
}

/// What the query service needs.
#[derive(Clone)]
pub struct QueryApi {
    store: Arc<Store>,
    live: Live,
    shutdown: Shutdown,
    computation: Option<ComputationServiceClient<MeshChannel>>,
    caching: Option<CachingServiceClient<MeshChannel>>,
    latest: Arc<LatestPrices>,
    near: indicators::NearIndicators,
    held: candles::HeldCandles,
    config: tokio::sync::watch::Receiver<tickmesh_mesh::ConfigSnapshot>,
}

/// An encoded reply as the message it encodes (for callers of the `QueryService` trait).
fn as_message<T: Message + Default>(reply: Encoded<T>) -> Result<Response<T>, Status> {
    reply
        .decode()
        .map(Response::new)
        .map_err(|e| Status::internal(format!("an encoded reply did not decode: {e}")))
}

/// The clock, in microseconds since the epoch.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The bar plan of a request's `bar`, `time_zone` and `session`, or the field at fault.
fn bar_plan(
    bar: &str,
    time_zone: &str,
    session: &str,
    config: &tickmesh_proto::v1::PerformanceOptimizationConfig,
) -> Result<resample::Plan, Status> {
    let sessions = config
        .adaptive_ttl
        .as_ref()
        .map(|a| a.sessions.as_slice())
        .unwrap_or_default();
    resample::request_plan(bar, time_zone, session, sessions)
        .map_err(|(field, why)| bad_field(field, why))
}

impl QueryApi {
    /// The `GetCandlesResponse` of `r`, encoded: a page inside the held history is put
    /// together from its bars' ready bytes, anything else is read and encoded.
    async fn candles_reply(
        &self,
        r: GetCandlesRequest,
    ) -> Result<Encoded<GetCandlesResponse>, Status> {
        symbol(&r.symbol, "symbol")?;
        if !r.bar.is_empty() {
            return self.resampled(r).await.map(|reply| Encoded::new(&reply));
        }
        for (field, value) in [("time_zone", &r.time_zone), ("session", &r.session)] {
            if !value.is_empty() {
                return Err(bad_field(field, "applies with `bar` only"));
            }
        }
        let interval = interval(r.interval)?;
        let limit = page_size(r.page_size)?;
        let descending = match SortOrder::try_from(r.order) {
            Ok(SortOrder::Descending) => true,
            Ok(_) => false,
            Err(_) => return Err(bad_field("order", "ASCENDING or DESCENDING")),
        };
        if r.end_time_us != 0 && r.end_time_us <= r.start_time_us {
            return Err(bad_field("end_time_us", "must be after start_time_us"));
        }
        let fingerprint = paging::fingerprint(&[
            r.symbol.as_bytes(),
            &r.interval.to_le_bytes(),
            &r.start_time_us.to_le_bytes(),
            &r.end_time_us.to_le_bytes(),
            &[u8::from(descending)],
        ]);
        let query = stored_page_query(
            &r.symbol,
            interval,
            (r.start_time_us, r.end_time_us),
            (&r.page_token, fingerprint),
            descending,
            limit,
        )?;
        // From the held history when the page lies inside it, else from the store.
        let token = |last_us: i64| paging::encode(&[last_us.to_string()], fingerprint);
        let page = usize::try_from(limit).unwrap_or(usize::MAX);
        if let Some(bytes) = self
            .held
            .encoded_page(&self.store, &query, page, &token)
            .await
            .map_err(store_error)?
        {
            return Ok(Encoded::from_bytes(bytes));
        }
        let mut candles: Vec<_> = self
            .store
            .candles(&query)
            .await
            .map_err(store_error)?
            .iter()
            .map(tickmesh_store::events::candle_message)
            .collect();
        let more = candles.len() > page;
        candles.truncate(page);
        let next_page_token = match (more, candles.last()) {
            (true, Some(last)) => token(last.open_time_us),
            _ => String::new(),
        };
        Ok(Encoded::new(&GetCandlesResponse {
            candles,
            next_page_token,
            source_interval: Interval::Unspecified as i32,
        }))
    }

    /// The `GetIndicatorsResponse` of `request`, encoded; a hit of the near cache is its
    /// ready bytes.
    async fn indicators_reply(
        &self,
        request: Request<GetIndicatorsRequest>,
    ) -> Result<Encoded<GetIndicatorsResponse>, Status> {
        // Computed by the computation service through its gRPC API (the client stack: trace
        // context, retries, breaker, balancing).
        let Some(mut computation) = self.computation.clone() else {
            return Err(Status::unavailable(
                "no computation service is configured for this query service \
                 (--computation-addr or TICKMESH_COMPUTATION_ADDR)",
            ));
        };
        let message = request.get_ref().clone();
        symbol(&message.symbol, "symbol")?;
        // The revision of the candles the series is computed from, read before computing: a
        // series cached at it is current (see `indicators`).
        // Resampled bars may come from any stored interval: the sum of their revisions moves
        // whenever one of them does.
        let mut revision = 0;
        for interval in revision_intervals(&message) {
            revision += self
                .store
                .candle_revision(&message.symbol, interval)
                .await
                .map_err(store_error)?;
        }
        // Cached under a key of the request's parameters: a repeat is a cache hit.
        let key = format!(
            "{}/{}/{:016x}",
            message.symbol,
            message.interval,
            paging::fingerprint(&[&message.encode_to_vec()])
        );
        if let Some(hit) = self.near.get(&key, revision).await {
            return Ok(Encoded::from_bytes(hit));
        }
        let shared_key = format!("{key}/r{revision}");
        if let Some(mut caching) = self.caching.clone() {
            let got = caching
                .get(on_behalf_of(
                    &request,
                    GetRequest {
                        namespace: INDICATORS.into(),
                        key: shared_key.clone(),
                    },
                ))
                .await?
                .into_inner();
            if got.found
                && let Some(Kind::Indicators(cached)) = got.typed.and_then(|v| v.kind)
            {
                let hit = Encoded::new(&GetIndicatorsResponse {
                    series: cached.series,
                    cache_hit: true,
                });
                self.near.put(key, revision, hit.bytes()).await;
                return Ok(hit);
            }
        }
        let compute = ComputeIndicatorsRequest {
            symbols: vec![message.symbol.clone()],
            interval: message.interval,
            indicators: message.indicators,
            start_time_us: message.start_time_us,
            end_time_us: message.end_time_us,
            limit: message.limit,
            bar: message.bar,
            time_zone: message.time_zone,
            session: message.session,
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
        if let Some(mut caching) = self.caching.clone() {
            let set = caching
                .set(on_behalf_of(
                    &request,
                    SetRequest {
                        namespace: INDICATORS.into(),
                        key: shared_key,
                        typed: Some(CacheValue {
                            kind: Some(Kind::Indicators(IndicatorSeriesList {
                                series: computed.series.clone(),
                            })),
                        }),
                        ..SetRequest::default()
                    },
                ))
                .await;
            // Not cached (e.g. too large for cache.max_value_bytes): still a good answer.
            if let Err(status) = set {
                tracing::debug!(error = %status.message(), "indicator series not cached");
            }
        }
        let reply = GetIndicatorsResponse {
            series: computed.series,
            cache_hit: false,
        };
        // Kept as the answer of a repeat: the same series, a hit.
        let hit = GetIndicatorsResponse {
            cache_hit: true,
            ..reply.clone()
        };
        self.near
            .put(key, revision, Encoded::new(&hit).bytes())
            .await;
        Ok(Encoded::new(&reply))
    }

    /// `GetCandles` with `bar`: stored bars of the coarsest interval that can make them,
    /// aggregated into periods (`resample`).
    async fn resampled(&self, r: GetCandlesRequest) -> Result<GetCandlesResponse, Status> {
        if r.interval != Interval::Unspecified as i32 {
            return Err(bad_field("interval", "leave unset when `bar` is given"));
        }
        let plan = bar_plan(
            &r.bar,
            &r.time_zone,
            &r.session,
            &self.config.borrow().config,
        )?;
        let limit = page_size(r.page_size)? as usize;
        if SortOrder::try_from(r.order) != Ok(SortOrder::Ascending)
            && r.order != SortOrder::Unspecified as i32
        {
            return Err(bad_field("order", "resampled bars come ASCENDING only"));
        }
        if r.end_time_us != 0 && r.end_time_us <= r.start_time_us {
            return Err(bad_field("end_time_us", "must be after start_time_us"));
        }
        let fingerprint = paging::fingerprint(&[
            r.symbol.as_bytes(),
            r.bar.as_bytes(),
            r.time_zone.as_bytes(),
            r.session.as_bytes(),
            &r.start_time_us.to_le_bytes(),
            &r.end_time_us.to_le_bytes(),
        ]);
        // The token: the source interval and the open time of the last stored bar sent.
        let mut after = None;
        let mut source = None;
        if !r.page_token.is_empty() {
            let fields = paging::decode(&r.page_token, fingerprint, 2)?;
            let bad = || bad_field("page_token", "not a page token of this query");
            source = Some(
                fields[0]
                    .parse::<i32>()
                    .ok()
                    .and_then(|code| Interval::try_from(code).ok())
                    .ok_or_else(bad)?,
            );
            after = Some(fields[1].parse::<i64>().map_err(|_| bad())?);
        }
        let range = resample::Range {
            symbol: r.symbol.clone(),
            start_us: (r.start_time_us != 0).then_some(r.start_time_us),
            end_us: (r.end_time_us != 0).then_some(r.end_time_us),
        };
        let source = match source {
            Some(source) => source,
            None => match resample::source(&self.store, &plan, &range)
                .await
                .map_err(store_error)?
            {
                Ok(Some(source)) => source,
                Ok(None) => return Ok(GetCandlesResponse::default()),
                Err(stored) => {
                    return Err(bad_field(
                        "bar",
                        resample::unmakeable(&r.bar, &r.symbol, &stored),
                    ));
                }
            },
        };
        let page = resample::ascending(&self.store, &plan, &range, source, after, limit, now_us())
            .await
            .map_err(store_error)?;
        let bars = page.bars;
        let next_page_token = match page.cursor {
            Some(last) => paging::encode(
                &[(source as i32).to_string(), last.to_string()],
                fingerprint,
            ),
            None => String::new(),
        };
        Ok(GetCandlesResponse {
            candles: bars,
            next_page_token,
            source_interval: source as i32,
        })
    }
}

/// How long a latest price read through the caching service is served from this process: the
/// `latest_prices` namespace's TTL (else the default policy's), 1 s if neither sets one.
fn seed_ttl(config: &tickmesh_proto::v1::PerformanceOptimizationConfig) -> Duration {
    let policy = config.cache.as_ref().and_then(|c| {
        c.namespaces
            .get(LATEST_PRICES)
            .or(c.default_policy.as_ref())
    });
    policy
        .and_then(|p| p.ttl)
        .and_then(|ttl| Duration::try_from(ttl).ok())
        .filter(|ttl| !ttl.is_zero())
        .unwrap_or(Duration::from_secs(1))
}

/// The stored interval whose candles an indicator request is computed from (the revision that
/// tells whether a cached series is current).
fn revision_intervals(request: &GetIndicatorsRequest) -> Vec<i16> {
    if request.bar.is_empty() {
        vec![i16::try_from(request.interval).unwrap_or(0)]
    } else {
        resample::stored().map(|i| i as i16).collect()
    }
}

/// Namespaces of the caching service the query service reads.
const LATEST_PRICES: &str = "latest_prices";
const INDICATORS: &str = "indicators";

impl QueryApi {
    /// The latest price of `symbol` through the caching service (L1 -> L2 -> store), or the
    /// store when there is no caching service; kept in this process's tier (or the newer price
    /// the tier holds, if it does).
    async fn latest_price_through_cache(
        &self,
        request: &Request<GetLatestPricesRequest>,
        symbol: &str,
    ) -> Result<Option<LatestPrice>, Status> {
        let price = match self.caching.clone() {
            Some(mut caching) => {
                let got = caching
                    .get(on_behalf_of(
                        request,
                        GetRequest {
                            namespace: LATEST_PRICES.into(),
                            key: symbol.to_owned(),
                        },
                    ))
                    .await?
                    .into_inner();
                match got.typed.and_then(|v| v.kind) {
                    _ if !got.found => None,
                    Some(Kind::LatestPrice(cached)) => Some(LatestPrice {
                        symbol: cached.symbol,
                        price: cached.price,
                        time_us: cached.time_us,
                    }),
                    _ => {
                        return Err(Status::internal(format!(
                            "cached value of {symbol} is not a latest price"
                        )));
                    }
                }
            }
            None => latest_price(&self.store, symbol).await?,
        };
        Ok(price.map(|price| self.latest.seed(price)))
    }
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
        request: Request<GetCandlesRequest>,
    ) -> Result<Response<GetCandlesResponse>, Status> {
        // On the wire the encoded reply goes out as it is (see `wire`); this is the same
        // answer as a message, for callers of the trait itself.
        as_message(self.candles_reply(request.into_inner()).await?)
    }

    async fn get_latest_prices(
        &self,
        request: Request<GetLatestPricesRequest>,
    ) -> Result<Response<GetLatestPricesResponse>, Status> {
        let symbols = &request.get_ref().symbols;
        if symbols.is_empty() || symbols.len() > MAX_SYMBOLS {
            return Err(bad_field("symbols", format!("1 to {MAX_SYMBOLS} symbols")));
        }
        if let Some(i) = symbols.iter().position(|s| symbol(s, "").is_err()) {
            symbol(&symbols[i], &format!("symbols[{i}]"))?;
        }
        let mut response = GetLatestPricesResponse::default();
        let ttl = seed_ttl(&self.config.borrow().config);
        for s in symbols {
            // This process's own tier first (kept current by the bus); the rest is boxed so
            // that the hit, the common case, stays a small future. While the tier is behind (a
            // bus gap, events waiting in the outbox) it is not the caching service either that
            // answers, whose copies may be as old as their TTL, but the store.
            let price = match self.latest.get(s, ttl) {
                Some(price) => Some(price),
                None if self.latest.trusted() => {
                    Box::pin(self.latest_price_through_cache(&request, s)).await?
                }
                None => Box::pin(latest_price(&self.store, s)).await?,
            };
            match price {
                Some(price) => response.prices.push(price),
                None => response.missing_symbols.push(s.clone()),
            }
        }
        Ok(Response::new(response))
    }

    async fn get_signals(
        &self,
        request: Request<GetSignalsRequest>,
    ) -> Result<Response<GetSignalsResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        for (i, s) in r.symbols.iter().enumerate() {
            symbol(s, &format!("symbols[{i}]"))?;
        }
        for (i, s) in r.strategies.iter().enumerate() {
            if !matches!(Strategy::try_from(*s), Ok(s) if s != Strategy::Unspecified) {
                return Err(bad_field(format!("strategies[{i}]"), "not a strategy"));
            }
        }
        for (i, a) in r.actions.iter().enumerate() {
            if !matches!(SignalAction::try_from(*a), Ok(a) if a != SignalAction::Unspecified) {
                return Err(bad_field(format!("actions[{i}]"), "not an action"));
            }
        }
        if !(0.0..=1.0).contains(&r.min_confidence) {
            return Err(bad_field("min_confidence", "between 0 and 1"));
        }
        let mut parts: Vec<Vec<u8>> = r.symbols.iter().map(|s| s.as_bytes().to_vec()).collect();
        parts.push(r.strategies.iter().flat_map(|s| s.to_le_bytes()).collect());
        parts.push(r.actions.iter().flat_map(|a| a.to_le_bytes()).collect());
        parts.push(r.start_time_us.to_le_bytes().to_vec());
        parts.push(r.end_time_us.to_le_bytes().to_vec());
        parts.push(r.min_confidence.to_le_bytes().to_vec());
        let fingerprint = paging::fingerprint(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let after = if r.page_token.is_empty() {
            None
        } else {
            let f = paging::decode(&r.page_token, fingerprint, 4)?;
            let bad = || bad_field("page_token", "not a page token of this query");
            Some(SignalKey {
                time_us: f[0].parse().map_err(|_| bad())?,
                interval_code: f[1].parse().map_err(|_| bad())?,
                strategy: f[2].parse().map_err(|_| bad())?,
                symbol: f[3].clone(),
            })
        };
        let mut rows = self
            .store
            .signals(&SignalQuery {
                symbols: r.symbols.clone(),
                strategies: r.strategies.iter().map(|s| *s as i16).collect(),
                actions: r.actions.iter().map(|a| *a as i16).collect(),
                start_us: (r.start_time_us != 0).then_some(r.start_time_us),
                end_us: (r.end_time_us != 0).then_some(r.end_time_us),
                min_confidence: r.min_confidence,
                ascending: false,
                after,
                limit: limit + 1,
            })
            .await
            .map_err(store_error)?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => paging::encode(
                &[
                    last.time_us.to_string(),
                    last.interval_code.to_string(),
                    last.strategy.to_string(),
                    last.symbol.clone(),
                ],
                fingerprint,
            ),
            _ => String::new(),
        };
        let signals = rows
            .iter()
            .map(|row| {
                Signal::decode(row.body.as_slice())
                    .map_err(|e| Status::internal(format!("stored signal undecodable: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(GetSignalsResponse {
            signals,
            next_page_token,
        }))
    }

    async fn get_indicators(
        &self,
        request: Request<GetIndicatorsRequest>,
    ) -> Result<Response<GetIndicatorsResponse>, Status> {
        // Like `get_candles`: the encoded reply as a message.
        as_message(self.indicators_reply(request).await?)
    }

    async fn export_candles(
        &self,
        request: Request<tickmesh_proto::v1::ExportCandlesRequest>,
    ) -> Result<Response<tickmesh_proto::v1::ExportCandlesResponse>, Status> {
        export::page(&self.store, &self.held, request.get_ref())
            .await
            .map(Response::new)
    }

    type StreamMarketDataStream = MarketDataStream;

    async fn stream_market_data(
        &self,
        request: Request<StreamMarketDataRequest>,
    ) -> Result<Response<Self::StreamMarketDataStream>, Status> {
        let r = request.into_inner();
        if r.symbols.is_empty() || r.symbols.len() > MAX_SYMBOLS {
            return Err(bad_field("symbols", format!("1 to {MAX_SYMBOLS} symbols")));
        }
        for (i, s) in r.symbols.iter().enumerate() {
            symbol(s, &format!("symbols[{i}]"))?;
        }
        for (i, k) in r.kinds.iter().enumerate() {
            if !matches!(EventKind::try_from(*k), Ok(k) if k != EventKind::Unspecified) {
                return Err(bad_field(format!("kinds[{i}]"), "TICK, CANDLE or SIGNAL"));
            }
        }
        for (i, v) in r.intervals.iter().enumerate() {
            interval(*v).map_err(|_| bad_field(format!("intervals[{i}]"), "not an interval"))?;
        }
        if r.resume_from_time_us < 0 {
            return Err(bad_field("resume_from_time_us", "not negative"));
        }
        let send_timeout = self
            .config
            .borrow()
            .config
            .server
            .as_ref()
            .map(|s| tickmesh_config::std_duration(s.stream_send_timeout.as_ref()))
            .filter(|t| !t.is_zero())
            .unwrap_or(DEFAULT_STREAM_SEND_TIMEOUT);
        let stream = live::stream(
            &self.live,
            self.store.clone(),
            r,
            send_timeout,
            &self.shutdown,
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The last traded price of `symbol` from the store ([`Store::latest_price`]).
pub async fn latest_price(store: &Store, symbol: &str) -> Result<Option<LatestPrice>, Status> {
    Ok(store
        .latest_price(symbol)
        .await
        .map_err(store_error)?
        .map(|(price, time_us, _)| LatestPrice {
            symbol: symbol.to_owned(),
            price,
            time_us,
        }))
}

/// The query service, ready for [`tickmesh_mesh::serve`]; `computation` is the client stack to
/// the computation service, if one is reachable; live streams follow `bus`.
pub fn service(
    config: &ConfigHandle,
    store: Arc<Store>,
    bus: tickmesh_bus::Bus,
    computation: Option<MeshChannel>,
    caching: Option<MeshChannel>,
    metrics: &tickmesh_mesh::Metrics,
    shutdown: &Shutdown,
) -> Service {
    let current = config.current();
    let limit = current.message_limit();
    let live = Live::spawn(bus, store.clone(), metrics, shutdown);
    let api = QueryApi {
        store,
        shutdown: shutdown.clone(),
        computation: computation.map(|channel| {
            ComputationServiceClient::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit)
        }),
        caching: caching.map(|channel| {
            CachingServiceClient::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit)
        }),
        latest: live.latest(),
        near: indicators::NearIndicators::new(
            current
                .config
                .query
                .as_ref()
                .map_or(0, |q| q.indicator_cache_bytes),
        ),
        held: current.config.query.as_ref().map_or_else(
            || candles::HeldCandles::new(0, 0),
            |q| candles::HeldCandles::new(q.candle_cache_bytes, q.candle_history_bars),
        ),
        config: config.subscribe(),
        live,
    };
    api.held.register(metrics);
    let server = wire::QueryRoutes::new(api, limit);
    Service::new(tickmesh_proto::service_names::QUERY, server)
}
