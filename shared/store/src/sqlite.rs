//! The SQLite executor, through diesel-async's sync connection wrapper in WAL mode: one
//! blocking transaction per write (the statements are in the table modules, the decisions in
//! `plan.rs`).

use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{Connection, SqliteConnection};
use diesel_async::RunQueryDsl;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;
use tracing::info;

use std::borrow::Cow;

use crate::{
    CandleRow, SignalRow, StoreError, StoreOptions, TickRow, TickWrite, candles, events, outbox,
    plan, revisions, rollup, signals, ticks,
};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Per-connection settings. FULL sync: a commit that was acknowledged survives a power cut,
/// which the batch sizes make affordable.
const PRAGMAS: [&str; 4] = [
    "PRAGMA busy_timeout = 10000;",
    "PRAGMA journal_mode = WAL;",
    "PRAGMA synchronous = FULL;",
    "PRAGMA foreign_keys = ON;",
];

type Conn = SyncConnectionWrapper<SqliteConnection>;

/// The SQLite executor.
pub(crate) struct Lite {
    pub(crate) pool: Pool<Conn>,
    /// The pool's size.
    pub(crate) pool_size: u32,
    /// The database file (its relay lease is a lock on a file next to it).
    pub(crate) path: PathBuf,
}

#[derive(diesel::QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text)]
    detail: String,
}

/// The file of a `sqlite:PATH` or `sqlite://PATH` URL.
pub(crate) fn path_of(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    (!rest.is_empty()).then(|| PathBuf::from(rest))
}

fn apply_pragmas(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
    PRAGMAS.iter().try_for_each(|p| conn.batch_execute(p))
}

impl Lite {
    pub(crate) async fn open(path: PathBuf, options: &StoreOptions) -> Result<Lite, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let file = path.to_string_lossy().into_owned();
        migrate(&path).await?;

        let mut config = ManagerConfig::<Conn>::default();
        config.custom_setup = Box::new(|url| {
            let url = url.to_owned();
            async move {
                let mut conn = tokio::task::spawn_blocking(move || {
                    let mut conn = SqliteConnection::establish(&url)?;
                    apply_pragmas(&mut conn)
                        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                    Ok::<_, diesel::ConnectionError>(conn)
                })
                .await
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))??;
                conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Unbounded);
                Ok(SyncConnectionWrapper::new(conn))
            }
            .boxed()
        });
        let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(file, config);
        let pool = Pool::builder()
            .max_size(options.pool_size.max(1))
            .connection_timeout(options.connect_timeout)
            .build(manager)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Lite {
            pool,
            pool_size: options.pool_size.max(1),
            path,
        })
    }

    /// Runs `body` in one IMMEDIATE transaction (the write lock is taken up front, so two
    /// writers queue on busy_timeout instead of failing on upgrade) on a blocking thread.
    async fn write<F, R>(&self, body: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut SqliteConnection) -> diesel::QueryResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let mut conn = self.pool.get().await?;
        Ok(conn
            .spawn_blocking(move |c| c.immediate_transaction(body))
            .await?)
    }

    /// Stores ticks, rolls the new ones up and queues their events, in one transaction. The
    /// one writer connection at a time serialises writers, so the newest stored tick cannot
    /// move while the batch is checked against it.
    pub(crate) async fn write_ticks(
        &self,
        rows: Vec<TickRow>,
        per: usize,
        now: i64,
    ) -> Result<TickWrite, StoreError> {
        self.write(move |c| {
            let mut phases = ticks::Phases::start();
            let fresh = match plan::first_tick_times(&rows) {
                None => false,
                Some(first) => {
                    let symbols = first.keys().copied().collect();
                    plan::all_newer(&first, &ticks::lite::newest(c, symbols)?)
                }
            };
            let new_ticks: Cow<'_, [TickRow]> = if fresh {
                ticks::lite::insert_fresh(c, &rows, per)?;
                Cow::Borrowed(&rows[..])
            } else {
                Cow::Owned(ticks::lite::insert_new(c, &rows, per)?)
            };
            phases.mark(0);
            let merged = candles::lite::merge(c, &rollup::aggregate(&new_ticks))?;
            phases.mark(1);
            let closed = candles::lite::close_bars(c, plan::symbols(&new_ticks))?;
            phases.mark(2);
            revisions::bump_lite(c, &[&merged, &closed])?;
            let candle_events = plan::tick_candle_events(merged, closed);
            outbox::push_lite(c, now, events::encode(now, &new_ticks, &candle_events))?;
            phases.log(rows.len(), fresh);
            Ok(TickWrite {
                stored: new_ticks.len() as u64,
                candle_events: candle_events.len() as u64,
            })
        })
        .await
    }

    /// Stores a candle feed and queues the events of the new or corrected closed candles, in
    /// one transaction; returns the rows new or corrected.
    pub(crate) async fn write_candles(
        &self,
        rows: Vec<CandleRow>,
        now: i64,
    ) -> Result<u64, StoreError> {
        self.write(move |c| {
            let stored = candles::lite::upsert(c, &rows)?;
            revisions::bump_lite(c, &[&stored])?;
            let closed = plan::closed_candles(&stored);
            outbox::push_lite(c, now, events::encode(now, &[], &closed))?;
            Ok(stored.len() as u64)
        })
        .await
    }

    /// Stores signals and queues the events of the new ones, in one transaction; returns the
    /// rows new.
    pub(crate) async fn write_signals(
        &self,
        rows: Vec<SignalRow>,
        now: i64,
    ) -> Result<u64, StoreError> {
        self.write(move |c| {
            let stored = signals::lite::insert_new(c, &rows)?;
            outbox::push_lite(c, now, events::encode_signals(now, &stored))?;
            Ok(stored.len() as u64)
        })
        .await
    }

    pub(crate) async fn explain(&self, sql: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool.get().await?;
        let lines: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
            .load(&mut *conn)
            .await?;
        Ok(lines.into_iter().map(|l| l.detail).collect())
    }
}

async fn migrate(path: &Path) -> Result<(), StoreError> {
    let file = path.to_string_lossy().into_owned();
    let applied = tokio::task::spawn_blocking(move || {
        let mut conn = SqliteConnection::establish(&file)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        apply_pragmas(&mut conn)?;
        conn.run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.len())
            .map_err(|e| StoreError::Migration(e.to_string()))
    })
    .await
    .map_err(|e| StoreError::Migration(e.to_string()))??;
    info!(applied, path = %path.display(), "sqlite migrations up to date");
    Ok(())
}
