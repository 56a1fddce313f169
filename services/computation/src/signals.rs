//! Signals: on demand (`GenerateSignals`, `BatchSignals`) and incrementally from the bus, where
//! each closed candle updates the streaming indicators of its (symbol, interval) and the
//! strategies are evaluated again. A symbol whose price moved less than
//! `processing.skip_unchanged_threshold_percent` since its last signal is skipped and that
//! signal stands; the most volatile symbols are processed first. Signals are written to the
//! store, and their bus events to its outbox in the same transaction (the relay publishes them).
//!
//! Every closed bar from the bus yields its signals once, whichever process of the group
//! evaluates it: a bar this process did not evaluate itself is evaluated unless the store holds
//! its signal already, with the indicators as of that bar (warmed from the stored history up to
//! it), so a bar taken over from a replica that died gets the signal that replica would have
//! stored. The store's insert is idempotent on (symbol, interval, bar time, strategy).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use tickmesh_bus::{Bus, DEFAULT_CLAIM_IDLE, DEFAULT_CONSUMER_IDLE_LIMIT, Subscription};
use tickmesh_indicators::Bar;
use tickmesh_indicators::signals::{Evaluation, Params, SignalEngine};
use tickmesh_mesh::{Metrics, Shutdown};
use tickmesh_proto::v1::cache_value::Kind;
use tickmesh_proto::v1::{
    BatchSignalsResponse, CacheValue, Candle, Interval, MarketEventBatch,
    PerformanceOptimizationConfig, SetRequest, Signal, Strategy, SymbolError,
    market_event::Payload,
};
use tickmesh_store::{SignalKey, SignalQuery, SignalRow};
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::history::{self, History};
use crate::signal_stats::SignalStats;
use crate::{ComputationApi, convert};

/// Bars of history an engine is warmed with (the EMAs forget their seed long before this).
const WARM_BARS: usize = 1_000;
/// Stored signals read per query when checking which bars have theirs already.
const SIGNAL_PAGE: i64 = 1_000;

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

    /// The standing signal if the price moved less than `threshold_percent` since it; only a
    /// signal of a bar before `before_us` stands (a bar taken over late is not compared with the
    /// signals of the bars after it).
    fn standing(
        &self,
        symbol: &str,
        interval: i32,
        close: f64,
        threshold_percent: f64,
        before_us: i64,
    ) -> Option<Signal> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let previous = last.get(&(symbol.to_owned(), interval))?;
        (previous.time_us < before_us && unchanged(previous, close, threshold_percent))
            .then(|| previous.clone())
    }

    /// Keeps `signal` as the last of its (symbol, interval) unless a later bar's is kept already.
    fn record(&self, signal: &Signal) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let key = (signal.symbol.clone(), signal.interval);
        if last.get(&key).is_none_or(|s| s.time_us <= signal.time_us) {
            last.insert(key, signal.clone());
        }
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
    let started = std::time::Instant::now();
    let answered = batch_of(api, symbols, interval, params).await;
    api.book
        .stats
        .cycle
        .observe(started.elapsed().as_secs_f64());
    answered
}

async fn batch_of(
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
        if let Some(standing) =
            api.book
                .standing(symbol, interval as i32, close, threshold, i64::MAX)
        {
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
    /// Open time of the last bar fed to the engine.
    last_time_us: i64,
    /// Open time of the first bar this process evaluated itself since the engine was last
    /// warmed: every bar from here through `last_time_us` was evaluated here and its signals
    /// stored, so a redelivery of one of them is skipped. The bars before it were only read
    /// from the store, and may be held by another consumer that never evaluated them.
    own_since_us: i64,
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

/// How the worker's subscription claims and cleans up, from `bus` in the configuration:
/// `claim_idle` (how long an entry another consumer holds stays un-acked before this one takes
/// it over) and `consumer_idle_limit` (when a consumer with nothing pending counts as gone).
/// A missing or zero duration takes the default.
pub fn bus_timing(config: &PerformanceOptimizationConfig) -> (Duration, Duration) {
    let or = |duration: Duration, default: Duration| {
        if duration.is_zero() {
            default
        } else {
            duration
        }
    };
    let bus = config.bus.as_ref();
    (
        or(
            tickmesh_config::std_duration(bus.and_then(|b| b.claim_idle.as_ref())),
            DEFAULT_CLAIM_IDLE,
        ),
        or(
            tickmesh_config::std_duration(bus.and_then(|b| b.consumer_idle_limit.as_ref())),
            DEFAULT_CONSUMER_IDLE_LIMIT,
        ),
    )
}

/// Applies the configuration's [`bus_timing`] to `subscription`.
fn follow_bus_timing(subscription: &mut Subscription, config: &PerformanceOptimizationConfig) {
    let (claim_idle, idle_limit) = bus_timing(config);
    if subscription.claim_idle() != claim_idle || subscription.consumer_idle_limit() != idle_limit {
        info!(
            claim_idle_ms = claim_idle.as_millis() as u64,
            consumer_idle_limit_ms = idle_limit.as_millis() as u64,
            "bus claim timing"
        );
    }
    subscription.set_claim_idle(claim_idle);
    subscription.set_consumer_idle_limit(idle_limit);
}

/// This process's consumer name in the group, one per process lifetime: the host (a pod's
/// name) when known, the pid (1 in every container) and the start time, so no two processes
/// ever share one and a restarted process does not pose as its predecessor.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .map(|h| format!("{h}-"))
        .unwrap_or_default();
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("computation-{host}{}-{started:x}", std::process::id())
}

/// Consumes the bus in the `computation` group: each closed candle updates its symbol's engine
/// (warmed from the store on first sight, or again after a gap, e.g. when another process of the
/// group took the previous candle) and yields a signal unless the price barely moved. Events are
/// acked after their signals are stored, so a crash re-delivers them (and the stored signals
/// are idempotent). Entries another consumer held for longer than `bus.claim_idle` are taken
/// over; consumers gone for longer than `bus.consumer_idle_limit` are removed from the group.
pub fn spawn_worker(api: ComputationApi, bus: Bus, shutdown: &Shutdown) -> JoinHandle<()> {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let consumer = consumer_name();
        let mut subscription = match bus.subscribe("computation", &consumer).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "signals from the bus are off: cannot subscribe");
                return;
            }
        };
        let mut config_version = api.config.version();
        follow_bus_timing(&mut subscription, &api.config.current().config);
        info!(
            consumer,
            claim_idle_ms = subscription.claim_idle().as_millis() as u64,
            consumer_idle_limit_ms = subscription.consumer_idle_limit().as_millis() as u64,
            "computing signals from closed candles on the bus"
        );
        let mut tracked: HashMap<(String, i32), Tracked> = HashMap::new();
        let params = Params::default();
        loop {
            if api.config.version() != config_version {
                config_version = api.config.version();
                follow_bus_timing(&mut subscription, &api.config.current().config);
            }
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
            let runs = closed_candles(&bodies);
            let keys: Vec<(String, i32)> = runs.keys().cloned().collect();
            let started = std::time::Instant::now();
            let processed = process(&api, &mut tracked, &params, runs).await;
            api.book
                .stats
                .cycle
                .observe(started.elapsed().as_secs_f64());
            match processed {
                Ok(()) => {
                    if let Err(e) = subscription.ack(&ids).await {
                        warn!(error = %e, "acking events failed; they will be redelivered");
                    }
                }
                Err(status) => {
                    // Not acked: the events come back and are processed again. The engines of
                    // their symbols went ahead of what was stored: they are warmed again then.
                    for key in &keys {
                        tracked.remove(key);
                    }
                    warn!(error = %status.message(), "signals not stored; will retry");
                }
            }
        }
    })
}

fn bar_of(candle: &Candle) -> Bar {
    Bar {
        open: candle.open,
        high: candle.high,
        low: candle.low,
        close: candle.close,
        volume: candle.volume,
    }
}

fn bar_at(history: &History, i: usize) -> Bar {
    Bar {
        open: history.open[i],
        high: history.high[i],
        low: history.low[i],
        close: history.close[i],
        volume: history.volume[i],
    }
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
        engine.update(bar_at(&history, i));
    }
    debug!(symbol, bars = history.len(), "signal engine warmed");
    let recent = History {
        close: history.close[history.close.len().saturating_sub(64)..].to_vec(),
        ..History::default()
    };
    Ok(Some(Tracked {
        engine,
        last_time_us: history.time_us.last().copied().unwrap_or(i64::MIN),
        own_since_us: before_us,
        recent,
    }))
}

/// Open times of the stored bars of `symbol` at `interval` in `[from_us, through_us]`.
async fn stored_bars(
    api: &ComputationApi,
    symbol: &str,
    interval: i32,
    from_us: i64,
    through_us: i64,
) -> Result<History, Status> {
    // `load` reads 0 as unbounded: a range from before the epoch is one.
    history::load(
        &api.store,
        symbol,
        interval,
        from_us.max(0),
        through_us.saturating_add(1),
        0,
    )
    .await
}

/// The stored signals of `symbol` at `interval` with bar times in `[from_us, through_us]`, by
/// bar time.
async fn stored_signals(
    api: &ComputationApi,
    symbol: &str,
    interval: i32,
    from_us: i64,
    through_us: i64,
) -> Result<HashMap<i64, SignalRow>, Status> {
    let mut signals = HashMap::new();
    let mut after = None;
    loop {
        let rows = api
            .store
            .signals(&SignalQuery {
                symbols: vec![symbol.to_owned()],
                strategies: vec![Strategy::Combined as i16],
                start_us: Some(from_us),
                end_us: Some(through_us.saturating_add(1)),
                ascending: true,
                after,
                limit: SIGNAL_PAGE,
                ..SignalQuery::default()
            })
            .await
            .map_err(convert::store_error)?;
        let full = rows.len() as i64 == SIGNAL_PAGE;
        after = rows.last().map(SignalKey::of);
        signals.extend(
            rows.into_iter()
                .filter(|r| i32::from(r.interval_code) == interval)
                .map(|r| (r.time_us, r)),
        );
        if !full {
            return Ok(signals);
        }
    }
}

/// The newest stored signal of `symbol` at `interval` for a bar before `before_us`, if one is
/// among its newest [`SIGNAL_PAGE`] signals of any interval before then.
async fn stored_signal_before(
    api: &ComputationApi,
    symbol: &str,
    interval: i32,
    before_us: i64,
) -> Result<Option<Signal>, Status> {
    let rows = api
        .store
        .signals(&SignalQuery {
            symbols: vec![symbol.to_owned()],
            strategies: vec![Strategy::Combined as i16],
            end_us: Some(before_us),
            limit: SIGNAL_PAGE,
            ..SignalQuery::default()
        })
        .await
        .map_err(convert::store_error)?;
    Ok(rows
        .iter()
        .find(|r| i32::from(r.interval_code) == interval)
        .and_then(|r| Signal::decode(r.body.as_slice()).ok()))
}

/// Whether the price moved less than `threshold_percent` since `previous`: its signal stands.
fn unchanged(previous: &Signal, close: f64, threshold_percent: f64) -> bool {
    ((close / previous.price) - 1.0).abs() * 100.0 < threshold_percent
}

/// Feeds one bar to `engine`: its signal, unless the engine is still warming up or the price
/// barely moved since the standing signal.
fn evaluate(
    api: &ComputationApi,
    engine: &mut SignalEngine,
    symbol: &str,
    interval: Interval,
    time_us: i64,
    bar: Bar,
    threshold: f64,
) -> Option<Signal> {
    let evaluation = engine.update(bar)?;
    let code = interval as i32;
    if api
        .book
        .standing(symbol, code, evaluation.close, threshold, time_us)
        .is_some()
    {
        api.book.stats.skipped(code);
        return None;
    }
    let signal = convert::signal(symbol, interval, time_us, &evaluation);
    api.book.stats.computed(code);
    api.book.record(&signal);
    Some(signal)
}

/// Signals of bars that came after bars fed already (taken over from a consumer that held them
/// too long, most likely one that died) and that this process did not evaluate: those whose
/// signal the store does not hold, each evaluated with the indicators as of that bar (warmed
/// from the stored history before the first, then fed every stored bar through the last). The
/// skip rule compares each with the stored signal before it, as the consumer that held it
/// would have (this process's own last signal is of a later bar).
async fn catch_up(
    api: &ComputationApi,
    params: &Params,
    symbol: &str,
    interval: Interval,
    late: Vec<Candle>,
    threshold: f64,
) -> Result<Vec<Signal>, Status> {
    let code = interval as i32;
    let (Some(first), Some(last)) = (late.first(), late.last()) else {
        return Ok(Vec::new());
    };
    let (first, last) = (first.open_time_us, last.open_time_us);
    let stored_signals = stored_signals(api, symbol, code, first, last).await?;
    let late: Vec<Candle> = late
        .into_iter()
        .filter(|c| !stored_signals.contains_key(&c.open_time_us))
        .collect();
    let Some(first) = late.first().map(|c| c.open_time_us) else {
        debug!(
            symbol,
            interval = code,
            "bars taken over had their signals stored already"
        );
        return Ok(Vec::new());
    };
    let Some(mut state) = warmed(api, params, symbol, code, first).await? else {
        return Ok(Vec::new());
    };
    let mut previous = stored_signal_before(api, symbol, code, first).await?;
    let span = stored_bars(api, symbol, code, first, last).await?;
    // The stored bars from the first late one through the last, and any late one the store
    // does not have (it always should: events are published after their rows are committed).
    let mut bars: Vec<(i64, Bar)> = (0..span.len())
        .map(|i| (span.time_us[i], bar_at(&span, i)))
        .collect();
    let in_store: HashSet<i64> = span.time_us.iter().copied().collect();
    bars.extend(
        late.iter()
            .filter(|c| !in_store.contains(&c.open_time_us))
            .map(|c| (c.open_time_us, bar_of(c))),
    );
    bars.sort_by_key(|(time, _)| *time);
    let wanted: HashSet<i64> = late.iter().map(|c| c.open_time_us).collect();
    let mut signals = Vec::new();
    for (time, bar) in bars {
        let evaluation = state.engine.update(bar);
        if !wanted.contains(&time) {
            // Evaluated elsewhere: its stored signal, if any, is the one the next compares with.
            if let Some(row) = stored_signals.get(&time) {
                previous = Signal::decode(row.body.as_slice()).ok().or(previous);
            }
            continue;
        }
        let Some(evaluation) = evaluation else {
            continue; // still warming up
        };
        if previous
            .as_ref()
            .is_some_and(|p| unchanged(p, evaluation.close, threshold))
        {
            api.book.stats.skipped(code);
            continue;
        }
        let signal = convert::signal(symbol, interval, time, &evaluation);
        api.book.stats.computed(code);
        api.book.record(&signal);
        previous = Some(signal.clone());
        signals.push(signal);
    }
    info!(
        symbol,
        interval = code,
        bars = wanted.len(),
        signals = signals.len(),
        "bars taken over from another consumer evaluated"
    );
    Ok(signals)
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
        let Some(run_end) = candles.last().map(|c| c.open_time_us) else {
            continue;
        };
        // The stored bar times after the last bar fed, read once a bar does not follow the last
        // one by the clock.
        let mut stored: Option<Vec<i64>> = None;
        let mut late = Vec::new();
        for candle in candles {
            let time = candle.open_time_us;
            let follows = match tracked.get(&key) {
                Some(t) if time <= t.last_time_us => {
                    // Fed already. Evaluated here (then a redelivery), or only read from the
                    // store to warm the engine: then another consumer held it, and it is
                    // evaluated now unless that consumer stored its signal.
                    if time < t.own_since_us {
                        late.push(candle);
                    }
                    continue;
                }
                None => false,
                Some(t) if step > 0 && time == t.last_time_us + step => true,
                // Not the next bar by the clock: the bars in between are either not stored
                // (a market's nights and weekends) or were delivered to another consumer, and
                // then fed from the store first.
                Some(t) => {
                    if stored.is_none() {
                        let between =
                            stored_bars(api, &symbol, interval_code, t.last_time_us + 1, run_end)
                                .await?;
                        stored = Some(between.time_us);
                    }
                    !stored
                        .iter()
                        .flatten()
                        .any(|&s| s > t.last_time_us && s < time)
                }
            };
            if !follows {
                match warmed(api, params, &symbol, interval_code, time).await? {
                    Some(t) => {
                        tracked.insert(key.clone(), t);
                    }
                    None => break,
                }
            }
            let Some(t) = tracked.get_mut(&key) else {
                break;
            };
            t.last_time_us = time;
            t.recent.close.push(candle.close);
            if t.recent.close.len() > 64 {
                t.recent.close.drain(..32);
            }
            fresh.extend(evaluate(
                api,
                &mut t.engine,
                &symbol,
                interval,
                time,
                bar_of(&candle),
                threshold,
            ));
        }
        if !late.is_empty() {
            fresh.extend(catch_up(api, params, &symbol, interval, late, threshold).await?);
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }
    store(api, &fresh).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_timing_follows_the_configuration() {
        let env = [
            ("TICKMESH_BUS__CLAIM_IDLE".to_owned(), "2s".to_owned()),
            (
                "TICKMESH_BUS__CONSUMER_IDLE_LIMIT".to_owned(),
                "45s".to_owned(),
            ),
        ];
        let loaded = tickmesh_config::load(None, env).unwrap();
        assert_eq!(
            bus_timing(&loaded.config),
            (Duration::from_secs(2), Duration::from_secs(45))
        );
        assert_eq!(
            bus_timing(&tickmesh_config::defaults()),
            (Duration::from_secs(3), Duration::from_secs(600)),
            "the documented defaults"
        );
        assert_eq!(
            bus_timing(&PerformanceOptimizationConfig::default()),
            (DEFAULT_CLAIM_IDLE, DEFAULT_CONSUMER_IDLE_LIMIT),
            "no bus section"
        );
    }

    #[test]
    fn consumer_names_differ_between_process_lifetimes() {
        let first = consumer_name();
        std::thread::sleep(Duration::from_millis(2));
        assert_ne!(first, consumer_name());
        assert!(first.starts_with("computation-"), "{first}");
    }

    fn signal_at(time_us: i64, price: f64) -> Signal {
        Signal {
            symbol: "S".into(),
            interval: Interval::Interval1m as i32,
            time_us,
            price,
            ..Signal::default()
        }
    }

    #[test]
    fn a_late_bar_is_not_compared_with_the_signals_after_it() {
        let book = SignalBook::new(&Metrics::new());
        let code = Interval::Interval1m as i32;
        book.record(&signal_at(200, 100.0));
        assert!(book.standing("S", code, 100.01, 0.5, 300).is_some());
        assert!(book.standing("S", code, 100.01, 0.5, 100).is_none());
        // The signal of an earlier bar does not replace the last one.
        book.record(&signal_at(100, 50.0));
        let standing = book.standing("S", code, 100.01, 0.5, 300).unwrap();
        assert_eq!(standing.time_us, 200);
    }
}
