//! The PostgreSQL executor, through diesel-async + bb8: write and read pools, migrations,
//! monthly partitions, and the write transactions (the statements are in the table modules,
//! the decisions in `plan.rs`).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use diesel::sql_types::Text;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tracing::{info, warn};

use crate::rollup;
use crate::{
    CandleRow, SignalRow, StoreError, StoreOptions, TickRow, TickWrite, candles, events, now_us,
    outbox, plan, revisions, signals, ticks, time,
};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Serialises migrations of pods starting at once.
const MIGRATION_LOCK: &str = include_str!("postgres/migration_lock.sql");
/// Releases [`MIGRATION_LOCK`].
const MIGRATION_UNLOCK: &str = include_str!("postgres/migration_unlock.sql");

/// How many months back from now partitions are created on demand.
const PARTITION_MONTHS_BACK: i64 = 24;

/// Months of partitions created ahead of time.
const MONTHS_AHEAD: usize = 3;

/// The PostgreSQL executor.
pub(crate) struct Pg {
    pub(crate) write: Pool<AsyncPgConnection>,
    pub(crate) read: Pool<AsyncPgConnection>,
    /// The size of each pool.
    pub(crate) pool_size: u32,
    /// Whether reads have a pool of their own (`read_url`); else `read` is `write`.
    pub(crate) separate_read: bool,
    /// Partitions known to exist, as (table, year, month).
    partitions: Mutex<HashSet<(&'static str, i64, u32)>>,
}

#[derive(diesel::QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

async fn pool(url: &str, options: &StoreOptions) -> Result<Pool<AsyncPgConnection>, StoreError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    Pool::builder()
        .max_size(options.pool_size)
        .connection_timeout(options.connect_timeout)
        .build(manager)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

impl Pg {
    pub(crate) async fn open(options: &StoreOptions) -> Result<Pg, StoreError> {
        migrate(&options.url).await?;
        let write = pool(&options.url, options).await?;
        let read = match &options.read_url {
            Some(url) => pool(url, options).await?,
            None => write.clone(),
        };
        let pg = Pg {
            pool_size: options.pool_size,
            separate_read: options.read_url.is_some(),
            write,
            read,
            partitions: Mutex::new(HashSet::new()),
        };
        let mut month = time::month_of(now_us());
        let mut ahead = Vec::with_capacity(MONTHS_AHEAD);
        for _ in 0..MONTHS_AHEAD {
            ahead.push(month);
            month = time::next_month(month.0, month.1);
        }
        pg.ensure_partitions("ticks", ahead.iter().copied().collect())
            .await?;
        pg.ensure_partitions("candles", ahead.iter().copied().collect())
            .await?;
        Ok(pg)
    }

    /// Creates the monthly partitions of `table` that `months` fall in, unless known to exist.
    pub(crate) async fn ensure_partitions(
        &self,
        table: &'static str,
        months: BTreeSet<(i64, u32)>,
    ) -> Result<(), StoreError> {
        // Months far from now (history, or clock errors within validation's bounds) go to the
        // DEFAULT partition instead: a batch must not be able to create partitions by the
        // thousand. Every month is tried once; one that failed is not retried per batch.
        let (this_year, this_month) = time::month_of(now_us());
        let now_index = this_year * 12 + i64::from(this_month);
        let missing: Vec<(i64, u32)> = {
            let mut known = self.partitions.lock().expect("partition set lock");
            months
                .into_iter()
                .filter(|&(y, m)| {
                    let offset = y * 12 + i64::from(m) - now_index;
                    (-PARTITION_MONTHS_BACK..MONTHS_AHEAD as i64).contains(&offset)
                })
                .filter(|&(y, m)| known.insert((table, y, m)))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut conn = self.write.get().await?;
        for (year, month) in missing {
            let (start, end) = time::month_bounds(year, month);
            let name = format!("{table}_y{year:04}m{month:02}");
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ({start}) TO ({end})"
            );
            match diesel::sql_query(ddl).execute(&mut *conn).await {
                Ok(_) => {}
                // Another pod created it between our check and our statement.
                Err(e) if e.to_string().contains("already exists") => {}
                // Rows of this month already sit in the DEFAULT partition; they stay correct
                // there, only unpartitioned.
                Err(e) => {
                    warn!(partition = name, error = %e, "partition not created; rows go to the default partition");
                    continue;
                }
            }
            info!(partition = name, "partition ready");
        }
        Ok(())
    }

    /// Stores ticks, rolls the new ones up and queues their events. A big batch of several
    /// symbols is written as two transactions on two connections, split by symbol, so that
    /// PostgreSQL works on both halves at once. The call succeeds only when both committed; if
    /// one fails, the other half may be stored, and the caller's retry of the batch stores the
    /// rest.
    pub(crate) async fn write_ticks(
        &self,
        rows: Vec<TickRow>,
        per: usize,
        now: i64,
    ) -> Result<TickWrite, StoreError> {
        self.ensure_partitions("ticks", plan::tick_months(&rows))
            .await?;
        self.ensure_partitions("candles", plan::bar_months(&rows))
            .await?;
        match plan::split_by_symbol(rows) {
            Ok((a, b)) => {
                let (a, b) = tokio::try_join!(
                    self.tick_transaction(&a, per, now),
                    self.tick_transaction(&b, per, now)
                )?;
                Ok(TickWrite {
                    stored: a.stored + b.stored,
                    candle_events: a.candle_events + b.candle_events,
                })
            }
            Err(rows) => self.tick_transaction(&rows, per, now).await,
        }
    }

    /// One transaction of a tick write: the symbols' write locks, the ticks, the merge of
    /// their rollup, the bars that closed, the events.
    async fn tick_transaction(
        &self,
        rows: &[TickRow],
        per: usize,
        now: i64,
    ) -> Result<TickWrite, StoreError> {
        let mut conn = self.write.get().await?;
        let conn: &mut AsyncPgConnection = &mut conn;
        Ok(conn
            .transaction::<_, diesel::result::Error, _>(async |c| {
                let mut phases = ticks::Phases::start();
                // Writers of a symbol are serialised by this lock, so the newest stored tick
                // cannot move while the batch is checked against it.
                ticks::pg::lock_symbols(c, plan::symbols(rows)).await?;
                let fresh = match plan::first_tick_times(rows) {
                    None => false,
                    Some(first) => {
                        let symbols = first.keys().copied().collect();
                        plan::all_newer(&first, &ticks::pg::newest(c, symbols).await?)
                    }
                };
                let new_ticks: Cow<'_, [TickRow]> = if fresh {
                    ticks::pg::insert_fresh(c, rows, per).await?;
                    Cow::Borrowed(rows)
                } else {
                    Cow::Owned(ticks::pg::insert_new(c, rows, per).await?)
                };
                phases.mark(0);
                let merged = candles::pg::merge(c, &rollup::aggregate(&new_ticks)).await?;
                phases.mark(1);
                let closed = candles::pg::close_bars(c, plan::symbols(&new_ticks)).await?;
                phases.mark(2);
                revisions::bump_pg(c, &[&merged, &closed]).await?;
                let candle_events = plan::tick_candle_events(merged, closed);
                outbox::push_pg(c, now, events::encode(now, &new_ticks, &candle_events)).await?;
                phases.log(rows.len(), fresh);
                Ok(TickWrite {
                    stored: new_ticks.len() as u64,
                    candle_events: candle_events.len() as u64,
                })
            })
            .await?)
    }

    /// Stores a candle feed and queues the events of the new or corrected closed candles, in
    /// one transaction; returns the rows new or corrected.
    pub(crate) async fn write_candles(
        &self,
        rows: &[CandleRow],
        now: i64,
    ) -> Result<u64, StoreError> {
        self.ensure_partitions("candles", plan::candle_months(rows))
            .await?;
        let mut conn = self.write.get().await?;
        let conn: &mut AsyncPgConnection = &mut conn;
        Ok(conn
            .transaction::<_, diesel::result::Error, _>(async |c| {
                let stored = candles::pg::upsert(c, rows).await?;
                revisions::bump_pg(c, &[&stored]).await?;
                let closed = plan::closed_candles(&stored);
                outbox::push_pg(c, now, events::encode(now, &[], &closed)).await?;
                Ok(stored.len() as u64)
            })
            .await?)
    }

    /// Stores signals and queues the events of the new ones, in one transaction; returns the
    /// rows new.
    pub(crate) async fn write_signals(
        &self,
        rows: &[SignalRow],
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut conn = self.write.get().await?;
        let conn: &mut AsyncPgConnection = &mut conn;
        Ok(conn
            .transaction::<_, diesel::result::Error, _>(async |c| {
                let stored = signals::pg::insert_new(c, rows).await?;
                outbox::push_pg(c, now, events::encode_signals(now, &stored)).await?;
                Ok(stored.len() as u64)
            })
            .await?)
    }

    /// The plan with sequential scans disabled for this one statement, so it shows whether an
    /// index can serve the query whatever the table size (on a small table the planner would
    /// pick a sequential scan anyway).
    pub(crate) async fn explain(&self, sql: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.read.get().await?;
        let conn: &mut AsyncPgConnection = &mut conn;
        let explain = format!("EXPLAIN {sql}");
        let lines: Vec<PlanLine> = conn
            .transaction::<_, diesel::result::Error, _>(async |c| {
                // Planning only: a statement like EXPLAIN ANALYZE DELETE cannot change data.
                diesel::sql_query("SET TRANSACTION READ ONLY")
                    .execute(c)
                    .await?;
                diesel::sql_query("SET LOCAL enable_seqscan = off")
                    .execute(c)
                    .await?;
                diesel::sql_query(explain).load(c).await
            })
            .await?;
        Ok(lines.into_iter().map(|l| l.line).collect())
    }
}

/// Applies pending migrations under an advisory lock, so pods starting together take turns.
/// The harness blocks in place, so this needs the multi-thread runtime.
async fn migrate(url: &str) -> Result<(), StoreError> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    diesel::sql_query(MIGRATION_LOCK).execute(&mut conn).await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let applied = harness
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.len())
        .map_err(|e| StoreError::Migration(e.to_string()));
    let mut conn = harness.into_inner();
    diesel::sql_query(MIGRATION_UNLOCK)
        .execute(&mut conn)
        .await?;
    info!(applied = applied?, "postgres migrations up to date");
    Ok(())
}
