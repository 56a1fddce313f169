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

use std::time::Duration;

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
        })
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
        match &self.backend {
            Backend::Postgres(pg) => pg.write_ticks(rows, self.tick_rows, now_us()).await,
            Backend::Sqlite(lite) => lite.write_ticks(rows, self.tick_rows, now_us()).await,
        }
    }

    /// Stores candles from a candle feed in one transaction and queues the events of the new
    /// or changed closed ones. A candle already stored under the same key with the same values
    /// is left as it is; with other values it is a correction and replaces the stored one.
    /// Returns the number of rows newly stored or corrected.
    pub async fn insert_candles(&self, rows: Vec<CandleRow>) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        match &self.backend {
            Backend::Postgres(pg) => pg.write_candles(&rows, now_us()).await,
            Backend::Sqlite(lite) => lite.write_candles(rows, now_us()).await,
        }
    }

    /// Stores signals and queues the bus event of each newly stored one (see
    /// [`events::encode_signals`]) in one transaction; a signal already stored under the same
    /// key is left as it is and queues nothing. Returns the number of rows newly stored.
    pub async fn insert_signals(&self, rows: Vec<SignalRow>) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        match &self.backend {
            Backend::Postgres(pg) => pg.write_signals(&rows, now_us()).await,
            Backend::Sqlite(lite) => lite.write_signals(rows, now_us()).await,
        }
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
        outbox::pending(&self.backend, limit).await
    }

    /// The lowest and the highest id of the queued events (on PostgreSQL from the primary),
    /// `None` when nothing waits: how far publishing is behind the writes.
    pub async fn outbox_backlog(&self) -> Result<Option<(i64, i64)>, StoreError> {
        outbox::backlog(&self.backend).await
    }

    /// Drops events that were published.
    pub async fn outbox_remove(&self, ids: &[i64]) -> Result<u64, StoreError> {
        outbox::remove(&self.backend, ids).await
    }

    /// The revision of (symbol, interval): a counter that every write changing one of the
    /// pair's candles moves forward in its own transaction (0: never written). Something
    /// derived from those candles at revision `r` is current while this still says `r`.
    pub async fn candle_revision(
        &self,
        symbol: &str,
        interval_code: i16,
    ) -> Result<i64, StoreError> {
        revisions::read(&self.backend, symbol, interval_code).await
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
        let revision = revisions::read(&self.backend, symbol, interval_code).await?;
        let rows = candles::newest(&self.backend, symbol, interval_code, limit).await?;
        Ok((revision, rows))
    }

    /// One keyset page of candles.
    pub async fn candles(&self, q: &CandleQuery) -> Result<Vec<CandleRow>, StoreError> {
        candles::page(&self.backend, q).await
    }

    /// One keyset page of signals.
    pub async fn signals(&self, q: &SignalQuery) -> Result<Vec<SignalRow>, StoreError> {
        signals::page(&self.backend, q).await
    }

    /// Ticks of one symbol in [start, end), oldest first, at most `limit`.
    pub async fn ticks(
        &self,
        symbol: &str,
        start_us: i64,
        end_us: i64,
        limit: i64,
    ) -> Result<Vec<TickRow>, StoreError> {
        ticks::range(&self.backend, symbol, start_us, end_us, limit).await
    }

    /// The newest tick of a symbol, if any.
    pub async fn latest_tick(&self, symbol: &str) -> Result<Option<TickRow>, StoreError> {
        ticks::latest(&self.backend, symbol).await
    }

    /// The last traded price of a symbol as `(price, time_us, size)`: its newest tick, else the
    /// close of the newest bar of the finest interval that has one (a candle feed; size 0, and
    /// the time of a closed bar is its end).
    pub async fn latest_price(&self, symbol: &str) -> Result<Option<(f64, i64, f64)>, StoreError> {
        prices::latest(&self.backend, symbol).await
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
