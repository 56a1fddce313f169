//! The metrics of what a process holds rather than what it serves: the store's pools, the
//! outbox, the bus. Pools are read on each scrape; the outbox and the bus's lag need a round
//! trip, so a sampler task reads them every [`SAMPLE_EVERY`] and the scrape shows the last
//! sample (the outbox's age keeps growing from the last oldest entry seen while the store does
//! not answer, so an outage shows as an old outbox, not as a frozen one).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tickmesh_bus::Bus;
use tickmesh_mesh::Shutdown;
use tickmesh_store::Store;

/// How often the outbox and the bus's consumer groups are looked at.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// What the sampler saw last.
#[derive(Debug, Default)]
pub struct Sampled {
    inner: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Entries queued and the oldest one's write time (µs); `None` until a relaying process
    /// sampled the outbox.
    outbox: Option<(i64, Option<i64>)>,
    /// Entries each consumer group has not read.
    lags: Vec<(String, u64)>,
}

impl Sampled {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Registers the store's, the outbox's and the bus's families in `metrics`.
pub fn register(
    metrics: &tickmesh_mesh::Metrics,
    store: &Arc<Store>,
    bus: &Bus,
    sampled: &Arc<Sampled>,
) {
    metrics.register(|registry| store.register_metrics(registry));
    let (store, stats, sampled) = (store.clone(), bus.stats(), sampled.clone());
    metrics.add_text_source(Arc::new(move || {
        let mut out = String::new();
        let pools = store.pool_states();
        let mut pool_family = |name: &str, help: &str, value: &dyn Fn(&tickmesh_store::PoolState) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} gauge");
            for p in &pools {
                let _ = writeln!(out, "{name}{{pool=\"{}\"}} {}", p.pool, value(p));
            }
        };
        pool_family("tickmesh_store_pool_connections", "Connections the store's pool has open", &|p| p.connections.into());
        pool_family("tickmesh_store_pool_idle_connections", "Open connections of the pool not in use", &|p| p.idle.into());
        pool_family("tickmesh_store_pool_max_connections", "The pool's size (store.pool_size)", &|p| p.max.into());
        pool_family("tickmesh_store_pool_waiting", "Callers waiting for a connection of the pool", &|p| p.waiting);
        let _ = writeln!(
            out,
            "# HELP tickmesh_bus_redeliveries Bus deliveries this process's consumers claimed again after bus.claim_idle (a consumer died or was slow), by consumer group.\n# TYPE tickmesh_bus_redeliveries counter"
        );
        for (group, n) in stats.redeliveries() {
            let _ = writeln!(out, "tickmesh_bus_redeliveries_total{{group=\"{group}\"}} {n}");
        }
        let seen = sampled.seen();
        let _ = writeln!(
            out,
            "# HELP tickmesh_bus_consumer_lag Bus entries a consumer group has not been handed yet, sampled every {} s.\n# TYPE tickmesh_bus_consumer_lag gauge",
            SAMPLE_EVERY.as_secs()
        );
        for (group, lag) in &seen.lags {
            let _ = writeln!(out, "tickmesh_bus_consumer_lag{{group=\"{group}\"}} {lag}");
        }
        if let Some((queued, oldest)) = seen.outbox {
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            let age = oldest.map_or(0.0, |us| (now_us - us).max(0) as f64 / 1e6);
            let _ = writeln!(
                out,
                "# HELP tickmesh_outbox_backlog Events committed to the outbox and not yet published on the bus.\n# TYPE tickmesh_outbox_backlog gauge\ntickmesh_outbox_backlog {queued}\n\
                 # HELP tickmesh_outbox_oldest_age_seconds Age of the oldest event waiting in the outbox (0 when it is empty).\n# TYPE tickmesh_outbox_oldest_age_seconds gauge\ntickmesh_outbox_oldest_age_seconds {age}"
            );
        }
        out
    }));
}

/// Samples the bus's consumer lag (and the outbox, when `outbox`: this process relays it)
/// until `shutdown`.
pub async fn sample(
    store: Arc<Store>,
    bus: Bus,
    sampled: Arc<Sampled>,
    outbox: bool,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        // A failed read leaves the last sample (a lag or backlog does not drop to zero because
        // Redis or the store did not answer).
        if let Ok(Ok(lags)) = tokio::time::timeout(SAMPLE_EVERY, bus.group_lags()).await {
            sampled.seen().lags = lags;
        }
        if outbox {
            // When the store does not answer, the events seen stay queued, and age.
            if let Ok(Ok(stats)) = tokio::time::timeout(SAMPLE_EVERY, store.outbox_stats()).await {
                sampled.seen().outbox = Some(stats);
            }
        }
    }
}
