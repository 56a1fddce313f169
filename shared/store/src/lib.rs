//! The tickmesh store: one diesel schema and one set of repositories over two backends,
//! PostgreSQL through diesel-async + bb8 (production; separate write and read pools) and SQLite
//! through diesel-async's sync connection wrapper in WAL mode (the embedded default).
//!
//! Writes are idempotent (rows are keyed, a repeated row changes nothing), batched into
//! multi-row statements inside one transaction, queue their bus events in the outbox in that
//! same transaction, and are answered only after commit. Migrations are embedded in the binary.
//!
//! Layout: `plan` decides what a write does (pure functions); one module per table
//! (`ticks`, `candles`, `signals`, `outbox`, `prices`) holds its statements, raw SQL in `.sql`
//! files beside it; `postgres.rs` and `sqlite.rs` are the executors that run a write's
//! statements in one transaction on their backend.

#[macro_use]
mod backend;
mod candles;
mod error;
pub mod events;
pub mod fresh_reads;
mod keyset;
pub mod models;
mod outbox;
mod plan;
mod postgres;
mod prices;
pub mod resample;
mod revisions;
pub mod rollup;
pub mod schema;
mod signals;
mod sqlite;
mod ticks;
pub mod time;

use std::future::Future;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::backend::Backend;
pub use crate::candles::CandleQuery;
pub use crate::error::StoreError;
pub use crate::models::{CandleRow, OutboxRow, SignalRow, TickRow};
pub use crate::outbox::RelayLease;
pub use crate::signals::{SignalKey, SignalQuery};

/// What a tick write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickWrite {
    /// Ticks newly stored (the rest of the valid ones were stored before).
    pub stored: u64,
    /// Candle events queued: bars that closed, and closed bars a late tick corrected.
    pub candle_events: u64,
}

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// How to reach the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `postgres://user@host:port/db` or `sqlite:PATH`.
    pub url: String,
    /// PostgreSQL read replica for queries (default: `url`).
    pub read_url: Option<String>,
    /// Connections per pool.
    pub pool_size: u32,
    /// How long a caller waits for a connection before the store counts as unavailable.
    pub connect_timeout: Duration,
    /// Ticks per INSERT statement (`ingestion.write_batch_rows`), capped by what one
    /// statement can bind on the backend.
    pub write_batch_rows: usize,
}

impl StoreOptions {
    /// Options for `url` with default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            read_url: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(3),
            write_batch_rows: 5_000,
        }
    }
}

/// Which database a store writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// The store: repositories of ticks, candles and signals.
pub struct Store {
    backend: Backend,
    /// Ticks per INSERT statement.
    tick_rows: usize,
    /// Time of each call, by operation (`tickmesh_store_query_duration_seconds`).
    durations: Family<OperationLabels, Histogram>,
    /// Revision reads shared by the callers that ask for one pair at once.
    revisions: fresh_reads::FreshReads<(String, i16), i64, std::sync::Arc<StoreError>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// Latency buckets in seconds, from 100 µs to 10 s.
const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// The state of one connection pool, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolState {
    /// `write` and, with a read URL, `read` (PostgreSQL); `sqlite`.
    pub pool: &'static str,
    /// Connections open.
    pub connections: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The pool's size.
    pub max: u32,
    /// Callers waiting for a connection.
    pub waiting: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.kind())
            .finish()
    }
}

impl Store {
    /// Connects, applies pending migrations and, on PostgreSQL, creates the partitions of the
    /// current and the next two months.
    pub async fn open(options: &StoreOptions) -> Result<Store, StoreError> {
        let backend =
            if options.url.starts_with("postgres://") || options.url.starts_with("postgresql://") {
                Backend::Postgres(postgres::Pg::open(options).await?)
            } else if let Some(path) = sqlite::path_of(&options.url) {
                Backend::Sqlite(sqlite::Lite::open(path, options).await?)
            } else {
                let scheme = options.url.split(':').next().unwrap_or_default();
                return Err(StoreError::UnsupportedUrl(scheme.to_owned()));
            };
        let cap = match backend {
            Backend::Postgres(_) => ticks::ROWS_PER_ARRAY_INSERT,
            Backend::Sqlite(_) => ticks::ROWS_PER_STATEMENT,
        };
        Ok(Store {
            backend,
            tick_rows: options.write_batch_rows.clamp(1, cap),
            durations: Family::new_with_constructor(|| {
                Histogram::new(DURATION_BUCKETS.iter().copied())
            }),
            revisions: Default::default(),
        })
    }

    /// Registers `tickmesh_store_query_duration_seconds{operation}` (the pools' state is
    /// read on each scrape through [`Store::pool_states`]).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_with_unit(
            "tickmesh_store_query_duration",
            "Time of a store operation (one transaction or one read, connection checkout \
             included), by operation",
            prometheus_client::registry::Unit::Seconds,
            self.durations.clone(),
        );
    }

    /// The state of each connection pool now.
    pub fn pool_states(&self) -> Vec<PoolState> {
        fn state<M: bb8::ManageConnection>(
            pool: &'static str,
            p: &bb8::Pool<M>,
            max: u32,
        ) -> PoolState {
            let s = p.state();
            PoolState {
                pool,
                connections: s.connections,
                idle: s.idle_connections,
                max,
                waiting: s.statistics.pending_gets(),
            }
        }
        match &self.backend {
            // Without a read URL both are one pool: shown once, as `write`.
            Backend::Postgres(pg) if pg.separate_read => vec![
                state("read", &pg.read, pg.pool_size),
                state("write", &pg.write, pg.pool_size),
            ],
            Backend::Postgres(pg) => vec![state("write", &pg.write, pg.pool_size)],
            Backend::Sqlite(lite) => vec![state("sqlite", &lite.pool, lite.pool_size)],
        }
    }

    /// Runs `call`, its time recorded under `operation`.
    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let result = call.await;
        self.durations
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// The backend this store writes to.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Postgres(_) => BackendKind::Postgres,
            Backend::Sqlite(_) => BackendKind::Sqlite,
        }
    }

    /// Stores ticks, rolls the new ones up into candles and queues their events, all in one
    /// transaction; ticks already stored are left as they are and produce nothing.
    pub async fn insert_ticks(&self, rows: Vec<TickRow>) -> Result<TickWrite, StoreError> {
        if rows.is_empty() {
            return Ok(TickWrite::default());
        }
        self.timed("insert_ticks", async {
            match &self.backend {
                Backend::Postgres(pg) => pg.write_ticks(rows, self.tick_rows, now_us()).await,
                Backend::Sqlite(lite) => lite.write_ticks(rows, self.tick_rows, now_us()).await,
            }
        })
        .await
    }

    /// Stores candles from a candle feed in one transaction and queues the events of the new
    /// or changed closed ones. A candle already stored under the same key with the same values
    /// is left as it is; with other values it is a correction and replaces the stored one.
    /// Returns the number of rows newly stored or corrected.
    pub async fn insert_candles(&self, rows: Vec<CandleRow>) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.timed("insert_candles", async {
            match &self.backend {
                Backend::Postgres(pg) => pg.write_candles(&rows, now_us()).await,
                Backend::Sqlite(lite) => lite.write_candles(rows, now_us()).await,
            }
        })
        .await
    }

    /// Stores signals and queues the bus event of each newly stored one (see
    /// [`events::encode_signals`]) in one transaction; a signal already stored under the same
    /// key is left as it is and queues nothing. Returns the number of rows newly stored.
    pub async fn insert_signals(&self, rows: Vec<SignalRow>) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.timed("insert_signals", async {
            match &self.backend {
                Backend::Postgres(pg) => pg.write_signals(&rows, now_us()).await,
                Backend::Sqlite(lite) => lite.write_signals(rows, now_us()).await,
            }
        })
        .await
    }

    /// Tries to become the one relay of this store's outbox. On PostgreSQL this takes a
    /// session advisory lock on a dedicated connection, held as long as the lease lives (or
    /// until the connection dies), so several ingestion pods publish the queue once, not once
    /// each; an SQLite store has a single process and always grants the lease.
    pub async fn relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        outbox::lease(&self.backend).await
    }

    /// Up to `limit` queued events, oldest first.
    pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        self.timed("outbox_pending", outbox::pending(&self.backend, limit))
            .await
    }

    /// The lowest and the highest id of the queued events (on PostgreSQL from the primary),
    /// `None` when nothing waits: how far publishing is behind the writes.
    pub async fn outbox_backlog(&self) -> Result<Option<(i64, i64)>, StoreError> {
        outbox::backlog(&self.backend).await
    }

    /// How many events are queued and when the oldest of them was written (microseconds
    /// since the epoch, UTC; `None` when nothing waits), for metrics.
    pub async fn outbox_stats(&self) -> Result<(i64, Option<i64>), StoreError> {
        outbox::stats(&self.backend).await
    }

    /// Drops events that were published.
    pub async fn outbox_remove(&self, ids: &[i64]) -> Result<u64, StoreError> {
        self.timed("outbox_remove", outbox::remove(&self.backend, ids))
            .await
    }

    /// The revision of (symbol, interval): a counter that every write changing one of the
    /// pair's candles moves forward in its own transaction (0: never written). Something
    /// derived from those candles at revision `r` is current while this still says `r`.
    /// The answer comes from a read that started after this call, shared with the other
    /// callers of the pair that wait for the same read ([`fresh_reads`]): a crowd of readers
    /// costs one statement at a time, and still sees every write acknowledged before it asked.
    pub async fn candle_revision(
        &self,
        symbol: &str,
        interval_code: i16,
    ) -> Result<i64, StoreError> {
        let read = || async {
            self.timed(
                "candle_revision",
                revisions::read(&self.backend, symbol, interval_code),
            )
            .await
            .map_err(std::sync::Arc::new)
        };
        self.revisions
            .get(&(symbol.to_owned(), interval_code), read)
            .await
            .map_err(|e| std::sync::Arc::try_unwrap(e).unwrap_or_else(StoreError::Shared))
    }

    /// The newest `limit` candles of (symbol, interval), newest first, with the pair's revision
    /// read before them: the rows hold at least every change up to that revision, so whatever
    /// is kept of them is current while `candle_revision` still says it.
    pub async fn candle_history(
        &self,
        symbol: &str,
        interval_code: i16,
        limit: i64,
    ) -> Result<(i64, Vec<CandleRow>), StoreError> {
        self.timed("candle_history", async {
            let revision = revisions::read(&self.backend, symbol, interval_code).await?;
            let rows = candles::newest(&self.backend, symbol, interval_code, limit).await?;
            Ok((revision, rows))
        })
        .await
    }

    /// One keyset page of candles.
    pub async fn candles(&self, q: &CandleQuery) -> Result<Vec<CandleRow>, StoreError> {
        self.timed("candles_page", candles::page(&self.backend, q))
            .await
    }

    /// One keyset page of signals.
    pub async fn signals(&self, q: &SignalQuery) -> Result<Vec<SignalRow>, StoreError> {
        self.timed("signals_page", signals::page(&self.backend, q))
            .await
    }

    /// Ticks of one symbol in [start, end), oldest first, at most `limit`.
    pub async fn ticks(
        &self,
        symbol: &str,
        start_us: i64,
        end_us: i64,
        limit: i64,
    ) -> Result<Vec<TickRow>, StoreError> {
        self.timed(
            "ticks_range",
            ticks::range(&self.backend, symbol, start_us, end_us, limit),
        )
        .await
    }

    /// The newest tick of a symbol, if any.
    pub async fn latest_tick(&self, symbol: &str) -> Result<Option<TickRow>, StoreError> {
        self.timed("latest_tick", ticks::latest(&self.backend, symbol))
            .await
    }

    /// The last traded price of a symbol as `(price, time_us, size)`: its newest tick, else the
    /// close of the newest bar of the finest interval that has one (a candle feed; size 0, and
    /// the time of a closed bar is its end).
    pub async fn latest_price(&self, symbol: &str) -> Result<Option<(f64, i64, f64)>, StoreError> {
        self.timed("latest_price", prices::latest(&self.backend, symbol))
            .await
    }

    /// Number of ticks of a symbol.
    pub async fn count_ticks(&self, symbol: &str) -> Result<i64, StoreError> {
        ticks::count(&self.backend, symbol).await
    }

    /// The query plan of `sql` as text (PostgreSQL `EXPLAIN` in a read-only transaction,
    /// SQLite `EXPLAIN QUERY PLAN`), so tests can check that the main queries use an index.
    pub async fn explain(&self, sql: &str) -> Result<String, StoreError> {
        let lines = match &self.backend {
            Backend::Postgres(pg) => pg.explain(sql).await?,
            Backend::Sqlite(lite) => lite.explain(sql).await?,
        };
        Ok(lines.join("\n"))
    }
}
