//! The caching service: the multi-tier cache of `tickmesh-cache` (L1 in the process, L2 in
//! Redis, the store behind them) as a gRPC service. The `latest_prices` and `signals`
//! namespaces load from the store on a miss; the others hold what callers `Set`.
//!
//! Values are typed in the contract (`tickmesh.v1.CacheValue`); how they are encoded for
//! storage ([`value`], per `serialization_method`) stays inside this service.

pub mod value;

use std::pin::Pin;
use std::sync::Arc;

use prost::Message;
use tickmesh_cache::{Cache, CacheError, ErrorClass, SetOptions, loader_fn};
use tickmesh_mesh::status::bad_field;
use tickmesh_mesh::{ConfigHandle, Service};
use tickmesh_proto::v1::cache_value::Kind;
use tickmesh_proto::v1::caching_service_server::{CachingService, CachingServiceServer};
use tickmesh_proto::v1::invalidate_request::Target;
use tickmesh_proto::v1::{
    CachedLatestPrice, DeleteRequest, DeleteResponse, GetRequest, GetResponse, GetStatsRequest,
    GetStatsResponse, InvalidateRequest, InvalidateResponse, SerializationMethod, SetRequest,
    SetResponse, Signal, WarmRequest, WarmResponse,
};
use tickmesh_store::{SignalQuery, Store};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Namespace of the latest price of each symbol (key: the symbol).
pub const LATEST_PRICES: &str = "latest_prices";
/// Namespace of the latest combined signal of each symbol (key: `<symbol>/<interval number>`).
pub const SIGNALS: &str = "signals";
/// Namespace of indicator series computed on request (key: chosen by the query service).
pub const INDICATORS: &str = "indicators";

/// Every cache error becomes a status here, in one place.
pub fn status(error: CacheError) -> Status {
    let message = error.to_string();
    let code = match error.class() {
        ErrorClass::InvalidArgument => Code::InvalidArgument,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::ResourceExhausted => Code::ResourceExhausted,
        ErrorClass::FailedPrecondition => Code::FailedPrecondition,
        ErrorClass::Unavailable => Code::Unavailable,
    };
    match error.field() {
        Some(field) if code == Code::InvalidArgument => {
            let mut details = ErrorDetails::new();
            details.add_bad_request_violation(field, &message);
            Status::with_error_details(code, message, details)
        }
        _ => Status::new(code, message),
    }
}

fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The latest price of `symbol` from the store ([`Store::latest_price`]).
pub async fn load_latest_price(
    store: &Store,
    symbol: &str,
) -> Result<Option<CachedLatestPrice>, tickmesh_store::StoreError> {
    Ok(store
        .latest_price(symbol)
        .await?
        .map(|(price, time_us, size)| CachedLatestPrice {
            symbol: symbol.to_owned(),
            price,
            time_us,
            size,
        }))
}

/// Registers the store loaders of the `latest_prices` and `signals` namespaces; they store
/// typed values (as [`CachingService::set`] does), encoded per `method`.
pub fn register_loaders(
    cache: &Cache,
    store: Arc<Store>,
    method: SerializationMethod,
) -> Result<(), CacheError> {
    let from = store.clone();
    cache.register_loader(
        LATEST_PRICES,
        Arc::new(loader_fn(move |symbol: String| {
            let store = from.clone();
            async move {
                match load_latest_price(&store, &symbol).await? {
                    Some(price) => Ok(Some(value::encode(&Kind::LatestPrice(price), method)?)),
                    None => Ok(None),
                }
            }
        })),
    )?;
    cache.register_loader(
        SIGNALS,
        Arc::new(loader_fn(move |key: String| {
            let store = store.clone();
            async move {
                let Some((symbol, interval)) = key.split_once('/') else {
                    return Ok(None);
                };
                let interval: i16 = interval.parse()?;
                let rows = store
                    .signals(&SignalQuery {
                        symbols: vec![symbol.to_owned()],
                        limit: 50,
                        ..SignalQuery::default()
                    })
                    .await?;
                let Some(row) = rows.iter().find(|r| r.interval_code == interval) else {
                    return Ok(None);
                };
                let signal = Signal::decode(row.body.as_slice())?;
                Ok(Some(value::encode(&Kind::Signal(signal), method)?))
            }
        })),
    )?;
    Ok(())
}

/// The cache's counters as Prometheus families (hits, misses, evictions per namespace and tier;
/// loads, L1 memory, L2 availability), for [`tickmesh_mesh::Metrics::add_text_source`].
pub fn prometheus_text(cache: &Cache) -> String {
    use std::fmt::Write as _;
    let stats = cache.stats();
    let mut out = String::new();
    let tiers = |f: &dyn Fn(&tickmesh_cache::TierStats) -> u64, out: &mut String, name: &str| {
        for ns in &stats.namespaces {
            for (tier, t) in [("l1", &ns.l1), ("l2", &ns.l2)] {
                let _ = writeln!(
                    out,
                    "{name}_total{{cache_namespace=\"{}\",tier=\"{tier}\"}} {}",
                    ns.namespace,
                    f(t)
                );
            }
        }
    };
    for (name, help, f) in [
        (
            "tickmesh_cache_hits",
            "Cache lookups a tier answered",
            (|t: &tickmesh_cache::TierStats| t.hits) as fn(&tickmesh_cache::TierStats) -> u64,
        ),
        (
            "tickmesh_cache_misses",
            "Cache lookups a tier did not have",
            |t| t.misses,
        ),
        (
            "tickmesh_cache_evictions",
            "Entries a tier dropped to make room",
            |t| t.evictions,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
        tiers(&f, &mut out, name);
    }
    let _ = writeln!(
        out,
        "# HELP tickmesh_cache_loads Loads from the source.\n# TYPE tickmesh_cache_loads counter"
    );
    for ns in &stats.namespaces {
        let _ = writeln!(
            out,
            "tickmesh_cache_loads_total{{cache_namespace=\"{}\"}} {}",
            ns.namespace, ns.loads
        );
    }
    let _ = writeln!(
        out,
        "# HELP tickmesh_cache_l1_memory_bytes Bytes held in L1.\n# TYPE tickmesh_cache_l1_memory_bytes gauge\ntickmesh_cache_l1_memory_bytes {}",
        stats.l1_memory_bytes
    );
    let _ = writeln!(
        out,
        "# HELP tickmesh_cache_l2_available Whether Redis (L2) answers.\n# TYPE tickmesh_cache_l2_available gauge\ntickmesh_cache_l2_available {}",
        u8::from(stats.l2_available)
    );
    out
}

/// `tickmesh.v1.CachingService` over a [`Cache`].
#[derive(Clone)]
pub struct CachingApi {
    cache: Cache,
    config: ConfigHandle,
}

impl std::fmt::Debug for CachingApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingApi").finish_non_exhaustive()
    }
}

type WarmStream = Pin<Box<dyn Stream<Item = Result<WarmResponse, Status>> + Send>>;

#[tonic::async_trait]
impl CachingService for CachingApi {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let r = request.into_inner();
        let hit = self
            .cache
            .get_or_load(&r.namespace, &r.key)
            .await
            .or_else(|e| match e {
                // A namespace without a loader is still readable (L1 → L2 only).
                CacheError::NoLoader(_) => Ok(None),
                e => Err(e),
            })
            .map_err(status)?;
        let hit = match hit {
            Some(hit) => Some(hit),
            None => self.cache.get(&r.namespace, &r.key).await.map_err(status)?,
        };
        let Some(hit) = hit else {
            return Ok(Response::new(GetResponse::default()));
        };
        let typed = value::decode(&hit.value).map_err(|e| {
            tracing::warn!(error = %e, namespace = r.namespace, "cached value undecodable");
            Status::internal(format!("cached value of {}/{}: {e}", r.namespace, r.key))
        })?;
        // The legacy field carries opaque bytes only: a typed value's encoding is not part of
        // the contract.
        let legacy = match &typed.kind {
            Some(Kind::Opaque(bytes)) => bytes.clone(),
            _ => Vec::new(),
        };
        Ok(Response::new(GetResponse {
            found: true,
            value: legacy,
            tier: hit.tier.to_proto() as i32,
            ttl_remaining: Some(duration(hit.ttl_remaining())),
            typed: Some(typed),
        }))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let r = request.into_inner();
        let ttl = tickmesh_config::std_duration(r.ttl.as_ref());
        let kind = match r.typed {
            None => Kind::Opaque(r.value),
            Some(_) if !r.value.is_empty() => {
                return Err(bad_field("value", "set either value or typed, not both"));
            }
            Some(typed) => typed
                .kind
                .ok_or_else(|| bad_field("typed", "say which kind of value"))?,
        };
        let method =
            SerializationMethod::try_from(self.config.current().config.serialization_method)
                .unwrap_or_default();
        let encoded = value::encode(&kind, method)
            .map_err(|e| bad_field("typed", format!("value cannot be encoded: {e}")))?;
        let stored = self
            .cache
            .set(
                &r.namespace,
                &r.key,
                encoded,
                SetOptions {
                    ttl: (!ttl.is_zero()).then_some(ttl),
                    ..SetOptions::default()
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(SetResponse {
            ttl: Some(duration(stored.ttl)),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let r = request.into_inner();
        let existed = self
            .cache
            .delete(&r.namespace, &r.key)
            .await
            .map_err(status)?;
        Ok(Response::new(DeleteResponse { existed }))
    }

    async fn invalidate(
        &self,
        request: Request<InvalidateRequest>,
    ) -> Result<Response<InvalidateResponse>, Status> {
        let r = request.into_inner();
        let dropped = match r.target {
            Some(Target::Key(key)) => self.cache.invalidate_key(&r.namespace, &key).await,
            Some(Target::Pattern(pattern)) => {
                self.cache.invalidate_pattern(&r.namespace, &pattern).await
            }
            Some(Target::All(true)) => self.cache.invalidate_namespace(&r.namespace).await,
            _ => {
                let mut details = ErrorDetails::new();
                details.add_bad_request_violation("target", "a key, a pattern or all: true");
                return Err(Status::with_error_details(
                    Code::InvalidArgument,
                    "target: say what to invalidate (key, pattern or all)",
                    details,
                ));
            }
        }
        .map_err(status)?;
        Ok(Response::new(InvalidateResponse {
            invalidated: dropped.total(),
        }))
    }

    type WarmStream = WarmStream;

    async fn warm(&self, request: Request<WarmRequest>) -> Result<Response<WarmStream>, Status> {
        let r = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let cache = self.cache.clone();
        tokio::spawn(async move {
            let progress_tx = tx.clone();
            let report = cache
                .warm(&r.namespace, r.keys, move |loaded, total| {
                    // Progress is best effort: a slow reader skips intermediate counts.
                    let _ = progress_tx.try_send(Ok(WarmResponse {
                        loaded,
                        total,
                        done: false,
                    }));
                })
                .await;
            let last = match report {
                Ok(report) => Ok(WarmResponse {
                    loaded: report.loaded,
                    total: report.total,
                    done: true,
                }),
                Err(e) => Err(status(e)),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_stats(
        &self,
        request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        let namespace = request.into_inner().namespace;
        let mut stats = self.cache.stats().to_proto();
        if !namespace.is_empty() {
            stats.namespaces.retain(|n| n.namespace == namespace);
            if stats.namespaces.is_empty() {
                return Err(Status::not_found(format!("no cache namespace {namespace}")));
            }
        }
        Ok(Response::new(stats))
    }
}

/// The caching service over `cache`, ready for [`tickmesh_mesh::serve`].
pub fn service(config: &ConfigHandle, cache: Cache) -> Service {
    let limit = config.current().message_limit();
    let server = CachingServiceServer::new(CachingApi {
        cache,
        config: config.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    Service::new(tickmesh_proto::service_names::CACHING, server)
}
