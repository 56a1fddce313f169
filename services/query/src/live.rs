//! Live market data: one bus subscription per query process (its own consumer group, so every
//! query pod sees every event) fanned out to the streams of its subscribers through a bounded
//! ring. A subscriber that falls further behind than the ring holds, or whose transport takes
//! nothing for `server.stream_send_timeout`, is told so with RESOURCE_EXHAUSTED and where to
//! resume, instead of buffering without bound or holding its server task forever.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tickmesh_bus::Bus;

use crate::latest::{self, Check, LatestPrices};
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
/// Messages queued for one subscriber's transport (beyond what HTTP/2 buffers).
const OUTBOX_PER_STREAM: usize = 256;
/// How long a send may wait for the transport before the stream stops counting as active.
const STALL_GRACE: Duration = Duration::from_secs(1);
/// Most deliveries per bus read.
const READ_BATCH: usize = 1024;
/// How long one bus read waits for events.
const READ_WAIT: Duration = Duration::from_millis(250);
/// Longest wait between attempts to subscribe to the bus.
const SUBSCRIBE_BACKOFF: Duration = Duration::from_secs(5);

/// The fan-out of live events in this process.
#[derive(Debug, Clone)]
pub struct Live {
    tx: broadcast::Sender<Arc<MarketEvent>>,
    active: prometheus_client::metrics::gauge::Gauge,
    /// Events sent to subscribers (`tickmesh_query_events_delivered_total`).
    delivered: prometheus_client::metrics::counter::Counter,
    /// Streams cut because the subscriber was too slow, by reason (`stalled`, `lagged`).
    cut: prometheus_client::metrics::family::Family<
        CutLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    latest: Arc<LatestPrices>,
}

/// Counts a stream in the autoscaling gauge while it makes progress: from its start to its
/// end, except while a send has waited longer than [`STALL_GRACE`] for the transport.
struct Active {
    gauge: prometheus_client::metrics::gauge::Gauge,
    counted: bool,
}

impl Active {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self {
            gauge,
            counted: true,
        }
    }

    fn set(&mut self, counted: bool) {
        match (self.counted, counted) {
            (false, true) => self.gauge.inc(),
            (true, false) => self.gauge.dec(),
            _ => return,
        };
        self.counted = counted;
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.set(false);
    }
}

impl Live {
    /// Subscribes to `bus` in a group of this process's own and fans its events out; keeps the
    /// latest-price tier current and checks `store`'s outbox for what the bus has not brought yet.
    pub fn spawn(
        bus: Bus,
        store: Arc<Store>,
        metrics: &tickmesh_mesh::Metrics,
        shutdown: &Shutdown,
    ) -> Live {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let latest = Arc::new(LatestPrices::default());
        let delivered = prometheus_client::metrics::counter::Counter::default();
        let cut: prometheus_client::metrics::family::Family<CutLabels, _> = Default::default();
        // Both series at 0 from the start: the alert on cut streams reads their increase.
        for reason in ["stalled", "lagged"] {
            let _ = cut.get_or_create(&CutLabels { reason });
        }
        metrics.register(|registry| {
            registry.register(
                "tickmesh_query_events_delivered",
                "Market events sent to StreamMarketData subscribers (stored ones on resume included)",
                delivered.clone(),
            );
            registry.register(
                "tickmesh_query_slow_subscribers_cut",
                "StreamMarketData streams ended with RESOURCE_EXHAUSTED because the subscriber was \
                 too slow: stalled (took nothing for server.stream_send_timeout) or lagged (fell \
                 further behind the live feed than its buffer)",
                cut.clone(),
            );
        });
        let live = Live {
            tx: tx.clone(),
            delivered,
            cut,
            active: metrics.active_streams(),
            latest: latest.clone(),
        };
        tokio::spawn(check_outbox(store, latest.clone(), shutdown.clone()));
        tokio::spawn(fan_out(bus, tx, latest, shutdown.clone()));
        live
    }
}

/// Reads the bus until shutdown, handing every event to the streams and ticks to the tier.
async fn fan_out(
    bus: Bus,
    tx: broadcast::Sender<Arc<MarketEvent>>,
    latest: Arc<LatestPrices>,
    shutdown: Shutdown,
) {
    let group = format!("query-{}-{:x}", std::process::id(), now_us());
    let mut backoff = Duration::from_millis(100);
    let mut subscription = loop {
        let attempt = tokio::select! {
            () = shutdown.wait() => return,
            attempt = bus.subscribe(&group, "fanout") => attempt,
        };
        match attempt {
            Ok(s) => break s,
            Err(e) => {
                warn!(
                    group,
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    "live streams wait: cannot subscribe to the bus"
                );
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(SUBSCRIBE_BACKOFF);
            }
        }
    };
    info!(group, "live market data from the bus");
    latest.subscribed(true);
    loop {
        let started = Instant::now();
        let batch = tokio::select! {
            () = shutdown.wait() => {
                latest.subscribed(false);
                // The group is this process's alone: nobody reads it again.
                if let Err(e) = subscription.leave().await {
                    warn!(group, error = %e, "live group not removed from the bus");
                }
                return;
            }
            batch = subscription.next_batch(READ_BATCH, READ_WAIT) => batch,
        };
        let deliveries = match batch {
            Ok(d) => d,
            Err(e) => {
                latest.bus_read(started, Err(()));
                warn!(error = %e, "reading the bus failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // Before the events: the first read after a gap restarts the wait for the gap's events.
        latest.bus_read(started, Ok(deliveries.len() >= READ_BATCH));
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
}

/// Every [`latest::CHECK_EVERY`], tells the tier what waits in the outbox (see
/// [`crate::latest`]); logs when the tier falls behind and when it is current again.
async fn check_outbox(store: Arc<Store>, latest: Arc<LatestPrices>, shutdown: Shutdown) {
    let mut every = tokio::time::interval(latest::CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut behind: Option<Check> = None;
    let mut was_trusted = false;
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = every.tick() => {}
        }
        let started = Instant::now();
        // A check that takes longer than it may vouch for is no use; the tier steps aside.
        let backlog = match tokio::time::timeout(latest::CHECK_VALID, store.outbox_backlog()).await
        {
            Ok(Ok(backlog)) => Ok(backlog),
            Ok(Err(e)) => {
                if behind != Some(Check::Failed) {
                    warn!(error = %e, "outbox not readable: latest prices come from the store");
                }
                Err(())
            }
            Err(_) => Err(()),
        };
        let check = latest.outbox_checked(started, backlog);
        match check {
            Check::Backlog(lowest) if behind.is_none() => warn!(
                lowest_queued_id = lowest,
                bound_ms = latest::BACKLOG_BOUND.as_millis() as u64,
                "outbox events wait longer than the bound: latest prices come from the store"
            ),
            _ => {}
        }
        behind = (check != Check::Clean).then_some(check);
        let trusted = latest.trusted();
        if trusted != was_trusted {
            info!(
                trusted,
                "latest-price tier {}",
                if trusted { "current" } else { "behind" }
            );
            was_trusted = trusted;
        }
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

/// Why a subscriber's stream stops.
enum Stop {
    /// The subscriber went away, or the service shuts down: nothing more to say.
    Gone,
    /// The transport took nothing for the send timeout.
    Stalled,
}

/// Labels of a cut stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct CutLabels {
    reason: &'static str,
}

/// Sends to one subscriber: each message waits at most `timeout` for room, and the stream
/// leaves the active gauge while a message has waited longer than [`STALL_GRACE`].
struct Sender {
    out: mpsc::Sender<Item>,
    timeout: Duration,
    active: Active,
    delivered: prometheus_client::metrics::counter::Counter,
}

impl Sender {
    async fn send(&mut self, item: Item, shutdown: &Shutdown) -> Result<(), Stop> {
        // The common case, room in the queue, without a timer.
        let item = match self.out.try_send(item) {
            Ok(()) => {
                self.delivered.inc();
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Gone),
            Err(mpsc::error::TrySendError::Full(item)) => item,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let grace = tokio::time::Instant::now() + STALL_GRACE.min(self.timeout);
        let send = self.out.send(item);
        tokio::pin!(send);
        let stall = tokio::time::sleep_until(grace);
        tokio::pin!(stall);
        let mut in_grace = true;
        let sent = loop {
            tokio::select! {
                sent = &mut send => break sent,
                () = shutdown.wait() => return Err(Stop::Gone),
                () = &mut stall => {
                    if !in_grace {
                        return Err(Stop::Stalled);
                    }
                    in_grace = false;
                    self.active.set(false);
                    stall.as_mut().reset(deadline);
                }
            }
        };
        self.active.set(true);
        sent.map_err(|_| Stop::Gone)?;
        self.delivered.inc();
        Ok(())
    }
}

/// The resume point of a stream: the last event it was sent, as `(event id, its time)`.
fn resume_point(last_sent: Option<&(String, i64)>) -> (String, i64) {
    last_sent.map_or(("the start of the stream".to_owned(), 0), |(id, t)| {
        (format!("event {id}"), *t)
    })
}

/// The status of a subscriber whose transport took nothing for `timeout`.
fn stalled(timeout: Duration, last_sent: Option<&(String, i64)>) -> Status {
    let (after, resume) = resume_point(last_sent);
    Status::resource_exhausted(format!(
        "subscriber stopped reading: nothing was taken for {timeout:?} \
         (server.stream_send_timeout), so the events after {after} are missed; \
         resubscribe with resume_from_time_us={resume} to catch up from the store"
    ))
}

/// The status of a subscriber that fell `lag` events of the whole bus (every symbol, not only
/// its own) behind.
fn lagged(lag: u64, last_sent: Option<&(String, i64)>) -> Status {
    let (after, resume) = resume_point(last_sent);
    Status::resource_exhausted(format!(
        "subscriber too slow: it fell more than {SUBSCRIBER_BUFFER} events behind the live feed \
         ({lag} events of all symbols when noticed, not a count of this stream's), so events \
         after {after} are missed; resubscribe with resume_from_time_us={resume} to catch up \
         from the store"
    ))
}

/// The stream of one subscriber: stored events from `resume_from_time_us` (if set), then live
/// ones, with no gap and no duplicate at the seam (live events are buffered from before the
/// history is read, and events already sent from history are dropped). A message the transport
/// does not take within `send_timeout` ends the stream with RESOURCE_EXHAUSTED, after what was
/// queued before it.
pub fn stream(
    live: &Live,
    store: Arc<Store>,
    request: StreamMarketDataRequest,
    send_timeout: Duration,
    shutdown: &Shutdown,
) -> ReceiverStream<Item> {
    // Subscribing before reading history is what closes the gap.
    let mut rx = live.tx.subscribe();
    let (out, stream) = mpsc::channel::<Item>(OUTBOX_PER_STREAM);
    let shutdown = shutdown.clone();
    let active = Active::new(live.active.clone());
    let (delivered, cut) = (live.delivered.clone(), live.cut.clone());
    let cut_for = move |reason: &'static str| cut.get_or_create(&CutLabels { reason }).inc();
    tokio::spawn(async move {
        // The slot of the status that ends the stream, kept free whatever the transport does.
        let Ok(last_word) = out.clone().try_reserve_owned() else {
            return;
        };
        let mut sender = Sender {
            out,
            timeout: send_timeout,
            active,
            delivered,
        };
        let filter = Filter::of(&request);
        let mut sent_ids: HashSet<String> = HashSet::new();
        let mut recent: VecDeque<String> = VecDeque::new();
        let mut last_sent: Option<(String, i64)> = None;
        if request.resume_from_time_us > 0 {
            let events = match history(&store, &filter, request.resume_from_time_us).await {
                Ok(events) => events,
                Err(status) => {
                    last_word.send(Err(status));
                    return;
                }
            };
            for event in events {
                sent_ids.insert(event.event_id.clone());
                let sent = (event.event_id.clone(), event_time(&event));
                let item = Ok(StreamMarketDataResponse {
                    event: Some(event),
                    historical: true,
                });
                match sender.send(item, &shutdown).await {
                    Ok(()) => last_sent = Some(sent),
                    Err(Stop::Gone) => return,
                    Err(Stop::Stalled) => {
                        warn!(
                            reason = "stalled",
                            "stream cut: the subscriber stopped reading"
                        );
                        cut_for("stalled");
                        last_word.send(Err(stalled(send_timeout, last_sent.as_ref())));
                        return;
                    }
                }
            }
        }
        let status = loop {
            let event = tokio::select! {
                () = shutdown.wait() => return, // the stream ends with OK
                () = sender.out.closed() => return,    // the subscriber went away
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
                    let sent = (event.event_id.clone(), event_time(&event));
                    let item = Ok(StreamMarketDataResponse {
                        event: Some((*event).clone()),
                        historical: false,
                    });
                    match sender.send(item, &shutdown).await {
                        Ok(()) => last_sent = Some(sent),
                        Err(Stop::Gone) => return,
                        Err(Stop::Stalled) => {
                            warn!(
                                reason = "stalled",
                                "stream cut: the subscriber stopped reading"
                            );
                            cut_for("stalled");
                            break stalled(send_timeout, last_sent.as_ref());
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(lag)) => {
                    warn!(
                        reason = "lagged",
                        lag, "stream cut: the subscriber fell behind"
                    );
                    cut_for("lagged");
                    break lagged(lag, last_sent.as_ref());
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        };
        // The stream leaves the gauge now; the status goes out after what was queued.
        drop(sender);
        last_word.send(Err(status));
    });
    ReceiverStream::new(stream)
}
