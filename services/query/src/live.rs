//! Live market data: one bus subscription per query process (its own consumer group, so every
//! query pod sees every event) fanned out to the streams of its subscribers through a bounded
//! ring. A subscriber that falls further behind than the ring holds is told so with
//! RESOURCE_EXHAUSTED and what it missed, instead of buffering without bound.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tickmesh_bus::Bus;

use crate::latest::LatestPrices;
use tickmesh_mesh::Shutdown;
use tickmesh_proto::v1::{
    EventKind, Interval, MarketEvent, MarketEventBatch, StreamMarketDataRequest,
    StreamMarketDataResponse, market_event::Payload,
};
use tickmesh_store::{CandleQuery, SignalQuery, Store, events};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{info, warn};

/// Events a subscriber may fall behind by before its stream ends with RESOURCE_EXHAUSTED.
pub const SUBSCRIBER_BUFFER: usize = 4_096;
/// Most stored events a resumed stream replays.
pub const MAX_HISTORY: usize = 100_000;

/// The fan-out of live events in this process.
#[derive(Debug, Clone)]
pub struct Live {
    tx: broadcast::Sender<Arc<MarketEvent>>,
    active: prometheus_client::metrics::gauge::Gauge,
    latest: Arc<LatestPrices>,
}

/// Counts a stream as open while it lives.
struct Open(prometheus_client::metrics::gauge::Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Live {
    /// Subscribes to `bus` in a group of this process's own and fans its events out.
    pub fn spawn(bus: Bus, metrics: &tickmesh_mesh::Metrics, shutdown: &Shutdown) -> Live {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let latest = Arc::new(LatestPrices::default());
        let live = Live {
            tx: tx.clone(),
            active: metrics.active_streams(),
            latest: latest.clone(),
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let group = format!("query-{}-{:x}", std::process::id(), now_us());
            let mut subscription = match bus.subscribe(&group, "fanout").await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "live streams are off: cannot subscribe to the bus");
                    return;
                }
            };
            info!(group, "live market data from the bus");
            latest.set_live(true);
            loop {
                let batch = tokio::select! {
                    () = shutdown.wait() => {
                        latest.set_live(false);
                        // The group is this process's alone: nobody reads it again.
                        if let Err(e) = subscription.leave().await {
                            warn!(group, error = %e, "live group not removed from the bus");
                        }
                        return;
                    }
                    batch = subscription.next_batch(1024, Duration::from_millis(500)) => batch,
                };
                let deliveries = match batch {
                    Ok(d) => {
                        latest.set_live(true);
                        d
                    }
                    Err(e) => {
                        latest.set_live(false);
                        warn!(error = %e, "reading the bus failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                if deliveries.is_empty() {
                    continue;
                }
                let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
                for delivery in deliveries {
                    if let Ok(batch) = MarketEventBatch::decode(delivery.body.as_slice()) {
                        for event in batch.events {
                            if let Some(Payload::Tick(tick)) = &event.payload {
                                latest.observe(tick);
                            }
                            // No subscriber is fine: the event is simply not needed here.
                            let _ = tx.send(Arc::new(event));
                        }
                    }
                }
                // Fan-out is best effort by nature (a stream that lags is told so); ack at once.
                let _ = subscription.ack(&ids).await;
            }
        });
        live
    }
}

impl Live {
    /// The latest prices this process keeps current from the bus.
    pub fn latest(&self) -> Arc<LatestPrices> {
        self.latest.clone()
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// What a stream wants to see.
#[derive(Debug, Clone)]
pub struct Filter {
    symbols: HashSet<String>,
    kinds: HashSet<EventKind>,
    intervals: HashSet<i32>,
}

impl Filter {
    /// The filter of a request (validated by the caller).
    pub fn of(request: &StreamMarketDataRequest) -> Self {
        Self {
            symbols: request.symbols.iter().cloned().collect(),
            kinds: request
                .kinds
                .iter()
                .filter_map(|k| EventKind::try_from(*k).ok())
                .collect(),
            intervals: request.intervals.iter().copied().collect(),
        }
    }

    fn wants_kind(&self, kind: EventKind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }

    fn wants_interval(&self, interval: i32) -> bool {
        self.intervals.is_empty() || self.intervals.contains(&interval)
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &MarketEvent) -> bool {
        match &event.payload {
            Some(Payload::Tick(t)) => {
                self.wants_kind(EventKind::Tick) && self.symbols.contains(&t.symbol)
            }
            Some(Payload::Candle(c)) => {
                self.wants_kind(EventKind::Candle)
                    && self.wants_interval(c.interval)
                    && self.symbols.contains(&c.symbol)
            }
            Some(Payload::Signal(s)) => {
                self.wants_kind(EventKind::Signal)
                    && self.wants_interval(s.interval)
                    && self.symbols.contains(&s.symbol)
            }
            None => false,
        }
    }
}

fn event_time(event: &MarketEvent) -> i64 {
    match &event.payload {
        Some(Payload::Tick(t)) => t.time_us,
        Some(Payload::Candle(c)) => c.open_time_us,
        Some(Payload::Signal(s)) => s.time_us,
        None => 0,
    }
}

/// Stored events of the filter from `from_us` on, oldest first.
async fn history(store: &Store, filter: &Filter, from_us: i64) -> Result<Vec<MarketEvent>, Status> {
    let unavailable = |e: tickmesh_store::StoreError| Status::unavailable(format!("store: {e}"));
    let mut out = Vec::new();
    for symbol in &filter.symbols {
        if filter.wants_kind(EventKind::Tick) {
            let rows = store
                .ticks(symbol, from_us, i64::MAX, MAX_HISTORY as i64)
                .await
                .map_err(unavailable)?;
            out.extend(rows.iter().map(|t| MarketEvent {
                event_id: events::tick_id(t),
                published_time_us: 0,
                payload: Some(Payload::Tick(events::tick_message(t))),
            }));
        }
        if filter.wants_kind(EventKind::Candle) {
            for interval in Interval::STORED {
                let code = interval as i16;
                if !filter.wants_interval(i32::from(code)) {
                    continue;
                }
                let rows = store
                    .candles(&CandleQuery {
                        symbol: symbol.clone(),
                        interval_code: code,
                        start_us: Some(from_us),
                        end_us: None,
                        after_us: None,
                        descending: false,
                        limit: MAX_HISTORY as i64,
                    })
                    .await
                    .map_err(unavailable)?;
                // Only closed bars are events (as on the bus).
                out.extend(rows.iter().filter(|c| c.closed).map(|c| MarketEvent {
                    event_id: events::candle_id(c),
                    published_time_us: 0,
                    payload: Some(Payload::Candle(events::candle_message(c))),
                }));
            }
        }
    }
    if filter.wants_kind(EventKind::Signal) {
        let rows = store
            .signals(&SignalQuery {
                symbols: filter.symbols.iter().cloned().collect(),
                start_us: Some(from_us),
                ascending: true,
                limit: MAX_HISTORY as i64,
                ..SignalQuery::default()
            })
            .await
            .map_err(unavailable)?;
        for row in rows {
            if !filter.wants_interval(i32::from(row.interval_code)) {
                continue;
            }
            if let Ok(signal) = tickmesh_proto::v1::Signal::decode(row.body.as_slice()) {
                out.push(events::signal_event(signal, 0));
            }
        }
    }
    out.sort_by_key(event_time);
    out.truncate(MAX_HISTORY);
    Ok(out)
}

type Item = Result<StreamMarketDataResponse, Status>;

/// The stream of one subscriber: stored events from `resume_from_time_us` (if set), then live
/// ones, with no gap and no duplicate at the seam (live events are buffered from before the
/// history is read, and events already sent from history are dropped).
pub fn stream(
    live: &Live,
    store: Arc<Store>,
    request: StreamMarketDataRequest,
    shutdown: &Shutdown,
) -> ReceiverStream<Item> {
    // Subscribing before reading history is what closes the gap.
    let mut rx = live.tx.subscribe();
    let (out, stream) = mpsc::channel::<Item>(256);
    let shutdown = shutdown.clone();
    live.active.inc();
    let open = Open(live.active.clone());
    tokio::spawn(async move {
        let _open = open;
        let filter = Filter::of(&request);
        let mut sent_ids: HashSet<String> = HashSet::new();
        let mut recent: VecDeque<String> = VecDeque::new();
        if request.resume_from_time_us > 0 {
            let events = match history(&store, &filter, request.resume_from_time_us).await {
                Ok(events) => events,
                Err(status) => {
                    let _ = out.send(Err(status)).await;
                    return;
                }
            };
            for event in events {
                sent_ids.insert(event.event_id.clone());
                let item = Ok(StreamMarketDataResponse {
                    event: Some(event),
                    historical: true,
                });
                if out.send(item).await.is_err() {
                    return;
                }
            }
        }
        let mut last_sent: Option<(String, i64)> = None;
        loop {
            let event = tokio::select! {
                () = shutdown.wait() => return, // the stream ends with OK
                () = out.closed() => return,    // the subscriber went away
                event = rx.recv() => event,
            };
            match event {
                Ok(event) => {
                    // Events from before the resume point are not what was asked for (the bus
                    // may still be delivering writes committed before the stream started).
                    if !filter.matches(&event) || event_time(&event) < request.resume_from_time_us {
                        continue;
                    }
                    // At the seam, an event may be both in the store and on the bus.
                    if !sent_ids.is_empty() && sent_ids.remove(&event.event_id) {
                        continue;
                    }
                    // A re-delivery on the bus carries the same id: drop it too.
                    if recent.contains(&event.event_id) {
                        continue;
                    }
                    recent.push_back(event.event_id.clone());
                    if recent.len() > 1024 {
                        recent.pop_front();
                    }
                    last_sent = Some((event.event_id.clone(), event_time(&event)));
                    let item = Ok(StreamMarketDataResponse {
                        event: Some((*event).clone()),
                        historical: false,
                    });
                    if out.send(item).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let (after, resume) = last_sent
                        .map_or(("the start of the stream".to_owned(), 0), |(id, t)| (id, t));
                    let _ = out
                        .send(Err(Status::resource_exhausted(format!(
                            "subscriber too slow: {missed} events missed after {after}; \
                             resubscribe with resume_from_time_us={resume} to catch up from the store"
                        ))))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    ReceiverStream::new(stream)
}
