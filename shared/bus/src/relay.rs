//! The outbox relay: publishes the events that writes committed to the store's outbox (ticks
//! and candles by ingestion, signals by computation), then removes them. A crash or a bus
//! outage between commit and publish loses nothing: the events wait in the outbox and go out
//! when the bus is back (at least once; consumers drop duplicates by event id). One relay runs
//! per process that writes; across processes the store's relay lease lets one publish at a time.

use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use tickmesh_store::{RelayLease, Store};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::Bus;

/// Outbox rows published per round trip.
const BATCH: i64 = 64;
/// How often the outbox is looked at when no write wakes the relay.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Longest wait between attempts while the bus or the store is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a standby process tries to take the relay lease.
const LEASE_RETRY: Duration = Duration::from_secs(2);
/// Longest one round of publishing may take (a full in-process bus waits for consumers); a
/// round cut short is retried, and at shutdown what is left stays in the outbox.
const ROUND_LIMIT: Duration = Duration::from_secs(5);

/// Handle of a running relay.
#[derive(Debug, Clone)]
pub struct Relay {
    wake: Arc<Notify>,
}

impl Relay {
    /// Starts relaying from `store` to `bus` until `stop` completes, then goes on until it has
    /// seen the outbox empty (retrying while the store or the bus fails): the caller bounds that
    /// by aborting the task.
    pub fn spawn(
        store: Arc<Store>,
        bus: Bus,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> (Relay, JoinHandle<()>) {
        let wake = Arc::new(Notify::new());
        let (stopped, stopping) = watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            let _ = stopped.send(true);
        });
        let task = tokio::spawn(run(store, bus, wake.clone(), stopping));
        (Relay { wake }, task)
    }

    /// Tells the relay that a write just queued events.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

async fn run(store: Arc<Store>, bus: Bus, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::ZERO;
    let mut lease: Option<RelayLease> = None;
    let mut last_try: Option<std::time::Instant> = None;
    // When the store (or the bus) first failed in the current outage; the warning goes out
    // once per outage, "recovered" only after the store answered again.
    let mut outage: Option<std::time::Instant> = None;
    loop {
        let stopping = *shutdown.borrow_and_update();
        // Whether the store answered a read in this round.
        let mut store_answered = false;
        let mut failure: Option<String> = None;
        // Only the holder of the store's relay lease publishes; the others stand by and take
        // over when it goes away.
        match &mut lease {
            Some(held) => {
                if !held.still_held().await {
                    warn!("outbox relay lease lost");
                    lease = None;
                }
            }
            None if last_try.is_some_and(|t| t.elapsed() < LEASE_RETRY) => {}
            None => match store.relay_lease().await {
                Ok(Some(granted)) => {
                    store_answered = true;
                    info!("this process relays the outbox");
                    lease = Some(granted);
                }
                Ok(None) => {
                    store_answered = true;
                    last_try = Some(std::time::Instant::now());
                }
                Err(error) => {
                    last_try = Some(std::time::Instant::now());
                    failure = Some(format!("relay lease: {error}"));
                }
            },
        }
        if lease.is_some() {
            match tokio::time::timeout(ROUND_LIMIT, drain(&store, &bus))
                .await
                .unwrap_or_else(|_| Err("publishing took too long".into()))
            {
                Ok(published) => {
                    store_answered = true;
                    if published > 0 {
                        debug!(published, "outbox events published");
                    }
                }
                Err(error) => failure = Some(error),
            }
        }
        match failure {
            None => {
                if store_answered && let Some(since) = outage.take() {
                    info!(
                        outage_ms = since.elapsed().as_millis() as u64,
                        "outbox relay recovered"
                    );
                }
                if store_answered || outage.is_none() {
                    backoff = Duration::ZERO;
                }
            }
            Some(error) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                if outage.is_none() {
                    outage = Some(std::time::Instant::now());
                    warn!(
                        error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "outbox relay cannot reach the store or the bus; events stay queued"
                    );
                } else {
                    debug!(
                        error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "outbox relay still failing"
                    );
                }
            }
        }
        // After the stop, the relay keeps going until it has seen the outbox empty (or it does
        // not hold the lease, so another process publishes); whoever stopped it bounds how long.
        if stopping && outage.is_none() {
            break;
        }
        tokio::select! {
            () = wake.notified(), if backoff.is_zero() => {}
            () = tokio::time::sleep(if backoff.is_zero() { IDLE_POLL } else { backoff }) => {}
            _ = shutdown.changed(), if !stopping => {}
        }
    }
    info!("outbox relay stopped");
}

/// Publishes everything queued; returns how many outbox rows went out.
async fn drain(store: &Store, bus: &Bus) -> Result<usize, String> {
    let mut published = 0;
    loop {
        let rows = store
            .outbox_pending(BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Ok(published);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        bus.publish(rows.into_iter().map(|r| r.body).collect())
            .await
            .map_err(|e| e.to_string())?;
        // Published but not removed (a crash right here) means published again later: at
        // least once, never lost.
        store.outbox_remove(&ids).await.map_err(|e| e.to_string())?;
        published += ids.len();
    }
}
