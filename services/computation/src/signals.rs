//! Signals: on demand (`GenerateSignals`, `BatchSignals`) and incrementally from the bus, where
//! each closed candle updates the streaming indicators of its (symbol, interval) and the
//! strategies are evaluated again. A symbol whose price moved less than
//! `processing.skip_unchanged_threshold_percent` since its last signal is skipped and that
//! signal stands; the most volatile symbols are processed first. Signals are written to the
//! store, and their bus events to its outbox in the same transaction (the relay publishes them).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prost::Message;
use tickmesh_bus::Bus;
use tickmesh_indicators::Bar;
use tickmesh_indicators::signals::{Evaluation, Params, SignalEngine};
use tickmesh_mesh::{Metrics, Shutdown};
use tickmesh_proto::v1::cache_value::Kind;
use tickmesh_proto::v1::{
    BatchSignalsResponse, CacheValue, Candle, Interval, MarketEventBatch, SetRequest, Signal,
    SymbolError, market_event::Payload,
};
use tickmesh_store::SignalRow;
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::history::{self, History};
use crate::signal_stats::SignalStats;
use crate::{ComputationApi, convert};

/// Bars of history an engine is warmed with (the EMAs forget their seed long before this).
const WARM_BARS: usize = 1_000;

/// The last signal of every (symbol, interval), for the skip rule, and the outcome counters.
#[derive(Debug)]
pub struct SignalBook {
    last: Mutex<HashMap<(String, i32), Signal>>,
    pub(crate) stats: SignalStats,
}

impl SignalBook {
    /// An empty book counting into `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            last: Mutex::default(),
            stats: SignalStats::new(metrics),
        }
    }

    /// The standing signal if the price moved less than `threshold_percent` since it.
    fn standing(
        &self,
        symbol: &str,
        interval: i32,
        close: f64,
        threshold_percent: f64,
    ) -> Option<Signal> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let previous = last.get(&(symbol.to_owned(), interval))?;
        let moved = ((close / previous.price) - 1.0).abs() * 100.0;
        (moved < threshold_percent).then(|| previous.clone())
    }

    fn record(&self, signal: &Signal) {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((signal.symbol.clone(), signal.interval), signal.clone());
    }
}

fn threshold(api: &ComputationApi) -> f64 {
    api.config
        .current()
        .config
        .processing
        .map_or(0.5, |p| p.skip_unchanged_threshold_percent)
}

/// Namespace of the caching service that holds the latest signal of each (symbol, interval).
const SIGNALS_NAMESPACE: &str = "signals";

/// Stores new signals (a signal already stored for its bar stays as it is) with their bus
/// events (through the outbox), then writes the newest of each (symbol, interval) through to
/// the caching service (`Set`). A cache that cannot take it (caching service or Redis down,
/// say) only costs a later load from the store.
async fn store(api: &ComputationApi, signals: &[Signal]) -> Result<(), Status> {
    api.store
        .insert_signals(signals.iter().map(SignalRow::of).collect())
        .await
        .map_err(convert::store_error)?;
    // Their events were queued in the outbox in the same transaction: nothing stored goes
    // unpublished, even when the bus is down right now.
    if let Some(relay) = &api.relay {
        relay.wake();
    }
    if let Some(caching) = &api.caching {
        let mut newest: HashMap<(String, i32), &Signal> = HashMap::new();
        for signal in signals {
            let key = (signal.symbol.clone(), signal.interval);
            if newest.get(&key).is_none_or(|s| s.time_us <= signal.time_us) {
                newest.insert(key, signal);
            }
        }
        // One call per (symbol, interval), all in flight at once over the one HTTP/2
        // connection: a cycle of many symbols does not wait out a round trip per symbol
        // before its events are acked.
        let sets = newest
            .into_iter()
            .map(|((symbol, interval), signal)| async move {
                // The cache takes the adaptive TTL's symbol from the key, up to its `/`.
                let set = SetRequest {
                    namespace: SIGNALS_NAMESPACE.into(),
                    key: format!("{symbol}/{interval}"),
                    typed: Some(CacheValue {
                        kind: Some(Kind::Signal(signal.clone())),
                    }),
                    ..SetRequest::default()
                };
                let mut set = tonic::Request::new(set);
                if let Some(key) = &api.own_key {
                    set.metadata_mut().insert("authorization", key.clone());
                }
                if let Err(status) = caching.clone().set(set).await {
                    warn!(
                        error = %status.message(),
                        code = ?status.code(),
                        symbol,
                        "signal not written through to the cache"
                    );
                }
            });
        futures_util::future::join_all(sets).await;
    }
    Ok(())
}

/// The current signal of one symbol, computed from its stored history.
pub async fn on_demand(
    api: &ComputationApi,
    symbol: &str,
    interval: Interval,
    params: &Params,
) -> Result<Signal, Status> {
    let history = history::load(&api.store, symbol, interval as i32, 0, 0, WARM_BARS).await?;
    if history.is_empty() {
        return Err(Status::failed_precondition(format!(
            "no {interval:?} candles stored for {symbol}"
        )));
    }
    let params = *params;
    let (evaluation, history) = api
        .pool
        .run(move |_| (Evaluation::latest(&params, &history.columns()), history))
        .await?;
    let evaluation = evaluation.map_err(|e| {
        Status::failed_precondition(format!("{symbol}: {}", convert::symbol_reason(&e)))
    })?;
    let time = history.time_us.last().copied().unwrap_or_default();
    let signal = convert::signal(symbol, interval, time, &evaluation);
    api.book.stats.computed(interval as i32);
    api.book.record(&signal);
    store(api, std::slice::from_ref(&signal)).await?;
    Ok(signal)
}

/// The current signals of many symbols: the skip rule first, then the rest evaluated in
/// parallel on the pool, most volatile first.
pub async fn batch(
    api: &ComputationApi,
    symbols: &[String],
    interval: Interval,
    params: &Params,
) -> Result<BatchSignalsResponse, Status> {
    let threshold = threshold(api);
    let mut response = BatchSignalsResponse::default();
    let mut work: Vec<(usize, String, History)> = Vec::new();
    let mut answers: Vec<Option<Signal>> = vec![None; symbols.len()];
    for (i, symbol) in symbols.iter().enumerate() {
        let history = history::load(&api.store, symbol, interval as i32, 0, 0, WARM_BARS).await?;
        let Some(&close) = history.close.last() else {
            response.errors.push(SymbolError {
                symbol: symbol.clone(),
                reason: format!("no {interval:?} candles stored for {symbol}"),
            });
            continue;
        };
        if let Some(standing) = api.book.standing(symbol, interval as i32, close, threshold) {
            api.book.stats.skipped(interval as i32);
            response.skipped += 1;
            answers[i] = Some(standing);
            continue;
        }
        work.push((i, symbol.clone(), history));
    }
    // Most volatile first: under load, the symbols that move most get fresh signals soonest.
    // Volatility once per symbol, not once per comparison.
    let mut work: Vec<(f64, (usize, String, History))> = work
        .into_iter()
        .map(|item| (item.2.volatility(20), item))
        .collect();
    work.sort_by(|a, b| b.0.total_cmp(&a.0));
    let work: Vec<(usize, String, History)> = work.into_iter().map(|(_, item)| item).collect();
    let params = *params;
    let evaluated = api
        .pool
        .run(move |cancelled| {
            use rayon::prelude::*;
            work.into_par_iter()
                .map(|(i, symbol, history)| {
                    if cancelled.is_set() {
                        return (i, symbol, Err(Status::cancelled("the caller went away")));
                    }
                    let time = history.time_us.last().copied().unwrap_or_default();
                    let signal = Evaluation::latest(&params, &history.columns())
                        .map(|e| convert::signal(&symbol, interval, time, &e))
                        .map_err(|e| Status::failed_precondition(convert::symbol_reason(&e)));
                    (i, symbol, signal)
                })
                .collect::<Vec<_>>()
        })
        .await?;
    let mut fresh = Vec::new();
    for (i, symbol, result) in evaluated {
        match result {
            Ok(signal) => {
                api.book.stats.computed(interval as i32);
                api.book.record(&signal);
                fresh.push(signal.clone());
                answers[i] = Some(signal);
            }
            Err(status) => response.errors.push(SymbolError {
                symbol,
                reason: status.message().to_owned(),
            }),
        }
    }
    store(api, &fresh).await?;
    response.signals = answers.into_iter().flatten().collect();
    Ok(response)
}

/// The streaming state of one (symbol, interval) in the incremental worker.
struct Tracked {
    engine: SignalEngine,
    /// Open time of the last bar fed, so that a redelivered candle is not fed twice.
    last_time_us: i64,
    /// Closes fed, for the volatility ordering.
    recent: History,
}

/// The closed candles of the bus deliveries by (symbol, interval), each run in time order
/// without duplicates.
fn closed_candles(bodies: &[Vec<u8>]) -> HashMap<(String, i32), Vec<Candle>> {
    let mut runs: HashMap<(String, i32), Vec<Candle>> = HashMap::new();
    for body in bodies {
        let Ok(batch) = MarketEventBatch::decode(body.as_slice()) else {
            warn!("undecodable event on the bus; skipped");
            continue;
        };
        for event in batch.events {
            if let Some(Payload::Candle(candle)) = event.payload
                && candle.closed
            {
                runs.entry((candle.symbol.clone(), candle.interval))
                    .or_default()
                    .push(candle);
            }
        }
    }
    for run in runs.values_mut() {
        run.sort_by_key(|c| c.open_time_us);
        run.dedup_by_key(|c| c.open_time_us);
    }
    runs
}

/// Consumes the bus in the `computation` group: each closed candle updates its symbol's engine
/// (warmed from the store on first sight, or again after a gap, e.g. when another process of the
/// group took the previous candle) and yields a signal unless the price barely moved. Events are
/// acked after their signals are stored, so a crash re-delivers them (and the stored signals
/// are idempotent).
pub fn spawn_worker(api: ComputationApi, bus: Bus, shutdown: &Shutdown) -> JoinHandle<()> {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let consumer = format!("computation-{}", std::process::id());
        let mut subscription = match bus.subscribe("computation", &consumer).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "signals from the bus are off: cannot subscribe");
                return;
            }
        };
        info!(consumer, "computing signals from closed candles on the bus");
        let mut tracked: HashMap<(String, i32), Tracked> = HashMap::new();
        let params = Params::default();
        loop {
            let deliveries = tokio::select! {
                () = shutdown.wait() => return,
                batch = subscription.next_batch(512, Duration::from_millis(500)) => batch,
            };
            let deliveries = match deliveries {
                Ok(d) if d.is_empty() => continue,
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %e, "reading the bus failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let bodies: Vec<Vec<u8>> = deliveries.iter().map(|d| d.body.clone()).collect();
            let ids: Vec<String> = deliveries.into_iter().map(|d| d.id).collect();
            match process(&api, &mut tracked, &params, closed_candles(&bodies)).await {
                Ok(()) => {
                    if let Err(e) = subscription.ack(&ids).await {
                        warn!(error = %e, "acking events failed; they will be redelivered");
                    }
                }
                // Not acked: the events come back and are processed again.
                Err(status) => warn!(error = %status.message(), "signals not stored; will retry"),
            }
        }
    })
}

/// A fresh engine fed the stored bars of `symbol` before `before_us`.
async fn warmed(
    api: &ComputationApi,
    params: &Params,
    symbol: &str,
    interval: i32,
    before_us: i64,
) -> Result<Option<Tracked>, Status> {
    let history = history::load(&api.store, symbol, interval, 0, before_us, WARM_BARS).await?;
    let Ok(mut engine) = SignalEngine::new(params) else {
        return Ok(None);
    };
    for i in 0..history.len() {
        engine.update(Bar {
            open: history.open[i],
            high: history.high[i],
            low: history.low[i],
            close: history.close[i],
            volume: history.volume[i],
        });
    }
    debug!(symbol, bars = history.len(), "signal engine warmed");
    let recent = History {
        close: history.close[history.close.len().saturating_sub(64)..].to_vec(),
        ..History::default()
    };
    Ok(Some(Tracked {
        engine,
        last_time_us: history.time_us.last().copied().unwrap_or(i64::MIN),
        recent,
    }))
}

async fn process(
    api: &ComputationApi,
    tracked: &mut HashMap<(String, i32), Tracked>,
    params: &Params,
    runs: HashMap<(String, i32), Vec<Candle>>,
) -> Result<(), Status> {
    if runs.is_empty() {
        return Ok(());
    }
    // Most volatile first (a symbol not seen yet counts as most volatile: it has no signal).
    // Volatility once per run, not once per comparison.
    let mut runs: Vec<(f64, _)> = runs
        .into_iter()
        .map(|run| {
            let vol = tracked
                .get(&run.0)
                .map_or(f64::INFINITY, |t| t.recent.volatility(20));
            (vol, run)
        })
        .collect();
    runs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let threshold = threshold(api);
    let mut fresh = Vec::new();
    for (_, ((symbol, interval_code), candles)) in runs {
        let Ok(interval) = Interval::try_from(interval_code) else {
            continue;
        };
        let step = interval.length_us().unwrap_or(0);
        let key = (symbol.clone(), interval_code);
        // Only the start of a run (one committed write) can follow a gap: another process of the
        // group may have taken the bars in between. Inside a run the bars are consecutive as
        // stored (weekends and holidays are simply absent), so they are fed in order.
        let Some(first) = candles.iter().find(|c| {
            tracked
                .get(&key)
                .is_none_or(|t| c.open_time_us > t.last_time_us)
        }) else {
            continue; // the whole run was seen already: a redelivery
        };
        let contiguous = tracked
            .get(&key)
            .is_some_and(|t| first.open_time_us == t.last_time_us + step);
        if !contiguous {
            match warmed(api, params, &symbol, interval_code, first.open_time_us).await? {
                Some(t) => {
                    tracked.insert(key.clone(), t);
                }
                None => continue,
            }
        }
        for candle in candles {
            if tracked
                .get(&key)
                .is_some_and(|t| candle.open_time_us <= t.last_time_us)
            {
                continue;
            }
            let Some(t) = tracked.get_mut(&key) else {
                break;
            };
            t.last_time_us = candle.open_time_us;
            t.recent.close.push(candle.close);
            if t.recent.close.len() > 64 {
                t.recent.close.drain(..32);
            }
            let Some(evaluation) = t.engine.update(Bar {
                open: candle.open,
                high: candle.high,
                low: candle.low,
                close: candle.close,
                volume: candle.volume,
            }) else {
                continue; // still warming up
            };
            if api
                .book
                .standing(&symbol, interval_code, evaluation.close, threshold)
                .is_some()
            {
                api.book.stats.skipped(interval_code);
                continue;
            }
            let signal = convert::signal(&symbol, interval, candle.open_time_us, &evaluation);
            api.book.stats.computed(interval_code);
            api.book.record(&signal);
            fresh.push(signal);
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }
    store(api, &fresh).await
}
